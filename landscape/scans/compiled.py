"""The scans' forward under ``torch.compile``, with a fallback to eager where compiling fails.

A scan evaluates L(θ₀ + Σcᵢdᵢ) at many points with the same shapes, so compiling the model's
forward once pays over the grid. :class:`CompiledForward` swaps the evaluator's model for
``torch.compile(model)`` while a scan runs. The compiled module shares the parameters, so setting
a point (an in-place copy into the weights, :class:`~landscape.perturb.Perturbation`) needs no
recompilation, and the weights still come back bit for bit. If compiling fails (no C compiler,
an unsupported Python, a graph break the backend refuses), the first point is evaluated again
eagerly and the scan goes on eagerly after one warning line. Compiled and eager values agree to
rounding (about 1e-6 relative in float32), not bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from landscape.evaluator import Evaluator

__all__ = ["CompiledForward"]

T = TypeVar("T")


class CompiledForward:
    """``with CompiledForward(ev, enabled): ... fw.run(fn)``: ``ev.model`` is compiled inside the block.

    Args:
        ev: the scan's evaluator (its data prepared with the eager model).
        enabled: compile (True) or leave the model eager (False: :meth:`run` just calls ``fn``).

    Attributes:
        status: ``"off"``, ``"compiled"`` (so far) or ``"fallback: <reason>"``, for the scan's ``meta``.
    """

    def __init__(self, ev: Evaluator, enabled: bool) -> None:
        self.ev, self.eager = ev, ev.model
        self.status = "compiled" if enabled else "off"
        self._checked = not enabled

    def __enter__(self) -> CompiledForward:
        if self.status == "compiled":
            if not torch._dynamo.is_dynamo_supported():
                self._fall_back("torch.compile is not supported on this Python/platform")
            else:
                compiled: nn.Module = torch.compile(self.eager)  # type: ignore[assignment]  # an nn.Module
                self.ev.model = compiled
        return self

    def __exit__(self, *exc: object) -> None:
        self.ev.model = self.eager

    def _fall_back(self, reason: str) -> None:
        self.ev.model, self.status, self._checked = self.eager, f"fallback: {reason}", True
        warnings.warn(f"landscape: compile=True fell back to the eager forward ({reason}).", RuntimeWarning,
                      stacklevel=3)

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` (one point's evaluation); the first compiled call that raises is redone eagerly."""
        if self._checked:
            return fn()
        try:
            out = fn()
        except Exception as err:  # noqa: BLE001  # any compile failure: the eager retry re-raises real errors
            self._fall_back(f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")
            return fn()
        self._checked = True
        return out

    def describe(self) -> dict[str, Any]:
        """``{"compile": status}`` for the scan's ``meta``."""
        return {"compile": self.status}
