"""Hessian spectral density (stochastic Lanczos quadrature) on a log density axis."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from figures import style


def _field(src: Any, *names: str) -> Any:
    for n in names:
        if isinstance(src, dict) and n in src:
            return src[n]
        if hasattr(src, n):
            return getattr(src, n)
    return None


def plot_spectral_density(grid: Any, density: Any = None, eigenvalues: Any = None, *, logy: bool = True,
                          floor: float = 1e-8, title: str | None = None, figsize: tuple[float, float] = (6.0, 3.8),
                          dpi: int = style.DPI, save: str | os.PathLike | None = None) -> Figure:
    """Spectral density ``density [m]`` over eigenvalue ``grid [m]``, with optional eigenvalue ticks.

    ``grid`` may also be a result object or dict with ``.grid``/``.density`` (e.g. the result of
    ``landscape.curvature.spectral_density``) and an optional ``.eigenvalues``. ``eigenvalues`` may be
    an array or a result with ``.values`` (``curvature.top_eigenvalues``).
    With ``logy`` the density is clipped below at ``floor * max(density)`` so empty regions stay
    visible. Eigenvalues (e.g. Lanczos top-k) are drawn as a rug of ticks under the curve.
    Returns a ``Figure`` with one axes.
    """
    if density is None:
        src = grid
        grid, density = _field(src, "grid"), _field(src, "density")
        if grid is None or density is None:
            raise ValueError("pass grid and density arrays, or a result with .grid and .density.")
        if eigenvalues is None:
            eigenvalues = _field(src, "eigenvalues")
    g = np.asarray(grid, dtype=np.float64).ravel()
    d = np.asarray(density, dtype=np.float64).ravel()
    if g.shape != d.shape or g.size < 2:
        raise ValueError(f"grid and density must be 1D of equal length >= 2, got {np.shape(grid)} and "
                         f"{np.shape(density)}.")
    if not np.all(np.diff(g) > 0):
        raise ValueError("grid must be strictly increasing.")
    if np.any(d[np.isfinite(d)] < 0):
        raise ValueError("density has negative values; pass the estimated density, not a log density.")
    with style.context():
        fig = style.new_figure(*figsize, dpi=dpi)
        ax = fig.add_subplot()
        shown = d
        if logy:
            top = np.nanmax(d) if np.isfinite(d).any() else 1.0
            shown = np.maximum(d, floor * top if top > 0 else floor)
            ax.set_yscale("log")
        ax.plot(g, shown, color=style.PALETTE[0])
        ax.fill_between(g, shown, shown.min() if logy else 0.0, color=style.PALETTE[0], alpha=0.15, lw=0)
        if eigenvalues is not None:
            ev = np.asarray(getattr(eigenvalues, "values", eigenvalues), dtype=np.float64).ravel()
            ax.plot(ev, np.zeros_like(ev) + 0.02, linestyle="none", marker="|", ms=12, mew=1.2,
                    color=style.PALETTE[3], transform=ax.get_xaxis_transform(), label=f"eigenvalues ({ev.size})")
            ax.legend(frameon=False)
        ax.axvline(0.0, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel(style.label("eigenvalue"))
        ax.set_ylabel(style.label("density"))
        if title:
            ax.set_title(title)
    return style.finish(fig, save, dpi)
