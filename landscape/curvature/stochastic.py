"""Stochastic curvature estimators over any operator: trace (Hutchinson, Hutch++) and spectral
density (stochastic Lanczos quadrature), applying the operator to blocks of probes through
``matmat`` where the operator has one (:mod:`landscape.curvature.base`'s flat adapters). Sums over
coordinates go through the operator's vector space (:func:`~landscape.curvature.base.allsum`), so
the estimators run on vectors sliced across processes too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from landscape.curvature.base import (
    CurvatureOperator,
    allsum,
    curvature_meta,
    flat_draw,
    flat_matmat,
    gram,
    orthonormalize,
)
from landscape.curvature.base import block_size as operator_block_size
from landscape.curvature.lanczos import lanczos_runs, ritz_pairs
from landscape.util.results import JsonResult

__all__ = ["TraceResult", "DensityResult", "trace", "spectral_density", "TraceMethod"]

TraceMethod = Literal["hutch++", "hutchinson"]


# ----------------------------------------------------------------------------- trace


@dataclass
class TraceResult(JsonResult):
    """tr(H) estimate with its standard error (from the stochastic part only) and matvec count.

    ``samples``: the per-probe quadratic forms (Hutchinson) or residual-probe terms (Hutch++).
    ``meta``: nested (:func:`landscape.util.meta.result_meta`): ``model``, ``settings``
    (num_matvecs, method, seed, block_size), ``versions``, ``operator``, ``n_matvecs`` and ``exact_part``.
    """

    estimate: float
    stderr: float
    n_matvecs: int
    method: str
    seed: int
    samples: list[float] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def trace(
    op: CurvatureOperator, *, num_matvecs: int = 99, method: TraceMethod = "hutch++", seed: int = 0,
    progress: bool = True, block_size: int | None = None,
) -> TraceResult:
    """Unbiased stochastic estimate of tr(H) from ``num_matvecs`` matvecs with Rademacher probes.

    * ``"hutchinson"``: tr ≈ (1/m) Σⱼ zⱼᵀHzⱼ; stderr = sample std / √m.
    * ``"hutch++"`` (Meyer et al., 2021): with m = 3s, sketch Q = orth(H·S) from s probes, take
      tr(QᵀHQ) exactly (s matvecs), and Hutchinson on (I−QQᵀ)H(I−QQᵀ) with the other s probes.
      The exact part has no variance, so stderr comes from the residual probes. Its error decays
      like 1/m instead of 1/√m when the spectrum decays. ``num_matvecs`` is rounded down to 3s.

    Probes go through ``matmat`` in blocks of ``block_size`` vectors (default: the operator's
    ``block_size()``); the probes and the estimate do not depend on the block size.
    """
    if method not in ("hutch++", "hutchinson"):
        raise ValueError(f"method must be 'hutch++' or 'hutchinson', got {method!r}.")
    minimum = 3 if method == "hutch++" else 2
    if num_matvecs < minimum:
        raise ValueError(f"{method} needs num_matvecs ≥ {minimum}, got {num_matvecs} (a standard error needs "
                         f"{6 if method == 'hutch++' else 2}).")
    start = op.n_matvecs
    disable = None if progress else True
    block = operator_block_size(op, block_size)
    if method == "hutchinson":
        samples = []
        bar = tqdm(total=num_matvecs, desc="hutchinson", disable=disable, leave=False)
        for j0 in range(0, num_matvecs, block):
            z = torch.stack([flat_draw(op, seed + j, "rademacher") for j in range(j0, min(j0 + block, num_matvecs))], 1)
            hz = flat_matmat(op, z, block)
            samples.extend(allsum(op, (hz.double() * z.double()).sum(0)).tolist())
            bar.update(z.shape[1])
        bar.close()
        est, exact = float(np.mean(samples)), 0.0
    else:
        s = num_matvecs // 3
        bar = tqdm(total=3 * s, desc="hutch++", disable=disable, leave=False)
        like = flat_draw(op, seed, "rademacher")

        def apply(x: Tensor) -> Tensor:  # [dim, s] float64 → H x, float64
            out = flat_matmat(op, x.to(dtype=like.dtype, device=like.device), block).double()
            bar.update(x.shape[1])
            return out

        sketch = torch.stack([flat_draw(op, seed + j, "rademacher").double() for j in range(s)], 1)
        q = orthonormalize(op, apply(sketch))  # [dim, s]
        exact = float(allsum(op, (q * apply(q)).sum().reshape(1))[0])
        g = torch.stack([flat_draw(op, seed + s + j, "rademacher").double() for j in range(s)], 1)
        g = g - q @ gram(op, q.T, g)
        hg = apply(g)
        hg = hg - q @ gram(op, q.T, hg)
        samples = allsum(op, (g * hg).sum(0)).tolist()
        bar.close()
        est = exact + float(np.mean(samples))
    # one residual probe (hutch++ with 3-5 matvecs) gives no spread: no error estimate (nan), no numpy warning
    stderr = float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    n = op.n_matvecs - start
    settings = {"num_matvecs": int(num_matvecs), "method": method, "seed": int(seed), "block_size": block_size}
    return TraceResult(est, stderr, n, method, int(seed), samples,
                       curvature_meta(op, settings, n_matvecs=n, exact_part=exact, block=block))


# ----------------------------------------------------------------------------- density


@dataclass
class DensityResult(JsonResult):
    """Stochastic Lanczos quadrature: per run, Ritz ``nodes`` θ and ``weights`` τ (summing to 1),
    and the Gaussian-smoothed density φ(t) = (1/R) Σᵣ Σⱼ τᵣⱼ N(t; θᵣⱼ, σ²) on ``grid``.

    ``residuals``: per run, each Ritz pair's residual norm ‖Hy − θy‖ = β_m·|s_mj| ``[m]``, so the
    runs' largest Ritz values serve as top-eigenvalue estimates with the Lanczos bound
    (:func:`~landscape.curvature.eigensolvers.ritz_converged`).

    ``meta``: nested: ``model``, ``settings`` (num_runs, lanczos_steps, sigma, num_grid, seed,
    block_size), ``versions``, ``operator`` and ``n_matvecs``.
    """

    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    n_matvecs: int
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    residuals: list[np.ndarray] = field(default_factory=list)

    def moment(self, p: int = 1) -> float:
        """Σ τ θᵖ averaged over runs: an estimate of tr(Hᵖ)/dim."""
        return float(np.mean([np.sum(w * n**p) for n, w in zip(self.nodes, self.weights)]))


def spectral_density(
    op: CurvatureOperator, *, num_runs: int = 8, lanczos_steps: int = 64, sigma: float | None = None,
    num_grid: int = 1000, seed: int = 0, progress: bool = True, block_size: int | None = None,
) -> DensityResult:
    """Eigenvalue density of a symmetric operator by stochastic Lanczos quadrature.

    Each run starts Lanczos (full reorthogonalization) from a normalized Rademacher vector v and
    takes the eigen-decomposition T = Y diag(θ) Yᵀ; nodes θⱼ with weights τⱼ = Y₀ⱼ² give the
    Gauss quadrature vᵀf(H)v ≈ Σⱼ τⱼ f(θⱼ), so E[Σⱼ τⱼ θⱼ] = tr(H)/dim. ``sigma`` (default 1% of the
    node range) is the Gaussian smoothing width; the grid spans the nodes ± 5σ, so the density
    integrates to 1 up to truncation of the Gaussian tails (< 1e-6).

    Runs advance in lockstep, ``block_size`` at a time (default: the operator's ``block_size()``),
    so each Lanczos step costs one ``matmat`` over the runs (:func:`lanczos_runs`); the basis of
    every run in a group is held at once (``block × lanczos_steps × dim`` numbers).
    """
    if num_runs < 1 or lanczos_steps < 1:
        raise ValueError(f"num_runs and lanczos_steps must be ≥ 1, got {num_runs}, {lanczos_steps}.")
    start, sigma_arg = op.n_matvecs, sigma
    nodes, weights, residuals = [], [], []
    block = operator_block_size(op, block_size)
    bar = tqdm(total=num_runs, desc="density (SLQ runs)", disable=None if progress else True)
    for r0 in range(0, num_runs, block):
        group = range(r0, min(r0 + block, num_runs))
        starts = torch.stack([flat_draw(op, seed + r, "rademacher") for r in group], 1)
        for alpha, beta in lanczos_runs(op, starts, lanczos_steps, block=block):
            theta, s = ritz_pairs(alpha, beta)
            nodes.append(theta)
            weights.append(s[0, :] ** 2)
            residuals.append(np.abs(beta[len(alpha) - 1] * s[-1, :]))
        bar.update(len(group))
    bar.close()
    lo = min(float(n.min()) for n in nodes)
    hi = max(float(n.max()) for n in nodes)
    if sigma is None:
        sigma = 0.01 * max(hi - lo, 1e-12 * max(abs(hi), abs(lo), 1.0))
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(num_grid))
    density = np.zeros_like(grid)
    for theta, tau in zip(nodes, weights):
        density += np.exp(-0.5 * ((grid[:, None] - theta[None, :]) / sigma) ** 2) @ tau
    density /= num_runs * sigma * math.sqrt(2 * math.pi)
    n = op.n_matvecs - start
    settings = {"num_runs": int(num_runs), "lanczos_steps": int(min(lanczos_steps, op.dim)), "sigma": sigma_arg,
                "num_grid": int(num_grid), "seed": int(seed), "block_size": block_size}
    return DensityResult(nodes, weights, grid, density, float(sigma), n, int(seed),
                         curvature_meta(op, settings, n_matvecs=n, block=block), residuals)
