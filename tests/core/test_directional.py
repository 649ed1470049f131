"""Two-forward-pass directional curvature against exact Hessian-vector products, per-example
loss sums, and the censoring-aware basin width."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective
from landscape import curvature, objectives, sharpness, vectors
from landscape.scans import directions
from landscape.scans.points import ExampleLosses


def _exact_dHd(model, obj, data, d) -> float:
    op = curvature.HessianOperator(model, obj, data, mode="double_backward", check_determinism=False)
    hv = op.matvec({n: d[n].to(p.dtype) for n, p in op.space.params.items()})
    return float(vectors.dot({n: d[n].double() for n in hv}, {n: t.double() for n, t in hv.items()}))


def test_second_difference_matches_exact_hvp_float64_mlp():
    model, data = make_mlp(), make_classification_data()
    obj = objectives.Criterion(torch.nn.CrossEntropyLoss(reduction="none"))
    d = directions.random(model, seed=3, normalization="filter", one_dim="filter")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    est = sharpness.directional_curvature(model, obj, data, d, step=1e-3)
    exact = _exact_dHd(model, obj, data, d)
    assert est.value == pytest.approx(exact, rel=1e-5)
    assert est.per_unit_norm == pytest.approx(exact / est.norm**2, rel=1e-5)
    assert est.per_example.shape == (12,) and est.per_example.sum() / est.counts.sum() == pytest.approx(est.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_second_difference_matches_exact_hvp_float32_bert_masked_direction():
    model = make_tiny_bert(hidden=16, layers=1).eval()
    data, obj = make_mlm_batches(n_batches=2, batch_size=4), mlm_objective(0.3)
    from landscape.params import ParamSpace, ParamMask

    space = ParamSpace(model)
    names = [n for n, p in space.params.items() if p.ndim >= 2][:3]
    mask = ParamMask.from_tensor_names(space, names)
    d = directions.random(model, seed=0, normalization="filter", one_dim="zero", params=mask,
                          mask_scaling="filter_norm_of_masked")
    exact = _exact_dHd(model, obj, data, d)
    est = sharpness.directional_curvature(model, obj, data, d, step=0.01)
    assert abs(exact) > 1e-3
    assert est.value == pytest.approx(exact, rel=2e-2)
    far = sharpness.directional_curvature(model, obj, data, d, step=0.5)  # a wide step measures another thing
    assert abs(far.value - exact) > abs(est.value - exact)


def test_example_losses_sum_to_the_pooled_loss_and_restore():
    model = make_tiny_bert(hidden=16, layers=1)
    data, obj = make_mlm_batches(n_batches=2, batch_size=3), mlm_objective(0.3)
    ev = ExampleLosses(model, obj, data)
    s0 = ev.origin()
    assert s0.shape == (6,) and ev.counts.shape == (6,)
    assert ev.pooled(s0) == pytest.approx(obj.evaluate(model, data), rel=1e-6)
    d = directions.random(model, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sums = ev.at([d], [[0.0], [0.5]])
    np.testing.assert_allclose(sums[0], s0, rtol=1e-6)
    assert not np.allclose(sums[1], s0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # the caller's mode comes back
    with pytest.raises(ValueError, match="shape"):
        ev.at([d], np.zeros((2, 2)))


def test_bracketed_width_finds_crossings_and_reports_censoring():
    f = lambda a: a * a
    w = sharpness.basin_width_bracketed(f, threshold=1.0, alphas=[-1.5, -0.5, 0, 0.5, 1.5], values=[2.25, .25, 0, .25, 2.25])
    assert w.width == pytest.approx(2.0, abs=1e-9) and not w.censored
    # crossing beyond the scanned range: found by extending the line
    g = lambda a: 0.01 * a * a
    w2 = sharpness.basin_width_bracketed(g, threshold=1.0, alphas=[-1.5, 0, 1.5], values=[g(-1.5), 0, g(1.5)])
    assert w2.width == pytest.approx(20.0, rel=2e-2) and w2.n_evaluations > 0
    # never crossing: censored, reported as a lower bound, not NaN
    h = lambda a: 1e-4 * a * a
    w3 = sharpness.basin_width_bracketed(h, threshold=1.0, alphas=[-1.5, 0, 1.5], values=[h(-1.5), 0, h(1.5)], max_alpha=16)
    assert w3.censored and w3.width == float("inf") and w3.lower_bound >= 16
    with pytest.raises(ValueError, match="not below"):
        sharpness.basin_width_bracketed(f, threshold=-1.0)


#: A BERT small enough for the tests, pretrained on stdlib docstrings like the default model (dropout 0.1).
PRETRAINED = dict(vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_seq_len=32,
                  steps=300, batch_size=16, lr=3e-3, warmup_steps=20, max_docstrings=400, heldout_fraction=0.1)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The tiny pretrained BERT, its fixed-mask MLM objective and 32 held-out sequences."""
    from landscape.models import default_model as dmm

    sub, threads = dmm.BUILD_IN_SUBPROCESS, torch.get_num_threads()
    dmm.BUILD_IN_SUBPROCESS = False
    torch.set_num_threads(1)
    try:
        dm = dmm.load_default(dmm.DefaultModelConfig(**PRETRAINED), cache_dir=tmp_path_factory.mktemp("cache"),
                              progress=False)
    finally:
        dmm.BUILD_IN_SUBPROCESS = sub
        torch.set_num_threads(threads)
    # it learned: far below the uniform guess ln V, and below the unigram baseline (0.18 nats at 300 steps)
    meta = dm.metadata
    assert meta["heldout_loss"] < min(np.log(len(dm.tokenizer)) - 1.0, meta["unigram_entropy"] - 0.1), meta
    obj = objectives.MaskedLM(mask_prob=0.15, seed=0, tokenizer=dm.tokenizer)
    return dm.model, obj, dm.heldout_batches(batch_size=8, max_examples=32)


