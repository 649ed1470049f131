"""Sensitivity audit of a checkpoint: one multi-panel figure from an audit result.

The audit result is a dict (or ``.json`` path, or object) with any of these keys; a panel is drawn
for each one present, in this order:

* ``fisher_per_layer``: dict layer -> mean Fisher score (bars, log scale);
* ``top_eigenvalue``: dict block -> top Hessian eigenvalue (bars);
* ``trace``: dict block -> Hessian trace estimate (bars);
* ``sensitivity``: dict block -> ``(alphas [n], losses [n])`` or ``{"alphas": ..., "losses": ...}``
  (1D loss curves, one per block).

Common alternative spellings (``fisher``, ``per_layer_fisher``, ``eigenvalues``, ``block_top_eigenvalue``,
``block_trace``, ``curves``) are accepted too.

An :class:`analyses.audit.AuditResult` (object, dict or ``result.json``) is read through
:func:`panels_from_audit_result`: ``fisher.per_layer``, each block's ``top_eigenvalue`` and ``trace``,
and each block's ``sensitivity.curve`` (mean over seeds), plus the full-model curve as ``all``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures import style
from figures.fisher import draw_bars
from figures.sources import float_dict

PANELS: dict[str, tuple[str, ...]] = {
    "fisher_per_layer": ("fisher_per_layer", "per_layer_fisher", "fisher"),
    "top_eigenvalue": ("top_eigenvalue", "block_top_eigenvalue", "eigenvalues", "top_eigenvalues"),
    "trace": ("trace", "block_trace", "traces"),
    "sensitivity": ("sensitivity", "curves", "sensitivity_curves"),
}


def panels_from_audit_result(d: Mapping[str, Any]) -> dict[str, Any]:
    """The panel dict of an audit result (keys ``config``, ``blocks``, ``fisher``, ``overall``)."""
    blocks = d["blocks"]
    out: dict[str, Any] = {}
    fl = (d.get("fisher") or {}).get("per_layer")
    if fl:
        out["fisher_per_layer"] = fl
    for key in ("top_eigenvalue", "trace"):
        vals = {b: v[key] for b, v in blocks.items() if v.get(key) is not None}
        if vals:
            out[key] = vals
    curves = {b: v["sensitivity"]["curve"] for b, v in blocks.items() if v.get("sensitivity")}
    overall = d.get("overall") or {}
    if overall.get("curve"):
        curves["all"] = overall["curve"]
    if curves:
        out["sensitivity"] = curves
    return out


def _find(audit: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for n in names:
        if n in audit and audit[n] is not None:
            return audit[n]
    return None


def _curve(block: str, c: Any) -> tuple[np.ndarray, np.ndarray]:
    """(alphas [n], mean loss [n]) of one block's curve, from a dict, a Curve or a pair."""
    if isinstance(c, Mapping):
        a, loss = c.get("alphas"), c.get("losses", c.get("loss"))
    elif hasattr(c, "alphas") and hasattr(c, "values"):
        a, loss = c.alphas, c.values["loss"] if isinstance(c.values, Mapping) else c.values
    else:
        a, loss = c
    a, loss = np.asarray(a, dtype=np.float64).ravel(), np.asarray(loss, dtype=np.float64)
    if loss.ndim == 2:  # several seeds: mean
        loss = np.nanmean(loss, axis=0)
    if a.shape != loss.shape:
        raise ValueError(f"sensitivity curve {block!r}: alphas {a.shape} and losses {loss.shape} differ in length.")
    return a, loss


def _draw_sensitivity(ax: Axes, curves: Mapping[str, Any], logy: bool) -> None:
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("sensitivity must be a non-empty dict block -> (alphas, losses).")
    for i, (block, c) in enumerate(curves.items()):
        a, loss = _curve(block, c)
        ax.plot(a, loss, color=style.color(i), label=block, lw=1.4)
    if logy:
        ax.set_yscale("log")
    ax.axvline(0.0, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel(style.label("alpha"))
    ax.set_ylabel(style.label("loss"))
    ax.legend(frameon=False, fontsize=7, ncol=2 if len(curves) > 6 else 1)


def plot_audit(audit: Mapping[str, Any] | str | os.PathLike | Any, *, log_bars: bool = True, logy: bool = False,
               title: str | None = None, dpi: int = style.DPI, save: str | os.PathLike | None = None) -> Figure:
    """Multi-panel audit figure (2 columns); one axes per panel present (module doc).

    Raises ``ValueError`` if the audit holds none of the known panels.
    """
    from landscape.util.results import as_dict  # deferred: `import figures` stays free of torch

    d = as_dict(audit)
    if isinstance(d.get("blocks"), Mapping):
        d = panels_from_audit_result(d)
    present = {key: _find(d, names) for key, names in PANELS.items()}
    present = {k: v for k, v in present.items() if v is not None}
    if not present:
        raise ValueError(f"audit result has none of the panels {sorted(PANELS)} (keys found: {sorted(d)}).")
    n = len(present)
    ncols = 1 if n == 1 else 2
    nrows = (n + ncols - 1) // ncols
    with style.context():
        fig = style.new_figure(6.0 * ncols, 4.0 * nrows, dpi=dpi)
        axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
        for i, (ax, (key, data)) in enumerate(zip(axes, present.items())):
            if key == "sensitivity":
                _draw_sensitivity(ax, data, logy)
                ax.set_title("1D sensitivity per block")
                continue
            what = {"fisher_per_layer": "fisher", "top_eigenvalue": "eigenvalue", "trace": "trace"}[key]
            vals = float_dict(data, key)
            pos = [v for v in vals.values() if v > 0]
            log = log_bars and len(pos) == len(vals) and max(pos) / min(pos) >= 20  # log only over >1 decade
            draw_bars(ax, vals, style.label(what), max_bars=10**6, sort=False, log=log, color=style.color(i))
            ax.set_title({"fisher_per_layer": "Fisher per layer", "top_eigenvalue": "top Hessian eigenvalue per block",
                          "trace": "Hessian trace per block"}[key])
        if title:
            fig.suptitle(title)
    return style.finish(fig, save, dpi)
