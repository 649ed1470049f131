"""The extreme eigenvalues of a curvature operator: :func:`top_eigenvalues` and its result.

The solver comes from the table :data:`~landscape.curvature.eigensolvers.EIGENSOLVERS`
(``method=``); :func:`~landscape.curvature.eigensolvers.register_eigensolver` adds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from landscape.curvature.base import CurvatureOperator, curvature_meta
from landscape.curvature.eigensolvers import EIGENSOLVERS, EigenProblem, Which
from landscape.util.results import JsonResult
from landscape.vectors import Vector

__all__ = ["EigenResult", "top_eigenvalues", "EigenMethod"]

#: The built-in methods; a name given to :func:`register_eigensolver` works too.
EigenMethod = Literal["lanczos", "arpack", "lobpcg", "power"]


@dataclass
class EigenResult(JsonResult):
    """Top eigenpairs: ``values`` ``[k]`` (descending), ``vectors`` (k dict vectors, not saved), matvec count.

    ``meta``: nested (:func:`landscape.util.meta.result_meta`): ``model`` (absent for a
    ``MatrixOperator``), ``settings`` (k, tol, method, which, seed, max_iter, block_size),
    ``versions``, ``operator`` (its description) and ``n_matvecs``.
    """

    _transient = ("vectors",)

    values: np.ndarray
    vectors: list[Vector]
    n_matvecs: int
    method: str
    which: str
    tol: float
    seed: int
    converged: bool
    meta: dict[str, Any] = field(default_factory=dict)


def _check(op: CurvatureOperator, k: int, which: str, method: str) -> None:
    if which not in ("largest", "smallest", "magnitude"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'magnitude', got {which!r}.")
    if method not in EIGENSOLVERS:
        raise ValueError(f"method must be one of {sorted(EIGENSOLVERS)}, got {method!r}; add a solver with "
                         "curvature.register_eigensolver(name, solver).")
    if not 1 <= k < op.dim:
        raise ValueError(
            f"k={k} eigenvalues requested of an operator of dimension {op.dim}: need 1 ≤ k < dim; "
            "for all eigenvalues build the dense matrix instead."
        )


def top_eigenvalues(
    op: CurvatureOperator, *, k: int = 1, tol: float = 1e-3, method: EigenMethod | str = "lanczos",
    which: Which = "largest", seed: int = 0, max_iter: int | None = None, progress: bool = True,
    v0: Vector | None = None, block_size: int | None = None,
) -> EigenResult:
    """The k extreme eigenvalues of a symmetric operator, sorted descending.

    Methods (see :mod:`landscape.curvature.eigensolvers` for each stopping rule):
        * ``"lanczos"`` (default): full reorthogonalization, a-posteriori bound per Ritz value;
          ``max_iter`` caps the Krylov dimension (default min(dim, max(100, 4k))).
        * ``"arpack"``: scipy's ``eigsh`` on a float64 ``LinearOperator``.
        * ``"lobpcg"``: scipy's block LOBPCG over ``matmat``; ``max_iter`` default 100.
        * ``"power"``: deflated power iteration with PyHessian's stopping rule; ``max_iter``
          default 100 per eigenvalue.
        * any name registered with :func:`~landscape.curvature.eigensolvers.register_eigensolver`.

    Args:
        which: ``"largest"`` (algebraic), ``"smallest"`` (algebraic) or ``"magnitude"``.
        seed: seed of the Gaussian start vector(s).
        v0: optional start vector (dict); overrides ``seed`` for the (first) start vector.
        block_size: vectors per ``matmat`` call (default: the operator's ``block_size()``).
    """
    _check(op, k, which, method)
    start = op.n_matvecs
    problem = EigenProblem(k=int(k), tol=float(tol), which=which, seed=int(seed), max_iter=max_iter,
                           progress=progress, x0=None if v0 is None else op.to_flat(v0), block_size=block_size)
    values, vecs, converged = EIGENSOLVERS[method](op, problem)
    order = np.argsort(np.asarray(values))[::-1]
    n = op.n_matvecs - start
    settings = {"k": int(k), "tol": float(tol), "method": method, "which": which, "seed": int(seed),
                "max_iter": max_iter, "block_size": block_size, "v0": v0 is not None}
    return EigenResult(np.asarray(values)[order], [vecs[i] for i in order], n, method, which, float(tol), int(seed),
                       bool(converged), curvature_meta(op, settings, n_matvecs=n))
