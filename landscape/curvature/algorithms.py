"""Curvature algorithms on any symmetric linear operator: top eigenvalues, trace, spectral density.

The algorithms only need an operator with

* ``dim`` (number of coordinates), ``dtype`` and ``device``;
* ``matvec(v)`` on dict vectors and an ``n_matvecs`` counter;
* ``zeros()``, ``randn(seed)``, ``rademacher(seed)`` to draw vectors;
* ``to_flat(v)`` / ``from_flat(x)`` between dict vectors and 1-D tensors of length ``dim``.

:class:`~landscape.curvature.operators.HessianOperator`, :class:`~landscape.curvature.operators.EmpiricalFisherOperator`
and the dense :class:`MatrixOperator` (for tests and small problems) all qualify, so one Lanczos
serves the Hessian and the Fisher alike. Every result carries its matvec count and seed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from landscape.util.results import JsonResult
from landscape.vectors import Vector

__all__ = [
    "CurvatureOperator", "MatrixOperator", "EigenResult", "TraceResult", "DensityResult",
    "top_eigenvalues", "trace", "spectral_density", "lanczos",
]


class CurvatureOperator(Protocol):
    """What the algorithms need from an operator (see the module docstring)."""

    dim: int
    n_matvecs: int

    def matvec(self, v: Vector) -> Vector: ...
    def zeros(self) -> Vector: ...
    def randn(self, seed: int) -> Vector: ...
    def rademacher(self, seed: int) -> Vector: ...
    def to_flat(self, v: Vector) -> Tensor: ...
    def from_flat(self, x: Tensor) -> Vector: ...


class MatrixOperator:
    """A dense symmetric matrix ``A`` ``[d, d]`` as an operator on vectors ``{"x": Tensor[d]}``."""

    def __init__(self, matrix: Tensor | np.ndarray) -> None:
        a = torch.as_tensor(matrix)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"MatrixOperator needs a square matrix, got shape {tuple(a.shape)}.")
        self.matrix = a
        self.dim = int(a.shape[0])
        self.dtype, self.device = a.dtype, a.device
        self.n_matvecs = 0

    def matvec(self, v: Vector) -> Vector:
        if set(v) != {"x"} or tuple(v["x"].shape) != (self.dim,):
            raise ValueError(f"vector must be {{'x': Tensor[{self.dim}]}}.")
        self.n_matvecs += 1
        return {"x": self.matrix @ v["x"].to(self.dtype)}

    def zeros(self) -> Vector:
        return {"x": torch.zeros(self.dim, dtype=self.dtype, device=self.device)}

    def randn(self, seed: int) -> Vector:
        g = torch.Generator().manual_seed(int(seed))
        return {"x": torch.randn(self.dim, generator=g, dtype=torch.float64).to(self.dtype)}

    def rademacher(self, seed: int) -> Vector:
        g = torch.Generator().manual_seed(int(seed))
        return {"x": (torch.randint(0, 2, (self.dim,), generator=g) * 2 - 1).to(self.dtype)}

    def to_flat(self, v: Vector) -> Tensor:
        return v["x"]

    def from_flat(self, x: Tensor) -> Vector:
        return {"x": x.to(self.dtype)}


def _flat_matvec(op: CurvatureOperator, x: Tensor) -> Tensor:
    return op.to_flat(op.matvec(op.from_flat(x)))


def _flat_draw(op: CurvatureOperator, seed: int, kind: str = "randn") -> Tensor:
    return op.to_flat(op.randn(seed) if kind == "randn" else op.rademacher(seed))


# ----------------------------------------------------------------------------- Lanczos core


def lanczos(
    op: CurvatureOperator, v0: Tensor, steps: int, *, stop: Any = None, progress: bool | None = None, desc: str = "lanczos",
) -> tuple[np.ndarray, np.ndarray, Tensor]:
    """Lanczos with full reorthogonalization from the flat start ``v0`` ``[dim]``.

    Builds H·Q = Q·T + β r eₘᵀ with T tridiagonal (``alpha`` ``[m]`` on the diagonal, ``beta``
    ``[m-1]`` off it). Each new vector is orthogonalized twice against all previous ones (classical
    Gram-Schmidt, "twice is enough"), so Ritz values never duplicate. Stops early on breakdown
    (β ≈ 0: an invariant subspace was found, T is exact) or when ``stop(alphas, betas)`` (the
    coefficients so far, as arrays) returns True.

    Returns:
        ``alpha`` ``[m]``, ``beta`` ``[m]`` (``beta[-1]`` is the residual norm after the last step)
        and the basis ``Q`` ``[m, dim]`` in the operator's dtype.
    """
    steps = int(min(steps, op.dim))
    q = v0 / torch.linalg.vector_norm(v0)
    basis = torch.empty((steps, q.numel()), dtype=q.dtype, device=q.device)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    bar = tqdm(total=steps, desc=desc, disable=True if progress is False else None, leave=False)
    for j in range(steps):
        basis[j] = q
        w = _flat_matvec(op, q).to(q.dtype)
        alpha = float(torch.dot(w, q))
        alphas.append(alpha)
        for _ in range(2):  # full reorthogonalization, twice
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(torch.linalg.vector_norm(w))
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


def _ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the tridiagonal T(alpha, beta[:-1])."""
    from scipy.linalg import eigh_tridiagonal

    if len(alpha) == 1:
        return alpha.copy(), np.ones((1, 1))
    return eigh_tridiagonal(alpha, beta[: len(alpha) - 1])