def test_fd_step_is_validated_on_a_pretrained_model(pretrained):
    """h ∈ {0.003, 0.01, 0.03} against one exact HVP, for a filter-normalized and a masked direction.

    Measured here (float32, 32 sequences; h = 0.003 / 0.01 / 0.03): filter-normalized 7.7e-2 / 9.5e-3 /
    4.7e-4, masked (top 10 % Fisher) 5.7e-2 / 8.3e-4 / 1.7e-3. Float32 rounding (∝ 1/h²) dominates
    below h = 0.03 on so small a pool; the bounds leave a margin of about 5x.
    """
    from landscape import fisher, util

    model, obj, data = pretrained
    F = fisher.diagonal(model, obj, data, progress=False, convergence=False)
    full = directions.random(model, seed=0, normalization="filter", one_dim="zero")
    masked = directions.random(model, seed=0, normalization="filter", one_dim="zero",
                               params=F.mask(fraction=0.1, which="top"), mask_scaling="filter_norm_of_masked")
    before, mode = util.weights_fingerprint(model), model.training
    errors = {(kind, h): sharpness.fd_curvature_error(model, obj, data, d, h)
              for kind, d in (("filter", full), ("masked", masked)) for h in (0.003, 0.01, 0.03)}
    bounds = {0.003: 0.4, 0.01: 5e-2, 0.03: 1e-2}
    assert all(errors[k] < bounds[k[1]] for k in errors), errors
    assert errors["filter", 0.003] > 10 * errors["filter", 0.03]  # rounding, ∝ 1/h², dominates small steps
    assert util.weights_fingerprint(model) == before and model.training == mode


def test_fd_curvature_error_matches_its_definition_on_a_float64_mlp():
    model, data = make_mlp(), make_classification_data()
    obj = objectives.Criterion(torch.nn.CrossEntropyLoss(reduction="none"))
    d = directions.random(model, seed=3, normalization="filter", one_dim="filter")
    exact = _exact_dHd(model, obj, data, d)
    approx = sharpness.directional_curvature(model, obj, data, d, step=0.05).value
    err = sharpness.fd_curvature_error(model, obj, data, d, 0.05)
    assert err == pytest.approx(abs(approx - exact) / abs(exact), rel=1e-6)
    assert sharpness.fd_curvature_error(model, obj, data, d, 1e-3) < 1e-5 < err  # truncation shrinks as h²
    with pytest.raises(ValueError):  # a zero direction has no curvature to check: refused, as by the scans
        sharpness.fd_curvature_error(model, obj, data, {n: torch.zeros_like(t) for n, t in d.items()}, 0.01)
