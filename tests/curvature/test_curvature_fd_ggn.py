"""Finite-difference Hessian products and the GGN operator against dense float64 references."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from landscape import curvature, objectives, util, vectors
from landscape.params import ParamSpace
from references import dense_objective_hessian
from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective

CE = objectives.Criterion(nn.CrossEntropyLoss())
MSE = objectives.Criterion(nn.MSELoss())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def dense(op) -> torch.Tensor:
    """The operator as a dense [dim, dim] matrix, one matvec per basis vector."""
    eye = torch.eye(op.dim, dtype=op.dtype)
    return torch.stack([op.to_flat(op.matvec(op.from_flat(eye[i]))) for i in range(op.dim)], 1)


def dense_ggn(model: nn.Module, obj: objectives.Objective, data, loss: str) -> torch.Tensor:
    """Σ_b J_bᵀ (∇²_z ℓ_b) J_b / N from ``jacrev`` of the outputs and an explicit loss Hessian."""
    space = ParamSpace(model)
    flat0 = vectors.to_flat(space.values()).detach()
    total, count = torch.zeros(flat0.numel(), flat0.numel(), dtype=torch.float64), 0
    for b in data:
        prep = obj.prepare(b, model)

        def outputs(flat, prep=prep):
            out = obj.forward(model, prep, vectors.from_flat(flat, space.params))
            if loss == "mse":
                return out
            logits, targets = obj.logits_and_targets(out, prep)
            return logits[targets != -100]

        z = outputs(flat0).detach()
        J = torch.func.jacrev(outputs)(flat0).reshape(z.numel(), -1)
        if loss == "mse":
            Hz = torch.func.hessian(lambda zz, prep=prep: obj.loss_terms(zz, prep)[0].sum())(z).reshape(z.numel(), -1)
        else:
            p = torch.softmax(z, -1)
            Hz = torch.block_diag(*[torch.diag(pm) - torch.outer(pm, pm) for pm in p])
        total += J.T @ Hz @ J
        count += int(obj.count(prep)[1])
    return total / count


def eager_bert():
    return make_tiny_bert(dtype=torch.float64, attn_implementation="eager")


# ---- GGN
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_ggn_matches_dense_on_an_mlp(loss):
    model = make_mlp()
    data = make_classification_data()
    obj = CE
    if loss == "mse":
        g = torch.Generator().manual_seed(1)
        data = [(x, torch.randn(x.shape[0], 3, generator=g, dtype=torch.float64)) for x, _ in data]
        obj = MSE
    op = curvature.GGNOperator(model, obj, data)
    assert op.loss_kind == loss
    G = dense_ggn(model, obj, data, loss)
    assert rel(dense(op), G) < 1e-10
    assert torch.linalg.eigvalsh(G).min() > -1e-10  # PSD


def test_ggn_matches_dense_on_a_tiny_bert_mlm():
    model = eager_bert().eval()  # the reference's forward runs in the model's mode: no dropout, as the operator
    data, obj = make_mlm_batches(), mlm_objective()
    before = util.weights_fingerprint(model)
    op = curvature.GGNOperator(model, obj, data,
                               params=["cls.predictions.transform.dense.*", "bert.encoder.layer.1.output.dense.bias"])
    G_full = dense_ggn(model, obj, data, "cross_entropy")
    idx = _selected_indices(model, op)
    got = dense(op)
    assert rel(got, G_full[idx][:, idx]) < 1e-9
    assert util.weights_fingerprint(model) == before


def _selected_indices(model: nn.Module, op) -> torch.Tensor:
    space = ParamSpace(model)
    marks = {n: torch.full_like(p, float(n in op.names)) for n, p in space.params.items()}
    return torch.nonzero(vectors.to_flat(marks)).reshape(-1)


def test_ggn_equals_hessian_for_a_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    data = make_classification_data()
    G = dense(curvature.GGNOperator(model, CE, data))
    H = dense_objective_hessian(model, CE, data)
    assert rel(G, H) < 1e-10


def test_mc_ggn_converges_to_the_exact_one():
    model, data = make_mlp(), make_classification_data()
    exact = dense(curvature.GGNOperator(model, CE, data))
    errs = {k: rel(dense(curvature.GGNOperator(model, CE, data, mc_samples=k, seed=3)), exact) for k in (4, 64, 2048)}
    # unbiased with error ~ 1/sqrt(k): stated tolerances 1.0 at k=4, 0.35 at k=64, 0.08 at k=2048
    assert errs[4] < 1.0 and errs[64] < 0.35 and errs[2048] < 0.08
    assert errs[2048] < errs[64] < errs[4]


def test_ggn_bad_inputs():
    model, data = make_mlp(), make_classification_data()
    with pytest.raises(ValueError, match="mc_samples"):
        curvature.GGNOperator(model, CE, data, mc_samples=0)
    with pytest.raises(ValueError, match="loss must be"):
        curvature.GGNOperator(model, CE, data, loss="hinge")  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    reg = [(x, torch.randn(x.shape[0], 3, generator=g, dtype=torch.float64)) for x, _ in data]
    with pytest.raises(ValueError, match="cross-entropy"):
        curvature.GGNOperator(model, MSE, reg, mc_samples=4)


# ---- finite differences
def test_fd_products_match_dense_hessian_in_float64_and_restore_weights():
    model, data = make_mlp(), make_classification_data()
    H = dense_objective_hessian(model, CE, data)
    before = util.weights_fingerprint(model)
    plain = curvature.HessianOperator(model, CE, data, mode="finite_difference")
    rich = curvature.HessianOperator(model, CE, data, mode="finite_difference", richardson=True)
    assert rel(dense(plain), H) < 1e-6
    assert rel(dense(rich), H) < 1e-7
    assert rich.describe()["fd_error_max"] < 1e-5 and rich.describe()["richardson"]
    vs = [plain.randn(s) for s in range(3)]
    mm = plain.matmat(vs)
    assert all(rel(plain.to_flat(a), H @ plain.to_flat(v)) < 1e-6 for a, v in zip(mm, vs))
    assert util.weights_fingerprint(model) == before


def test_fd_restores_weights_bit_for_bit_after_a_raise(monkeypatch):
    model, data = make_mlp(dtype=torch.float32), make_classification_data(dtype=torch.float32)
    op = curvature.HessianOperator(model, CE, data, mode="finite_difference")
    before = [p.detach().clone() for p in model.parameters()]
    calls = {"n": 0}
    real = CE.loss_terms

    def fail_on_second(output, prepared):
        calls["n"] += 1
        if calls["n"] == 2:  # after θ₀ + εv was set
            raise RuntimeError("boom")
        return real(output, prepared)

    monkeypatch.setattr(CE, "loss_terms", fail_on_second)
    with pytest.raises(RuntimeError, match="boom"):
        op.matvec(op.randn(0))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fd_and_compile_bad_inputs():
    model, data = make_mlp(), make_classification_data()
    with pytest.raises(ValueError, match="compile=True needs mode='finite_difference'"):
        curvature.HessianOperator(model, CE, data, mode="double_backward", compile=True)
    with pytest.raises(ValueError, match="fd_step"):
        curvature.HessianOperator(model, CE, data, mode="finite_difference", fd_step=-1.0)
    with pytest.raises(ValueError, match="mode must be"):
        curvature.HessianOperator(model, CE, data, mode="finite")  # type: ignore[arg-type]


def test_fd_runs_on_the_fused_sdpa_kernel():
    model = make_tiny_bert()  # default SDPA attention
    data, obj = make_mlm_batches(), mlm_objective()
    exact = curvature.HessianOperator(model, obj, data, mode="double_backward", reuse_graph=False)
    fd = curvature.HessianOperator(model, obj, data, mode="finite_difference")
    v = exact.randn(0)
    assert rel(fd.to_flat(fd.matvec(v)), exact.to_flat(exact.matvec(v))) < 2e-3


@pytest.mark.slow
def test_compiled_products_equal_eager_ones():
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("torch.compile needs a C compiler (gcc/cc) for its CPU backend; none found")
    model, data = make_mlp(dtype=torch.float32), make_classification_data(dtype=torch.float32)
    for make in (lambda c: curvature.HessianOperator(model, CE, data, mode="finite_difference", compile=c),
                 lambda c: curvature.GGNOperator(model, CE, data, compile=c)):
        eager, compiled = make(False), make(True)
        v = eager.randn(0)
        assert rel(compiled.to_flat(compiled.matvec(v)), eager.to_flat(eager.matvec(v))) < 1e-4


def _gradient(op: curvature.HessianOperator) -> torch.Tensor:
    """∇L at the operator's weights, flat float64 (summed per batch, divided by N)."""
    total = torch.zeros(op.dim, dtype=torch.float64)
    with util.deterministic_eval(op.model), torch.enable_grad():
        for p in op.prepared:
            s, _ = op.objective.loss_sum(op.model, p)
            gs = torch.autograd.grad(s, list(op.params.values()), allow_unused=True, materialize_grads=True)
            total += op.to_flat(dict(zip(op.names, gs))).double()
    return total / op.n_terms


