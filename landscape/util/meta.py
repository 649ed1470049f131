"""Logging, and the nested ``meta`` that every result carries (model, settings, library versions)."""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

log = logging.getLogger("landscape")
_said_once: set[str] = set()


def log_once(message: str, level: int = logging.INFO) -> None:
    """Log ``message`` the first time it is seen in this process only."""
    if message not in _said_once:
        _said_once.add(message)
        log.log(level, message)


def versions() -> dict[str, str]:
    """Versions of the libraries that determine a result, for result metadata."""
    import numpy
    import scipy

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    from landscape import __version__

    out["landscape"] = __version__
    return out


def result_meta(
    model: nn.Module | None = None, settings: Mapping[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """The ``meta`` dict every result carries, in one nested layout.

    ``{"model": {"class", "fingerprint", "weights"}, "settings": {...}, "versions": {...}, **extra}``:
    ``fingerprint`` names the architecture and parameter shapes, ``weights`` the values
    (:mod:`landscape.util.fingerprints`); ``settings`` are the arguments that determine the numbers.
    """
    from landscape.util.fingerprints import model_fingerprint, weights_fingerprint
    from landscape.util.results import plain

    out: dict[str, Any] = {}
    if model is not None:
        out["model"] = {"class": type(model).__name__, "fingerprint": model_fingerprint(model),
                        "weights": weights_fingerprint(model)}
    out["settings"] = plain(dict(settings or {}))
    out["versions"] = versions()
    out.update(extra)
    return out
