"""Checks at θ₀ shared by every entry point: finite weights, a finite loss.

A checkpoint with NaN or infinite weights gives NaN Fisher scores, curvature and scans. Each entry
point (``fisher.diagonal``, the curvature operators, ``directions.random``, the scans and the
sharpness metrics) checks the weights once before computing, and names the bad tensors.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and floating-point buffers of ``model`` holding NaN or ±inf."""
    bad = []
    seen: set[int] = set()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if id(t) in seen or not t.is_floating_point():
            continue
        seen.add(id(t))
        if not bool(torch.isfinite(t.detach()).all()):
            bad.append(name)
    return bad


def check_finite_weights(model: nn.Module, what: str = "the model") -> None:
    """Raise ``ValueError`` naming the tensors of ``model`` with NaN/inf entries, if any."""
    bad = nonfinite_tensors(model)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"{what} has NaN or infinite weights in {len(bad)} tensor(s): {', '.join(bad[:5])}{more}; "
                         "the checkpoint is damaged or training diverged: load other weights.")


def check_finite_loss(loss: float, what: str = "the loss") -> None:
    """Raise ``ValueError`` if the loss at θ₀ is NaN/inf while the weights are finite."""
    if not math.isfinite(loss):
        raise ValueError(f"{what} is {loss} at the unperturbed weights (θ₀) although every weight is finite; "
                         "check the inputs (token ids within the vocabulary, lengths within the model's positions).")
