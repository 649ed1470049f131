"""Estimates with intervals, and rows of surfaces with one colour scale per row.

* :func:`plot_intervals`: a forest plot, one row per labelled estimate with its interval (e.g. the
  log-ratio endpoints of the Fisher-sharpness study, on a ratio axis), a reference line at parity;
* :func:`plot_surface_rows`: rows of surface panels (e.g. ours above the paper's), each row on its
  own shared colour scale, so equal colours mean equal loss within a row.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from figures import style
from figures.sources import as_surface
from figures.surfaces import _extend, draw_surface, scale


def plot_intervals(rows: Sequence[Mapping[str, Any]], *, log: bool = True, reference: float = 1.0,
                   xlabel: str = "ratio top / control", title: str | None = None, dpi: int = style.DPI,
                   save: str | os.PathLike | None = None) -> Figure:
    """Forest plot. ``rows``: dicts with ``label``, ``estimate``, ``interval`` (lo, hi) and optional
    ``extra`` intervals ``{name: (lo, hi)}`` drawn thinner beneath (e.g. data-only, seeds-only).
    ``log``: a log x axis (for ratios). Returns a ``Figure`` with one axes."""
    if not rows:
        raise ValueError("no estimates to plot.")
    with style.context():
        fig = style.new_figure(6.4, 0.55 * len(rows) + 1.3, dpi=dpi)
        ax = fig.add_subplot()
        y = np.arange(len(rows))[::-1]
        for yi, row in zip(y, rows):
            lo, hi = row["interval"]
            ax.plot([lo, hi], [yi, yi], color=style.color(0), lw=2.5, solid_capstyle="butt")
            ax.plot([row["estimate"]], [yi], "o", color=style.color(0), ms=6)
            for j, (name, (elo, ehi)) in enumerate((row.get("extra") or {}).items()):
                off = -0.18 * (j + 1)
                ax.plot([elo, ehi], [yi + off, yi + off], color=style.color(j + 1), lw=1.2,
                        label=name if yi == y[0] else None)
        ax.axvline(reference, color="0.3", lw=0.9, ls="--")
        ax.set_yticks(y, [r["label"] for r in rows])
        if log:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel(xlabel)
        if any(r.get("extra") for r in rows):
            ax.legend(fontsize="small", loc="best")
        if title:
            ax.set_title(title)
    return style.finish(fig, save, dpi)


def plot_surface_rows(rows: Mapping[str, Mapping[str, Any]], *, kind: str = "contourf", levels: int = 16,
                      metric: str = "loss", title: str | None = None, panel_size: float = 3.2, dpi: int = style.DPI,
                      save: str | os.PathLike | None = None) -> Figure:
    """``rows``: row label -> (panel label -> any surface source, see :func:`figures.sources.as_surface`).
    Each row shares one colour norm and levels, with its own colour bar. Panel titles give min/max."""
    if not rows or any(not r for r in rows.values()):
        raise ValueError("rows must map each row label to a non-empty dict of surfaces.")
    ncols = max(len(r) for r in rows.values())
    with style.context():
        fig = style.new_figure(panel_size * ncols + 1.0, (panel_size + 0.45) * len(rows) + 0.3, dpi=dpi)
        for i, (row_label, panels) in enumerate(rows.items()):
            grids = {name: as_surface(src, metric) for name, src in panels.items()}
            norm, lv = scale([g[2] for g in grids.values()], levels)
            axes, mappable = [], None
            for j, (name, (xs, ys, z)) in enumerate(grids.items()):
                ax = fig.add_subplot(len(rows), ncols, i * ncols + j + 1)
                m = draw_surface(ax, xs, ys, z, kind, norm, lv)
                finite = z[np.isfinite(z)]
                ax.set_title(f"{row_label}: {name}\n(min {finite.min():.3g}, max {finite.max():.3g})", fontsize="small")
                if j:
                    ax.set_ylabel("")
                if i < len(rows) - 1:
                    ax.set_xlabel("")
                axes.append(ax)
                mappable = mappable or m
            fig.colorbar(mappable, ax=axes,  # type: ignore[arg-type]  # set by the loop (≥ 1 panel)
                         label=style.label(metric), extend=_extend([g[2] for g in grids.values()], lv),
                         format="%.3g")
        if title:
            fig.suptitle(title)
    return style.finish(fig, save, dpi)
