"""The verdict logic on constructed numbers, in both directions."""

from __future__ import annotations

import math

import pytest

from analyses.fisher_sharpness.verdict import Stat, compare, verdict


def _stats(top, rnd, bottom, metric="curvature"):
    return {"top": {metric: Stat.of(top)}, "random": {metric: Stat.of(rnd)}, "bottom": {metric: Stat.of(bottom)}}


def test_stat_mean_and_sample_std():
    s = Stat.of([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.std == pytest.approx(1.0) and s.n == 3
    assert Stat.of([5.0]).std == 0.0
    assert Stat.of([1.0, math.nan, 3.0]).n == 2


def test_top_clearly_sharper():
    v = verdict(_stats([10, 11, 12], [2, 2.5, 3], [1, 1.2, 1.1]))
    assert v["answer_vs_random"] == "yes" and v["answer_vs_bottom"] == "yes"
    assert v["sharper_than_random"] == 1.0
    c = v["comparisons"][0]
    assert c["sharper"] and c["significant"] and c["ratio"] == pytest.approx(11 / 2.5)


def test_top_clearly_flatter():
    v = verdict(_stats([1, 1.1, 0.9], [5, 5.5, 6], [7, 8, 9]))
    assert v["answer_vs_random"] == "no, the opposite" and v["sharper_than_random"] == 0.0


def test_gap_inside_seed_spread_is_not_significant():
    v = verdict(_stats([2.0, 4.0, 6.0], [1.0, 3.0, 5.0], [1.0, 3.0, 5.0]))
    c = v["comparisons"][0]
    assert c["sharper"] and not c["significant"]
    assert v["answer_vs_random"] == "no clear difference"


def test_basin_width_is_flipped():
    # a narrower basin is sharper
    c = compare("basin_width", Stat.of([0.2, 0.21, 0.19]), Stat.of([1.0, 1.1, 0.9]), "random")
    assert c.sharper and c.significant and c.ratio == pytest.approx(1.0 / 0.2)
    c2 = compare("basin_width", Stat.of([1.0, 1.1, 0.9]), Stat.of([0.2, 0.21, 0.19]), "random")
    assert not c2.sharper and c2.significant


def test_verdict_needs_top():
    with pytest.raises(ValueError, match="top"):
        verdict({"random": {}})
