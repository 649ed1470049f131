"""Lanczos tridiagonalization with full reorthogonalization, and the Ritz step.

For a symmetric operator H and a start vector, m Lanczos steps build an orthonormal basis Q
``[m, dim]`` and a tridiagonal T (``alpha`` on the diagonal, ``beta`` off it) with
H·Qᵀ = Qᵀ·T + β r eₘᵀ. The eigenpairs of T (:func:`ritz_pairs`) give the Ritz values that
approximate H's extreme eigenvalues (:mod:`landscape.curvature.eigensolvers`) and the Gauss
quadrature nodes and weights of stochastic Lanczos quadrature (:mod:`landscape.curvature.stochastic`).

Inner products and norms go through the operator's vector space (:func:`~landscape.curvature.base.inner`,
:func:`~landscape.curvature.base.norm`, :func:`~landscape.curvature.base.gram`), so on an operator
whose vectors are sliced across processes each rank stores only its rows of Q (``[m, local_dim]``)
and gets the single-process coefficients.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from landscape.curvature.base import CurvatureOperator, flat_matmat, flat_matvec, gram, inner, norm

__all__ = ["lanczos", "lanczos_runs", "ritz_pairs"]


def lanczos(
    op: CurvatureOperator, v0: Tensor, steps: int, *, stop: Callable[[np.ndarray, np.ndarray], bool] | None = None,
    progress: bool = True, desc: str = "lanczos",
) -> tuple[np.ndarray, np.ndarray, Tensor]:
    """Lanczos with full reorthogonalization from the flat start ``v0`` ``[dim]``.

    Builds H·Q = Q·T + β r eₘᵀ with T tridiagonal (``alpha`` ``[m]`` on the diagonal, ``beta``
    ``[m-1]`` off it). Each new vector is orthogonalized twice against all previous ones (classical
    Gram-Schmidt, "twice is enough"), so Ritz values never duplicate. Stops early on breakdown
    (β ≈ 0: an invariant subspace was found, T is exact) or when ``stop(alphas, betas)`` (the
    coefficients so far, as arrays) returns True.

    Returns:
        ``alpha`` ``[m]``, ``beta`` ``[m]`` (``beta[-1]`` is the residual norm after the last step)
        and the basis ``Q`` ``[m, dim]`` in the operator's dtype (this process's columns when sliced).
    """
    steps = int(min(steps, op.dim))
    q = v0 / norm(op, v0)
    basis = torch.empty((steps, q.numel()), dtype=q.dtype, device=q.device)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    bar = tqdm(total=steps, desc=desc, disable=None if progress else True, leave=False)
    for j in range(steps):
        basis[j] = q
        w = flat_matvec(op, q).to(q.dtype)
        alpha = inner(op, w, q)
        alphas.append(alpha)
        for _ in range(2):  # full reorthogonalization, twice
            w = w - basis[: j + 1].T @ gram(op, basis[: j + 1], w)
        beta = float(norm(op, w))
        betas.append(beta)
        bar.update(1)
        scale = max(scale, abs(alpha), beta)
        if beta <= 1e-12 * max(scale, 1e-300) or j == steps - 1:
            break
        if stop is not None and stop(np.array(alphas), np.array(betas)):
            break
        q = w / beta
    bar.close()
    m = len(alphas)
    return np.array(alphas), np.array(betas), basis[:m]


def lanczos_runs(
    op: CurvatureOperator, starts: Tensor, steps: int, *, block: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Independent Lanczos runs (full reorthogonalization) from the columns of ``starts`` ``[dim, r]``,
    advanced in lockstep so each step applies the operator to up to ``block`` runs' vectors in one
    ``matmat``. Each run is the same as :func:`lanczos` from its start (up to rounding); a run that
    breaks down (β ≈ 0) drops out. Returns ``(alpha, beta)`` per run.
    """
    steps = int(min(steps, op.dim))
    q = starts / norm(op, starts, dim=0)
    r = q.shape[1]
    bases = torch.empty((r, steps, q.shape[0]), dtype=q.dtype, device=q.device)
    alphas: list[list[float]] = [[] for _ in range(r)]
    betas: list[list[float]] = [[] for _ in range(r)]
    scale = [0.0] * r
    active = list(range(r))
    for j in range(steps):
        for i in active:
            bases[i, j] = q[:, i]
        w_all = flat_matmat(op, q[:, active], block)
        still = []
        for c, i in enumerate(active):
            w = w_all[:, c].to(q.dtype)
            alpha = inner(op, w, q[:, i])
            for _ in range(2):  # full reorthogonalization, twice
                w = w - bases[i, : j + 1].T @ gram(op, bases[i, : j + 1], w)
            beta = float(norm(op, w))
            alphas[i].append(alpha)
            betas[i].append(beta)
            scale[i] = max(scale[i], abs(alpha), beta)
            if beta > 1e-12 * max(scale[i], 1e-300) and j < steps - 1:
                q[:, i] = w / beta
                still.append(i)
        active = still
        if not active:
            break
    return [(np.array(a), np.array(b)) for a, b in zip(alphas, betas)]


def ritz_pairs(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Ritz step: eigenvalues θ (ascending, ``[m]``) and eigenvectors S (``[m, m]``, columns) of the
    tridiagonal T with ``alpha`` ``[m]`` on the diagonal and ``beta[:m-1]`` off it; H·(Q sⱼ) ≈ θⱼ Q sⱼ."""
    from scipy.linalg import eigh_tridiagonal

    if len(alpha) == 1:
        return alpha.copy(), np.ones((1, 1))
    return eigh_tridiagonal(alpha, beta[: len(alpha) - 1])
