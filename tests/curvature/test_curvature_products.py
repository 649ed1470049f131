"""Batched products (matmat) against k matvecs and the dense Hessian; memory-driven block size;
the cheap determinism check; graph reuse within a budget; weights untouched throughout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature, objectives, util
from landscape.curvature import products
from references import dense_parts
from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective

CE = objectives.Criterion(nn.CrossEntropyLoss())


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def mlp_case():
    model, data = make_mlp(), make_classification_data()
    H, G = dense_parts(model, data)
    return model, data, H, G


@pytest.mark.parametrize("mode,reuse", [("double_backward", False), ("double_backward", True),
                                        ("forward_over_reverse", False)])
def test_hessian_matmat_equals_matvecs_and_dense(mlp_case, mode, reuse):
    model, data, H, _ = mlp_case
    before = util.weights_fingerprint(model)
    op = curvature.HessianOperator(model, CE, data, mode=mode, reuse_graph=reuse)
    vs = [op.randn(s) for s in range(4)]
    out = op.matmat(vs)
    assert op.n_matvecs == 4 and op.n_matmats == 1 and op.last_block == 4
    for v, hv in zip(vs, out):
        x = op.to_flat(v)
        assert rel(op.to_flat(hv), H @ x) < 1e-10
        assert rel(op.to_flat(hv), op.to_flat(op.matvec(v))) < 1e-12
    assert util.weights_fingerprint(model) == before


def test_fisher_matmat_equals_matvecs_and_dense(mlp_case):
    model, data, _, G = mlp_case
    F = G.T @ G / G.shape[0]
    op = curvature.EmpiricalFisherOperator(model, CE, data)
    vs = [op.randn(s) for s in range(3)]
    for v, fv in zip(vs, op.matmat(vs)):
        assert rel(op.to_flat(fv), F @ op.to_flat(v)) < 1e-10
        assert rel(op.to_flat(fv), op.to_flat(op.matvec(v))) < 1e-12


def test_bert_matmat_matches_matvecs_with_masked_head_and_mask():
    model = make_tiny_bert(dtype=torch.float64)
    data, obj = make_mlm_batches(), mlm_objective()
    before = util.weights_fingerprint(model)
    for mode in curvature.MODES:
        op = curvature.HessianOperator(model, obj, data, mode=mode, reuse_graph=False)
        vs = [op.randn(s) for s in range(3)]
        for v, hv in zip(vs, op.matmat(vs)):
            assert rel(op.to_flat(hv), op.to_flat(op.matvec(v))) < 1e-10
    assert util.weights_fingerprint(model) == before
    assert all(p.grad is None for p in model.parameters())


def test_block_size_follows_the_budget(mlp_case):
    model, data, _, _ = mlp_case
    op = curvature.HessianOperator(model, CE, data, reuse_graph=False)
    assert 1 <= op.block_size() <= 16
    assert op.graph_bytes > 0
    small = curvature.HessianOperator(model, CE, data, reuse_graph=False, memory_budget=1)
    assert small.block_size() == 1
    assert products.block_size(10**9, 10**6, 10**6, max_k=4) == 4
    assert products.block_size(5 * 10**6, 10**6, 10**6) == 1


def test_reuse_graph_auto_follows_the_budget_and_reports_bytes(mlp_case):
    model, data, H, _ = mlp_case
    big = curvature.HessianOperator(model, CE, data, memory_budget=10**9)
    assert big.reuse_graph and big.mode == "double_backward" and big.graph_bytes > 0
    v = big.randn(0)
    assert rel(big.to_flat(big.matvec(v)), H @ big.to_flat(v)) < 1e-10
    assert big.kept_graph_bytes == big.graph_bytes * len(data) and big.describe()["kept_graph_bytes"] > 0
    tight = curvature.HessianOperator(model, CE, data, memory_budget=1)
    assert not tight.reuse_graph and tight.kept_graph_bytes == 0
    assert tight.describe()["mode_choice"]["picked"] == tight.mode


def test_reused_graph_is_rebuilt_after_an_in_place_weight_change():
    model, data = make_mlp(), make_classification_data()
    op = curvature.HessianOperator(model, CE, data, reuse_graph=True)
    v = op.randn(0)
    op.matvec(v)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    fresh = curvature.HessianOperator(model, CE, data, reuse_graph=False, mode="double_backward")
    assert rel(op.to_flat(op.matvec(v)), fresh.to_flat(fresh.matvec(v))) < 1e-12


class NoisyInEval(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_mlp()

    def forward(self, x):
        return nn.functional.dropout(self.net(x), p=0.5, training=True)


def test_cheap_and_full_determinism_checks():
    for check in (True, "full"):
        with pytest.raises(ValueError, match="not a deterministic function"):
            curvature.HessianOperator(NoisyInEval(), CE, make_classification_data(), check_determinism=check,
                                    reuse_graph=False)
    with pytest.raises(ValueError, match="check_determinism must be"):
        curvature.HessianOperator(make_mlp(), CE, make_classification_data(), check_determinism="cheap")
    op = curvature.HessianOperator(make_mlp(), CE, make_classification_data(), check_determinism=False)
    assert op.check_determinism() == 0.0 and op.check_determinism(full=True) < 1e-12


def test_auto_mode_pick_is_cached():
    from landscape.curvature import hessian_operator

    hessian_operator._MODE_CACHE.clear()
    model, data = make_mlp(seed=3), make_classification_data(seed=3)
    a = curvature.HessianOperator(model, CE, data, reuse_graph=False)
    b = curvature.HessianOperator(model, CE, data, reuse_graph=False)
    assert a.mode_choice["cached_pick"] is False and b.mode_choice["cached_pick"] is True and a.mode == b.mode


def test_lobpcg_block_top_k_matches_dense_eigenvalues(mlp_case):
    model, data, H, _ = mlp_case
    ev = torch.linalg.eigvalsh(H).numpy()
    op = curvature.HessianOperator(model, CE, data)
    r = curvature.top_eigenvalues(op, k=3, tol=1e-7, method="lobpcg", seed=1, block_size=3, max_iter=300)
    np.testing.assert_allclose(r.values, ev[::-1][:3], rtol=1e-6, atol=1e-9 * abs(ev).max())
    assert r.converged and op.n_matmats > 0 and op.last_block == 3
    r = curvature.top_eigenvalues(curvature.MatrixOperator(H), k=2, tol=1e-7, method="lobpcg", which="smallest",
                                max_iter=500)
    np.testing.assert_allclose(r.values, ev[:2][::-1], rtol=1e-6, atol=1e-9 * abs(ev).max())


def test_block_trace_and_lockstep_density_equal_one_at_a_time(mlp_case):
    model, data, H, _ = mlp_case
    op = curvature.HessianOperator(model, CE, data)
    for method in ("hutchinson", "hutch++"):
        one = curvature.trace(op, num_matvecs=12, method=method, seed=2, block_size=1)
        blk = curvature.trace(op, num_matvecs=12, method=method, seed=2, block_size=5)
        assert abs(one.estimate - blk.estimate) < 1e-10 * abs(one.estimate) and blk.n_matvecs == 12
    before = op.n_matmats
    a = curvature.spectral_density(op, num_runs=4, lanczos_steps=8, seed=0, block_size=1)
    b = curvature.spectral_density(op, num_runs=4, lanczos_steps=8, seed=0, block_size=4)
    assert op.n_matmats - before == 8  # block 4: one matmat per Lanczos step
    for x, y in zip(a.nodes + a.weights, b.nodes + b.weights):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)
    assert a.n_matvecs == b.n_matvecs == 32
