"""Exact references for the estimators, in float64, on models small enough to build them densely.

- :func:`dense_parts`: the dense Hessian [d, d] of a mean cross-entropy and per-example gradients.
- :func:`dense_objective_hessian`: the dense Hessian of any objective's data loss L = Σsᵢ/Σnᵢ.
- :func:`per_example_grads`, :func:`mean_sq`: one-example-at-a-time autograd, the empirical Fisher.
- :func:`dense_true_fisher`: diag(Jᵀ(diag p − ppᵀ)J) from full Jacobians.
- :class:`Quadratic`: L(w) = ½(w − c)ᵀA(w − c), with closed-form scans and sharpness.
"""

from __future__ import annotations

import torch
from torch import nn

from landscape import objectives, util, vectors
from landscape.params import ParamSpace


def dense_parts(model: nn.Module, data):
    """Dense H [d, d] of L = mean CE and per-example gradients G [N, d], in ParamSpace order."""
    space = ParamSpace(model)
    like = {n: p.detach() for n, p in space.params.items()}
    flat0 = vectors.to_flat(like)

    def loss(flat, x, y, reduction="sum"):
        out = torch.func.functional_call(model, vectors.from_flat(flat, like), (x,))
        return nn.functional.cross_entropy(out, y, reduction=reduction)

    n = sum(len(y) for _, y in data)
    H = sum(torch.func.hessian(loss)(flat0, x, y) for x, y in data) / n
    G = torch.stack([torch.func.grad(loss)(flat0, x[i : i + 1], y[i : i + 1]) for x, y in data for i in range(len(y))])
    return H, G


def dense_objective_hessian(model: nn.Module, obj: objectives.Objective, data) -> torch.Tensor:
    """Dense Hessian [d, d] of L = Σsᵢ/Σnᵢ over ``data`` in ParamSpace order, via torch.func."""
    space = ParamSpace(model)
    flat0 = vectors.to_flat(space.values()).detach()

    def loss(flat):
        ps = vectors.from_flat(flat, space.params)
        total, count = 0.0, 0
        for b in data:
            prep = obj.prepare(b, model)
            s, n = obj.loss_terms(obj.forward(model, prep, ps), prep)
            total, count = total + s.sum(), count + n.sum()
        return total / count

    return torch.func.hessian(loss)(flat0)


def per_example_grads(model, objective, data):
    """Plain autograd, one example at a time: list of (dict of grads) for informative examples."""
    space = ParamSpace(model)
    out = []
    with util.deterministic_eval(model):
        for batch in data:
            prepared = objective.prepare(batch, model)
            counts = objective.term_counts(prepared)
            size = counts.numel()
            for i in range(size):
                if int(counts[i]) == 0:
                    continue
                ex = {k: v[i : i + 1] if torch.is_tensor(v) and v.ndim and v.shape[0] == size else v for k, v in prepared.items()}
                s, _ = objective.loss_terms(objective.forward(model, ex), ex)
                gs = torch.autograd.grad(s[0], list(space.params.values()))
                out.append(dict(zip(space.names, gs)))
    return out


def mean_sq(grads):
    return {n: sum(g[n] ** 2 for g in grads) / len(grads) for n in grads[0]}


def dense_true_fisher(model, data):
    """(1/N) Σᵢ diag(Jᵢᵀ (diag pᵢ − pᵢpᵢᵀ) Jᵢ) with Jacobians from torch.func.jacrev."""
    space = ParamSpace(model)
    vals = {n: p.detach() for n, p in space.params.items()}
    acc = {n: torch.zeros_like(v) for n, v in vals.items()}
    N = 0
    for x, _ in data:
        for i in range(x.shape[0]):
            f = lambda prm: torch.func.functional_call(model, prm, (x[i : i + 1],))[0]  # noqa: E731
            J = torch.func.jacrev(f)(vals)  # name -> [C, *shape]
            p = torch.softmax(f(vals), -1)
            M = torch.diag(p) - torch.outer(p, p)
            for n in acc:
                Jn = J[n].reshape(p.numel(), -1)
                acc[n] += torch.einsum("ck,cd,dk->k", Jn, M, Jn).view_as(acc[n])
            N += 1
    return {n: a / N for n, a in acc.items()}


class Quadratic(nn.Module):
    """L(w) = ½ (w − c)ᵀ A (w − c) for every example (float64); w has shape ``[n]`` or ``[r, k]``."""

    def __init__(self, A: torch.Tensor, center: torch.Tensor, start: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A.double())
        self.register_buffer("c", center.double().reshape(-1))
        self.w = nn.Parameter(start.double().clone())

    def value(self, w: torch.Tensor) -> torch.Tensor:
        e = w.reshape(-1) - self.c
        return 0.5 * e @ self.A @ e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(self.w).expand(x.shape[0])


def quadratic_objective() -> objectives.Criterion:
    # |q − 0| = q for q ≥ 0 (A positive semi-definite), so the data loss is exactly q.
    return objectives.Criterion(nn.L1Loss())


def quadratic_data(n_batches: int = 2, batch: int = 2) -> list:
    return [(torch.zeros(batch, 1, dtype=torch.float64), torch.zeros(batch, dtype=torch.float64)) for _ in range(n_batches)]


def spd(n: int, seed: int = 0, eigs: list[float] | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.tensor(eigs if eigs is not None else torch.linspace(0.5, 3.0, n).tolist(), dtype=torch.float64)
    return q @ torch.diag(lam) @ q.T
