"""The one perturbation primitive: set θ₀ + Σᵢ cᵢdᵢ from a saved θ₀, restore θ₀ bit for bit.

Every scan point, sharpness sample, audit line and Fisher pass that moves weights goes through
:class:`Perturbation`. It keeps detached copies θ₀ of the tensors it may move and sets

    θ ← θ₀ + Σᵢ cᵢ dᵢ        (one foreach copy, then one foreach add per nonzero cᵢ)

always from θ₀, never by stepping from the previous point: accumulated in-place steps drift, and a
landscape is only meaningful if its points are exact functions of (c₁, c₂, …). :meth:`restore`
copies θ₀ back, so the weights are bit-identical afterwards; as a context manager it restores in
``finally``, also after an exception or ``KeyboardInterrupt``.

:func:`preserved` guards a whole model (parameters, buffers and each module's train flag) around
work that might leave it changed, and :func:`perturbed` is the one-shot θ₀ + δ block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Perturbation", "perturbed", "preserved"]


class Perturbation:
    """θ₀ of the named live tensors, and θ₀ + Σᵢ cᵢdᵢ on demand.

    Args:
        tensors: ``name -> live tensor`` (parameters, or buffers) that may be moved.
        directions: optional dict vectors dᵢ over (a subset of) those names, stored aligned so that
            :meth:`set` takes only the coefficients. Missing names are zero.
    """

    def __init__(self, tensors: Mapping[str, Tensor], directions: Sequence[Mapping[str, Tensor]] = ()) -> None:
        self.names = list(tensors)
        self.tensors = [tensors[n] for n in self.names]
        self.theta0 = [t.detach().clone() for t in self.tensors]
        self._index = {n: i for i, n in enumerate(self.names)}
        self.directions = [self.align(d) for d in directions]

    def _check_names(self, d: Mapping[str, Tensor]) -> None:
        unknown = set(d) - set(self._index)
        if unknown:
            raise KeyError(f"direction names tensors that are not being perturbed: {sorted(unknown)[:3]}")

    def align(self, d: Mapping[str, Tensor]) -> list[Tensor]:
        """``d`` as a list in this perturbation's order, zeros where ``d`` has no entry."""
        self._check_names(d)
        return [d[n] if n in d else torch.zeros_like(t0) for n, t0 in zip(self.names, self.theta0)]

    @torch.no_grad()
    def set(self, coeffs: Sequence[float]) -> None:
        """θ ← θ₀ + Σᵢ cᵢ dᵢ with the stored directions (``len(coeffs) == len(directions)``)."""
        if len(coeffs) != len(self.directions):
            raise ValueError(f"{len(coeffs)} coefficients for {len(self.directions)} directions.")
        self.set_terms(list(zip(coeffs, self.directions)))

    @torch.no_grad()
    def set_terms(self, terms: Sequence[tuple[float, Sequence[Tensor] | Mapping[str, Tensor]]]) -> None:
        """θ ← θ₀ + Σᵢ cᵢ dᵢ for explicit ``(cᵢ, dᵢ)``; dᵢ a dict vector or an aligned list."""
        torch._foreach_copy_(self.tensors, self.theta0)
        for c, d in terms:
            if float(c) == 0.0:
                continue
            if isinstance(d, Mapping):  # only the named tensors move; no zeros are allocated
                self._check_names(d)
                torch._foreach_add_([self.tensors[self._index[n]] for n in d], list(d.values()), alpha=float(c))
            else:
                torch._foreach_add_(self.tensors, list(d), alpha=float(c))

    @torch.no_grad()
    def set_delta(self, delta: Sequence[Tensor] | Mapping[str, Tensor] | None) -> None:
        """θ ← θ₀ + δ (``None``: θ₀)."""
        self.set_terms([] if delta is None else [(1.0, delta)])

    @torch.no_grad()
    def restore(self) -> None:
        """θ ← θ₀, bit for bit."""
        torch._foreach_copy_(self.tensors, self.theta0)

    def is_restored(self) -> bool:
        """Whether every tensor equals its θ₀ exactly."""
        return all(torch.equal(t, t0) for t, t0 in zip(self.tensors, self.theta0))

    def __enter__(self) -> Perturbation:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[Perturbation]:
    """Guard ``model``: on exit its parameters and buffers are bit-identical and every module's
    ``training`` flag is as it was, however the block ended."""
    state = Perturbation(dict([*model.named_parameters(), *model.named_buffers()]))
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield state
    finally:
        state.restore()
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def perturbed(model: nn.Module, delta: Mapping[str, Tensor], space: Any = None) -> Iterator[nn.Module]:
    """Set θ₀ + δ inside the block and restore θ₀ bit for bit on exit (also after a raise).

    ``delta`` may cover any subset of the model's parameter names; tied aliases are resolved to
    the shared tensor. ``space``: a ``ParamSpace`` (anything with ``resolve_names`` and ``params``)
    to resolve names in (default: every parameter of the model, tied aliases included).
    """
    resolved, tensors = _resolve(model, delta) if space is None else \
        (space.resolve_names(delta, what="delta"), space.params)
    for name, t in delta.items():
        p = tensors[resolved[name]]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"delta[{name!r}] has shape {tuple(t.shape)}, parameter has {tuple(p.shape)}.")
    with Perturbation({resolved[n]: tensors[resolved[n]] for n in delta}) as pert:
        pert.set_delta({resolved[n]: t for n, t in delta.items()})
        yield model


def _resolve(model: nn.Module, names: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Tensor]]:
    """Each name (or tied alias) → the first name of its tensor, and those names → tensors."""
    first: dict[int, str] = {}
    canon: dict[str, str] = {}
    tensors: dict[str, Tensor] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        canon[n] = first.setdefault(id(p), n)
        tensors.setdefault(canon[n], p)
    unknown = [n for n in names if n not in canon]
    if unknown:
        raise KeyError(f"delta: {', '.join(map(repr, unknown[:3]))} is not a parameter of {type(model).__name__} "
                       f"(example names: {list(tensors)[:3]}).")
    return {n: canon[n] for n in names}, tensors
