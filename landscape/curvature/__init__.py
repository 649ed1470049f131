"""Curvature: operators (``.matvec`` / ``.matmat`` on dict vectors) and the algorithms that only need them.

- ``operators``: the shared base (data, sharding, vectors, ``matmat``); ``hessian_operator``:
  :class:`HessianOperator` (double backward or forward-over-reverse); ``fisher_operator``:
  :class:`EmpiricalFisherOperator`; both restricted to any ``ParamSpace`` or ``ParamMask``.
- ``products``: batched products (k vectors sharing one forward and first backward), memory sizing.
- ``algorithms``: :func:`lanczos`, :func:`top_eigenvalues` (Lanczos, ARPACK, LOBPCG over ``matmat``,
  power); ``stochastic``: :func:`trace` (Hutchinson, Hutch++) and :func:`spectral_density`
  (stochastic Lanczos quadrature, runs in lockstep); each result carries its matvec count.
- ``pyhessian``: the same quantities computed by PyHessian 0.1, for parity checks and benchmarks.
"""

from landscape.curvature.algorithms import (
    CurvatureOperator,
    EigenResult,
    MatrixOperator,
    lanczos,
    lanczos_runs,
    top_eigenvalues,
)
from landscape.curvature.fisher_operator import EmpiricalFisherOperator
from landscape.curvature.hessian_operator import MODES, HessianOperator
from landscape.curvature.stochastic import DensityResult, TraceResult, spectral_density, trace

__all__ = [
    "HessianOperator", "EmpiricalFisherOperator", "CurvatureOperator", "MatrixOperator", "EigenResult",
    "TraceResult", "DensityResult", "top_eigenvalues", "trace", "spectral_density", "lanczos", "lanczos_runs", "MODES",
]
