"""Mask-comparison bars: one panel per metric, bar groups per (granularity, fraction), one bar
per mask kind (top / random / bottom), error bars = seed standard deviation."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from figures import style

KIND_ORDER = ("top", "random", "bottom")


def plot_mask_metrics(masks: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], *, ncols: int = 3,
                      logy: bool = False, title: str | None = None, dpi: int = style.DPI,
                      save: str | os.PathLike | None = None) -> Figure:
    """Bars of ``masks[key]["metrics"][metric]["mean"]`` ± ``["std"]``.

    Args:
        masks: key -> ``{"which", "granularity", "fraction", "metrics": {metric: {"mean", "std"}}}``
            (the ``masks`` section of a Fisher-sharpness ``result.json``).
        metrics: metric names, one panel each.
    Returns a ``Figure`` with ``len(metrics)`` axes.
    """
    if not masks:
        raise ValueError("no masks to plot.")
    missing = [m for m in metrics if not any(m in e.get("metrics", {}) for e in masks.values())]
    if missing:
        raise ValueError(f"metrics {missing} are not in the result; available: "
                         f"{sorted(next(iter(masks.values()))['metrics'])}.")
    groups = sorted({(e["granularity"], float(e["fraction"])) for e in masks.values()})
    kinds = [k for k in KIND_ORDER if any(e["which"] == k for e in masks.values())]
    index = {(e["granularity"], float(e["fraction"]), e["which"]): e for e in masks.values()}
    ncols = min(ncols, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    with style.context():
        fig = style.new_figure(3.4 * ncols, 2.8 * nrows + 0.4, dpi=dpi)
        width = 0.8 / len(kinds)
        for i, metric in enumerate(metrics):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            x = np.arange(len(groups))
            for j, kind in enumerate(kinds):
                means, stds = [], []
                for g, f in groups:
                    stat = index.get((g, f, kind), {}).get("metrics", {}).get(metric, {})
                    means.append(stat.get("mean", np.nan))
                    stds.append(stat.get("std", 0.0))
                ax.bar(x + (j - (len(kinds) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                       color=style.color(j), label=kind)
            ax.set_xticks(x, [f"{g}\n{f:g}" for g, f in groups])
            ax.set_title(style.label(metric), fontsize="medium")
            if logy:
                ax.set_yscale("log")
            if i == 0:
                ax.legend(fontsize="small")
        if title:
            fig.suptitle(title)
    return style.finish(fig, save, dpi)
