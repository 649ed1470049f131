"""Summaries for the study: means with 95% t-intervals, paired differences with paired tests, and
a verdict written from the numbers.

For n paired seeds with differences d_i: mean d̄, 95% interval d̄ ± t_{0.975, n−1}·s_d/√n, and the
paired t-test p-value (``scipy.stats.ttest_rel``) with the Wilcoxon signed-rank p-value beside it
(with 5 seeds its smallest two-sided p is 0.0625, so it can never reach 0.05). No correction for
the several comparisons is made; the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["COMPARISONS", "mean_ci", "paired", "summarize", "verdict"]

#: (arm, baseline) pairs reported as paired differences arm − baseline.
COMPARISONS = (
    ("guided", "uniform"), ("guided", "reversed"), ("guided", "permuted"), ("guided", "none"),
    ("unit", "guided"), ("unit", "uniform"), ("gaussian", "uniform"), ("fisher_l2", "uniform"),
    ("uniform", "none"),
)
ALPHA = 0.05


def _t(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std and 95% t-interval of ``values``."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "lo": None, "hi": None}
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = _t(n) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": m, "std": sd, "lo": m - half if n > 1 else None, "hi": m + half if n > 1 else None}


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Paired difference a − b: mean, 95% interval, paired t-test and Wilcoxon p-values."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError("paired samples must have the same length.")
    d = [x - y for x, y in zip(a, b)]
    out = mean_ci(d)
    out["wins"] = sum(1 for x in d if x > 0)
    out["losses"] = sum(1 for x in d if x < 0)
    if len(d) < 2 or all(x == d[0] for x in d):
        out["p_t"] = 1.0 if all(x == 0 for x in d) else None
        out["p_wilcoxon"] = None
        return out
    out["p_t"] = float(stats.ttest_rel(a, b).pvalue)
    try:
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue) if any(d) else None
    except ValueError:
        out["p_wilcoxon"] = None
    return out


def summarize(runs: Sequence[Mapping[str, Any]], metric: str = "test_acc") -> dict[str, Any]:
    """``{task: {size: {"arms": {arm: mean_ci}, "paired": {"a-b": paired}}}}`` over seeds; pairs
    use the seeds both arms finished."""
    out: dict[str, Any] = {}
    keyed: dict[tuple[str, int, str], dict[int, float]] = {}
    for r in runs:
        keyed.setdefault((r["task"], int(r["size"]), r["arm"]), {})[int(r["seed"])] = float(r[metric])
    for (task, size, arm), by_seed in sorted(keyed.items()):
        cell = out.setdefault(task, {}).setdefault(str(size), {"arms": {}, "paired": {}})
        cell["arms"][arm] = {**mean_ci([by_seed[s] for s in sorted(by_seed)]),
                             "values": [by_seed[s] for s in sorted(by_seed)]}
    for task, sizes in out.items():
        for size, cell in sizes.items():
            for a, b in COMPARISONS:
                va, vb = keyed.get((task, int(size), a)), keyed.get((task, int(size), b))
                if not va or not vb:
                    continue
                seeds = sorted(set(va) & set(vb))
                cell["paired"][f"{a}-{b}"] = paired([va[s] for s in seeds], [vb[s] for s in seeds])
    return out


def _cmp(p: Mapping[str, Any] | None) -> str:
    if p is None or p.get("mean") is None:
        return "n/a"
    pt = p.get("p_t")
    if pt is not None and pt < ALPHA:
        return "better" if p["mean"] > 0 else "worse"
    return "no significant difference"


def _pts(p: Mapping[str, Any]) -> str:
    lo, hi = p.get("lo"), p.get("hi")
    ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None and hi is not None else ""
    pt = p.get("p_t")
    head = f"{100 * p['mean']:+.1f} pts{ci}"
    return f"{head}, paired t p = {pt:.3g}" if pt is not None else head


def verdict(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Per task: the answer to 'does guided beat uniform / its permuted and reversed controls, and at
    which sizes', decided by the paired t-test at α = 0.05, and one sentence per question."""
    out: dict[str, Any] = {}
    for task, sizes in summary.items():
        q: dict[str, Any] = {}
        for base in ("uniform", "permuted", "reversed"):
            per = {size: cell["paired"].get(f"guided-{base}") for size, cell in sizes.items()}
            outcome = {size: _cmp(p) for size, p in per.items()}
            better = [s for s, o in outcome.items() if o == "better"]
            worse = [s for s, o in outcome.items() if o == "worse"]
            details = "; ".join(f"n = {s}: {_pts(p)}" for s, p in per.items() if p is not None)
            if better and not worse:
                head = f"Yes, at training size {', '.join(better)}"
            elif worse and not better:
                head = f"No: guided dropout is worse than {base} at size {', '.join(worse)}"
            elif better and worse:
                head = f"Mixed: better at {', '.join(better)}, worse at {', '.join(worse)}"
            else:
                head = "No significant difference at any size"
            q[f"beats_{base}"] = {"sizes_better": better, "sizes_worse": worse, "outcome": outcome,
                                  "sentence": f"Does guided dropout beat {base}? {head} ({details})."}
        out[task] = q
    return out
