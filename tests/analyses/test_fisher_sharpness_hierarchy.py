"""The hierarchical bootstrap on synthetic nested data with known variance components."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyses.fisher_sharpness import hierarchy as hi


def _nested(rng, M=3, K=4, R=4, S=6, G=60, rows=2, sd=None):
    """y[m,k,r,j,i] = a_m + b_mk + c_r + d_j + e_g(i) + ε, one masked token per sequence."""
    sd = sd or {"model": 1.0, "fisher": 0.5, "draw": 0.3, "seed": 0.8, "document": 2.0, "noise": 0.1}
    groups = np.repeat(np.arange(G), rows)
    N = groups.size
    eff = {"model": rng.normal(0, sd["model"], M), "fisher": rng.normal(0, sd["fisher"], (M, K)),
           "draw": rng.normal(0, sd["draw"], R), "seed": rng.normal(0, sd["seed"], S),
           "document": rng.normal(0, sd["document"], G)}
    y = (5.0 + eff["model"][:, None, None, None, None] + eff["fisher"][:, :, None, None, None]
         + eff["draw"][None, None, :, None, None] + eff["seed"][None, None, None, :, None]
         + eff["document"][groups][None, None, None, None, :] + rng.normal(0, sd["noise"], (M, K, R, S, N)))
    return y, np.ones((M, R, N)), groups


def _expected_terms(y, groups):
    """V_L for a mean under multinomial resampling of level L alone: biased variance of L's unit means / n_L."""
    M, K, R, S, N = y.shape
    by_doc = np.stack([y[..., groups == g].mean(-1) for g in np.unique(groups)], -1)
    fisher = y.mean((2, 3, 4))  # [M, K]
    return {"model": y.mean((1, 2, 3, 4)).var() / M, "fisher": (fisher.var(1) / K).sum() / M**2,
            "draw": y.mean((0, 1, 3, 4)).var() / R, "seed": y.mean((0, 1, 2, 4)).var() / S,
            "document": by_doc.mean((0, 1, 2, 3)).var() / by_doc.shape[-1]}


def test_level_variances_recover_the_known_components():
    y, counts, groups = _nested(np.random.default_rng(0))
    comp = hi.variance_components({"q": y}, counts, groups, n_boot=4000, seed=1)
    expected = _expected_terms(y, groups)
    total = sum(expected.values())
    for level, v in expected.items():
        row = comp["levels"][level]
        assert row["variance"] == pytest.approx(v, rel=0.12), level
        assert row["share"] == pytest.approx(v / total, abs=0.03), level
    assert comp["levels"]["model"]["units"] == 3 and comp["levels"]["document"]["units"] == 60
    # the joint bootstrap's variance is about the sum of the terms (Owen's pigeonhole bootstrap)
    joint = hi.replicates({"q": y}, counts, groups, n_boot=4000, seed=2)["q"]
    assert np.var(joint) == pytest.approx(total, rel=0.25)


def test_a_level_with_one_unit_is_fixed_and_adds_nothing():
    y, counts, groups = _nested(np.random.default_rng(1), M=1)
    comp = hi.variance_components({"q": y}, counts, groups, n_boot=500)
    assert comp["levels"]["model"]["fixed"] and comp["levels"]["model"]["variance"] == 0.0


def test_clustered_rows_resampled_as_independent_give_a_too_narrow_interval():
    """Sequences of one document share its effect: the row bootstrap's SD falls far below the true one."""
    rng = np.random.default_rng(3)
    G, rows = 40, 8
    groups = np.repeat(np.arange(G), rows)

    def dataset():
        doc = rng.normal(0, 1.0, G)[groups]
        return (2.0 + doc + rng.normal(0, 0.5, groups.size))[None, None, None, None, :]

    truth = np.std([dataset().mean() for _ in range(400)])
    y = dataset()
    counts = np.ones((1, 1, groups.size))
    sd_docs = np.std(hi.replicates({"q": y}, counts, groups, n_boot=3000)["q"])
    sd_rows = np.std(hi.replicates({"q": y}, counts, None, n_boot=3000)["q"])
    assert sd_docs == pytest.approx(truth, rel=0.3)
    assert sd_rows < 0.6 * truth and sd_rows < 0.6 * sd_docs


def test_the_scale_is_fixed_by_the_design_not_by_the_replicates():
    rng = np.random.default_rng(4)
    counts = np.ones((1, 1, 20))
    top = rng.normal(2.0, 0.5, (1, 2, 1, 3, 20))
    control = rng.normal(0.05, 1.0, (1, 2, 1, 3, 20))  # its mean crosses zero in some replicates
    e = hi.endpoint(top, control, counts, scale="difference", n_boot=500)
    reps = hi.replicates({"c": control}, counts, n_boot=500)["c"]
    assert (reps <= 0).any()  # the data would have flipped the old, data-decided scale
    assert e["scale"] == "difference" and e["n_nonpositive_control"] > 0 and e["ratio_interval"] is None
    assert e["estimate"] == pytest.approx(top.mean() - control.mean())
    lo, hi_ = e["interval"]
    assert lo < e["estimate"] < hi_
    log = hi.endpoint(top, control, counts, scale="log_ratio", n_boot=500)
    assert log["scale"] == "log_ratio" and all(math.isnan(x) for x in log["interval"])
    pos = hi.endpoint(top, np.abs(control) + 1.0, counts, scale="log_ratio", n_boot=500)
    assert pos["scale"] == "log_ratio" and pos["ratio_interval"] is not None
    assert pos["estimate"] == pytest.approx(math.log(top.mean() / (np.abs(control) + 1.0).mean()))


def test_holm_steps_down():
    out = hi.holm({"a": 0.01, "b": 0.04})
    assert out["a"]["p_holm"] == pytest.approx(0.02) and out["a"]["rejected"]
    assert out["b"]["p_holm"] == pytest.approx(0.04) and out["b"]["rejected"]
    out = hi.holm({"a": 0.03, "b": 0.04})
    assert out["a"]["p_holm"] == pytest.approx(0.06) and not out["a"]["rejected"] and not out["b"]["rejected"]
