"""Curvature: operators (``.matvec`` on dict vectors) and the algorithms that only need ``.matvec``.

- ``operators``: :class:`HessianOperator` (double backward or forward-over-reverse) and
  :class:`EmpiricalFisherOperator`, restricted to any ``ParamSpace`` or ``ParamMask``.
- ``algorithms``: :func:`lanczos`, :func:`top_eigenvalues`, :func:`trace` (Hutchinson, Hutch++),
  :func:`spectral_density` (stochastic Lanczos quadrature); each result carries its matvec count.
- ``pyhessian``: the same quantities computed by PyHessian 0.1, for parity checks and benchmarks.
"""

from landscape.curvature.algorithms import (
    CurvatureOperator, DensityResult, EigenResult, MatrixOperator, TraceResult, lanczos,
    spectral_density, top_eigenvalues, trace,
)
from landscape.curvature.fisher_operator import EmpiricalFisherOperator
from landscape.curvature.hessian_operator import MODES, HessianOperator

__all__ = [
    "HessianOperator", "EmpiricalFisherOperator", "CurvatureOperator", "MatrixOperator", "EigenResult",
    "TraceResult", "DensityResult", "top_eigenvalues", "trace", "spectral_density", "lanczos", "MODES",
]
