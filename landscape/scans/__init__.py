"""Perturbation scans: directions, the loss along 1D lines and over 2D planes, and their files.

- ``directions``: random filter-normalized directions (masked, norm-matched), interpolation, PCA,
  Hessian eigenvectors (``direction`` defines :class:`Direction`, ``constructions`` the
  interpolation, PCA and eigenvector builders; ``directions`` exports them all).
- ``points``: :class:`ExampleLosses`, per-example loss sums at chosen points.
- ``runner``: :func:`scan_1d` and :func:`scan_2d` from a saved θ₀, resumable, sharded under torchrun;
  ``compiled``: their forward under ``torch.compile`` (``compile=True``), with an eager fallback.
- ``results``: :class:`Curve` and :class:`Surface` (values, coordinates, metadata, ``.npz`` files).
- ``li_hdf5``: Li et al.'s loss-landscape HDF5 layout, read and written.
"""

from landscape.scans import directions
from landscape.scans.results import Curve, Surface
from landscape.scans.runner import METRICS, ScanSettings, coefficients, scan_1d, scan_2d

__all__ = ["scan_1d", "scan_2d", "coefficients", "Curve", "Surface", "ScanSettings", "METRICS", "directions"]
