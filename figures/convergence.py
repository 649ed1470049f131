"""Convergence of an estimate with the sample count: relative change and rank agreement."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from figures import style


def threshold_crossing(n: Any, spearman: Any, threshold: float = 0.95) -> float | None:
    """First ``n`` from which ``spearman`` stays ``>= threshold`` to the end; ``None`` if never.

    "Stays" ignores a lucky early point that later drops back under the threshold.
    """
    n = np.asarray(n, dtype=np.float64)
    s = np.asarray(spearman, dtype=np.float64)
    ok = np.nan_to_num(s, nan=-np.inf) >= threshold
    if not ok.size or not ok[-1]:
        return None
    first = ok.size - int(np.argmin(ok[::-1])) if not ok.all() else 0
    return float(n[first])


def plot_convergence(n: Any, rel_change: Any = None, spearman: Any = None, *, threshold: float = 0.95,
                     quantity: str = "Fisher scores", title: str | None = None,
                     figsize: tuple[float, float] = (9.0, 3.6), dpi: int = style.DPI,
                     save: str | os.PathLike | None = None) -> Figure:
    """Two panels over the sample count ``n [k]``: relative change ``rel_change [k]`` (log-log,
    ``||s(n_k) - s(N)|| / ||s(N)||`` against the final estimate) and rank correlation ``spearman [k]``
    with the ``threshold`` line and its first sustained crossing marked (None entries are gaps).

    ``n`` may also be a ``landscape.fisher.convergence.Convergence`` (its ``examples_to_reach``
    gives the crossing), a dict, or a ``.json`` path with keys ``n``, ``rel_change``, ``spearman``.
    Returns a ``Figure`` with two axes.
    """
    nn, rc, sp, crossing = _convergence_arrays(n, rel_change, spearman, threshold)
    with style.context():
        fig = style.new_figure(*figsize, dpi=dpi)
        ax_r, ax_s = fig.subplots(1, 2)
        pos = rc > 0
        ax_r.plot(nn[pos], rc[pos], marker="o", ms=3, color=style.PALETTE[0])
        ax_r.set_xscale("log")
        if pos.any():
            ax_r.set_yscale("log")
        ax_r.set_xlabel("samples n (examples)")
        ax_r.set_ylabel("relative change ‖s(n) − s(N)‖ / ‖s(N)‖")
        ax_r.set_title(f"{quantity}: relative change")
        ax_s.plot(nn, sp, marker="o", ms=3, color=style.PALETTE[2])
        ax_s.axhline(threshold, color="0.4", ls="--", lw=1, label=f"threshold {threshold:g}")
        if crossing is not None:
            for ax in (ax_r, ax_s):
                ax.axvline(crossing, color=style.PALETTE[3], lw=1, ls=":")
            ax_s.annotate(f"n = {crossing:g}", (crossing, threshold), textcoords="offset points", xytext=(6, -14),
                          color=style.PALETTE[3], fontsize=9)
        else:
            ax_s.text(0.98, 0.04, f"threshold {threshold:g} not reached", transform=ax_s.transAxes, ha="right",
                      fontsize=9, color=style.PALETTE[3])
        ax_s.set_xscale("log")
        ax_s.set_xlabel("samples n (examples)")
        ax_s.set_ylabel("Spearman ρ (unitless)")
        ax_s.set_title(f"{quantity}: rank agreement")
        ax_s.legend(frameon=False, loc="lower right" if crossing is not None else "center right")
        if title:
            fig.suptitle(title)
    return style.finish(fig, save, dpi)


def _convergence_arrays(n: Any, rel_change: Any, spearman: Any,
                        threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    """``(n, rel_change, spearman, crossing)`` as float arrays from arrays or a convergence source."""
    crossing: float | None = None
    known = False
    if rel_change is None and spearman is None:
        if callable(getattr(n, "examples_to_reach", None)):  # fisher_convergence.Convergence: its own rule
            crossing, known = n.examples_to_reach(threshold), True
        from landscape.util.results import as_dict  # deferred: `import figures` stays free of torch

        d = as_dict(n)
        try:
            n, rel_change, spearman = d["n"], d["rel_change"], d["spearman"]
        except KeyError as exc:
            raise ValueError(f"convergence result lacks key {exc.args[0]!r}; it needs n, rel_change and "
                             "spearman.") from None
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (n, rel_change, spearman)]
    if len({a.size for a in arrays}) != 1 or arrays[0].size == 0:
        raise ValueError(f"n, rel_change and spearman must have the same non-zero length, got "
                         f"{[a.size for a in arrays]}.")
    nn, rc, sp = arrays
    if not known:
        crossing = threshold_crossing(nn, sp, threshold)
    return nn, rc, sp, crossing
