"""1D loss curves along a direction, with a band over seeds.

Each curve is ``values [n_seeds, n_alphas]`` over ``alphas [n_alphas]``: the line is the mean over
seeds (NaN-aware) and the band is the min–max range (``band="minmax"``) or mean ± one standard
deviation (``band="std"``, ``ddof=1``) over seeds. Several masks (e.g. Fisher top / random /
bottom) share one axes in distinct palette colours.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures import style
from figures.sources import as_curve

BANDS = ("minmax", "std", None)


def band_limits(values: np.ndarray, band: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(mean, lower, upper)`` over axis 0 of ``values [n_seeds, n]``; ``None`` for no band.

    NaN entries (points not computed) are ignored; all-NaN columns stay NaN (a gap).
    """
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}: use 'minmax', 'std' or None.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean = np.nanmean(values, axis=0)
        if band is None or values.shape[0] < 2:
            return None if band is None else (mean, mean, mean)
        if band == "minmax":
            return mean, np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        sd = np.nanstd(values, axis=0, ddof=1)
    return mean, mean - sd, mean + sd


def draw_curves(ax: Axes, curves: Mapping[str, Any], alphas: Any = None, metric: str = "loss",
                band: str | None = "minmax", logy: bool = False) -> None:
    """Draw every curve of ``curves`` (label -> source) on ``ax`` with its seed band."""
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}: use 'minmax', 'std' or None.")
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict label -> values [n_seeds, n_alphas] (or a curve object).")
    for i, (name, src) in enumerate(curves.items()):
        if alphas is not None and not (hasattr(src, "alphas") or isinstance(src, (str, os.PathLike))):
            src = (alphas, src)
        elif alphas is None and isinstance(src, np.ndarray):
            raise ValueError(f"curve {name!r} is a bare array: pass alphas=[n_alphas] too.")
        a, vals = as_curve(src, metric)
        if logy:
            vals = np.where(vals > 0, vals, np.nan)
        c = style.color(i)
        n_seeds = vals.shape[0]
        limits = band_limits(vals, band or "minmax")
        assert limits is not None  # a named band always gives limits
        mean, lower, upper = limits
        lab = f"{name} ({n_seeds} seeds)" if n_seeds > 1 else name
        ax.plot(a, mean, color=c, label=lab, marker="o" if a.size <= 25 else None, ms=3)
        if band is not None and n_seeds > 1:
            ax.fill_between(a, lower, upper, color=c, alpha=0.2, linewidth=0)
    if logy:
        ax.set_yscale("log")
    ax.axvline(0.0, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel(style.label("alpha"))
    ax.set_ylabel(style.label(metric))
    ax.legend(frameon=False)


def plot_curves(curves: Mapping[str, Any], alphas: Any = None, *, metric: str = "loss",
                band: str | None = "minmax", logy: bool = False, title: str | None = None,
                figsize: tuple[float, float] = (6.0, 4.0), dpi: int = style.DPI,
                save: str | os.PathLike | None = None) -> Figure:
    """1D curves with seed bands on one axes.

    Args:
        curves: label -> ``values [n_seeds, n_alphas]`` (or ``[n_alphas]``) with ``alphas`` given,
            or label -> a curve object (``.alphas``, ``.values[metric]``), a list of them (one per
            seed), or a ``.h5``/``.npz`` path.
        alphas: ``[n_alphas]`` step sizes shared by array inputs.
        band: ``"minmax"``, ``"std"`` (mean ± 1 sd) or ``None``.
        logy: log y axis (values <= 0 become gaps).
    Returns a ``Figure`` with one axes.
    """
    with style.context():
        fig = style.new_figure(*figsize, dpi=dpi)
        ax = fig.add_subplot()
        draw_curves(ax, curves, alphas, metric, band, logy)
        if title:
            ax.set_title(title)
    return style.finish(fig, save, dpi)
