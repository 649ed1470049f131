"""Curvature measured during training against the step, with the edge-of-stability line 2/η.

Reads the rows :class:`landscape.training.CurvatureTracker` writes (a ``.jsonl`` file or a list of
dicts) and computes nothing from the model. Panels, for the quantities present:

* probe loss L(θ);
* top Hessian eigenvalue λ_max, with 2/η (η the row's learning rate): plain gradient descent with
  step η is stable along an eigendirection only while λ < 2/η (Cohen et al., 2021, "edge of
  stability"). For adaptive optimizers (Adam) the relevant bound is on the preconditioned Hessian,
  so the line is a reference, not a threshold;
* Hessian trace and empirical-Fisher trace, ± one Hutch++ standard error;
* loss rise ½(L(θ+r·d) + L(θ−r·d)) − L(θ) along the fixed filter-normalized direction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib loads on the first call: ``import figures`` stays matplotlib-free
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_training_curvature", "PANELS"]

PANELS: dict[str, str] = {
    "loss": "probe loss (nats)",
    "top_eigenvalue": "Hessian λ_max",
    "hessian_trace": "tr(Hessian)",
    "fisher_trace": "tr(emp. Fisher)",
    "loss_rise": "loss rise along d",
}


def _rows(src: str | os.PathLike | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    rows: list[Mapping[str, Any]]
    if isinstance(src, (str, os.PathLike)):
        from landscape.training.log import read_measurements

        rows = list(read_measurements(Path(src)))
    else:
        rows = list(src)
    if not all(isinstance(r, Mapping) and "step" in r for r in rows):
        raise ValueError("pass a measurement .jsonl path or a list of dicts, each with a 'step'.")
    return sorted(rows, key=lambda r: r["step"])


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=np.float64)


def _edge_of_stability(ax: Axes, steps: np.ndarray, lrs: np.ndarray, lam: np.ndarray) -> None:
    ok = np.isfinite(lrs) & (lrs > 0)
    if not ok.any():
        return
    edge = 2.0 / lrs[ok]
    ax.step(steps[ok], edge, where="post", color="0.3", lw=1.0, ls="--", label="2/η (edge of stability)")
    top = np.nanmax(np.abs(lam)) if np.isfinite(lam).any() else 0.0
    if top > 0 and np.nanmin(lam) > 0 and np.nanmax(edge) > 20 * top:
        ax.set_yscale("log")  # 2/η far above λ: a linear axis would flatten λ
    ax.legend(frameon=False, fontsize="small")


def _panel(ax: Axes, rows: Sequence[Mapping[str, Any]], key: str, i: int) -> None:
    from figures import style

    steps, y = _column(rows, "step"), _column(rows, key)
    ax.plot(steps, y, marker="o", ms=3, color=style.color(i), label=PANELS[key])
    err = _column(rows, f"{key}_stderr")
    if np.isfinite(err).any():
        ax.fill_between(steps, y - err, y + err, color=style.color(i), alpha=0.2, lw=0)
    if key == "top_eigenvalue":
        _edge_of_stability(ax, steps, _column(rows, "lr"), y)
    ax.set_ylabel(PANELS[key])


def plot_training_curvature(src: str | os.PathLike | Sequence[Mapping[str, Any]], *,
                            quantities: Sequence[str] | None = None, title: str | None = None,
                            figsize: tuple[float, float] | None = None, dpi: int | None = None,
                            save: str | os.PathLike | None = None) -> Figure:
    """One panel per measured quantity against the training step (shared x axis).

    Args:
        src: the tracker's ``.jsonl`` file, or its rows (dicts with ``step`` and the quantities).
        quantities: panels to draw, from :data:`PANELS` (default: every one present in the rows).
        title: figure title (default: measurements, mean cost in gradients and the last running overhead).
        dpi: resolution (default: the house style's).
        save: ``.png`` / ``.pdf`` / ``.svg`` path.

    Returns:
        a ``Figure`` with one axes per panel; the λ_max panel carries the 2/η line when rows hold ``lr``.
    """
    from figures import style

    rows = _rows(src)
    dpi = dpi or style.DPI
    if not rows:
        raise ValueError("no measurements to draw (the file or list is empty).")
    present = [k for k in PANELS if np.isfinite(_column(rows, k)).any()]
    keys = present if quantities is None else list(quantities)
    missing = [k for k in keys if k not in present]
    if missing or not keys:
        raise ValueError(f"no values for {missing or keys} in the rows; they hold {present}.")
    with style.context():
        fig = style.new_figure(*(figsize or (6.0, 1.8 * len(keys) + 0.6)), dpi=dpi)
        axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
        for i, (ax, key) in enumerate(zip(axes, keys)):
            _panel(ax, rows, key, i)
        axes[-1].set_xlabel("training step")
        cost = _column(rows, "cost_gradients")
        default = f"{len(rows)} measurements"
        if np.isfinite(cost).any():
            default += f", {np.nanmean(cost):.0f} gradients each"
        overhead = _column(rows, "overhead")
        if np.isfinite(overhead).any():
            default += f", overhead {100 * overhead[np.isfinite(overhead)][-1]:.1f}% of the training gradients"
        fig.suptitle(title or default)
    return style.finish(fig, save, dpi)
