"""The verdict and its statistics on constructed numbers: single values, censored values, a gap
inside the interval, and both directions of the result."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyses.fisher_sharpness import hierarchy as hi
from analyses.fisher_sharpness import statistics as st
from analyses.fisher_sharpness.verdict import Value, call_interval, compare_values, endpoint_verdict


def _nums(level: float, n_seq: int = 64, n_seeds: int = 6, noise: float = 0.3, seed: int = 0):
    """Per-seed, per-sequence numerators whose pooled value is about ``level`` (10 terms per sequence)."""
    rng = np.random.default_rng(seed)
    seq = rng.normal(1.0, noise, n_seq)  # per-sequence difficulty, shared by every mask (paired data)
    per_seed = rng.normal(1.0, 0.05, (n_seeds, 1))
    return (level * 10.0 * seq[None, :] * per_seed)[None, None, None], np.full((1, 1, n_seq), 10.0)


def _contrast(top, ctrl, counts, n_boot, scale="log_ratio"):
    """The hierarchical endpoint on one cell (every sequence its own document)."""
    return hi.endpoint(top, ctrl, counts, scale=scale, n_boot=n_boot)


# ----------------------------------------------------------------------------- both directions


def test_top_clearly_sharper_and_clearly_flatter():
    top, counts = _nums(5.0)
    ctrl, _ = _nums(1.0, seed=1)
    up = _contrast(top, ctrl, counts, n_boot=500)
    assert up["scale"] == "log_ratio" and up["interval"][0] > 0 and up["ratio"] == pytest.approx(5.0, rel=0.15)
    v = endpoint_verdict(up, quantity="dᵀHd", top="top", control="random")
    assert v["outcome"] == "sharper" and v["sentence"].startswith("Top is sharper than random") and "×" in v["sentence"]
    down = _contrast(ctrl, top, counts, n_boot=500)
    assert down["interval"][1] < 0
    assert endpoint_verdict(down, quantity="dᵀHd", top="top", control="random")["outcome"] == "flatter"


def test_gap_inside_the_interval_is_no_clear_difference():
    rng = np.random.default_rng(5)
    counts = np.full((1, 1, 64), 10.0)
    seq = rng.normal(1.0, 0.3, 64)[None, :]
    ctrl = (10.0 * seq * np.array([[0.7], [1.0], [1.3]]))[None, None, None]  # direction seeds spread ±30 %
    top = (10.0 * 1.05 * seq * np.array([[1.3], [0.7], [1.0]]))[None, None, None]  # 5 % higher on average
    c = _contrast(top, ctrl, counts, n_boot=500)
    assert c["estimate"] != 0 and c["interval"][0] < 0 < c["interval"][1]
    v = endpoint_verdict(c, quantity="dᵀHd", top="top", control="random")
    assert v["outcome"] == "unclear" and "no clear difference" in v["sentence"].lower()
    assert call_interval(-0.1, 0.2) == "unclear" and call_interval(0.1, 0.2) == "sharper" and call_interval(-0.3, -0.1) == "flatter"
    assert call_interval(math.nan, 1.0) == "unclear"


def test_a_difference_endpoint_stays_a_difference_and_names_the_undefined_ratio():
    top, counts = _nums(1.0)
    ctrl = -_nums(0.5, seed=2)[0]
    c = _contrast(top, ctrl, counts, n_boot=300, scale="difference")
    assert c["scale"] == "difference" and c["estimate"] == pytest.approx(c["top"] - c["control"])
    sentence = endpoint_verdict(c, quantity="q", top="top", control="c")["sentence"]
    assert "difference" in sentence and "ratio" not in sentence  # a ratio over a negative control is not shown
    unclear = endpoint_verdict(c | {"mde80": 0.5}, quantity="q", top="top", control="c", rejected=False)
    assert unclear["outcome"] == "unclear" and "Holm" in unclear["sentence"] and "±0.5" in unclear["sentence"]


def test_trace_comparison_uses_students_t_with_the_probes_degrees_of_freedom():
    """A gap of 2.2 combined SEs is beyond 1.96 but within t(0.975, 6 dof) = 2.45: two 4-probe traces (Welch)."""
    a, b = Value(10.0, stderr=1.0, dof=3), Value(10.0 - 2.2 * 2**0.5, stderr=1.0, dof=3)
    assert compare_values("trace", a, b)["outcome"] == "unclear"
    assert compare_values("trace", Value(10.0, stderr=1.0), Value(10.0 - 2.2 * 2**0.5, stderr=1.0))["outcome"] == (
        "sharper")


# ----------------------------------------------------------------------------- single values


def test_single_values_without_uncertainty_are_never_called_different():
    c = compare_values("top_eigenvalue", Value(80.0), Value(0.6))
    assert c["outcome"] == "unclear" and "without an uncertainty" in c["reason"]
    # one side with a standard error is not enough either
    assert compare_values("trace", Value(10.0, stderr=0.1), Value(1.0))["outcome"] == "unclear"
    # with standard errors on both sides the gap decides, in both directions
    assert compare_values("trace", Value(10.0, stderr=1.0), Value(1.0, stderr=1.0))["outcome"] == "sharper"
    assert compare_values("trace", Value(1.0, stderr=1.0), Value(10.0, stderr=1.0))["outcome"] == "flatter"
    assert compare_values("trace", Value(3.0, stderr=1.0), Value(1.0, stderr=1.0))["outcome"] == "unclear"  # gap 2 < 1.96·√2


# ----------------------------------------------------------------------------- censored values


def test_censored_widths_are_bounds_not_missing_values():
    # a bottom basin wider than the searched range: top's finite width is narrower, i.e. top sharper
    c = compare_values("basin_width", Value(0.5), Value(24.0, censored=True))
    assert c["outcome"] == "sharper" and "censored" in c["reason"]
    # the other way round: top censored, control finite -> top flatter (never the reverse)
    assert compare_values("basin_width", Value(24.0, censored=True), Value(0.5))["outcome"] == "flatter"
    # both censored: cannot be ordered
    assert compare_values("basin_width", Value(24.0, censored=True), Value(12.0, censored=True))["outcome"] == "unclear"
    # a bound below the other value says nothing
    assert compare_values("basin_width", Value(3.0, censored=True), Value(5.0))["outcome"] == "unclear"


def test_censored_median_is_exact_or_a_lower_bound():
    m = st.censored_median([1.0, 2.0, 30.0], [False, False, True])
    assert m["median"] == 2.0 and m["text"] == "2" and m["n_censored"] == 1
    m2 = st.censored_median([1.0, 24.0, 24.0], [False, True, True])
    assert m2["median"] is None and m2["lower_bound"] == 24.0 and m2["text"] == "> 24"
    all_cens = st.censored_median([24.0, 24.0], [True, True])
    assert all_cens["text"].startswith(">") and all_cens["n_censored"] == 2


def test_bootstrap_is_paired_and_reproducible():
    top, counts = _nums(2.0)
    a = hi.replicates({"t": top, "c": top}, counts, n_boot=200, seed=3)
    np.testing.assert_array_equal(a["t"], a["c"])  # the same draws for every key
    b = hi.replicates({"t": top}, counts, n_boot=200, seed=3)
    np.testing.assert_array_equal(a["t"], b["t"])
    with pytest.raises(ValueError, match="shape"):
        hi.replicates({"t": top, "c": top[..., :10]}, counts, n_boot=10)
