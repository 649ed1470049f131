"""Curvature algorithms on any symmetric linear operator: top eigenvalues, trace, spectral density.

The algorithms only need an operator with

* ``dim`` (number of coordinates), ``dtype`` and ``device``;
* ``matvec(v)`` on dict vectors and an ``n_matvecs`` counter; optionally ``matmat(vs)`` (k vectors
  at once, sharing work) and ``block_size()`` (how many fit memory): trace, SLQ and LOBPCG then
  apply the operator to blocks of vectors;
* ``zeros()``, ``randn(seed)``, ``rademacher(seed)`` to draw vectors;
* ``to_flat(v)`` / ``from_flat(x)`` between dict vectors and 1-D tensors of length ``dim``.

:class:`~landscape.curvature.operators.HessianOperator`, :class:`~landscape.curvature.operators.EmpiricalFisherOperator`
and the dense :class:`MatrixOperator` (for tests and small problems) all qualify, so one Lanczos
serves the Hessian and the Fisher alike. Every result carries its matvec count and seed.
The stochastic estimators (trace, density) are in :mod:`landscape.curvature.stochastic`. This module
is a little over 400 lines because the four eigen-solvers share its helpers and checks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from landscape.util.results import JsonResult
from landscape.vectors import Vector

__all__ = [  # trace, spectral_density and their results: landscape.curvature.stochastic (see __getattr__)
    "CurvatureOperator", "MatrixOperator", "EigenResult", "top_eigenvalues", "lanczos", "lanczos_runs",
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

    def matmat(self, vs: list[Vector]) -> list[Vector]:
        self.n_matvecs += len(vs)
        out = self.matrix @ torch.stack([v["x"].to(self.dtype) for v in vs], 1)
        return [{"x": out[:, j]} for j in range(len(vs))]

    def block_size(self, max_k: int = 16) -> int:
        return max_k


def _flat_matvec(op: CurvatureOperator, x: Tensor) -> Tensor:
    return op.to_flat(op.matvec(op.from_flat(x)))


def _block(op: CurvatureOperator, block_size: int | None) -> int:
    """Vectors per product call: ``block_size`` if given, else what the operator says fits, else 1."""
    if block_size is not None:
        return max(1, int(block_size))
    pick = getattr(op, "block_size", None)
    return max(1, int(pick())) if callable(pick) else 1


def _flat_matmat(op: CurvatureOperator, x: Tensor, block: int = 1) -> Tensor:
    """The operator applied to the columns of ``x`` ``[dim, k]``, ``block`` columns per ``matmat``."""
    mm = getattr(op, "matmat", None)
    cols: list[Tensor] = []
    for j0 in range(0, x.shape[1], block):
        part = x[:, j0 : j0 + block]
        if mm is None or part.shape[1] == 1:
            cols.extend(_flat_matvec(op, part[:, j]) for j in range(part.shape[1]))
        else:
            cols.extend(op.to_flat(y) for y in mm([op.from_flat(part[:, j]) for j in range(part.shape[1])]))
    return torch.stack([c.to(x.dtype) for c in cols], 1)


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


def lanczos_runs(
    op: CurvatureOperator, starts: Tensor, steps: int, *, block: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Independent Lanczos runs (full reorthogonalization) from the columns of ``starts`` ``[dim, r]``,
    advanced in lockstep so each step applies the operator to up to ``block`` runs' vectors in one
    ``matmat``. Each run is the same as :func:`lanczos` from its start (up to rounding); a run that
    breaks down (β ≈ 0) drops out. Returns ``(alpha, beta)`` per run.
    """
    steps = int(min(steps, op.dim))
    q = starts / torch.linalg.vector_norm(starts, dim=0, keepdim=True)
    r = q.shape[1]
    bases = torch.empty((r, steps, q.shape[0]), dtype=q.dtype, device=q.device)
    alphas: list[list[float]] = [[] for _ in range(r)]
    betas: list[list[float]] = [[] for _ in range(r)]
    scale = [0.0] * r
    active = list(range(r))
    for j in range(steps):
        for i in active:
            bases[i, j] = q[:, i]
        w_all = _flat_matmat(op, q[:, active], block)
        still = []
        for c, i in enumerate(active):
            w = w_all[:, c].to(q.dtype)
            alpha = float(torch.dot(w, q[:, i]))
            for _ in range(2):  # full reorthogonalization, twice
                w = w - bases[i, : j + 1].T @ (bases[i, : j + 1] @ w)
            beta = float(torch.linalg.vector_norm(w))
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
    if method not in ("lanczos", "power", "arpack", "lobpcg"):
        raise ValueError(f"method must be 'lanczos', 'power', 'arpack' or 'lobpcg', got {method!r}.")
    if method == "lobpcg" and which == "magnitude":
        raise ValueError("method='lobpcg' finds the largest or smallest eigenvalues, not which='magnitude'.")
    if not 1 <= k < op.dim:
        raise ValueError(
            f"k={k} eigenvalues requested of an operator of dimension {op.dim}: need 1 ≤ k < dim; "
            "for all eigenvalues build the dense matrix instead."
        )


