"""The one prepared-data evaluator: against a hand loop of forward passes (float64), batched against
one point at a time, per-example sums against the pooled loss, the one no-loss-term message, exact
restore after a raise, sharding, and that sharpness, scans and ExampleLosses all go through it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective
from torch import nn

from landscape import objectives, scans, sharpness, util
from landscape.evaluator import Evaluator
from landscape.objectives import NO_LOSS_TERM
from landscape.params import ParamSpace
from landscape.scans import directions
from landscape.scans.points import ExampleLosses

CE = objectives.Criterion(nn.CrossEntropyLoss(reduction="none"))


def _hand_sums(model: nn.Module, data, theta: dict[str, torch.Tensor]) -> tuple[np.ndarray, int]:
    """Per-example cross-entropy at the weights ``theta`` by plain forward passes; and the correct count."""
    sums, correct = [], 0
    with torch.no_grad():
        for x, y in data:
            logits = torch.func.functional_call(model, theta, (x,))
            sums.append(nn.functional.cross_entropy(logits, y, reduction="none").double())
            correct += int((logits.argmax(-1) == y).sum())
    return torch.cat(sums).numpy(), correct


def test_sums_and_metrics_match_a_hand_loop_float64():
    model, data = make_mlp(), make_classification_data()
    d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    ev = Evaluator(model, CE, data)
    assert ev.counts.shape == (12,) and ev.n_examples == 12 and ev.n_terms == 12
    coeffs = np.array([[0.0, 0.0], [0.5, -0.25], [-1.0, 2.0]])
    sums = ev.at([d1, d2], coeffs)
    with ev.evaluating():
        batched, correct = ev.sums_batched([d1, d2], coeffs, accuracy=True)
        ev.set(coeffs[1], [d1, d2])
        point = ev.metrics(("loss", "accuracy"))
    for k, (a, b) in enumerate(coeffs):
        theta = {n: theta0[n] + a * d1[n] + b * d2[n] for n in theta0}
        want, n_correct = _hand_sums(model, data, theta)
        np.testing.assert_allclose(sums[k], want, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(batched[k].numpy(), want, rtol=1e-12, atol=1e-14)
        assert float(correct[k]) == n_correct
        if k == 1:
            assert point["loss"] == pytest.approx(want.sum() / 12, rel=1e-13) and point["accuracy"] == n_correct / 12
    assert all(torch.equal(p, theta0[n]) for n, p in model.named_parameters())
    assert ev.n_forward == 3 + 3 + 1


def test_batched_equals_one_at_a_time_and_pooled_sums_equal_the_loss_on_bert():
    model = make_tiny_bert(hidden=16, layers=1)
    data, obj = make_mlm_batches(n_batches=2, batch_size=3), mlm_objective(0.3)
    before = util.weights_fingerprint(model)
    ev = Evaluator(model, obj, data)
    d = directions.random(model, seed=2)
    d = {ev.space.resolve_names([n])[n]: t for n, t in d.items()}
    coeffs = [[-0.3], [0.0], [0.4]]
    one = ev.at([d], coeffs)
    with ev.evaluating():
        many = [ev.metrics_batched([d], coeffs, ("loss", "accuracy")), [ev.metrics(("loss", "accuracy"))]]
        ev.set([0.4], [d])
        last = ev.metrics(("loss", "accuracy"))
    np.testing.assert_allclose(ev.pooled(one), [m["loss"] for m in many[0]], rtol=2e-5)
    assert last["accuracy"] == many[0][2]["accuracy"]
    assert ev.pooled(ev.origin()) == pytest.approx(obj.evaluate(model, data), rel=1e-6)
    assert many[1][0]["loss"] == pytest.approx(obj.evaluate(model, data), rel=1e-6)  # the origin, after a batched call
    assert ev.counts.sum() == ev.n_terms and util.weights_fingerprint(model) == before and model.training


def test_loss_and_gradient_on_the_selected_tensors_float64():
    model, data = make_mlp(), make_classification_data()
    ev = Evaluator(model, CE, data, params=["2.*"])
    assert ev.names == ["2.weight", "2.bias"]
    delta = [0.1 * torch.ones_like(t) for t in ev.theta0]
    with ev.evaluating():
        ev.set_delta(delta)
        value, grad = ev.loss(grad=True)
    moved = {n: p.detach() + (0.1 if n.startswith("2.") else 0.0) for n, p in model.named_parameters()}
    params = {n: t.clone().requires_grad_(n.startswith("2.")) for n, t in moved.items()}
    total = sum(nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y, reduction="sum")
                for x, y in data) / 12
    want = torch.autograd.grad(total, [params["2.weight"], params["2.bias"]])
    assert value == pytest.approx(float(total.detach()), rel=1e-13)
    assert grad is not None and all(torch.allclose(g, w, rtol=1e-12) for g, w in zip(grad, want))
    assert float(model[2].bias.detach()[0]) == float(ev.theta0[1][0])  # restored


def _unlabelled():
    ids = torch.randint(5, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full_like(ids, -100)}]


def test_data_with_no_loss_term_gives_the_one_message_everywhere():
    model, data, obj = make_tiny_bert(hidden=16, layers=1), _unlabelled(), objectives.HFLoss()
    d = directions.random(model, seed=0)
    calls = [lambda: Evaluator(model, obj, data), lambda: ExampleLosses(model, obj, data),
             lambda: scans.scan_1d(model, obj, data, d, [0.0, 1.0], progress=False),
             lambda: sharpness.average_sharpness(model, obj, data, rho=0.1, num_samples=2, progress=False),
             lambda: sharpness.directional_curvature(model, obj, data, d)]
    for call in calls:
        with pytest.raises(ValueError, match=re.escape(NO_LOSS_TERM)):
            call()
    assert "-100" in NO_LOSS_TERM and "Give data" in NO_LOSS_TERM


class _Failing(objectives.Criterion):
    def __init__(self, fail_at: int) -> None:
        super().__init__(nn.CrossEntropyLoss(reduction="none"))
        self.calls, self.fail_at = 0, fail_at

    def forward(self, model, prepared, params=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("halfway")
        return super().forward(model, prepared, params)


def test_weights_and_modes_restored_bit_for_bit_when_an_evaluation_raises_halfway():
    model, data = make_mlp(), make_classification_data()
    model[0].eval()  # a mixed state survives
    flags = [m.training for m in model.modules()]
    before = util.weights_fingerprint(model)
    d = directions.random(model, seed=0)
    ev = Evaluator(model, _Failing(fail_at=5), data)
    with pytest.raises(RuntimeError, match="halfway"):
        ev.at([d], [[0.5], [1.0]])  # 3 batches per point: raises inside the second point
    assert util.weights_fingerprint(model) == before and [m.training for m in model.modules()] == flags
    with pytest.raises(RuntimeError, match="halfway"):
        sharpness.worst_case_sharpness(model, _Failing(fail_at=7), data, rho=0.5, steps=3, progress=False)
    assert util.weights_fingerprint(model) == before and [m.training for m in model.modules()] == flags
    with pytest.raises(RuntimeError, match="halfway"), ev.evaluating():
        ev.set([2.0], [d])
        raise RuntimeError("halfway")
    assert util.weights_fingerprint(model) == before


def test_sharding_keeps_every_example_once_across_ranks():
    model, data = make_mlp(), make_classification_data(batch_size=5)
    obj = objectives.Criterion(nn.CrossEntropyLoss(reduction="none"))
    full = Evaluator(model, obj, data)
    parts = [Evaluator(model, obj, data, shard=(r, 3)) for r in range(3)]
    sums = [p.origin() for p in parts]
    assert sorted(len(s) for s in sums) == [5, 5, 5]
    s0 = full.origin()
    for r, s in enumerate(sums):
        np.testing.assert_allclose(s, s0[r::3], rtol=1e-14)  # examples g ≡ r (mod 3) across the batches


def test_bad_coefficients_and_directions_are_refused():
    model, data = make_mlp(), make_classification_data()
    ev = Evaluator(model, CE, data)
    d = directions.random(model, seed=0)
    with pytest.raises(ValueError, match="shape"):
        ev.at([d], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        ev.at([d], [[float("nan")]])
    with pytest.raises(ValueError, match="outside this evaluator's params= selection"):
        Evaluator(model, CE, data, params=["2.*"]).at([d], [[1.0]])
    with pytest.raises(TypeError, match="Objective"):
        Evaluator(model, nn.CrossEntropyLoss(), data)  # type: ignore[arg-type]


def test_sharpness_scans_and_example_losses_all_go_through_the_evaluator(monkeypatch):
    model, data = make_mlp(), make_classification_data()
    obj = objectives.Criterion(nn.CrossEntropyLoss(reduction="none"))
    prepares, built = [], []
    original_prepare, original_init = obj.prepare_data, Evaluator.__init__

    def counting_prepare(*a, **k):
        prepares.append(1)
        return original_prepare(*a, **k)

    def counting_init(self, *a, **k):
        built.append(type(self).__name__)
        original_init(self, *a, **k)

    monkeypatch.setattr(obj, "prepare_data", counting_prepare)
    monkeypatch.setattr(Evaluator, "__init__", counting_init)
    d = directions.random(model, seed=0)
    runs = {
        "average": lambda: sharpness.average_sharpness(model, obj, data, rho=0.01, num_samples=2, progress=False),
        "worst": lambda: sharpness.worst_case_sharpness(model, obj, data, rho=0.01, steps=2, progress=False),
        "keskar": lambda: sharpness.keskar_sharpness(model, obj, data, steps=2, progress=False),
        "directional": lambda: sharpness.directional_curvature(model, obj, data, d),
        "scan_1d": lambda: scans.scan_1d(model, obj, data, d, [-1.0, 0.0, 1.0], progress=False),
        "scan_2d": lambda: scans.scan_2d(model, obj, data, d, d, [0.0, 1.0], [0.0, 1.0], progress=False,
                                         batch_points=2),
        "example_losses": lambda: ExampleLosses(model, obj, data).at([d], [[0.5]]),
    }
    for name, run in runs.items():
        prepares.clear()
        built.clear()
        run()
        assert len(prepares) == 1, f"{name} prepared the data {len(prepares)} times"
        assert len(built) == 1, f"{name} built {len(built)} evaluators"
    assert ParamSpace(model).dim == sum(p.numel() for p in model.parameters())
