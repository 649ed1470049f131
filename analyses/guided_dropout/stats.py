"""The study's statistics, decided before the data.

For n paired seeds with differences d_i = a_i − b_i (test accuracy, fractions):

* mean d̄, SD s_d, 95% interval d̄ ± t_{0.975, n−1}·s_d/√n, paired t-test p (``scipy.stats.ttest_rel``);
* **minimum detectable effect** at power 1 − β = 0.8 and two-sided α = 0.05:
  MDE = (t_{1−α/2, n−1} + t_{1−β, n−1})·s_d/√n (the usual t approximation to the noncentral-t power);
* **TOST equivalence** with margin δ (2 points by default): p_TOST = max(p₋, p₊), with p₋ the
  one-sided t-test of d̄ > −δ and p₊ of d̄ < +δ; equivalent when p_TOST < α (the 90% interval
  lies inside ±δ);
* **Holm** over the primary family: the two primary contrasts (:data:`PRIMARY`) at every task and
  size, p-values sorted p₍₁₎ ≤ … ≤ p₍ₘ₎, adjusted p₍ᵢ₎ = max_{j≤i} min(1, (m − j + 1)·p₍ⱼ₎).
  Every other contrast (:data:`EXPLORATORY`) is labelled exploratory and read at its raw p.

Verdict words come from the numbers: "detected" (adjusted p < α), else "no effect larger than δ"
(TOST p < α), else "inconclusive at this power" (always, below three seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ALPHA", "EXPLORATORY", "MIN_SEEDS", "POWER", "PRIMARY", "contrast", "decide", "holm", "mde", "mean_ci",
           "power_status", "seeds_needed", "summarize", "tost", "verdicts"]

ALPHA = 0.05
POWER = 0.8
#: the primary family, named before the data: guided against the same amount placed evenly, and
#: against the same rates placed at random.
PRIMARY = (("guided", "uniform"), ("guided", "permuted"))
#: every other reported contrast (raw p, labelled exploratory).
EXPLORATORY = (
    ("guided", "pretrain"), ("guided", "reversed"), ("uniform", "pretrain"), ("gaussian", "pretrain"),
    ("fisher_l2", "pretrain"), ("unit", "guided"), ("pretrain", "none"), ("guided", "none"),
)


def _t(q: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample SD and 95% t-interval of ``values`` (``lo``/``hi`` None below two values)."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "lo": None, "hi": None}
    m = sum(values) / n
    if n < 2:
        return {"n": n, "mean": m, "std": 0.0, "lo": None, "hi": None}
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = _t(0.975, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": m, "std": sd, "lo": m - half, "hi": m + half}


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """MDE = (t_{1−α/2, n−1} + t_{power, n−1})·sd/√n of a paired t-test with n pairs (None below 2)."""
    if n < 2:
        return None
    return (_t(1 - alpha / 2, n - 1) + _t(power, n - 1)) * sd / math.sqrt(n)


def seeds_needed(sd: float, target: float, alpha: float = ALPHA, power: float = POWER, cap: int = 10_000) -> int:
    """The fewest pairs n ≥ 2 whose :func:`mde` with paired SD ``sd`` is at most ``target`` (``cap`` if none)."""
    for n in range(2, cap + 1):
        m = mde(sd, n, alpha, power)
        if m is not None and m <= target:
            return n
    return cap


def tost(d: Sequence[float], margin: float) -> float | None:
    """Two one-sided t-tests of |mean(d)| < ``margin``: p = max(p₋, p₊) (None below two values)."""
    from scipy import stats

    if len(d) < 2:
        return None
    if all(x == d[0] for x in d):  # no spread: equivalent exactly when the constant lies inside
        return 0.0 if abs(d[0]) < margin else 1.0
    lower = float(stats.ttest_1samp(d, -margin, alternative="greater").pvalue)
    upper = float(stats.ttest_1samp(d, margin, alternative="less").pvalue)
    return max(lower, upper)


def contrast(a: Sequence[float], b: Sequence[float], margin: float, primary: bool = False) -> dict[str, Any]:
    """Paired a − b: mean, SD, 95% interval, wins/losses, paired t p, MDE, TOST p; ``p_holm`` is set by :func:`holm`."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError("paired samples must have the same length.")
    d = [x - y for x, y in zip(a, b)]
    out = mean_ci(d)
    out.update(wins=sum(1 for x in d if x > 0), losses=sum(1 for x in d if x < 0), primary=primary, margin=margin,
               mde=mde(out["std"], len(d)) if d else None, p_tost=tost(d, margin))
    if len(d) < 2 or all(x == d[0] for x in d):
        out["p_t"] = 1.0 if d and all(x == 0 for x in d) else None
    else:
        out["p_t"] = float(stats.ttest_rel(a, b).pvalue)
    out["p_holm"] = None
    return out


