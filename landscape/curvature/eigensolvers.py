"""The eigen-solvers behind :func:`~landscape.curvature.eigen.top_eigenvalues`, chosen from a table.

A solver is a function ``solver(op, problem) -> (values [k], vectors (k dict vectors), converged)``
for any :class:`~landscape.curvature.base.CurvatureOperator` and an :class:`EigenProblem` (k, tol,
which, seed, ...); the order of the pairs does not matter (``top_eigenvalues`` sorts them). A solver
that cannot serve a request (e.g. LOBPCG and ``which="magnitude"``) raises ``ValueError`` before
applying the operator. :func:`register_eigensolver` adds one under a name that ``method=`` picks.

Built in:

* ``"lanczos"``: full reorthogonalization, stopped by the a-posteriori bound
  min(r, r²/gap) ≤ tol·|θ| on every wanted Ritz value (r = β·|sₘ| the residual ‖Hy − θy‖),
  checked from step :data:`MIN_KRYLOV_STEPS` on.
* ``"arpack"``: scipy's implicitly restarted ``eigsh`` on the operator's float64 ``to_scipy()``.
* ``"lobpcg"``: scipy's block LOBPCG over ``matmat``, residual ‖Hy − θy‖ ≤ tol·s with s the
  largest ‖Hx‖ of the orthonormal start block (k extra products).
* ``"power"``: deflated power iteration with PyHessian's stopping rule (relative change of the
  Rayleigh quotient < tol), shifted by the dominant eigenvalue for largest/smallest when needed.

Lanczos and power iteration take inner products through the operator's vector space
(:mod:`landscape.curvature.base`), so they run on vectors sliced across processes; ARPACK and
LOBPCG (scipy) need whole vectors and refuse such an operator.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from landscape.curvature.base import CurvatureOperator, flat_draw, flat_matmat, flat_matvec, inner, norm, to_scipy
from landscape.curvature.base import block_size as operator_block_size
from landscape.curvature.lanczos import lanczos, ritz_pairs
from landscape.vectors import Vector

__all__ = ["EigenProblem", "EigenSolver", "EIGENSOLVERS", "register_eigensolver", "wanted", "ritz_converged", "Which"]

Which = Literal["largest", "smallest", "magnitude"]


@dataclass(frozen=True)
class EigenProblem:
    """What :func:`~landscape.curvature.eigen.top_eigenvalues` asks a solver for.

    Attributes:
        k: number of eigenpairs (1 ≤ k < dim).
        tol: the solver's relative tolerance.
        which: ``"largest"`` / ``"smallest"`` (algebraic) or ``"magnitude"``.
        seed: seed of the start vector(s) (``op.randn(seed)``, then ``seed + 7919·j``).
        max_iter: the solver's iteration cap (None: its default).
        progress: show a progress bar.
        x0: flat start vector ``[dim]`` overriding the first seeded one, or None.
        block_size: vectors per ``matmat`` call (None: the operator's ``block_size()``, see :meth:`block`).
    """

    k: int
    tol: float
    which: Which
    seed: int
    max_iter: int | None
    progress: bool
    x0: Tensor | None
    block_size: int | None = None

    def start(self, op: CurvatureOperator, j: int = 0) -> Tensor:
        """The j-th flat start vector: ``x0`` for j = 0 if given, else ``op.randn(seed + 7919·j)``."""
        if j == 0 and self.x0 is not None:
            return self.x0.clone()
        return flat_draw(op, self.seed + 7919 * j)

    def block(self, op: CurvatureOperator) -> int:
        """Vectors per ``matmat`` call: ``block_size`` or what the operator says fits (asked only when needed)."""
        return operator_block_size(op, self.block_size)


EigenSolver = Callable[[CurvatureOperator, EigenProblem], tuple[np.ndarray, list[Vector], bool]]


def wanted(values: np.ndarray, k: int, which: Which) -> np.ndarray:
    """Indices of the k wanted values among ``values`` (e.g. Ritz values), best first."""
    if which == "largest":
        idx = np.argsort(values)[::-1]
    elif which == "smallest":
        idx = np.argsort(values)
    else:
        idx = np.argsort(np.abs(values))[::-1]
    return idx[:k]


def ritz_converged(theta: np.ndarray, residuals: np.ndarray, k: int, which: Which, tol: float) -> bool:
    """Whether the k wanted Ritz values ``theta`` ``[m]`` meet the a-posteriori bound
    min(r, r²/gap) ≤ tol·|θ| (r = ``residuals``, ‖Hy − θy‖ = β·|sₘ|; gap to the nearest other Ritz value)."""
    if len(theta) < k + 1:
        return False
    for i in wanted(theta, k, which):
        others = np.delete(theta, i)
        gap = np.min(np.abs(others - theta[i])) if len(others) else np.inf
        if min(residuals[i], residuals[i] ** 2 / max(gap, 1e-300)) > tol * max(abs(theta[i]), 1e-12):
            return False
    return True


#: From a random start, Lanczos tests convergence only from this many steps on (or 2k + 1, or
#: ``max_iter`` if smaller), as ARPACK's default ncv = max(2k + 1, 20): a residual bound says θ is near
#: *an* eigenvalue, and a start poor in the top eigenvector can give a small residual on the second one
#: first (seen on the default model, top two 4% apart: stopped at 12-16 steps on the second at every
#: tol ≥ 3e-4). A caller's start vector (``v0``, e.g. a warm start) is trusted: checks start at 2k + 1.
MIN_KRYLOV_STEPS = 20


def _lanczos_solver(op: CurvatureOperator, pb: EigenProblem) -> tuple[np.ndarray, list[Vector], bool]:
    steps = int(min(op.dim, pb.max_iter or max(100, 4 * pb.k)))
    first_check = min(steps, 2 * pb.k + 1 if pb.x0 is not None else max(2 * pb.k + 1, MIN_KRYLOV_STEPS))

    def bounds(alpha: np.ndarray, beta: np.ndarray) -> bool:
        if len(alpha) < first_check:
            return False
        theta, s = ritz_pairs(alpha, beta)
        return ritz_converged(theta, abs(beta[-1] * s[-1, :]), pb.k, pb.which, pb.tol)

    alpha, beta, basis = lanczos(op, pb.start(op), steps, stop=bounds, progress=pb.progress, desc="top eigenvalues")
    theta, s = ritz_pairs(alpha, beta)
    converged = bounds(alpha, beta) or beta[-1] <= 1e-12 * max(1.0, np.max(np.abs(theta)))
    if not converged:
        warnings.warn(f"Lanczos did not reach tol={pb.tol} in {len(alpha)} steps; raise max_iter.", stacklevel=3)
    idx = wanted(theta, pb.k, pb.which)
    y = torch.as_tensor(s[:, idx], dtype=basis.dtype, device=basis.device)
    return theta[idx], [op.from_flat(col) for col in (basis.T @ y).T], bool(converged)


def _arpack_solver(op: CurvatureOperator, pb: EigenProblem) -> tuple[np.ndarray, list[Vector], bool]:
    from scipy.sparse.linalg import eigsh

    like = pb.start(op)
    code = {"largest": "LA", "smallest": "SA", "magnitude": "LM"}[pb.which]
    vals, vecs = eigsh(to_scipy(op, 1), k=pb.k, which=code, tol=pb.tol, v0=like.double().cpu().numpy(),
                       maxiter=pb.max_iter)
    return vals, [op.from_flat(torch.as_tensor(vecs[:, i], device=like.device)) for i in range(pb.k)], True


def _lobpcg_solver(op: CurvatureOperator, pb: EigenProblem) -> tuple[np.ndarray, list[Vector], bool]:
    from scipy.sparse.linalg import lobpcg

    if pb.which == "magnitude":
        raise ValueError("method='lobpcg' finds the largest or smallest eigenvalues, not which='magnitude'.")
    scipy_op = to_scipy(op, pb.block(op))  # first: it refuses sliced vectors before any product
    starts = [pb.start(op, j) for j in range(pb.k)]
    like, block = starts[0], pb.block(op)
    x = torch.linalg.qr(torch.stack([s.double().cpu() for s in starts], 1))[0]
    scale = float(torch.linalg.vector_norm(flat_matmat(op, x.to(like.dtype).to(like.device), block), dim=0).max())
    max_iter = pb.max_iter or 100
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vals, vecs = lobpcg(scipy_op, x.numpy(), tol=pb.tol * max(scale, 1e-300), maxiter=max_iter,
                            largest=pb.which == "largest")
    converged = not any("not reaching the requested tolerance" in str(w.message) for w in caught)
    if not converged:
        warnings.warn(f"LOBPCG did not reach tol={pb.tol} in {max_iter} iterations; raise max_iter.", stacklevel=3)
    return vals, [op.from_flat(torch.as_tensor(vecs[:, i], device=like.device)) for i in range(pb.k)], converged


def _power_run(op: CurvatureOperator, pb: EigenProblem, k: int, shift: float) -> tuple[np.ndarray, list[Tensor], bool]:
    """Deflated power iteration on (H + shift·I); returns k eigenvalues of H and flat eigenvectors."""
    vecs: list[Tensor] = []
    values: list[float] = []
    converged = True
    max_iter = pb.max_iter or 100
    bar = tqdm(total=k * max_iter, desc="power iteration", disable=None if pb.progress else True, leave=False)
    for j in range(k):
        v = pb.start(op, j)
        v = v / norm(op, v)
        eig, done = 0.0, False
        for it in range(max_iter):
            for u in vecs:  # deflation: orthogonalize against found eigenvectors
                v = v - inner(op, v, u) * u
            v = v / norm(op, v)
            hv = flat_matvec(op, v).to(v.dtype) + shift * v
            new = inner(op, hv, v)
            v = hv / norm(op, hv)
            bar.update(1)
            done = it > 0 and abs(eig - new) / (abs(eig) + 1e-6) < pb.tol  # PyHessian's rule
            eig = new
            if done:
                break
        converged &= done
        values.append(eig - shift)
        vecs.append(v)
    bar.close()
    return np.array(values), vecs, converged


def _power_solver(op: CurvatureOperator, pb: EigenProblem) -> tuple[np.ndarray, list[Vector], bool]:
    shift = 0.0
    if pb.which != "magnitude":
        dom, dvec, dconv = _power_run(op, pb, 1, 0.0)
        want_positive = pb.which == "largest"
        if pb.k == 1 and (dom[0] >= 0) == want_positive:
            return dom, [op.from_flat(dvec[0])], dconv
        shift = abs(float(dom[0])) if want_positive else -abs(float(dom[0]))
    values, vecs, conv = _power_run(op, pb, pb.k, shift)
    return values, [op.from_flat(v) for v in vecs], conv


#: name → solver; ``top_eigenvalues(method=name)`` looks the solver up here.
EIGENSOLVERS: dict[str, EigenSolver] = {
    "lanczos": _lanczos_solver, "arpack": _arpack_solver, "lobpcg": _lobpcg_solver, "power": _power_solver,
}


def register_eigensolver(name: str, solver: EigenSolver, *, replace: bool = False) -> None:
    """Make ``solver`` available as ``top_eigenvalues(..., method=name)``.

    Raises:
        ValueError: if ``name`` is taken (pass ``replace=True`` to override it) or is not a non-empty string.
        TypeError: if ``solver`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an eigensolver name must be a non-empty string, got {name!r}.")
    if not callable(solver):
        raise TypeError(f"solver must be callable as solver(op, problem), got {type(solver).__name__}.")
    if name in EIGENSOLVERS and not replace:
        raise ValueError(f"an eigensolver named {name!r} is already registered; pass replace=True to override it.")
    EIGENSOLVERS[name] = solver