# ----------------------------------------------------------------------------- eigenvalues


@dataclass
class EigenResult(JsonResult):
    """Top eigenpairs: ``values`` ``[k]`` (descending), ``vectors`` (k dict vectors, not saved), matvec count."""

    _transient = ("vectors",)
    _flat_meta = True

    values: np.ndarray
    vectors: list[Vector]
    n_matvecs: int
    method: str
    which: str
    tol: float
    seed: int
    converged: bool
    meta: dict[str, Any] = field(default_factory=dict)


def _select(values: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the k wanted Ritz values."""
    if which == "largest":
        idx = np.argsort(values)[::-1]
    elif which == "smallest":
        idx = np.argsort(values)
    else:
        idx = np.argsort(np.abs(values))[::-1]
    return idx[:k]


def _check_eig_args(op: CurvatureOperator, k: int, which: str, method: str) -> None:
    if which not in ("largest", "smallest", "magnitude"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'magnitude', got {which!r}.")
    if method not in ("lanczos", "power", "arpack"):
        raise ValueError(f"method must be 'lanczos', 'power' or 'arpack', got {method!r}.")
    if not 1 <= k < op.dim:
        raise ValueError(
            f"k={k} eigenvalues requested of an operator of dimension {op.dim}: need 1 ≤ k < dim; "
            "for all eigenvalues build the dense matrix instead."
        )


def top_eigenvalues(
    op: CurvatureOperator, *, k: int = 1, tol: float = 1e-3, method: str = "lanczos", which: str = "largest",
    seed: int = 0, max_iter: int | None = None, progress: bool | None = None, v0: Vector | None = None,
) -> EigenResult:
    """The k extreme eigenvalues of a symmetric operator, sorted descending.

    Methods:
        * ``"lanczos"`` (default): Lanczos with full reorthogonalization, stopped when every wanted
          Ritz value θ satisfies the a-posteriori bound min(r, r²/gap) ≤ tol·|θ|, with r = β·|sₘ| the
          residual ‖Hy − θy‖ and gap the distance to the next Ritz value. ``max_iter`` caps the
          Krylov dimension (default min(dim, max(100, 4k))).
        * ``"arpack"``: scipy's implicitly restarted ``eigsh`` on a float64 ``LinearOperator``.
        * ``"power"``: deflated power iteration with PyHessian's stopping rule (relative change of
          the Rayleigh quotient < tol; at most ``max_iter`` = 100 per eigenvalue). Power iteration
          finds the largest *magnitude*; for ``which`` = largest/smallest the operator is shifted
          by the dominant eigenvalue when needed, which slows convergence.

    Args:
        which: ``"largest"`` (algebraic), ``"smallest"`` (algebraic) or ``"magnitude"``.
        seed: seed of the Gaussian start vector(s).
        v0: optional start vector (dict); overrides ``seed`` for the (first) start vector.
    """
    _check_eig_args(op, k, which, method)
    start = op.n_matvecs
    x0 = None if v0 is None else op.to_flat(v0)
    if method == "power":
        values, vecs, converged = _power(op, k, tol, which, seed, max_iter or 100, progress, x0)
    elif method == "arpack":
        values, vecs, converged = _arpack(op, k, tol, which, seed, max_iter, x0)
    else:
        values, vecs, converged = _lanczos_eigs(op, k, tol, which, seed, max_iter, progress, x0)
    order = np.argsort(values)[::-1]
    return EigenResult(np.asarray(values)[order], [vecs[i] for i in order], op.n_matvecs - start, method, which,
                       float(tol), int(seed), bool(converged))


def _lanczos_eigs(op, k, tol, which, seed, max_iter, progress, x0=None):
    steps = int(min(op.dim, max_iter or max(100, 4 * k)))

    def bounds(alpha: np.ndarray, beta: np.ndarray) -> bool:
        if len(alpha) < k + 1:
            return False
        theta, s = _ritz(alpha, beta)
        res = abs(beta[-1] * s[-1, :])
        for i in _select(theta, k, which):
            others = np.delete(theta, i)
            gap = np.min(np.abs(others - theta[i])) if len(others) else np.inf
            err = min(res[i], res[i] ** 2 / max(gap, 1e-300))
            if err > tol * max(abs(theta[i]), 1e-12):
                return False
        return True

    alpha, beta, basis = lanczos(op, _flat_draw(op, seed) if x0 is None else x0, steps, stop=bounds, progress=progress, desc="top eigenvalues")
    theta, s = _ritz(alpha, beta)
    converged = bounds(alpha, beta) or beta[-1] <= 1e-12 * max(1.0, np.max(np.abs(theta)))
    if not converged:
        warnings.warn(f"Lanczos did not reach tol={tol} in {len(alpha)} steps; raise max_iter.", stacklevel=3)
    idx = _select(theta, k, which)
    y = torch.as_tensor(s[:, idx], dtype=basis.dtype, device=basis.device)
    vecs = [op.from_flat(col) for col in (basis.T @ y).T]
    return theta[idx], vecs, converged


def _arpack(op, k, tol, which, seed, max_iter, x0=None):
    from scipy.sparse.linalg import LinearOperator, eigsh

    like = _flat_draw(op, seed) if x0 is None else x0

    def mv(x: np.ndarray) -> np.ndarray:
        out = _flat_matvec(op, torch.as_tensor(np.ravel(x), dtype=like.dtype, device=like.device))
        return out.detach().to(torch.float64).cpu().numpy()

    lin = LinearOperator((op.dim, op.dim), matvec=mv, dtype=np.float64)
    code = {"largest": "LA", "smallest": "SA", "magnitude": "LM"}[which]
    vals, vecs = eigsh(lin, k=k, which=code, tol=tol, v0=like.double().cpu().numpy(), maxiter=max_iter)
    return vals, [op.from_flat(torch.as_tensor(vecs[:, i], device=like.device)) for i in range(k)], True


def _power_run(op, k, tol, seed, max_iter, shift, progress, x0=None):
    """Deflated power iteration on (H + shift·I); returns eigenvalues of H."""
    vecs: list[Tensor] = []
    values: list[float] = []
    converged = True
    bar = tqdm(total=k * max_iter, desc="power iteration", disable=True if progress is False else None, leave=False)
    for j in range(k):
        v = _flat_draw(op, seed + 7919 * j) if x0 is None or j > 0 else x0.clone()
        v = v / torch.linalg.vector_norm(v)
        eig, done = None, False
        for _ in range(max_iter):
            for u in vecs:  # deflation: orthogonalize against found eigenvectors
                v = v - torch.dot(v, u) * u
            v = v / torch.linalg.vector_norm(v)
            hv = _flat_matvec(op, v).to(v.dtype) + shift * v
            new = float(torch.dot(hv, v))
            v = hv / torch.linalg.vector_norm(hv)
            bar.update(1)
            if eig is not None and abs(eig - new) / (abs(eig) + 1e-6) < tol:  # PyHessian's rule
                eig, done = new, True
                break
            eig = new
        converged &= done
        values.append(eig - shift)
        vecs.append(v)
    bar.close()
    return np.array(values), vecs, converged


def _power(op, k, tol, which, seed, max_iter, progress, x0=None):
    shift = 0.0
    if which != "magnitude":
        dom, dvec, dconv = _power_run(op, 1, tol, seed, max_iter, 0.0, progress, x0)
        want_positive = which == "largest"
        if k == 1 and (dom[0] >= 0) == want_positive:
            return dom, [op.from_flat(dvec[0])], dconv
        shift = abs(float(dom[0])) if want_positive else -abs(float(dom[0]))
    values, vecs, conv = _power_run(op, k, tol, seed, max_iter, shift, progress, x0)
    return values, [op.from_flat(v) for v in vecs], conv


# ----------------------------------------------------------------------------- trace


@dataclass
class TraceResult(JsonResult):
    """tr(H) estimate with its standard error (from the stochastic part only) and matvec count."""

    _flat_meta = True

    estimate: float
    stderr: float
    n_matvecs: int
    method: str
    seed: int
    samples: list[float] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def trace(
    op: CurvatureOperator, *, num_matvecs: int = 99, method: str = "hutch++", seed: int = 0, progress: bool | None = None,
) -> TraceResult:
    """Unbiased stochastic estimate of tr(H) from ``num_matvecs`` matvecs with Rademacher probes.

    * ``"hutchinson"``: tr ≈ (1/m) Σⱼ zⱼᵀHzⱼ; stderr = sample std / √m.
    * ``"hutch++"`` (Meyer et al., 2021): with m = 3s, sketch Q = orth(H·S) from s probes, take
      tr(QᵀHQ) exactly (s matvecs), and Hutchinson on (I−QQᵀ)H(I−QQᵀ) with the other s probes.
      The exact part has no variance, so stderr comes from the residual probes. Its error decays
      like 1/m instead of 1/√m when the spectrum decays. ``num_matvecs`` is rounded down to 3s.
    """
    if method not in ("hutch++", "hutchinson"):
        raise ValueError(f"method must be 'hutch++' or 'hutchinson', got {method!r}.")
    minimum = 3 if method == "hutch++" else 2
    if num_matvecs < minimum:
        raise ValueError(f"{method} needs num_matvecs ≥ {minimum}, got {num_matvecs} (a standard error needs "
                         f"{6 if method == 'hutch++' else 2}).")
    start = op.n_matvecs
    disable = True if progress is False else None
    if method == "hutchinson":
        samples = []
        for j in tqdm(range(num_matvecs), desc="hutchinson", disable=disable, leave=False):
            z = op.rademacher(seed + j)
            samples.append(float(torch.dot(op.to_flat(op.matvec(z)).double(), op.to_flat(z).double())))
        est, exact = float(np.mean(samples)), 0.0
    else:
        s = num_matvecs // 3
        bar = tqdm(total=3 * s, desc="hutch++", disable=disable, leave=False)
        hs = []
        for j in range(s):
            hs.append(_flat_matvec(op, _flat_draw(op, seed + j, "rademacher")).double())
            bar.update(1)
        q, _ = torch.linalg.qr(torch.stack(hs, dim=1))  # [dim, s]
        exact = 0.0
        for j in range(s):
            exact += float(torch.dot(q[:, j], _flat_matvec(op, q[:, j].to(hs[0].device)).double()))
            bar.update(1)
        samples = []
        for j in range(s):
            g = _flat_draw(op, seed + s + j, "rademacher").double()
            g = g - q @ (q.T @ g)
            hg = _flat_matvec(op, g).double()
            hg = hg - q @ (q.T @ hg)
            samples.append(float(torch.dot(g, hg)))
            bar.update(1)
        bar.close()
        est = exact + float(np.mean(samples))
    # one residual probe (hutch++ with 3-5 matvecs) gives no spread: no error estimate (nan), no numpy warning
    stderr = float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    return TraceResult(est, stderr, op.n_matvecs - start, method, int(seed), samples, {"exact_part": exact})


# ----------------------------------------------------------------------------- density


@dataclass
class DensityResult(JsonResult):
    """Stochastic Lanczos quadrature: per run, Ritz ``nodes`` θ and ``weights`` τ (summing to 1),
    and the Gaussian-smoothed density φ(t) = (1/R) Σᵣ Σⱼ τᵣⱼ N(t; θᵣⱼ, σ²) on ``grid``."""

    _flat_meta = True

    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    n_matvecs: int
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    def moment(self, p: int = 1) -> float:
        """Σ τ θᵖ averaged over runs: an estimate of tr(Hᵖ)/dim."""
        return float(np.mean([np.sum(w * n**p) for n, w in zip(self.nodes, self.weights)]))


def spectral_density(
    op: CurvatureOperator, *, num_runs: int = 8, lanczos_steps: int = 64, sigma: float | None = None,
    num_grid: int = 1000, seed: int = 0, progress: bool | None = None,
) -> DensityResult:
    """Eigenvalue density of a symmetric operator by stochastic Lanczos quadrature.

    Each run starts Lanczos (full reorthogonalization) from a normalized Rademacher vector v and
    takes the eigen-decomposition T = Y diag(θ) Yᵀ; nodes θⱼ with weights τⱼ = Y₀ⱼ² give the
    Gauss quadrature vᵀf(H)v ≈ Σⱼ τⱼ f(θⱼ), so E[Σⱼ τⱼ θⱼ] = tr(H)/dim. ``sigma`` (default 1% of the
    node range) is the Gaussian smoothing width; the grid spans the nodes ± 5σ, so the density
    integrates to 1 up to truncation of the Gaussian tails (< 1e-6).
    """
    if num_runs < 1 or lanczos_steps < 1:
        raise ValueError(f"num_runs and lanczos_steps must be ≥ 1, got {num_runs}, {lanczos_steps}.")
    start = op.n_matvecs
    nodes, weights = [], []
    for r in tqdm(range(num_runs), desc="density (SLQ runs)", disable=True if progress is False else None):
        alpha, beta, _ = lanczos(op, _flat_draw(op, seed + r, "rademacher"), lanczos_steps, progress=progress,
                                 desc=f"lanczos run {r}")
        theta, s = _ritz(alpha, beta)
        nodes.append(theta)
        weights.append(s[0, :] ** 2)
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
    return DensityResult(nodes, weights, grid, density, float(sigma), op.n_matvecs - start, int(seed),
                         {"num_runs": num_runs, "lanczos_steps": int(min(lanczos_steps, op.dim))})
