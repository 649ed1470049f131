"""The public extension points of landscape.curvature, each against a dense float64 reference:
a user operator (a DataOperator subclass), a registered eigen-solver, ``to_scipy()``, and the
nested ``meta`` that results carry through save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature, objectives
from landscape.curvature import DataOperator, EigenProblem, MatrixOperator
from landscape.curvature.eigensolvers import wanted
from landscape.objectives import Prepared
from landscape.params import ParamMask, ParamSpace
from landscape.util.fingerprints import model_fingerprint, weights_fingerprint
from landscape.vectors import Vector
from conftest import make_classification_data, make_mlp
from references import dense_parts

CE = objectives.Criterion(nn.CrossEntropyLoss())


class TwiceHessian(DataOperator):
    """A user operator written only against the public base: A·v = 2·H·v (forward-over-reverse per batch)."""

    kind = "twice-Hessian"

    def _batch_product(self, prepared: Prepared, v: Vector) -> Vector:
        loss = self._loss_sums(prepared)
        with torch.no_grad():
            _, hv = torch.func.jvp(torch.func.grad(lambda p: loss(p).sum()), (self._primals(),), (v,))
        return {n: 2.0 * t for n, t in hv.items()}


@pytest.fixture
def mlp_case():
    model, data = make_mlp(), make_classification_data()
    H, _ = dense_parts(model, data)
    return model, data, H


def test_user_operator_runs_through_every_algorithm(mlp_case):
    model, data, H = mlp_case
    A = 2.0 * H
    exact = np.sort(np.linalg.eigvalsh(A.numpy()))[::-1]
    op = TwiceHessian(model, CE, data)
    assert op.dim == A.shape[0] and isinstance(op, curvature.CurvatureOperator)
    x = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(curvature.flat_matvec(op, x), A @ x, rtol=1e-10, atol=1e-12)
    top = curvature.top_eigenvalues(op, k=2, tol=1e-10, progress=False)
    np.testing.assert_allclose(top.values, exact[:2], rtol=1e-8)
    tr = curvature.trace(op, num_matvecs=3 * op.dim, method="hutch++", progress=False)  # the sketch spans everything
    assert tr.estimate == pytest.approx(float(torch.trace(A)), rel=1e-8)
    dens = curvature.spectral_density(op, num_runs=2, lanczos_steps=op.dim, seed=5, progress=False)
    for r, (nodes, weights) in enumerate(zip(dens.nodes, dens.weights)):  # Gauss quadrature is exact for zᵀAᵖz
        z = curvature.flat_draw(op, 5 + r, "rademacher")
        for p in (1, 2):
            want = float(z @ torch.linalg.matrix_power(A, p) @ z / (z @ z))
            assert float(np.sum(weights * nodes**p)) == pytest.approx(want, rel=1e-8)
    assert max(np.min(np.abs(exact - t)) for t in dens.nodes[0]) < 1e-7 * exact[0]  # every node is an eigenvalue


def test_user_operator_without_a_product_says_what_to_implement(mlp_case):
    model, data, _ = mlp_case
    op = DataOperator(model, CE, data)
    with pytest.raises(NotImplementedError, match="_batch_product"):
        op.matvec(op.randn(0))


def _dense_solver(op, problem: EigenProblem):
    """A solver for small operators: the dense matrix from dim products, then eigh."""
    eye = torch.eye(op.dim, dtype=torch.float64)
    A = curvature.flat_matmat(op, eye.to(op.to_flat(op.zeros()).dtype), problem.block(op)).double()
    vals, vecs = torch.linalg.eigh(0.5 * (A + A.T))
    idx = wanted(vals.numpy(), problem.k, problem.which)
    return vals.numpy()[idx], [op.from_flat(vecs[:, i]) for i in idx], True


@pytest.fixture
def dense_registered():
    curvature.register_eigensolver("dense-test", _dense_solver)
    yield "dense-test"
    curvature.EIGENSOLVERS.pop("dense-test", None)


def test_registered_solver_is_picked_by_method(dense_registered, mlp_case):
    model, data, H = mlp_case
    exact = np.sort(np.linalg.eigvalsh(H.numpy()))
    op = curvature.HessianOperator(model, CE, data, mode="double_backward")
    for which, want in [("largest", exact[::-1][:3]), ("smallest", np.sort(exact[:3])[::-1])]:
        r = curvature.top_eigenvalues(op, k=3, method=dense_registered, which=which, progress=False)
        np.testing.assert_allclose(r.values, want, rtol=1e-9, atol=1e-12)
        assert r.method == dense_registered and r.n_matvecs == op.dim and r.meta["settings"]["method"] == "dense-test"
    with pytest.raises(ValueError, match="already registered"):
        curvature.register_eigensolver(dense_registered, _dense_solver)
    curvature.register_eigensolver(dense_registered, _dense_solver, replace=True)
    with pytest.raises(TypeError, match="callable"):
        curvature.register_eigensolver("not-a-solver", 3)  # type: ignore[arg-type]


def test_unknown_method_names_the_table_and_the_fix():
    op = MatrixOperator(torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"register_eigensolver") as err:
        curvature.top_eigenvalues(op, method="nope")
    assert "lanczos" in str(err.value) and "lobpcg" in str(err.value)


def test_to_scipy_agrees_with_matvec_and_serves_eigsh(mlp_case):
    from scipy.sparse.linalg import eigsh

    model, data, H = mlp_case
    ops = [curvature.HessianOperator(model, CE, data, mode="double_backward"), MatrixOperator(H)]
    x = np.random.default_rng(0).standard_normal((H.shape[0], 3))
    for op in ops:
        lin = op.to_scipy()
        assert lin.shape == (op.dim, op.dim) and lin.dtype == np.float64
        y = lin.matvec(x[:, 0])
        assert isinstance(y, np.ndarray) and y.dtype == np.float64
        np.testing.assert_allclose(y, curvature.flat_matvec(op, torch.as_tensor(x[:, 0])).numpy(), rtol=1e-12)
        np.testing.assert_allclose(lin.matmat(x), H.numpy() @ x, rtol=1e-9, atol=1e-12)
        vals = eigsh(lin, k=2, which="LA", tol=1e-12)[0]
        np.testing.assert_allclose(np.sort(vals), np.sort(np.linalg.eigvalsh(H.numpy()))[-2:], rtol=1e-9)


def test_to_scipy_on_a_float32_operator_returns_float64():
    op = MatrixOperator(torch.diag(torch.arange(1.0, 6.0)))
    y = op.to_scipy().matvec(np.ones(5))
    assert y.dtype == np.float64 and np.allclose(y, np.arange(1.0, 6.0))


def test_results_meta_carry_model_and_versions_and_round_trip(tmp_path, mlp_case):
    model, data, _ = mlp_case
    op = curvature.HessianOperator(model, CE, data, params="0.*", mode="double_backward")
    results = {
        "eig": curvature.top_eigenvalues(op, k=1, tol=1e-6, progress=False),
        "trace": curvature.trace(op, num_matvecs=6, seed=3, progress=False),
        "density": curvature.spectral_density(op, num_runs=2, lanczos_steps=5, progress=False),
    }
    for name, res in results.items():
        meta = res.meta
        assert meta["model"] == {"class": "Sequential", "fingerprint": model_fingerprint(model),
                                 "weights": weights_fingerprint(model)}
        assert {"torch", "numpy", "scipy", "landscape"} <= set(meta["versions"])
        assert meta["operator"]["operator"] == "Hessian" and meta["operator"]["dim"] == op.dim
        assert meta["n_matvecs"] == res.n_matvecs > 0 and meta["settings"]["seed"] == res.seed
        d = res.to_dict()
        assert set(d["meta"]) >= {"model", "settings", "versions", "operator", "n_matvecs"}
        assert "versions" not in d and "operator" not in d  # nested, not flattened into the top level
        back = type(res).load(res.save(tmp_path / f"{name}.json"))
        assert back.meta == json.loads(json.dumps(d["meta"])) and back.n_matvecs == res.n_matvecs
    assert results["trace"].meta["settings"]["method"] == "hutch++" and "exact_part" in results["trace"].meta
    assert results["density"].meta["settings"]["num_runs"] == 2


def test_matrix_operator_results_have_no_model():
    op = MatrixOperator(torch.diag(torch.arange(1.0, 8.0, dtype=torch.float64)))
    res = curvature.top_eigenvalues(op, k=1, tol=1e-10, progress=False)
    assert "model" not in res.meta and res.meta["operator"]["operator"] == "matrix"
    assert res.meta["settings"]["which"] == "largest" and "torch" in res.meta["versions"]


def test_params_takes_names_globs_space_and_mask(mlp_case):
    model, data, H = mlp_case
    space = ParamSpace(model, include=["0.*"])
    by_glob = curvature.HessianOperator(model, CE, data, params="0.*", mode="double_backward")
    by_list = curvature.HessianOperator(model, CE, data, params=["0.weight", "0.bias"], mode="double_backward")
    by_space = curvature.HessianOperator(model, CE, data, params=space, mode="double_backward")
    block = H[: space.dim, : space.dim]  # ParamSpace order: 0.weight, 0.bias first
    for op in (by_glob, by_list, by_space):
        assert op.names == ["0.weight", "0.bias"] and op.dim == space.dim
        x = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(curvature.flat_matvec(op, x), block @ x, rtol=1e-10, atol=1e-12)
    full = ParamSpace(model)
    g = torch.Generator().manual_seed(4)
    mask = ParamMask(full, {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in full.params.items()})
    by_mask = curvature.HessianOperator(model, CE, data, params=mask, mode="double_backward")
    sel = torch.cat([mask.masks.get(n, torch.zeros(p.shape, dtype=torch.bool)).reshape(-1)  # all-False tensors dropped
                     for n, p in full.params.items()])
    np.testing.assert_allclose(curvature.to_scipy(by_mask).matmat(np.eye(by_mask.dim)), H[sel][:, sel].numpy(),
                               rtol=1e-9, atol=1e-12)
