"""Lanczos, Hutch++/Hutchinson and stochastic Lanczos quadrature on sharded vectors.

The same algorithms, stopping rules, seeds and result classes as :mod:`landscape.curvature.eigen`
and :mod:`landscape.curvature.stochastic`, for an operator whose flat vectors are each rank's slice
``[local_dim]`` (:class:`~landscape.curvature.distributed.operator.ShardedHessianOperator`): every
inner product goes through ``op.dot`` (all-reduced), so each rank gets the single-process
coefficients, and the Lanczos basis Q is stored as ``[m, local_dim]`` per rank. Hutch++'s
orthonormalization is a distributed Gram-eigen (SVQB) step applied twice: with G = all-reduce(XᵀX)
= U Λ Uᵀ, Q = X U Λ^{-1/2} (columns with λ ≤ 1e-12·λ_max dropped), which spans the same range as
the single-process QR, so tr(QᵀHQ) is the same.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from landscape.curvature.distributed.operator import ShardedHessianOperator
from landscape.curvature.eigen import EigenResult
from landscape.curvature.eigensolvers import Which, wanted
from landscape.curvature.lanczos import ritz_pairs
from landscape.curvature.stochastic import DensityResult, TraceMethod, TraceResult

__all__ = ["lanczos", "top_eigenvalues", "trace", "spectral_density", "orthonormalize"]


def _allsum(op: ShardedHessianOperator, t: Tensor) -> Tensor:
    t = t.double().contiguous()
    if op.ctx.active:
        dist.all_reduce(t)
    return t


def _apply(op: ShardedHessianOperator, x: Tensor) -> Tensor:
    return op.to_flat(op.matvec(op.from_flat(x))).to(x.dtype)


def lanczos(
    op: ShardedHessianOperator, v0: Tensor, steps: int, stop: Any = None,
) -> tuple[np.ndarray, np.ndarray, Tensor]:
    """Lanczos with full reorthogonalization (twice) from the local start ``v0`` ``[local_dim]``.

    Returns ``alpha`` ``[m]``, ``beta`` ``[m]`` (as :func:`landscape.curvature.lanczos.lanczos`) and
    this rank's rows of the basis, ``[m, local_dim]``.
    """
    steps = int(min(steps, op.dim))
    q = v0 / op.dot(v0, v0) ** 0.5
    basis = torch.empty((steps, q.numel()), dtype=q.dtype, device=q.device)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    for j in range(steps):
        basis[j] = q
        w = _apply(op, q)
        alpha = op.dot(w, q)
        alphas.append(alpha)
        for _ in range(2):
            coef = _allsum(op, basis[: j + 1] @ w).to(w.dtype)
            w = w - basis[: j + 1].T @ coef
        beta = op.dot(w, w) ** 0.5
        betas.append(beta)
        op._track([w])
        scale = max(scale, abs(alpha), beta)
        if beta <= 1e-12 * max(scale, 1e-300) or j == steps - 1:
            break
        if stop is not None and stop(np.array(alphas), np.array(betas)):
            break
        q = w / beta
    m = len(alphas)
    return np.array(alphas), np.array(betas), basis[:m]


def top_eigenvalues(op: ShardedHessianOperator, *, k: int = 1, tol: float = 1e-3, which: Which = "largest",
                    seed: int = 0, max_iter: int | None = None) -> EigenResult:
    """The k extreme eigenvalues by Lanczos (the stopping rule of ``method="lanczos"`` in
    :func:`landscape.curvature.top_eigenvalues`), sorted descending; ``vectors`` are sharded dict vectors."""
    if not 1 <= k < op.dim:
        raise ValueError(f"k={k} eigenvalues requested of an operator of dimension {op.dim}: need 1 ≤ k < dim.")
    start, steps = op.n_matvecs, int(min(op.dim, max_iter or max(100, 4 * k)))

    def bounds(alpha: np.ndarray, beta: np.ndarray) -> bool:
        if len(alpha) < k + 1:
            return False
        theta, s = ritz_pairs(alpha, beta)
        res = abs(beta[-1] * s[-1, :])
        for i in wanted(theta, k, which):
            others = np.delete(theta, i)
            gap = np.min(np.abs(others - theta[i])) if len(others) else np.inf
            if min(res[i], res[i] ** 2 / max(gap, 1e-300)) > tol * max(abs(theta[i]), 1e-12):
                return False
        return True

    alpha, beta, basis = lanczos(op, op.to_flat(op.randn(seed)), steps, stop=bounds)
    theta, s = ritz_pairs(alpha, beta)
    converged = bounds(alpha, beta) or beta[-1] <= 1e-12 * max(1.0, np.max(np.abs(theta)))
    if not converged:
        warnings.warn(f"Lanczos did not reach tol={tol} in {len(alpha)} steps; raise max_iter.", stacklevel=2)
    idx = wanted(theta, k, which)
    vecs = basis.T @ torch.as_tensor(s[:, idx], dtype=basis.dtype, device=basis.device)
    order = np.argsort(theta[idx])[::-1]
    n = op.n_matvecs - start
    settings = {"k": int(k), "tol": float(tol), "method": "lanczos", "which": which, "seed": int(seed),
                "max_iter": max_iter}
    return EigenResult(theta[idx][order], [op.from_flat(vecs[:, i].contiguous()) for i in order], n, "lanczos", which,
                       float(tol), int(seed), bool(converged), op.meta(settings, n_matvecs=n))


def orthonormalize(op: ShardedHessianOperator, x: Tensor) -> Tensor:
    """An orthonormal basis ``[local_dim, r]`` of the columns of the sharded ``x`` ``[local_dim, s]`` (r ≤ s)."""
    for _ in range(2):
        lam, u = torch.linalg.eigh(_allsum(op, x.T @ x))
        keep = lam > 1e-12 * max(float(lam.max()), 1e-300)
        x = x @ (u[:, keep] / lam[keep].sqrt())
    return x


def _hutchinson(op: ShardedHessianOperator, num_matvecs: int, seed: int) -> tuple[list[float], float]:
    samples = []
    for j in range(num_matvecs):
        z = op.to_flat(op.rademacher(seed + j))
        samples.append(op.dot(z, _apply(op, z)))
    return samples, 0.0


def _hutchpp(op: ShardedHessianOperator, num_matvecs: int, seed: int) -> tuple[list[float], float]:
    s = num_matvecs // 3

    def apply(x: Tensor) -> Tensor:
        return torch.stack([_apply(op, x[:, j].to(op.dtype).contiguous()).double() for j in range(x.shape[1])], 1)

    sketch = torch.stack([op.to_flat(op.rademacher(seed + j)).double() for j in range(s)], 1)
    q = orthonormalize(op, apply(sketch))
    exact = float(_allsum(op, (q * apply(q)).sum().reshape(1)))
    g = torch.stack([op.to_flat(op.rademacher(seed + s + j)).double() for j in range(s)], 1)
    g = g - q @ _allsum(op, q.T @ g)
    hg = apply(g)
    hg = hg - q @ _allsum(op, q.T @ hg)
    return _allsum(op, (g * hg).sum(0)).tolist(), exact


def trace(op: ShardedHessianOperator, *, num_matvecs: int = 99, method: TraceMethod = "hutch++",
          seed: int = 0) -> TraceResult:
    """tr(H) by Hutch++ or Hutchinson with the Rademacher probes of :func:`landscape.curvature.trace`."""
    if method not in ("hutch++", "hutchinson"):
        raise ValueError(f"method must be 'hutch++' or 'hutchinson', got {method!r}.")
    minimum = 3 if method == "hutch++" else 2
    if num_matvecs < minimum:
        raise ValueError(f"{method} needs num_matvecs ≥ {minimum}, got {num_matvecs}.")
    start = op.n_matvecs
    samples, exact = (_hutchpp if method == "hutch++" else _hutchinson)(op, num_matvecs, seed)
    est = exact + float(np.mean(samples))
    stderr = float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    n = op.n_matvecs - start
    settings = {"num_matvecs": int(num_matvecs), "method": method, "seed": int(seed)}
    return TraceResult(est, stderr, n, method, int(seed), samples, op.meta(settings, n_matvecs=n, exact_part=exact))


def spectral_density(op: ShardedHessianOperator, *, num_runs: int = 8, lanczos_steps: int = 64,
                     sigma: float | None = None, num_grid: int = 1000, seed: int = 0) -> DensityResult:
    """Stochastic Lanczos quadrature as :func:`landscape.curvature.spectral_density`: run r starts from
    the Rademacher vector of seed + r; nodes θ and weights τ = Y₀ⱼ² per run; Gaussian smoothing σ."""
    if num_runs < 1 or lanczos_steps < 1:
        raise ValueError(f"num_runs and lanczos_steps must be ≥ 1, got {num_runs}, {lanczos_steps}.")
    start, nodes, weights = op.n_matvecs, [], []
    for r in range(num_runs):
        alpha, beta, _ = lanczos(op, op.to_flat(op.rademacher(seed + r)), lanczos_steps)
        theta, s = ritz_pairs(alpha, beta)
        nodes.append(theta)
        weights.append(s[0, :] ** 2)
    lo, hi = min(float(n.min()) for n in nodes), max(float(n.max()) for n in nodes)
    width = 0.01 * max(hi - lo, 1e-12 * max(abs(hi), abs(lo), 1.0)) if sigma is None else float(sigma)
    if width <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    grid = np.linspace(lo - 5 * width, hi + 5 * width, int(num_grid))
    density = np.zeros_like(grid)
    for theta, tau in zip(nodes, weights):
        density += np.exp(-0.5 * ((grid[:, None] - theta[None, :]) / width) ** 2) @ tau
    density /= num_runs * width * math.sqrt(2 * math.pi)
    n = op.n_matvecs - start
    settings = {"num_runs": int(num_runs), "lanczos_steps": int(min(lanczos_steps, op.dim)), "sigma": sigma,
                "num_grid": int(num_grid), "seed": int(seed)}
    return DensityResult(nodes, weights, grid, density, width, n, int(seed), op.meta(settings, n_matvecs=n))
