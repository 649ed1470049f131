"""landscape: loss-landscape analysis for PyTorch and Hugging Face models.

Core layer: objectives, parameter spaces, Fisher scores, Hessian curvature, directions, scans,
sharpness metrics and checkpoint I/O. It never imports matplotlib, ``analyses`` or ``figures``.
Submodules are imported lazily so ``import landscape`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "objectives", "params", "vectors", "runtime", "io", "fisher", "hessian", "directions",
    "scan", "scan_store", "sharpness", "default_model", "corpus", "h5surface",
    "fisher_scores", "fisher_convergence", "curvature_algorithms", "pyhessian_adapter",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"landscape.{name}")
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")


__all__ = sorted(_SUBMODULES) + ["__version__"]
