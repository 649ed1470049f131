"""Hessian / empirical-Fisher operators against dense float64 references built with torch.func."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature, objectives, util, vectors
from landscape.params import ParamMask, ParamSpace
from references import dense_parts
from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective

CE = objectives.Criterion(nn.CrossEntropyLoss())


def make_conv(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(18, 3)).double()


def conv_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 1, 5, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g))
            for _ in range(2)]


CASES = {"mlp": (make_mlp, make_classification_data), "conv": (make_conv, conv_data)}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    make_model, make_data = CASES[request.param]
    model, data = make_model(), make_data()
    H, G = dense_parts(model, data)
    return model, data, H, G


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", curvature.MODES)
def test_matvec_matches_dense(case, mode):
    model, data, H, _ = case
    op = curvature.HessianOperator(model, CE, data, mode=mode)
    assert op.dim == H.shape[0]
    for seed in range(3):
        v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        assert rel(op.to_flat(op.matvec(op.from_flat(v))), H @ v) < 1e-10
    assert op.n_matvecs == 3


def test_reuse_graph_matches_dense_and_releases(case):
    model, data, H, _ = case
    op = curvature.HessianOperator(model, CE, data, reuse_graph=True)
    assert op.mode == "double_backward"
    v = torch.randn(op.dim, dtype=torch.float64)
    for _ in range(2):  # second call goes through the kept graphs
        assert rel(op.to_flat(op.matvec(op.from_flat(v))), H @ v) < 1e-10
    assert len(op._graphs) == len(data)
    op.release_graph()
    assert not op._graphs and rel(op.to_flat(op.matvec(op.from_flat(v))), H @ v) < 1e-10
    with pytest.raises(ValueError, match="reuse_graph=True needs"):
        curvature.HessianOperator(model, CE, data, reuse_graph=True, mode="forward_over_reverse")


def test_lanczos_and_arpack_match_eigvalsh(case):
    model, data, H, _ = case
    op = curvature.HessianOperator(model, CE, data)
    ev = torch.linalg.eigvalsh(H).numpy()
    for which, want in [("largest", ev[::-1][:3]), ("smallest", ev[:3][::-1]),
                        ("magnitude", np.sort(ev[np.argsort(-np.abs(ev))[:3]])[::-1])]:
        for method in ("lanczos", "arpack") if which == "largest" else ("lanczos",):
            r = curvature.top_eigenvalues(op, k=3, tol=1e-12, which=which, method=method, seed=1)
            np.testing.assert_allclose(r.values, want, rtol=1e-8, atol=1e-10 * abs(ev).max())
            assert r.n_matvecs > 0 and r.converged
    r = curvature.top_eigenvalues(op, k=2, tol=1e-12)
    for val, vec in zip(r.values, r.vectors):  # eigenvectors: H y = λ y, ‖y‖ = 1
        y = op.to_flat(vec)
        assert rel(H @ y, val * y) < 1e-6 and abs(float(y.norm()) - 1) < 1e-8


def test_power_within_its_tolerance(case):
    model, data, H, _ = case
    ev = torch.linalg.eigvalsh(H).numpy()
    op = curvature.HessianOperator(model, CE, data)
    r = curvature.top_eigenvalues(op, k=1, tol=1e-4, method="power")
    assert abs(r.values[0] - ev[-1]) / ev[-1] < 1e-2 and r.n_matvecs < 100
    dense = curvature.MatrixOperator(H)  # same algorithm on the exact matrix, tight tolerance
    r = curvature.top_eigenvalues(dense, k=2, tol=1e-9, method="power", max_iter=5000)
    np.testing.assert_allclose(r.values, ev[::-1][:2], rtol=1e-5)
    r = curvature.top_eigenvalues(dense, k=1, tol=1e-9, method="power", which="smallest", max_iter=5000)
    assert abs(r.values[0] - ev[0]) / abs(ev).max() < 1e-4


def test_trace_estimators_cover_exact_trace_and_converge(case):
    model, data, H, _ = case
    op = curvature.HessianOperator(model, CE, data)
    exact = float(torch.trace(H))
    for method in ("hutchinson", "hutch++"):
        r = curvature.trace(op, num_matvecs=30, method=method, seed=3)
        assert abs(r.estimate - exact) < 4 * r.stderr, (method, r.estimate, exact, r.stderr)
        assert r.n_matvecs == 30
        dense = curvature.MatrixOperator(H)  # convergence study on the exact matrix (cheap matvecs)
        err = {m: np.mean([abs(curvature.trace(dense, num_matvecs=m, method=method, seed=s).estimate - exact) for s in range(20)])
               for m in (6, 96)}
        assert err[96] < 0.6 * err[6], (method, err)


def test_density_integrates_to_one_and_first_moment_is_trace_over_dim(case):
    model, data, H, _ = case
    op = curvature.HessianOperator(model, CE, data)
    d = curvature.spectral_density(op, num_runs=3, lanczos_steps=12, seed=0)
    assert abs(np.trapezoid(d.density, d.grid) - 1) < 1e-6 and d.n_matvecs == 36
    for w in d.weights:
        assert abs(w.sum() - 1) < 1e-10
    # each run's first moment is exactly its probe's Rayleigh quotient z'Hz/z'z = z'Hz/dim
    quad = [float(z @ H @ z) / op.dim for z in (op.to_flat(op.rademacher(s)) for s in range(3))]
    assert abs(d.moment(1) - np.mean(quad)) < 1e-10 * abs(np.mean(quad))
    dense = curvature.MatrixOperator(H)
    d = curvature.spectral_density(dense, num_runs=40, lanczos_steps=op.dim, seed=0)
    quad = [float(z @ H @ z) / op.dim for z in (dense.rademacher(s)["x"] for s in range(40))]
    se = np.std(quad, ddof=1) / np.sqrt(len(quad))
    assert abs(d.moment(1) - float(torch.trace(H)) / op.dim) < 4 * se
    # with full Lanczos, the second moment is exact too: Σ τ θ² = z'H²z/dim
    quad2 = [float(z @ H @ H @ z) / op.dim for z in (dense.rademacher(s)["x"] for s in range(40))]
    assert abs(d.moment(2) - np.mean(quad2)) < 1e-8 * np.mean(quad2)


def test_restricted_space_and_mask_match_dense_submatrix(case):
    model, data, H, _ = case
    space = ParamSpace(model)
    offsets, o = {}, 0
    for n, p in space.params.items():
        offsets[n] = torch.arange(o, o + p.numel()).view(p.shape)
        o += p.numel()
    last = space.names[-2]  # last layer's weight
    sub = ParamSpace(model, include=[last])
    op = curvature.HessianOperator(model, CE, data, params=sub)
    idx = offsets[last].reshape(-1)
    v = torch.randn(op.dim, dtype=torch.float64)
    assert op.dim == idx.numel() and rel(op.to_flat(op.matvec(op.from_flat(v))), H[idx][:, idx] @ v) < 1e-10
    g = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(p.shape, generator=g) < 0.4 for n, p in space.params.items()}
    mask = ParamMask(space, masks)
    op = curvature.HessianOperator(model, CE, data, params=mask, mode="forward_over_reverse")
    idx = torch.cat([offsets[n][masks[n]] for n in mask.names])
    assert op.dim == idx.numel() == mask.count()
    v = torch.randn(op.dim, dtype=torch.float64)
    out = op.matvec(op.from_flat(v))
    assert rel(op.to_flat(out), H[idx][:, idx] @ v) < 1e-10
    assert all(bool((out[n][~masks[n]] == 0).all()) for n in mask.names)  # P·H·P: zero off the selection
    ev = torch.linalg.eigvalsh(H[idx][:, idx]).numpy()
    np.testing.assert_allclose(curvature.top_eigenvalues(op, k=2, tol=1e-12).values, ev[::-1][:2], rtol=1e-8)


def test_empirical_fisher_matches_per_example_gradients(case):
    model, data, _, G = case
    F = G.T @ G / G.shape[0]
    op = curvature.EmpiricalFisherOperator(model, CE, data)
    v = torch.randn(op.dim, dtype=torch.float64)
    assert rel(op.to_flat(op.matvec(op.from_flat(v))), F @ v) < 1e-10
    ev = torch.linalg.eigvalsh(F).numpy()
    np.testing.assert_allclose(curvature.top_eigenvalues(op, k=2, tol=1e-12).values, ev[::-1][:2], rtol=1e-8)
    r = curvature.trace(op, num_matvecs=30, seed=0)
    assert abs(r.estimate - float(torch.trace(F))) <= 4 * r.stderr + 1e-10 * float(torch.trace(F))


@pytest.mark.slow
def test_bert_sdpa_both_modes_agree_and_model_is_untouched():
    model = make_tiny_bert()  # default SDPA attention, train mode
    data, obj = make_mlm_batches(), mlm_objective()
    before = util.weights_fingerprint(model)
    flags = [m.training for m in model.modules()]
    ops = {m: curvature.HessianOperator(model, obj, data, mode=m, check_determinism=m == "double_backward")
           for m in curvature.MODES}
    v = ops["double_backward"].randn(0)
    out = {m: op.to_flat(op.matvec(v)) for m, op in ops.items()}
    assert rel(out["forward_over_reverse"], out["double_backward"]) < 1e-4
    # tied decoder weight counted once
    assert ops["double_backward"].dim == ParamSpace(model).dim
    fisher = curvature.EmpiricalFisherOperator(model, obj, data)
    assert float(vectors.dot(fisher.matvec(v), v)) >= 0
    auto = curvature.HessianOperator(model, obj, data, reuse_graph=False)
    assert auto.mode in curvature.MODES and set(auto.mode_timings) == set(curvature.MODES)
    assert auto.mode_choice["picked"] == auto.mode and all(len(t) == 3 for t in auto.mode_choice["runs_s"].values())
    assert util.weights_fingerprint(model) == before
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
def test_no_graph_kept_across_100_matvecs():
    model, data = make_mlp(), make_classification_data(n_batches=1)
    for mode in curvature.MODES:
        op = curvature.HessianOperator(model, CE, data, mode=mode, reuse_graph=False)
        v = op.randn(0)

        def live_tensors() -> int:
            gc.collect()
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

        for _ in range(10):
            op.matvec(v)
        n10 = live_tensors()
        for _ in range(90 if mode == "double_backward" else 40):
            op.matvec(v)
        assert live_tensors() <= n10 + 2
        assert op.n_matvecs == (100 if mode == "double_backward" else 50)


class NoisyInEval(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_mlp()

    def forward(self, x):
        return nn.functional.dropout(self.net(x), p=0.5, training=True)  # dropout left on even in eval


class ResampledData:
    """Re-iterable data that draws new examples on every pass (like a random subset sampler)."""

    def __iter__(self):
        yield (torch.randn(4, 4, dtype=torch.float64), torch.randint(0, 3, (4,)))


def test_determinism_check_catches_stochastic_forward_and_changing_data():
    with pytest.raises(ValueError, match="not a deterministic function"):
        curvature.HessianOperator(NoisyInEval(), CE, make_classification_data())
    with pytest.raises(ValueError, match="different batches on a second pass"):
        curvature.HessianOperator(make_mlp(), CE, ResampledData())
    curvature.HessianOperator(NoisyInEval(), CE, make_classification_data(), check_determinism=False)
    # shuffling alone is harmless: data is prepared once and L is a sum over examples
    pairs = [(x[i], y[i]) for x, y in make_classification_data() for i in range(len(y))]
    loader = torch.utils.data.DataLoader(pairs, batch_size=4, shuffle=True)
    op = curvature.HessianOperator(make_mlp(), CE, loader)
    ref = curvature.HessianOperator(make_mlp(), CE, make_classification_data())
    v = ref.randn(1)
    assert rel(op.to_flat(op.matvec(v)), ref.to_flat(ref.matvec(v))) < 1e-12


def test_bad_inputs_have_clear_errors():
    model, data = make_mlp(), make_classification_data()
    frozen = make_mlp()
    frozen.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        curvature.HessianOperator(frozen, CE, data)
    with pytest.raises(ValueError, match="matches nothing"):
        curvature.HessianOperator(model, CE, data, params=ParamSpace(model, include="encoder.*"))
    empty_mask = ParamMask(ParamSpace(model), {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()})
    with pytest.raises(ValueError, match="selects no coordinate"):
        curvature.HessianOperator(model, CE, data, params=empty_mask)
    with pytest.raises(ValueError, match="empty"):
        curvature.HessianOperator(model, CE, [])
    with pytest.raises(TypeError, match="one-shot iterator"):
        curvature.HessianOperator(model, CE, iter(data))
    nan_data = [(torch.full((2, 4), float("nan"), dtype=torch.float64), torch.tensor([0, 1]))]
    with pytest.raises(ValueError, match="loss is nan"):
        curvature.HessianOperator(model, CE, nan_data)
    with pytest.raises(ValueError, match="mode must be"):
        curvature.HessianOperator(model, CE, data, mode="fast")
    op = curvature.HessianOperator(model, CE, data)
    with pytest.raises(ValueError, match="k=43 .* need 1 ≤ k < dim"):
        curvature.top_eigenvalues(op, k=op.dim)
    v = op.zeros()
    v[next(iter(v))] = torch.zeros(7, dtype=torch.float64)
    with pytest.raises(ValueError, match="has shape"):
        op.matvec(v)
    with pytest.raises(ValueError, match="different parameters"):
        op.matvec({"nope": torch.zeros(3)})
    with pytest.raises(TypeError, match="from_flat"):
        op.matvec(torch.zeros(op.dim))
    with pytest.raises(ValueError, match="expected \\(43,\\)"):
        op.from_flat(torch.zeros(5))


def test_weights_and_flags_restored_when_a_pass_raises_midway(monkeypatch):
    model, data = make_mlp(), make_classification_data()
    model.train()
    before = util.weights_fingerprint(model)
    op = curvature.HessianOperator(model, CE, data)
    calls = {"n": 0}
    original = CE.loss_terms

    def fail_on_second(output, prepared):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom midway")
        return original(output, prepared)

    monkeypatch.setattr(CE, "loss_terms", fail_on_second)
    with pytest.raises(RuntimeError, match="boom midway"):
        op.matvec(op.randn(0))
    assert util.weights_fingerprint(model) == before and model.training
    assert all(p.grad is None for p in model.parameters())
