"""Figures for guided dropout: the test metric against training size per arm, and the rates per site.

Both read a guided-dropout result (the object, its ``to_dict()``, or ``result.json``); nothing is
recomputed.
"""

from __future__ import annotations

import os
from typing import Any

from matplotlib.figure import Figure

from figures import style

__all__ = ["ARM_LABELS", "plot_metric_vs_size", "plot_site_rates"]

ARM_LABELS = {
    "none": "no dropout", "pretrain": "pretrain rates (paper baseline)", "uniform": "uniform at guided's mean",
    "guided": "guided (paper)", "reversed": "reversed control", "permuted": "permuted control",
    "gaussian": "Gaussian (pretrain rates)", "fisher_l2": "Fisher-L2 pull + pretrain rates",
    "unit": "unit-granularity guided",
}
_ORDER = tuple(ARM_LABELS)


def plot_metric_vs_size(result: Any, metric_label: str = "test accuracy (fraction)",
                        save: str | os.PathLike | None = None) -> Figure:
    """One panel per task: mean test metric against training size for each arm, with 95% t-intervals
    over seeds as error bars (arms offset slightly along x so the bars do not overlap)."""
    from landscape.util.results import as_dict  # deferred: `import figures` stays free of torch

    res = as_dict(result)
    summary = res["summary"]
    with style.context():
        fig = style.new_figure(5.2 * max(1, len(summary)), 4.0)
        axes = fig.subplots(1, max(1, len(summary)), squeeze=False)[0]
        for ax, (task, sizes) in zip(axes, summary.items()):
            xs = sorted(int(s) for s in sizes)
            arms = [a for a in _ORDER if any(a in sizes[str(s)]["arms"] for s in xs)]
            for i, arm in enumerate(arms):
                pts = [(s, sizes[str(s)]["arms"][arm]) for s in xs if arm in sizes[str(s)]["arms"]]
                shift = 1.0 + 0.025 * (i - (len(arms) - 1) / 2)
                x = [s * shift for s, _ in pts]
                y = [c["mean"] for _, c in pts]
                err = [[c["mean"] - c["lo"] if c["lo"] is not None else 0 for _, c in pts],
                       [c["hi"] - c["mean"] if c["hi"] is not None else 0 for _, c in pts]]
                bold = arm in ("guided", "uniform", "permuted")
                ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, color=style.color(i),
                            lw=2.2 if bold else 1.2, ls="-" if bold else "--", label=ARM_LABELS.get(arm, arm))
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(s) for s in xs])
            ax.set_xlabel("training examples (train + validation)")
            ax.set_ylabel(metric_label)
            n = max((c["n"] for s in xs for c in sizes[str(s)]["arms"].values()), default=0)
            ax.set_title(f"{task}: mean over {n} seeds, 95% t-intervals")
        axes[0].legend(loc="best", fontsize=8)
    return style.finish(fig, save)


def plot_site_rates(result: Any, save: str | os.PathLike | None = None) -> Figure:
    """Bars of the guided, reversed, uniform (guided's mean) and pretrain rate at every site, and the
    site's Fisher score (log scale) on a second panel."""
    from landscape.util.results import as_dict  # deferred: `import figures` stays free of torch

    res = as_dict(result)
    rates = res["rates"]
    sites = list(rates["guided"])
    with style.context():
        fig = style.new_figure(max(6.0, 0.55 * len(sites) + 2), 5.5)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
        width = 0.2
        arms = (("guided", "guided"), ("reversed", "reversed control"), ("uniform", "uniform at guided's mean"),
                ("pretrain", "pretrain"))
        for j, (key, label) in enumerate(arms):
            vals = [rates.get(key, {}).get(s, 0.0) for s in sites]
            top.bar([i + (j - 1.5) * width for i in range(len(sites))], vals, width, label=label,
                    color=style.color(j))
        top.set_ylabel("dropout rate p")
        top.set_title(f"rates per site ({rates.get('mapping', '')}, p from {rates.get('p_max')} to "
                      f"{rates.get('p_min')})")
        top.set_ylim(0, 1.4 * max([max(rates.get(k, {}).values(), default=0.0) for k, _ in arms] + [1e-3]))
        top.legend(fontsize=8, ncol=2, loc="upper center")
        bottom.bar(range(len(sites)), [rates["scores"][s] for s in sites], color=style.color(7))
        bottom.set_yscale("log")
        bottom.set_ylabel(f"site score\n({rates.get('score_method', '')})")
        bottom.set_xticks(range(len(sites)), sites, rotation=60, ha="right", fontsize=8)
    return style.finish(fig, save)
