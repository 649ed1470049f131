"""The study's pre-registered statistics against scipy on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as ss

from analyses.guided_dropout import stats


def runs_from(diffs: dict[str, np.ndarray], base: np.ndarray, size: int = 64) -> list[dict]:
    """Runs where arm a's accuracy is base + diffs[a] per seed (guided is base)."""
    out = [{"task": "t", "size": size, "seed": s, "arm": "guided", "test_acc": float(b)} for s, b in enumerate(base)]
    for arm, d in diffs.items():
        out += [{"task": "t", "size": size, "seed": s, "arm": arm, "test_acc": float(b - x)}
                for s, (b, x) in enumerate(zip(base, d))]
    return out


def test_a_true_effect_is_detected():
    rng = np.random.default_rng(0)
    n = 30
    base = 0.7 + 0.02 * rng.standard_normal(n)
    d = {"uniform": 0.05 + 0.02 * rng.standard_normal(n), "permuted": 0.04 + 0.02 * rng.standard_normal(n)}
    cell = stats.summarize(runs_from(d, base))["t"]["64"]
    c = cell["paired"]["guided-uniform"]
    a = cell["arms"]["guided"]["values"]
    b = cell["arms"]["uniform"]["values"]
    assert c["p_t"] == pytest.approx(ss.ttest_rel(a, b).pvalue)
    assert c["mean"] == pytest.approx(float(np.mean(d["uniform"])))
    assert c["primary"] and c["p_holm"] >= c["p_t"] and c["decision"] == "detected"
    v = stats.verdicts(stats.summarize(runs_from(d, base)))["t"]["guided-uniform"]
    assert v["decisions"] == {"64": "detected"} and "detected (guided better)" in v["sentence"]


def test_a_true_zero_with_many_seeds_is_declared_equivalent():
    rng = np.random.default_rng(1)
    n = 200
    base = 0.7 + 0.02 * rng.standard_normal(n)
    d = {"uniform": 0.01 * rng.standard_normal(n), "permuted": 0.01 * rng.standard_normal(n)}
    c = stats.summarize(runs_from(d, base), margin=0.02)["t"]["64"]["paired"]["guided-uniform"]
    assert c["p_holm"] > 0.05 and c["p_tost"] < 0.05 and c["decision"] == "no effect larger than 2 points"
    assert c["mde"] < 0.01


def test_a_true_zero_with_few_seeds_is_inconclusive():
    rng = np.random.default_rng(2)
    base = 0.7 + 0.02 * rng.standard_normal(4)
    d = {"uniform": 0.04 * rng.standard_normal(4), "permuted": 0.04 * rng.standard_normal(4)}
    c = stats.summarize(runs_from(d, base))["t"]["64"]["paired"]["guided-uniform"]
    assert c["decision"] == "inconclusive at this power" and c["mde"] > 0.02


def test_holm_matches_a_hand_computation():
    adj = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.2, "e": None})
    # sorted 0.01, 0.03, 0.04, 0.2 (m = 4): 4·0.01 = 0.04; 3·0.03 = 0.09; max(0.09, 2·0.04) = 0.09; 1·0.2 = 0.2
    assert adj == {"a": pytest.approx(0.04), "c": pytest.approx(0.09), "b": pytest.approx(0.09),
                   "d": pytest.approx(0.2), "e": None}
    assert stats.holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}  # 2·0.6 caps at 1; monotone after


def test_the_primary_family_is_holm_corrected_over_every_size():
    rng = np.random.default_rng(3)
    runs = []
    for size in (64, 256):
        base = 0.7 + 0.02 * rng.standard_normal(6)
        runs += runs_from({"uniform": 0.01 + 0.02 * rng.standard_normal(6),
                           "permuted": 0.02 * rng.standard_normal(6),
                           "reversed": 0.02 * rng.standard_normal(6)}, base, size)
    s = stats.summarize(runs)
    raw = {(size, n): s["t"][size]["paired"][n]["p_t"] for size in ("64", "256")
           for n in ("guided-uniform", "guided-permuted")}
    adj = stats.holm({f"{size} {n}": p for (size, n), p in raw.items()})  # one family of four
    for size, n in raw:
        assert s["t"][size]["paired"][n]["p_holm"] == pytest.approx(adj[f"{size} {n}"])
    ex = s["t"]["64"]["paired"]["guided-reversed"]
    assert not ex["primary"] and ex["p_holm"] is None


@pytest.mark.parametrize("n", [5, 10, 40])
def test_mde_gives_80_percent_power_under_the_noncentral_t(n):
    sd = 0.03
    m = stats.mde(sd, n)
    assert m == pytest.approx((ss.t.ppf(0.975, n - 1) + ss.t.ppf(0.8, n - 1)) * sd / math.sqrt(n))
    crit = ss.t.ppf(0.975, n - 1)
    nc = m / (sd / math.sqrt(n))
    power = ss.nct.sf(crit, n - 1, nc) + ss.nct.cdf(-crit, n - 1, nc)
    assert power == pytest.approx(0.8, abs=0.02)
    k = stats.seeds_needed(sd, 0.02)
    assert stats.mde(sd, k) <= 0.02 < stats.mde(sd, k - 1)


def test_tost_is_two_one_sided_scipy_tests_and_agrees_with_the_90_percent_interval():
    rng = np.random.default_rng(4)
    for shift in (0.0, 0.01, 0.025):
        d = list(shift + 0.01 * rng.standard_normal(12))
        p = stats.tost(d, 0.02)
        lower = ss.ttest_1samp(d, -0.02, alternative="greater").pvalue
        upper = ss.ttest_1samp(d, 0.02, alternative="less").pvalue
        assert p == pytest.approx(max(lower, upper))
        half = ss.t.ppf(0.95, 11) * np.std(d, ddof=1) / math.sqrt(12)
        inside = -0.02 < np.mean(d) - half and np.mean(d) + half < 0.02
        assert (p < 0.05) == inside


def test_power_status_reads_only_the_primary_contrasts():
    rng = np.random.default_rng(5)
    base = 0.7 + 0.02 * rng.standard_normal(8)
    s = stats.summarize(runs_from({"uniform": 0.005 * rng.standard_normal(8),
                                   "permuted": 0.005 * rng.standard_normal(8),
                                   "reversed": 0.2 * rng.standard_normal(8)}, base))
    assert stats.power_status(s, 0.02)["met"] and not stats.power_status(s, 0.001)["met"]
    assert set(stats.power_status(s, 0.02)["mde"]) == {"t n = 64: guided − uniform", "t n = 64: guided − permuted"}


def test_two_seeds_that_agree_by_chance_give_no_verdict():
    base = np.array([0.7, 0.72])
    s = stats.summarize(runs_from({"uniform": np.array([0.003, 0.003]), "permuted": np.array([0.0, 0.01])}, base))
    c = s["t"]["64"]["paired"]["guided-uniform"]
    assert c["std"] == 0 and c["p_tost"] == 0.0 and c["decision"] == "inconclusive at this power"
