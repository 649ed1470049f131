"""landscape: loss-landscape analysis for PyTorch and Hugging Face models.

Core layer (it never imports matplotlib, ``analyses`` or ``figures``)::

    objectives  params  vectors  perturb  sharpness     the loss, the space, θ₀ + δ, sharpness
    fisher/       diagonal Fisher estimators, FisherDiagonal, convergence
    curvature/    Hessian / Fisher operators and Lanczos, trace, density
    scans/        directions, 1D/2D scans, Curve / Surface, Li et al.'s HDF5
    models/       checkpoints, the default model, its corpus
    util/         evaluation state, data checks, fingerprints, files, distributed

Submodules load lazily, so ``import landscape`` stays fast. The short names of the public API
(``hessian``, ``scan``, ``directions``, ``io``, ``default_model``, ``corpus``) are kept as
aliases of their new homes.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_MODULES = {
    "objectives": "landscape.objectives", "params": "landscape.params", "vectors": "landscape.vectors",
    "perturb": "landscape.perturb", "sharpness": "landscape.sharpness", "fisher": "landscape.fisher",
    "curvature": "landscape.curvature", "scans": "landscape.scans", "models": "landscape.models",
    "util": "landscape.util", "dropout": "landscape.dropout",
    # short public names (DESIGN.md's API) for modules that now live in subpackages
    "hessian": "landscape.curvature", "scan": "landscape.scans", "directions": "landscape.scans.directions",
    "io": "landscape.models.checkpoints", "default_model": "landscape.models.default_model",
    "corpus": "landscape.models.corpus", "li_hdf5": "landscape.scans.li_hdf5",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")


__all__ = sorted(_MODULES) + ["__version__"]
