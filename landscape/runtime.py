"""Runtime helpers shared by every layer: evaluation mode, attention backend, data checks,
fingerprints, versions and the distributed context.

Nothing here knows about losses or parameters; it keeps the model in a state where the loss is a
deterministic function of the weights, and describes the environment in result metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


# ----------------------------------------------------------------------------- modes


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own ``training`` flag on exit.

    Eval mode turns dropout off and freezes BatchNorm statistics, so the loss is a deterministic
    function of the weights. Flags are restored per module, so a caller's mixed state survives.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def _has_sdpa_attention(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    return impl is None or impl == "sdpa"


@contextlib.contextmanager
def math_attention(model: nn.Module | None = None) -> Iterator[None]:
    """Run scaled-dot-product attention on the math backend inside the block.

    PyTorch's fused SDPA kernels have neither double backward nor forward-mode AD on CPU, so
    Hessian-vector products and per-example gradients through a stock ``transformers`` model fail
    without this. The math backend computes the same function with differentiable primitives.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if model is not None and _has_sdpa_attention(model):
        log_once(
            "landscape: attention runs on the math SDPA backend (fused kernels lack double "
            "backward / forward-mode AD)."
        )
    with sdpa_kernel(SDPBackend.MATH):
        yield


@contextlib.contextmanager
def deterministic_eval(model: nn.Module) -> Iterator[nn.Module]:
    """``eval_mode`` and ``math_attention`` together: the setting for every loss evaluation."""
    with eval_mode(model), math_attention(model):
        yield model


# ----------------------------------------------------------------------------- model facts


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the parameter names, shapes and dtypes (the architecture, not the values).

    Used to refuse directions, Fisher scores or scan files made for a different model.
    """
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    return h.hexdigest()[:16]


def weights_fingerprint(model: nn.Module) -> str:
    """A short hash of the parameter values themselves (bit-exact)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- data


def check_reiterable(data: Any, what: str = "data") -> None:
    """Refuse data that can be iterated only once, or that is not iterable at all.

    Every estimator walks the data several times (once per matvec, once per grid point), so a
    generator or iterator would silently yield nothing on the second pass.
    """
    if data is None:
        raise ValueError(f"{what} is None: pass a list of batches or a DataLoader.")
    if isinstance(data, Iterator):
        raise TypeError(
            f"{what} is a one-shot iterator ({type(data).__name__}); it would be used up after "
            "the first pass. Pass a re-iterable such as list(batches) or a DataLoader."
        )
    if not isinstance(data, Iterable):
        raise TypeError(f"{what} must be an iterable of batches, got {type(data).__name__}.")


def batches_of(data: Iterable[Any], what: str = "data") -> Iterator[Any]:
    """Iterate ``data`` after ``check_reiterable``; raise if it yields no batch at all."""
    check_reiterable(data, what)
    empty = True
    for batch in data:
        empty = False
        yield batch
    if empty:
        raise ValueError(f"{what} is empty: it yielded no batch.")


# ----------------------------------------------------------------------------- metadata


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


# ----------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistContext:
    """Rank and world size; ``world_size == 1`` outside ``torchrun``."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_context(init: bool = True) -> DistContext:
    """The distributed context, initialising the process group under ``torchrun`` if needed.

    Uses gloo on CPU and nccl on CUDA. Outside ``torchrun`` (no ``WORLD_SIZE``) returns rank 0 of 1.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not init:
        return DistContext(0, 1)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size())
