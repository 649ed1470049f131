"""Plain-language verdicts from per-seed metric values.

The flagship question: is perturbing the top-Fisher parameters *sharper* than perturbing random
or bottom-Fisher ones of matched size? For each sharpness metric we compare the mean over direction
seeds of the top-Fisher mask against each baseline mask, and call a gap *significant* only when it
is larger than the seed spread: |mean_top − mean_base| > std_top + std_base (sample std over
seeds; 0 for a single value). Metrics where *smaller* means sharper (basin width) are flipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

# metric name -> True when larger values mean a sharper loss
SHARPER_WHEN_LARGER: dict[str, bool] = {
    "curvature": True,
    "basin_width": False,
    "avg_sharpness": True,
    "worst_sharpness": True,
    "loss_at_edge": True,
    "top_eigenvalue": True,
    "trace": True,
    "trace_per_dim": True,
}


@dataclass
class Stat:
    """Mean and sample standard deviation of a metric over direction seeds."""

    values: list[float]
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        vals = [float(v) for v in values]
        finite = [v for v in vals if math.isfinite(v)]
        n = len(finite)
        mean = sum(finite) / n if n else math.nan
        std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else 0.0
        return cls(vals, mean, std, n)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Comparison:
    """Top-Fisher against one baseline for one metric."""

    metric: str
    baseline: str
    top_mean: float
    base_mean: float
    ratio: float  # top / baseline, oriented so that > 1 means top is sharper
    sharper: bool  # top is sharper than the baseline (by the mean)
    significant: bool  # the gap exceeds the summed seed spread

    def sentence(self) -> str:
        word = "sharper" if self.sharper else "flatter"
        strength = "a gap larger than the seed spread" if self.significant else "within the seed spread"
        return (
            f"{self.metric}: top-Fisher is {word} than {self.baseline} "
            f"({self.top_mean:.4g} vs {self.base_mean:.4g}, ×{self.ratio:.3g}; {strength})"
        )


def compare(metric: str, top: Stat, base: Stat, baseline: str) -> Comparison:
    """Compare the top-Fisher statistic with a baseline's for one metric."""
    larger = SHARPER_WHEN_LARGER.get(metric, True)
    gap = top.mean - base.mean
    sharper = gap > 0 if larger else gap < 0
    significant = math.isfinite(gap) and abs(gap) > (top.std + base.std) and (top.n > 1 or base.n > 1 or top.std == base.std == 0)
    if larger:
        ratio = top.mean / base.mean if base.mean not in (0.0,) else math.inf
    else:
        ratio = base.mean / top.mean if top.mean not in (0.0,) else math.inf
    return Comparison(metric, baseline, top.mean, base.mean, ratio, bool(sharper), bool(significant))


def verdict(stats: Mapping[str, Mapping[str, Stat]], metrics: Sequence[str] | None = None) -> dict:
    """Verdict for one (fraction, granularity) group.

    Args:
        stats: ``stats[which][metric]`` with ``which`` in {"top", "random", "bottom"}.
        metrics: metrics to judge (default: those present for "top").

    Returns:
        dict with ``comparisons`` (list of dicts), ``sharper_than_random`` / ``sharper_than_bottom``
        (the fraction of metrics where top is sharper with a significant gap) and ``summary``.
    """
    if "top" not in stats:
        raise ValueError("verdict needs statistics for the 'top' mask.")
    metrics = list(metrics or stats["top"].keys())
    comps: list[Comparison] = []
    for baseline in ("random", "bottom"):
        if baseline not in stats:
            continue
        for m in metrics:
            if m in stats["top"] and m in stats[baseline]:
                comps.append(compare(m, stats["top"][m], stats[baseline][m], baseline))
    out: dict = {"comparisons": [asdict(c) | {"sentence": c.sentence()} for c in comps]}
    lines = []
    for baseline in ("random", "bottom"):
        mine = [c for c in comps if c.baseline == baseline]
        if not mine:
            continue
        wins = sum(c.sharper and c.significant for c in mine)
        losses = sum((not c.sharper) and c.significant for c in mine)
        out[f"sharper_than_{baseline}"] = wins / len(mine)
        if wins > len(mine) / 2:
            answer = "yes"
        elif losses > len(mine) / 2:
            answer = "no, the opposite"
        elif wins > losses:
            answer = "partly"
        else:
            answer = "no clear difference"
        out[f"answer_vs_{baseline}"] = answer
        lines.append(
            f"Sharper than {baseline}? {answer}: top-Fisher is significantly sharper on {wins} of "
            f"{len(mine)} metrics and significantly flatter on {losses}."
        )
    out["summary"] = " ".join(lines)
    return out
