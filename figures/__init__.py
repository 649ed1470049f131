"""figures: renderers from results to matplotlib figures. Computes no loss.

Every renderer takes result objects, plain arrays/dicts or result files, returns a
``matplotlib.figure.Figure`` (built without pyplot, so nothing needs closing) and saves it when
given ``save="out.png"`` (``.png``, ``.pdf`` or ``.svg``):

* :func:`figures.curves.plot_curves`: 1D curves with seed bands;
* :func:`figures.surfaces.plot_surface`, :func:`~figures.surfaces.plot_surface_file`,
  :func:`~figures.surfaces.plot_surfaces`: contour / filled contour / heatmap / 3D panels, side by
  side on a shared colour scale;
* :func:`figures.fisher.plot_fisher`: Fisher scores by tensor and layer;
* :func:`figures.spectrum.plot_spectral_density`; :func:`figures.convergence.plot_convergence`;
* :func:`figures.audit.plot_audit`: multi-panel sensitivity audit;
* :func:`figures.comparison.plot_mask_metrics`: sharpness metrics per Fisher mask;
* :func:`figures.intervals.plot_intervals`: estimates with intervals (forest plot);
  :func:`~figures.intervals.plot_surface_rows`: rows of surfaces, one colour scale per row;
* :func:`figures.vtp.write_vtp`: ParaView export;
* :func:`figures.training.plot_training_curvature`: curvature measured during training, with 2/η.

Submodules import lazily, so ``import figures`` does not import matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from figures.training import plot_training_curvature

_SUBMODULES = {"style", "sources", "curves", "surfaces", "fisher", "spectrum", "convergence", "audit", "vtp", "comparison", "intervals"}
_FUNCTIONS = {
    "plot_curves": "curves",
    "plot_surface": "surfaces",
    "plot_surface_file": "surfaces",
    "plot_surfaces": "surfaces",
    "plot_fisher": "fisher",
    "plot_spectral_density": "spectrum",
    "plot_convergence": "convergence",
    "plot_audit": "audit",
    "write_vtp": "vtp",
    "surface_file_to_vtp": "vtp",
    "plot_mask_metrics": "comparison",
    "plot_intervals": "intervals",
    "plot_surface_rows": "intervals",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"figures.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"figures.{_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module 'figures' has no attribute {name!r}")


__all__ = sorted(_SUBMODULES | set(_FUNCTIONS)) + ["plot_training_curvature"]
