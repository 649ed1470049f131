"""2D loss surfaces: contour, filled contour, heatmap and 3D surface panels.

Input grids follow ``Z[iy, ix] = f(xs[ix], ys[iy])``, shape ``[ny, nx]``; non-square grids
keep x horizontal and y vertical. NaN or infinite values (points not computed yet, diverged
losses) are masked and drawn as gaps. Colours use one ``matplotlib.colors.Normalize`` (or
``LogNorm`` with ``logz=True``) and one set of contour levels, so several panels can share a scale
(:func:`plot_surfaces`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator

from figures import style
from figures.sources import as_surface, check_grid

KINDS = ("contour", "contourf", "heatmap", "surface3d")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown surface kind {kind!r}: use one of {', '.join(KINDS)}.")


def scale(zs: Sequence[np.ndarray], levels: int | Sequence[float] = 15, logz: bool = False,
          vmin: float | None = None, vmax: float | None = None) -> tuple[Normalize, np.ndarray]:
    """Shared colour norm and contour levels over the finite values of all ``zs``.

    Linear levels are ``linspace(vmin, vmax, levels)``; with ``logz`` they are ``geomspace`` and
    values ``<= 0`` are masked. Raises when no finite value is left to scale.
    """
    finite = np.concatenate([z[np.isfinite(z) & ((z > 0) if logz else True)].ravel() for z in zs])
    if finite.size == 0:
        raise ValueError("no finite values to draw" + (" (logz needs values > 0)" if logz else "") + ".")
    lo = float(finite.min()) if vmin is None else float(vmin)
    hi = float(finite.max()) if vmax is None else float(vmax)
    if logz and lo <= 0:
        raise ValueError(f"logz needs vmin > 0, got {lo}.")
    if hi <= lo:  # flat surface: widen so levels are increasing
        hi = lo * 1.01 + 1e-12 if lo > 0 else lo + 1.0
    if isinstance(levels, int):
        if levels < 2:
            raise ValueError(f"levels must be >= 2 or an increasing sequence, got {levels}.")
        lv = np.geomspace(lo, hi, levels) if logz else np.linspace(lo, hi, levels)
    else:
        lv = np.asarray(levels, dtype=np.float64)
        if lv.ndim != 1 or lv.size < 2 or np.any(np.diff(lv) <= 0):
            raise ValueError("levels must be an increasing sequence of at least 2 values.")
    norm = LogNorm(lo, hi) if logz else Normalize(lo, hi)
    return norm, lv


def _extend(zs: Sequence[np.ndarray], levels: np.ndarray) -> str:
    """Colour-bar ``extend`` for finite values outside ``[levels[0], levels[-1]]``."""
    finite = np.concatenate([z[np.isfinite(z)].ravel() for z in zs])
    over = bool(finite.size and finite.max() > levels[-1])
    under = bool(finite.size and finite.min() < levels[0])
    return {(True, True): "both", (True, False): "max", (False, True): "min"}.get((over, under), "neither")


def _ticks(logz: bool) -> Any:
    return LogLocator(subs=(1.0, 2.0, 5.0)) if logz else MaxNLocator(8)


def _masked(z: np.ndarray, logz: bool) -> np.ma.MaskedArray:
    bad = ~np.isfinite(z) | ((z <= 0) if logz else False)
    return np.ma.masked_array(np.where(bad, np.nan, z), mask=bad)


def _uniform(v: np.ndarray) -> bool:
    d = np.diff(v)
    return bool(np.all(d > 0) and np.allclose(d, d[0], rtol=1e-6, atol=0))


def draw_surface(ax: Axes, xs: np.ndarray, ys: np.ndarray, z: np.ndarray, kind: str, norm: Normalize,
                 levels: np.ndarray, mark_origin: bool = True) -> Any:
    """Draw one panel on ``ax`` (a 3D axes for ``surface3d``); returns the colour mappable."""
    _check_kind(kind)
    logz = isinstance(norm, LogNorm)
    zm = _masked(z, logz)
    X, Y = np.meshgrid(xs, ys)  # [ny, nx] each, matching Z
    cmap = matplotlib.colormaps[style.CMAP].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))  # NaN: transparent gap
    extend = _extend([z], levels) if kind == "contourf" else "neither"
    mappable: Any
    if kind == "contour":
        mappable = ax.contour(X, Y, zm, levels=levels, norm=norm, cmap=cmap, linewidths=1.0)
        ax.clabel(mappable, mappable.levels[::2], inline=True, fontsize=7, fmt="%.3g")
    elif kind == "contourf":
        mappable = ax.contourf(X, Y, zm, levels=levels, norm=norm, cmap=cmap, extend=extend)
        ax.contour(X, Y, zm, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    elif kind == "heatmap":
        if _uniform(xs) and _uniform(ys):
            dx, dy = (xs[1] - xs[0]) / 2, (ys[1] - ys[0]) / 2
            mappable = ax.imshow(zm, origin="lower", extent=(xs[0] - dx, xs[-1] + dx, ys[0] - dy, ys[-1] + dy),
                                 aspect="auto", norm=norm, cmap=cmap, interpolation="nearest")
        else:
            mappable = ax.pcolormesh(xs, ys, zm, shading="nearest", norm=norm, cmap=cmap)
    else:
        ax3d: Any = ax  # an Axes3D (mpl_toolkits.mplot3d)
        mappable = ax3d.plot_surface(X, Y, zm, norm=norm, cmap=cmap, linewidth=0, antialiased=True,
                                     rcount=min(200, ys.size), ccount=min(200, xs.size))
        ax3d.set_zlim(norm.vmin, norm.vmax)
    if mark_origin and kind != "surface3d" and xs[0] <= 0 <= xs[-1] and ys[0] <= 0 <= ys[-1]:
        ax.plot([0], [0], marker="+", color="white" if kind != "contour" else "black", ms=9, mew=1.5, zorder=5)
    if kind == "surface3d":
        ax.set_xlabel("α")
        ax.set_ylabel("β")
    else:
        ax.set_xlabel(style.label("x"))
        ax.set_ylabel(style.label("y"))
        ax.grid(False)
    return mappable


def _add_axes(fig: Figure, kind: str, nrows: int, ncols: int, index: int) -> Axes:
    return fig.add_subplot(nrows, ncols, index, projection="3d" if kind == "surface3d" else None)


def plot_surface(xs: Any, ys: Any, z: Any, kind: str = "contourf", *, metric: str = "loss",  # noqa: PLR0913 (public keywords)
                 levels: int | Sequence[float] = 20, logz: bool = False, vmin: float | None = None,
                 vmax: float | None = None, title: str | None = None, figsize: tuple[float, float] = (5.5, 4.5),
                 dpi: int = style.DPI, save: str | os.PathLike | None = None) -> Figure:
    """One surface ``Z[ny, nx]`` over ``xs [nx]`` x ``ys [ny]`` as a panel with a colour bar.

    Args:
        kind: ``contour`` (labelled lines), ``contourf`` (filled), ``heatmap`` or ``surface3d``.
        levels: number of contour levels, or the levels themselves.
        logz: log colour scale and log-spaced levels (values <= 0 become gaps).
        save: optional ``.png``/``.pdf``/``.svg`` path.
    Returns the ``Figure`` (2 axes: the panel and its colour bar).
    """
    _check_kind(kind)
    xs, ys, z = check_grid(xs, ys, z)
    with style.context():
        norm, lv = scale([z], levels, logz, vmin, vmax)
        fig = style.new_figure(*figsize, dpi=dpi)
        ax = _add_axes(fig, kind, 1, 1, 1)
        m = draw_surface(ax, xs, ys, z, kind, norm, lv)
        fig.colorbar(m, ax=ax, label=style.label(metric), shrink=0.8 if kind == "surface3d" else 1.0,
                     extend=_extend([z], lv), format="%.3g", ticks=_ticks(logz))
        if title:
            ax.set_title(title)
    return style.finish(fig, save, dpi)


def plot_surface_file(src: Any, kind: str = "contourf", metric: str = "loss", **kwargs: Any) -> Figure:
    """:func:`plot_surface` from a result: a ``.h5`` (Li et al.) or ``.npz`` path, a
    ``read_li_h5`` dict, an object with ``.xs/.ys/.values`` (``scans.Surface``) or ``(xs, ys, Z)``.
    Keyword arguments go to :func:`plot_surface`; the title defaults to the file name."""
    _check_kind(kind)
    xs, ys, z = as_surface(src, metric)
    if "title" not in kwargs and isinstance(src, (str, os.PathLike)):
        kwargs["title"] = os.path.basename(os.fspath(src))
    return plot_surface(xs, ys, z, kind, metric=metric, **kwargs)


def plot_surfaces(surfaces: Mapping[str, Any], kind: str = "contourf", *, metric: str = "loss",
                  levels: int | Sequence[float] = 20, logz: bool = False, vmin: float | None = None,
                  vmax: float | None = None, title: str | None = None, panel_size: float = 3.6,
                  dpi: int = style.DPI, save: str | os.PathLike | None = None) -> Figure:
    """Several surfaces (e.g. masks ``all``/``top``/``bottom``) side by side on one colour scale.

    ``surfaces`` maps a panel label to any surface source (see :func:`plot_surface_file`). All
    panels share the norm, the contour levels (and for ``surface3d`` the z range) and one colour
    bar, so equal colours mean equal loss. The figure has ``len(surfaces) + 1`` axes.
    """
    _check_kind(kind)
    if not isinstance(surfaces, Mapping) or not surfaces:
        raise ValueError("surfaces must be a non-empty dict label -> surface (path, object or (xs, ys, Z)).")
    grids = {name: as_surface(src, metric) for name, src in surfaces.items()}
    n = len(grids)
    with style.context():
        norm, lv = scale([g[2] for g in grids.values()], levels, logz, vmin, vmax)
        fig = style.new_figure(panel_size * n + 0.9, panel_size + 0.5, dpi=dpi)
        axes: list[Any] = []
        mappable: Any = None
        for i, (name, (xs, ys, z)) in enumerate(grids.items()):
            ax = _add_axes(fig, kind, 1, n, i + 1)
            m = draw_surface(ax, xs, ys, z, kind, norm, lv)
            if kind != "surface3d" and i > 0:
                ax.set_ylabel("")
            finite = z[np.isfinite(z)]
            ax.set_title(f"{name}\n(min {finite.min():.3g}, max {finite.max():.3g})" if finite.size else name)
            axes.append(ax)
            mappable = mappable or m
        fig.colorbar(mappable, ax=axes, label=style.label(metric), shrink=0.85 if kind == "surface3d" else 1.0,
                     extend=_extend([g[2] for g in grids.values()], lv), format="%.3g", ticks=_ticks(logz))
        if title:
            fig.suptitle(title)
    return style.finish(fig, save, dpi)
