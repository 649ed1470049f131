"""Evaluation state: eval mode, the math attention backend, and the model's device and dtype.

Keeps the model in a state where the loss is a deterministic function of the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from landscape.util.meta import log_once


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
