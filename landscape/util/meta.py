"""Logging and the library versions recorded in every result's metadata."""

from __future__ import annotations

import logging
import platform

import torch

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