def holm(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm-adjusted p-values of a family (None stays None and does not count in m)."""
    named = sorted(((p, k) for k, p in pvalues.items() if p is not None), key=lambda x: x[0])
    m = len(named)
    out: dict[str, float | None] = {k: None for k in pvalues}
    running = 0.0
    for j, (p, k) in enumerate(named):
        running = max(running, min(1.0, (m - j) * p))
        out[k] = running
    return out


#: fewest paired seeds for any verdict but "inconclusive": two differences can agree by chance
#: (accuracies are discrete), giving a zero SD, a zero MDE and a spurious equivalence.
MIN_SEEDS = 3


def decide(c: Mapping[str, Any], alpha: float = ALPHA) -> str:
    """The verdict word of one contrast: "detected", "no effect larger than δ" or "inconclusive at this power"
    (always the last below :data:`MIN_SEEDS` pairs)."""
    if c.get("n", 0) < MIN_SEEDS:
        return "inconclusive at this power"
    p = c.get("p_holm") if c.get("primary") else c.get("p_t")
    if p is not None and p < alpha:
        return "detected"
    if c.get("p_tost") is not None and c["p_tost"] < alpha:
        return f"no effect larger than {100 * c['margin']:g} points"
    return "inconclusive at this power"


def summarize(runs: Sequence[Mapping[str, Any]], margin: float = 0.02, metric: str = "test_acc") -> dict[str, Any]:
    """``{task: {size: {"arms": {arm: mean_ci + values}, "paired": {"a-b": contrast}}}}`` over seeds.

    Pairs use the seeds both arms finished; the primary contrasts get Holm-adjusted p over every task
    and size (``p_holm``) and every contrast its verdict word (``decision``)."""
    out: dict[str, Any] = {}
    keyed: dict[tuple[str, int, str], dict[int, float]] = {}
    for r in runs:
        keyed.setdefault((r["task"], int(r["size"]), r["arm"]), {})[int(r["seed"])] = float(r[metric])
    for (task, size, arm), by_seed in sorted(keyed.items()):
        cell = out.setdefault(task, {}).setdefault(str(size), {"arms": {}, "paired": {}})
        vals = [by_seed[s] for s in sorted(by_seed)]
        cell["arms"][arm] = {**mean_ci(vals), "values": vals}
    family: dict[str, float | None] = {}
    for task, sizes in out.items():
        for size, cell in sizes.items():
            for a, b in PRIMARY + EXPLORATORY:
                va, vb = keyed.get((task, int(size), a)), keyed.get((task, int(size), b))
                if not va or not vb:
                    continue
                seeds = sorted(set(va) & set(vb))
                primary = (a, b) in PRIMARY
                c = contrast([va[s] for s in seeds], [vb[s] for s in seeds], margin, primary)
                cell["paired"][f"{a}-{b}"] = c
                if primary:
                    family[f"{task}\x00{size}\x00{a}-{b}"] = c["p_t"]
    for key, p in holm(family).items():
        t, sz, name = key.split("\x00")
        out[t][sz]["paired"][name]["p_holm"] = p
    for sizes in out.values():
        for cell in sizes.values():
            for c in cell["paired"].values():
                c["decision"] = decide(c)
    return out


def power_status(summary: Mapping[str, Any], target: float) -> dict[str, Any]:
    """Whether every primary contrast's MDE is at most ``target`` (fractions) at every task and size."""
    worst: dict[str, float | None] = {}
    for task, sizes in summary.items():
        for size, cell in sizes.items():
            for a, b in PRIMARY:
                c = cell["paired"].get(f"{a}-{b}")
                worst[f"{task} n = {size}: {a} − {b}"] = None if c is None else c.get("mde")
    met = bool(worst) and all(m is not None and m <= target for m in worst.values())
    return {"target": target, "met": met, "mde": worst}


def _pts(c: Mapping[str, Any]) -> str:
    lo, hi = c.get("lo"), c.get("hi")
    ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None and hi is not None else ""
    parts = [f"{100 * c['mean']:+.1f} pts{ci}"]
    if c.get("p_holm") is not None:
        parts.append(f"Holm p = {c['p_holm']:.3g}")
    elif c.get("p_t") is not None:
        parts.append(f"p = {c['p_t']:.3g}")
    if c.get("mde") is not None:
        parts.append(f"MDE {100 * c['mde']:.1f} pts")
    if c.get("p_tost") is not None:
        parts.append(f"TOST p = {c['p_tost']:.3g}")
    return ", ".join(parts)


def _word(c: Mapping[str, Any]) -> str:
    word = c["decision"]
    if word == "detected":
        return f"detected ({'guided better' if c['mean'] > 0 else 'guided worse'})"
    if word.startswith("inconclusive") and c.get("mde") is not None:
        return f"{word} (it would detect {100 * c['mde']:.1f} points)"
    return word


QUESTIONS = {"guided-uniform": "Does placement by Fisher beat the same amount of dropout spread evenly "
                               "(guided − uniform at guided's mean rate)?",
             "guided-permuted": "Does the Fisher order beat a random order of the same rates (guided − permuted)?"}


def verdicts(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Per task, one sentence per primary contrast over every size, with its verdict words."""
    out: dict[str, Any] = {}
    for task, sizes in summary.items():
        q: dict[str, Any] = {}
        for name, question in QUESTIONS.items():
            per = {size: cell["paired"][name] for size, cell in sizes.items() if name in cell["paired"]}
            if not per:
                continue
            words = {size: c["decision"] for size, c in per.items()}
            details = "; ".join(f"n = {s}: {_word(c)}: {_pts(c)}" for s, c in per.items())
            q[name] = {"decisions": words, "sentence": f"{question} {details}."}
        out[task] = q
    return out
