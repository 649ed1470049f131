"""Workloads shared by the benchmark scripts: the floor every ratio is measured against."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def gradient_fn(model: nn.Module, objective: Any, batch: Any, run: nn.Module | None = None) -> Callable[[], None]:
    """A closure computing one gradient of the summed loss of ``batch`` (prepared once with ``model``),
    evaluated through ``run`` (default ``model``; e.g. its ``torch.compile`` wrapper) in the same
    evaluation state (eval mode, math attention) as the curvature products it is compared with."""
    from landscape import util

    target = model if run is None else run
    prepared = objective.prepare(batch, model)
    params = [p for p in model.parameters() if p.requires_grad]

    def grad() -> None:
        with util.deterministic_eval(target):
            s, _ = objective.loss_sum(target, prepared)
            torch.autograd.grad(s, params)

    return grad