def top_eigenvalues(
    op: CurvatureOperator, *, k: int = 1, tol: float = 1e-3, method: str = "lanczos", which: str = "largest",
    seed: int = 0, max_iter: int | None = None, progress: bool | None = None, v0: Vector | None = None,
    block_size: int | None = None,
) -> EigenResult:
    """The k extreme eigenvalues of a symmetric operator, sorted descending.

    Methods:
        * ``"lanczos"`` (default): Lanczos with full reorthogonalization, stopped when every wanted
          Ritz value θ satisfies the a-posteriori bound min(r, r²/gap) ≤ tol·|θ|, with r = β·|sₘ| the
          residual ‖Hy − θy‖ and gap the distance to the next Ritz value. ``max_iter`` caps the
          Krylov dimension (default min(dim, max(100, 4k))).
        * ``"arpack"``: scipy's implicitly restarted ``eigsh`` on a float64 ``LinearOperator``.
        * ``"lobpcg"``: scipy's block LOBPCG over ``matmat`` (k products per call, sharing the
          forward and first backward), from k Gaussian starts. Stops when every residual
          ‖Hy − θy‖ ≤ tol·s, with s the largest ‖Hx‖ of the orthonormal start block (k extra
          products), so the eigenvalue error is about tol²·s/gap. ``max_iter`` default 100.
        * ``"power"``: deflated power iteration with PyHessian's stopping rule (relative change of
          the Rayleigh quotient < tol; at most ``max_iter`` = 100 per eigenvalue). Power iteration
          finds the largest *magnitude*; for ``which`` = largest/smallest the operator is shifted
          by the dominant eigenvalue when needed, which slows convergence.

    Args:
        which: ``"largest"`` (algebraic), ``"smallest"`` (algebraic) or ``"magnitude"``.
        seed: seed of the Gaussian start vector(s).
        v0: optional start vector (dict); overrides ``seed`` for the (first) start vector.
        block_size: vectors per ``matmat`` call for ``"lobpcg"`` (default: the operator's
            ``block_size()``, from its memory budget).
    """
    _check_eig_args(op, k, which, method)
    start = op.n_matvecs
    x0 = None if v0 is None else op.to_flat(v0)
    if method == "power":
        values, vecs, converged = _power(op, k, tol, which, seed, max_iter or 100, progress, x0)
    elif method == "arpack":
        values, vecs, converged = _arpack(op, k, tol, which, seed, max_iter, x0)
    elif method == "lobpcg":
        values, vecs, converged = _lobpcg(op, k, tol, which, seed, max_iter or 100, x0, _block(op, block_size))
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


def _lobpcg(op, k, tol, which, seed, max_iter, x0, block):
    from scipy.sparse.linalg import LinearOperator, lobpcg

    like = _flat_draw(op, seed)
    starts = [like if x0 is None else x0] + [_flat_draw(op, seed + 7919 * j) for j in range(1, k)]
    x = torch.linalg.qr(torch.stack([s.double().cpu() for s in starts], 1))[0]
    scale = float(torch.linalg.vector_norm(_flat_matmat(op, x.to(like.dtype).to(like.device), block), dim=0).max())

    def mm(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v).reshape(op.dim, -1)
        out = _flat_matmat(op, torch.as_tensor(v, dtype=like.dtype, device=like.device), block)
        return out.detach().to(torch.float64).cpu().numpy()

    lin = LinearOperator((op.dim, op.dim), matvec=lambda v: mm(v)[:, 0], matmat=mm, dtype=np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vals, vecs = lobpcg(lin, x.numpy(), tol=tol * max(scale, 1e-300), maxiter=max_iter, largest=which == "largest")
    converged = not any("not reaching the requested tolerance" in str(w.message) for w in caught)
    if not converged:
        warnings.warn(f"LOBPCG did not reach tol={tol} in {max_iter} iterations; raise max_iter.", stacklevel=3)
    return vals, [op.from_flat(torch.as_tensor(vecs[:, i], device=like.device)) for i in range(k)], converged


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


def __getattr__(name: str) -> Any:
    """Trace / spectral_density and their results live in :mod:`landscape.curvature.stochastic`."""
    if name in ("trace", "spectral_density", "TraceResult", "DensityResult"):
        from landscape.curvature import stochastic

        return getattr(stochastic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
