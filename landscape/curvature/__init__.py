"""Curvature: operators (``.matvec`` / ``.matmat`` on dict vectors) and the algorithms that only need them.

- ``base``: the :class:`CurvatureOperator` protocol, the flat adapters (:func:`flat_matvec`,
  :func:`flat_matmat`, :func:`flat_draw`, :func:`block_size`), :func:`to_scipy` and
  :class:`OperatorBase` (gives ``.to_scipy()``).
- ``data_operator``: :class:`DataOperator`, the public base class of operators of a data loss
  (data, sharding, vectors, ``matmat``); subclass it with a ``_batch_product`` for a new operator.
- ``hessian_operator``: :class:`HessianOperator` (double backward, forward-over-reverse or finite
  differences, ``finite_difference``); ``ggn_operator``: :class:`GGNOperator` (exact or Monte-Carlo);
  ``fisher_operator``: :class:`EmpiricalFisherOperator`; ``matrix_operator``: the dense
  :class:`MatrixOperator` (tests, references, small problems).
- ``products``: batched products (k vectors sharing one forward and first backward), memory sizing.
- ``lanczos``: :func:`lanczos`, :func:`lanczos_runs` (full reorthogonalization), :func:`ritz_pairs`.
- ``eigensolvers``: the solver table (Lanczos, ARPACK, LOBPCG, power) and :func:`register_eigensolver`;
  ``eigen``: :func:`top_eigenvalues`; ``stochastic``: :func:`trace` (Hutchinson, Hutch++) and
  :func:`spectral_density` (stochastic Lanczos quadrature). Each result carries its matvec count
  and the nested ``meta`` of :func:`landscape.util.meta.result_meta`.
"""

from landscape.curvature.base import (
    CurvatureOperator,
    OperatorBase,
    block_size,
    flat_draw,
    flat_matmat,
    flat_matvec,
    to_scipy,
)
from landscape.curvature.data_operator import DataOperator
from landscape.curvature.eigen import EigenMethod, EigenResult, top_eigenvalues
from landscape.curvature.eigensolvers import EIGENSOLVERS, EigenProblem, EigenSolver, Which, register_eigensolver
from landscape.curvature.fisher_operator import EmpiricalFisherOperator
from landscape.curvature.ggn_operator import GGNLoss, GGNOperator
from landscape.curvature.hessian_operator import MODES, HessianOperator, Mode, ModeChoice
from landscape.curvature.lanczos import lanczos, lanczos_runs, ritz_pairs
from landscape.curvature.matrix_operator import MatrixOperator
from landscape.curvature.stochastic import DensityResult, TraceMethod, TraceResult, spectral_density, trace

__all__ = [
    "CurvatureOperator", "OperatorBase", "DataOperator", "HessianOperator", "EmpiricalFisherOperator", "GGNOperator",
    "MatrixOperator",
    "flat_matvec", "flat_matmat", "flat_draw", "block_size", "to_scipy",
    "lanczos", "lanczos_runs", "ritz_pairs",
    "top_eigenvalues", "EigenResult", "EigenProblem", "EigenSolver", "EIGENSOLVERS", "register_eigensolver",
    "trace", "spectral_density", "TraceResult", "DensityResult",
    "MODES", "Mode", "ModeChoice", "GGNLoss", "Which", "EigenMethod", "TraceMethod",
]
