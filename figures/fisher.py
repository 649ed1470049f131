"""Fisher scores by tensor and by layer: sorted horizontal bars on a log scale."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures import style
from figures.sources import float_dict


def group_by_layer(per_tensor: Mapping[str, float], reduce: str = "mean") -> dict[str, float]:
    """Reduce per-tensor scores to per-layer scores (``mean``/``sum``/``max`` of the tensors' values;
    the mean is over tensors, not weighted by their sizes). Groups are
    :func:`landscape.params.layer_group`'s, in network order."""
    from landscape.params import layer_group, layer_order  # deferred: `import figures` stays free of torch

    ops: dict[str, Any] = {"mean": np.mean, "sum": np.sum, "max": np.max}
    if reduce not in ops:
        raise ValueError(f"unknown reduce {reduce!r}: use one of {', '.join(ops)}.")
    groups: dict[str, list[float]] = {}
    for name, v in float_dict(per_tensor, "per_tensor").items():
        groups.setdefault(layer_group(name), []).append(v)
    return {k: float(ops[reduce](groups[k])) for k in sorted(groups, key=layer_order)}


def _positive(values: np.ndarray) -> np.ndarray:
    """Values for a log axis: non-positive ones are drawn at a floor two decades under the minimum."""
    pos = values[values > 0]
    floor = pos.min() / 100 if pos.size else 1e-12
    return np.where(values > 0, values, floor)


def draw_bars(ax: Axes, scores: Mapping[str, float], xlabel: str, max_bars: int = 40, sort: bool = True,
              log: bool = True, color: str = style.PALETTE[0]) -> None:
    """Horizontal bars, largest on top. With more than ``max_bars`` entries, the top and bottom
    ``max_bars // 2`` are shown and the number left out is written between them."""
    items = list(scores.items())
    if sort:
        items.sort(key=lambda kv: kv[1], reverse=True)
    omitted = 0
    if len(items) > max_bars:
        half = max(1, max_bars // 2)
        omitted = len(items) - 2 * half
        items = items[:half] + [("…", np.nan)] + items[-half:]
    names = [k for k, _ in items]
    vals = np.array([v for _, v in items], dtype=np.float64)
    finite = np.isfinite(vals)
    widths = np.zeros_like(vals)
    widths[finite] = _positive(vals[finite]) if log else vals[finite]
    y = np.arange(len(names))[::-1]
    ax.barh(y, widths, color=color, height=0.75)
    ax.set_yticks(y, names, fontsize=7 if len(names) > 20 else 9)
    if omitted:
        ax.text(0.5, y[names.index("…")], f"… {omitted} more …", transform=ax.get_yaxis_transform(),
                ha="center", va="center", fontsize=8, color="0.3")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel + (", log scale" if log else ""))
    ax.grid(axis="y", visible=False)
    ax.set_ylim(-0.7, len(names) - 0.3)


def plot_fisher(per_tensor: Mapping[str, float] | Any, per_layer: Mapping[str, float] | None = None, *,
                max_tensors: int = 40, log: bool = True, sort_layers: bool = False, title: str | None = None,
                dpi: int = style.DPI, save: str | os.PathLike | None = None) -> Figure:
    """Fisher scores per tensor (sorted, log scale) and, when given, per layer.

    Args:
        per_tensor: dict tensor name -> score (e.g. ``FisherDiagonal.per_tensor()``), or an object
            with a ``per_tensor()`` method.
        per_layer: dict layer -> score, or ``"auto"`` to group ``per_tensor`` with
            :func:`group_by_layer`; layers keep their order unless ``sort_layers``.
        max_tensors: show at most this many tensors (top and bottom halves).
    Returns a ``Figure`` with 1 axes, or 2 with ``per_layer``.
    """
    tensors = float_dict(per_tensor, "per_tensor")
    layers = None
    if per_layer is not None:
        layers = group_by_layer(tensors) if isinstance(per_layer, str) and per_layer == "auto" \
            else float_dict(per_layer, "per_layer")
    n_bars = min(len(tensors), max_tensors + 1)
    height = max(3.0, 0.16 * n_bars + 1.2)
    with style.context():
        fig = style.new_figure(11.0 if layers else 6.5, height, dpi=dpi)
        if layers:
            ax_t, ax_l = fig.subplots(1, 2, width_ratios=[1.3, 1.0])
        else:
            ax_t, ax_l = fig.add_subplot(), None
        draw_bars(ax_t, tensors, style.label("fisher"), max_bars=max_tensors, log=log)
        ax_t.set_title(f"per tensor ({len(tensors)})")
        if ax_l is not None and layers:
            draw_bars(ax_l, layers, style.label("fisher"), max_bars=10**6, sort=sort_layers, log=log,
                      color=style.PALETTE[1])
            ax_l.set_title(f"per layer ({len(layers)})")
        if title:
            fig.suptitle(title)
    return style.finish(fig, save, dpi)
