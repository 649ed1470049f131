"""The Fisher-sharpness study's mask-size sweep: top vs stratified against the mask fraction.

:func:`plot_mask_sweep` draws, per direction construction, the ratio dᵀHd_top / dᵀHd_stratified
(left, log axis, parity at 1) and the difference dᵀHd_top − dᵀHd_stratified per token (right,
the endpoint's own scale, parity at 0) against the fraction of matrix parameters in the mask,
each with its 95 % hierarchical interval. A ratio whose control is not positive in every
replicate has no interval and is drawn hollow; one whose control (or itself) is not positive is
left out of the left panel (the difference on the right still shows it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from figures import style

__all__ = ["plot_mask_sweep"]


def _series(rows: Sequence[Mapping[str, Any]], construction: str) -> list[Mapping[str, Any]]:
    return sorted((r for r in rows if r["construction"] == construction), key=lambda r: r["fraction"])


def plot_mask_sweep(rows: Sequence[Mapping[str, Any]], *, title: str | None = None, dpi: int = style.DPI,
                    save: str | os.PathLike | None = None) -> Figure:
    """``rows``: dicts with ``fraction``, ``construction``, ``ratio``, ``ratio_interval`` ((lo, hi) or
    None), ``estimate`` and ``interval`` (the difference), optionally ``control`` (the stratified
    dᵀHd). Returns a ``Figure`` with two axes."""
    if not rows:
        raise ValueError("no sweep rows to plot: give one row per (fraction, construction).")
    constructions = list(dict.fromkeys(r["construction"] for r in rows))
    with style.context():
        fig = style.new_figure(10.0, 4.0, dpi=dpi)
        ax_r, ax_d = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        n_shown = 0
        for i, con in enumerate(constructions):
            s = _series(rows, con)
            x = np.array([r["fraction"] for r in s]) * (1.0 + 0.04 * (i - (len(constructions) - 1) / 2))
            col = style.color(i)
            shown = [(xi, r) for xi, r in zip(x, s) if r.get("control", 1.0) > 0 and r["ratio"] > 0]
            ax_r.plot([xi for xi, _ in shown], [r["ratio"] for _, r in shown], "-", color=col, lw=1.0, alpha=0.6)
            n_shown += len(shown)
            for xi, r in shown:
                iv = r.get("ratio_interval")
                if iv is None:
                    ax_r.plot([xi], [r["ratio"]], "o", mfc="none", color=col, ms=6)
                else:
                    ax_r.errorbar([xi], [r["ratio"]], yerr=[[r["ratio"] - iv[0]], [iv[1] - r["ratio"]]], fmt="o",
                                  color=col, ms=5, capsize=3)
            est = np.array([r["estimate"] for r in s], float)
            lo, hi = (np.array([r["interval"][j] for r in s], float) for j in (0, 1))
            ax_d.errorbar(x, est, yerr=[est - lo, hi - est], fmt="o-", color=col, ms=5, capsize=3, lw=1.0, label=con)
        ax_r.axhline(1.0, color="0.3", lw=0.9, ls="--")
        ax_d.axhline(0.0, color="0.3", lw=0.9, ls="--")
        from matplotlib.ticker import FuncFormatter, NullFormatter

        if n_shown:
            ax_r.set_yscale("log")
            ax_r.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax_r.text(0.5, 0.5, "no ratio: the stratified dᵀHd is not positive", transform=ax_r.transAxes,
                      ha="center", va="center", fontsize="small")
        fractions = sorted({float(r["fraction"]) for r in rows})
        for ax in (ax_r, ax_d):
            ax.set_xscale("log")
            ax.set_xlim(fractions[0] / 1.3, fractions[-1] * 1.3)
            ax.set_xticks(fractions)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("mask fraction of the matrix parameters")
        ax_r.set_ylabel("dᵀHd ratio, top / stratified")
        ax_d.set_ylabel("dᵀHd difference per token, top − stratified")
        ax_d.legend(fontsize="small", title="directions")
        if title:
            fig.suptitle(title)
    return style.finish(fig, save, dpi)
