"""Estimated time of long work, printed before it starts, from one timed unit.

A command times one unit of its work (one per-example gradient, one Hessian-vector product, one
scan point), multiplies by the units to come and prints one line to stdout (stderr stays for
warnings, errors and the progress bars)::

    estimated time: ~2m 05s (512 gradients × 0.244 s)

Timing runs inside :meth:`landscape.evaluator.Evaluator.evaluating` (eval mode, θ₀ restored bit
for bit, train flags restored) and under :func:`torch.random.fork_rng`, so it changes no number
of the work that follows. The progress bars (tqdm) then show the remaining time as they go.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import torch
from torch import nn

from landscape.objectives import Objective

__all__ = ["format_duration", "eta_line", "announce", "timed", "time_gradient", "time_point", "time_product",
           "first_example"]


def format_duration(seconds: float) -> str:
    """``"~Xm YYs"`` (``"~Xh YYm"`` from one hour), rounded up to whole seconds."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and ≥ 0, got {seconds}.")
    s = math.ceil(seconds)
    if s >= 3600:
        return f"~{s // 3600}h {(s % 3600) // 60:02d}m"
    return f"~{s // 60}m {s % 60:02d}s"


def eta_line(n_units: float, unit_s: float, unit: str) -> str:
    """``estimated time: ~Xm Ys (N units × T s)``: total = N · T."""
    n = math.ceil(n_units)
    return f"estimated time: {format_duration(n * unit_s)} ({n:,} {unit} × {unit_s:.3g} s)"


def announce(n_units: float, unit_s: float, unit: str, stream: TextIO | None = None) -> str:
    """Print :func:`eta_line` to ``stream`` (default stdout) and return it."""
    line = eta_line(n_units, unit_s, unit)
    print(line, file=stream if stream is not None else sys.stdout, flush=True)
    return line


def timed(fn: Callable[[], Any], warmup: bool = False, repeat: int = 1) -> float:
    """Median seconds of ``repeat`` calls of ``fn`` (after one untimed call when ``warmup``: first calls
    pay one-off setup), global RNG untouched. The median resists a busy machine's outliers."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}.")
    with torch.random.fork_rng(devices=[]):
        if warmup:
            fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def first_example(data: Sequence[Any]) -> list[Any]:
    """The first example of the first batch, as a one-batch dataset (dict or tuple batches)."""
    batch = data[0]
    if isinstance(batch, dict):
        return [{k: v[:1] if torch.is_tensor(v) else v for k, v in batch.items()}]
    if isinstance(batch, (tuple, list)):
        return [type(batch)(v[:1] if torch.is_tensor(v) else v for v in batch)]
    raise TypeError(f"cannot take one example of a {type(batch).__name__} batch; give dict or tuple batches.")


def time_gradient(model: nn.Module, objective: Objective, data: Sequence[Any], params: Any = None) -> float:
    """Median seconds of 3 losses + gradients on ``data`` (after a warm-up call), weights and modes restored."""
    from landscape.evaluator import Evaluator

    ev = Evaluator(model, objective, data, params=params)
    with ev.evaluating():
        return timed(lambda: ev.loss(grad=True), warmup=True, repeat=3)


def time_point(model: nn.Module, objective: Objective, data: Sequence[Any]) -> float:
    """Median seconds of 3 loss evaluations over ``data`` (one scan point each), weights and modes restored."""
    from landscape.evaluator import Evaluator

    ev = Evaluator(model, objective, data)
    with ev.evaluating():
        return timed(lambda: ev.loss(grad=False), warmup=True, repeat=3)


def time_product(op: Any) -> float:
    """Seconds of one ``op.matvec`` on a Rademacher vector (after a warm-up product); ``op.n_matvecs``
    is left as it was."""
    from landscape.curvature.base import flat_draw, flat_matvec

    before = op.n_matvecs
    z = flat_draw(op, 0, "rademacher")
    try:
        return timed(lambda: flat_matvec(op, z), warmup=True)
    finally:
        op.n_matvecs = before
