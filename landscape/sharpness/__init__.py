"""Sharpness metrics over any parameter selection.

* :mod:`~landscape.sharpness.from_scans`: from scanned curves and surfaces (numbers in, numbers out):
  :func:`curvature_at_origin`, :func:`basin_width`, :func:`loss_rise_at_edge`,
  :func:`basin_width_bracketed`;
* :mod:`~landscape.sharpness.perturbation`: from the model, through one
  :class:`landscape.evaluator.Evaluator`: :func:`average_sharpness`, :func:`worst_case_sharpness`,
  :func:`keskar_sharpness`;
* :mod:`~landscape.sharpness.directional`: from per-example loss sums (bootstrappable):
  :func:`directional_curvature`, :func:`second_difference`, and :func:`fd_curvature_error` (the
  second difference checked against an exact Hessian-vector product).

Shared conventions: θ₀ + δ is set from a saved copy and the weights are restored bit for bit; a
width the range never closes is censored (a lower bound), never dropped.
"""

from landscape.sharpness.directional import (
    DirectionalCurvature,
    directional_curvature,
    fd_curvature_error,
    second_difference,
)
from landscape.sharpness.from_scans import (
    BasinWidth,
    BracketedWidth,
    CurvatureFit,
    basin_width,
    basin_width_bracketed,
    curvature_at_origin,
    loss_rise_at_edge,
    origin_index,
)
from landscape.sharpness.perturbation import SharpnessResult, average_sharpness, keskar_sharpness, worst_case_sharpness

__all__ = ["CurvatureFit", "BasinWidth", "BracketedWidth", "SharpnessResult", "DirectionalCurvature",
           "curvature_at_origin", "basin_width", "loss_rise_at_edge", "origin_index", "basin_width_bracketed",
           "average_sharpness", "worst_case_sharpness", "keskar_sharpness", "directional_curvature",
           "second_difference", "fd_curvature_error"]
