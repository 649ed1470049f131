"""CurvatureTracker: values against dense float64 references and direct calls, resume, no side effects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_classification_data, make_mlp
from landscape import curvature, objectives, scans
from landscape.training import CurvatureTracker, read_measurements
from references import dense_objective_hessian, per_example_grads


def _setup(seed: int = 0):
    model = make_mlp(seed, d_in=2, hidden=3, classes=2)  # 17 coordinates: Hutch++ with 3·17 products is exact
    return model, objectives.Criterion(), make_classification_data(n_batches=2, batch_size=4, d_in=2, classes=2)


def test_values_match_dense_references_and_direct_calls(tmp_path):
    model, obj, probe = _setup()
    tracker = CurvatureTracker(model, obj, probe, path=tmp_path / "c.jsonl", trace_matvecs=51, eig_tol=1e-8,
                               eig_matvecs=17)
    row = tracker.measure(0, lr=0.1, training_gradients=1000.0)
    H = dense_objective_hessian(model, obj, probe)
    eigs = torch.linalg.eigvalsh(H)
    assert row["top_eigenvalue"] == pytest.approx(float(eigs[-1]), rel=1e-6)
    direct = curvature.top_eigenvalues(curvature.HessianOperator(model, obj, probe), k=1, tol=1e-8)
    assert row["top_eigenvalue"] == pytest.approx(float(direct.values[0]), rel=1e-6)
    assert row["hessian_trace"] == pytest.approx(float(torch.trace(H)), rel=1e-8, abs=1e-10)
    grads = per_example_grads(model, obj, probe)  # F = (1/N) Σ gᵢgᵢᵀ: tr F = Σ‖gᵢ‖² / N
    fisher_trace = sum(float(sum((g ** 2).sum() for g in gi.values())) for gi in grads) / len(grads)
    assert row["fisher_trace"] == pytest.approx(fisher_trace, rel=1e-8)
    d = scans.directions.random(model, seed=0, normalization="filter", one_dim="zero")
    curve = scans.scan_1d(model, obj, probe, d, tracker.alphas, progress=False, batch_points=1)
    np.testing.assert_allclose(row["loss_curve"], curve.values["loss"], rtol=1e-12)
    assert row["loss"] == pytest.approx(obj.evaluate(model, probe), rel=1e-12)
    assert row["lr"] == 0.1 and row["gradient_seconds"] > 0 and row["timed_cost_gradients"] > 1
    assert not row["eig_warm_start"]
    assert row["cost"]["hvps"] == row["eig_matvecs_used"] + 51 and row["cost"]["per_example_sweeps"] == 1
    assert row["cost_gradients"] <= tracker.max_cost().gradients
    assert row["overhead"] == pytest.approx(row["cost_gradients"] / 1000.0)


def test_warm_start_uses_previous_eigenvector():
    model, obj, probe = _setup()
    tracker = CurvatureTracker(model, obj, probe, quantities=["top_eigenvalue"], eig_tol=1e-6)
    first = tracker.measure(0)
    second = tracker.measure(1)  # same weights: the start vector is already the eigenvector
    assert second["eig_warm_start"] and second["eig_matvecs_used"] < first["eig_matvecs_used"]
    assert second["cost_gradients"] < first["cost_gradients"] and second["total_cost_gradients"] == pytest.approx(
        first["cost_gradients"] + second["cost_gradients"])
    assert second["top_eigenvalue"] == pytest.approx(first["top_eigenvalue"], rel=1e-5)
    assert set(first) >= {"top_eigenvalue", "loss"} and "hessian_trace" not in first


def test_weights_optimizer_mode_and_rng_untouched():
    model, obj, probe = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for x, y in probe:  # give the optimizer some state
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.train()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    state = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state_dict()["state"].items()}
    rng = torch.get_rng_state()
    CurvatureTracker(model, obj, probe, trace_matvecs=6).measure(3, lr=1e-2)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    after = opt.state_dict()["state"]
    assert all(torch.equal(after[k][n], t) for k, v in state.items() for n, t in v.items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_jsonl_resume_skips_measured_steps(tmp_path):
    model, obj, probe = _setup()
    path = tmp_path / "c.jsonl"
    tracker = CurvatureTracker(model, obj, probe, path=path, trace_matvecs=6)
    tracker.measure(0, lr=0.1)
    tracker.measure(5, lr=0.1)
    with path.open("a") as f:
        f.write('{"step": 9, "top_eig')  # a measurement torn mid-write
    calls: list[int] = []
    with pytest.warns(UserWarning, match="torn"):
        again = CurvatureTracker(model, obj, probe, path=path, trace_matvecs=6)
    again._timed_gradient = lambda: calls.append(1) or (0.0, 1.0)  # type: ignore[method-assign]
    assert again.measure(5) == tracker.rows[1] and not calls
    rows = read_measurements(path)
    assert [r["step"] for r in rows] == [0, 5]
    assert json.loads((tmp_path / "c.jsonl.meta.json").read_text())["settings"]["trace_matvecs"] == 6
    with pytest.raises(ValueError, match="other settings"):
        CurvatureTracker(model, obj, probe, path=path, trace_matvecs=9)


def test_bad_input_is_named():
    model, obj, probe = _setup()
    with pytest.raises(ValueError, match="quantities"):
        CurvatureTracker(model, obj, probe, quantities=["sharpness"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="alphas"):
        CurvatureTracker(model, obj, probe, alphas=(0.1, 0.2))
    with pytest.raises(FileNotFoundError, match="measurement file"):
        read_measurements("/nonexistent/c.jsonl")