@pytest.mark.slow
def test_fd_on_the_default_model_sits_on_the_float32_gradient_floor():
    """Issue 19's targets (1e-4 plain, 3e-5 Richardson, float32) are out of reach on the default model:
    the float32 gradient itself is off by ‖g₃₂ − g₆₄‖ ≈ 3.4e-6·‖g‖, so a central difference carries
    √2·‖g₃₂ − g₆₄‖·‖v‖ / (2h·‖Hv‖) ≈ 3.1e-5 / h of rounding, while truncation grows as 5.6e-3·h² (plain,
    measured in float64) along a random v and ~300× faster along the top eigenvector. Measured
    (float32 vs a float64 double-backward product, 16 held-out sequences): random v, plain h = 0.004 /
    0.03 / 0.1 / 0.3: 7.3e-3 / 9.4e-4 / 2.6e-4 / 5.2e-4; Richardson h = 0.036 / 0.3 / 1.0: 2.0e-3 /
    2.4e-4 / 8.0e-5; top eigenvector, plain h = 0.001 / 0.01: 1.5e-4 / 1.2e-2, Richardson h = 0.003 /
    0.03: 1.05e-4 / 5.9e-3. The eager attention kernel instead of SDPA changes nothing (9.2e-4 vs 9.4e-4
    at h = 0.03). Those numbers are the dropout-0 default model's; on today's (dropout 0.1, lr 5e-3): plain
    default h = 0.0039: 2.8e-3 (floor 6.7e-3), plain h = 0.1: 1.2e-4, Richardson default: 9.0e-4, Richardson
    h = 1: 3.2e-5. Bounds: the measured values with margin."""
    import copy

    from landscape.models.default_model import cached_path, load_default

    if cached_path() is None:
        pytest.skip("the default model is not built in this cache")
    dm = load_default(progress=False)
    model, data = dm.model, dm.heldout_batches(batch_size=8, max_examples=16)
    obj = objectives.MaskedLM(mask_prob=0.15, seed=0)
    before = util.weights_fingerprint(model)
    exact64 = curvature.HessianOperator(copy.deepcopy(model).double(), obj, data, mode="double_backward",
                                        reuse_graph=False, check_determinism=False)
    v64 = exact64.randn(0)
    ref = exact64.to_flat(exact64.matvec(v64))
    v = {k: t.float() for k, t in v64.items()}

    def fd_error(**kw) -> float:
        op = curvature.HessianOperator(model, obj, data, mode="finite_difference", check_determinism=False, **kw)
        return rel(op.to_flat(op.matvec(v)).double(), ref)

    plain_default = curvature.HessianOperator(model, obj, data, mode="finite_difference")
    g32, g64 = _gradient(plain_default), _gradient(exact64)
    h = plain_default.fd_step
    floor = 2**0.5 * float(torch.linalg.vector_norm(g32 - g64)) * float(vectors.norm(v64)) / (
        2 * h * float(torch.linalg.vector_norm(ref)))
    err = rel(plain_default.to_flat(plain_default.matvec(v)).double(), ref)
    # the error is of the gradient's float32 rounding's order (the floor adds the two gradients' errors as
    # if independent and aligned with nothing, so it bounds the error from above within a factor ~2)
    assert 0.2 * floor < err < 2 * floor
    errs = {"plain h=0.1": fd_error(fd_step=0.1), "richardson default": fd_error(richardson=True),
            "richardson h=1": fd_error(fd_step=1.0, richardson=True)}
    assert errs["plain h=0.1"] < 6e-4  # the best plain step here: 2.6e-4
    assert errs["richardson default"] < 5e-3  # default h = 0.036: 2.0e-3
    assert errs["richardson h=1"] < 2e-4  # 8.0e-5
    exact = curvature.HessianOperator(model, obj, data, mode="double_backward")
    rich = curvature.HessianOperator(model, obj, data, mode="finite_difference", richardson=True)
    plain = curvature.HessianOperator(model, obj, data, mode="finite_difference")
    top_exact = curvature.top_eigenvalues(exact, k=1, tol=1e-4).values[0]
    for op in (rich, plain):  # issue 19's target, 1e-3; measured 2.0e-5 (Richardson) and 8.6e-5 (plain)
        top_fd = curvature.top_eigenvalues(op, k=1, tol=1e-4).values[0]
        assert abs(top_fd - top_exact) <= 1e-3 * abs(top_exact)
    assert util.weights_fingerprint(model) == before
