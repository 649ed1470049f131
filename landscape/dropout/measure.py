"""Measure the drop rate each site really applies, in a train-mode forward.

Setting a rate proves nothing: code that picks dropout modules by their index in
``model.modules()`` sets rates on the wrong objects with no error. :func:`measure_rates` counts,
per site, the elements that enter nonzero and leave as exact zeros:

* sites whose ``nn.Dropout`` is called as a module: a forward hook sees input and output;
* attention-probability dropout, which ``transformers`` runs inside the attention function
  (``dropout=self.dropout.p`` or the ``attention_dropout`` float): the pass runs the eager
  attention path, and ``torch.nn.functional.dropout`` is wrapped for its duration; a call is
  credited to the innermost module running it.

The realized rate q̂ = dropped / total is a binomial proportion: a correct site has
|q̂ − p| ≤ z·√(p(1−p)/N) + 1/N (:meth:`SiteMeasurement.ok`, z = 5 by default). The model's
train/eval mode, attention implementation and hooks are restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from landscape.dropout.sites import DropoutSite, SiteMap, find_sites, is_dropout

__all__ = ["SiteMeasurement", "eager_attention", "measure_rates"]


@dataclass
class SiteMeasurement:
    """Counts for one site: ``dropped`` of ``total`` nonzero inputs came out zero, over ``calls`` calls."""

    site: str
    assigned: float
    dropped: int
    total: int
    calls: int
    unit_dropped: Tensor | None = None
    unit_total: Tensor | None = None

    @property
    def rate(self) -> float:
        return self.dropped / self.total if self.total else float("nan")

    def tolerance(self, z: float = 5.0, p: float | None = None) -> float:
        """z·√(p(1−p)/N) + 1/N: the binomial band around the assigned rate."""
        p = self.assigned if p is None else p
        n = max(self.total, 1)
        return z * math.sqrt(max(p * (1 - p), 0.0) / n) + 1.0 / n

    def ok(self, z: float = 5.0) -> bool:
        """Whether the realized rate matches the assigned one within the binomial band."""
        return self.calls > 0 and self.total > 0 and abs(self.rate - self.assigned) <= self.tolerance(z)

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "assigned": self.assigned, "realized": self.rate, "dropped": self.dropped,
                "total": self.total, "calls": self.calls, "tolerance": self.tolerance()}


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run ``transformers`` attention on the eager path (explicit probabilities) inside the block."""
    saved: dict[int, tuple[Any, str, Any]] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is None or id(cfg) in saved:
            continue
        attr = "_attn_implementation_internal" if hasattr(cfg, "_attn_implementation_internal") else (
            "_attn_implementation" if hasattr(cfg, "_attn_implementation") else None)
        if attr is None:
            continue
        saved[id(cfg)] = (cfg, attr, getattr(cfg, attr))
        setattr(cfg, attr, "eager")
    try:
        yield
    finally:
        for cfg, attr, value in saved.values():
            setattr(cfg, attr, value)


class _Counter:
    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.unit_dropped: dict[str, Tensor] = {}
        self.unit_total: dict[str, Tensor] = {}

    def add(self, key: str, x: Tensor, y: Tensor) -> None:
        live = x.detach() != 0
        dead = live & (y.detach() == 0)
        self.dropped[key] = self.dropped.get(key, 0) + int(dead.sum())
        self.total[key] = self.total.get(key, 0) + int(live.sum())
        self.calls[key] = self.calls.get(key, 0) + 1
        if x.dim() >= 1:
            d = dead.reshape(-1, x.shape[-1]).sum(0).double().cpu()
            t = live.reshape(-1, x.shape[-1]).sum(0).double().cpu()
            if key in self.unit_dropped and self.unit_dropped[key].shape == d.shape:
                d, t = d + self.unit_dropped[key], t + self.unit_total[key]
            self.unit_dropped[key], self.unit_total[key] = d, t


class _Tracer:
    """Forward hooks and a wrapped ``F.dropout`` that credit each dropout call to its site."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.counter = _Counter()
        self.stack: list[nn.Module] = []
        self.original = torch.nn.functional.dropout

    def pre(self, mod: nn.Module, args: tuple) -> None:
        self.stack.append(mod)

    def post(self, mod: nn.Module, args: tuple, out: Any) -> None:
        if self.stack and self.stack[-1] is mod:
            self.stack.pop()

    def drop_hook(self, mod: nn.Module, args: tuple, out: Any) -> None:
        if args and isinstance(args[0], Tensor) and isinstance(out, Tensor):
            self.counter.add(self.names[id(mod)], args[0], out)

    def traced(self, input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
        """``F.dropout``, counted for the innermost running module that is not an ``nn.Dropout``."""
        top = self.stack[-1] if self.stack else None
        if top is None or is_dropout(top) or not training:
            return self.original(input, p, training, inplace)
        before = input.detach().clone() if inplace else input
        out = self.original(input, p, training, inplace)
        self.counter.add(self.names.get(id(top), "?"), before, out)
        return out

    @contextlib.contextmanager
    def installed(self, model: nn.Module) -> Iterator[None]:
        """Hooks and the wrapped dropout in place, train mode; all restored on exit."""
        handles = []
        was_training = {m: m.training for m in model.modules()}
        try:
            for m in model.modules():
                handles.append(m.register_forward_pre_hook(self.pre))
                if is_dropout(m):
                    handles.append(m.register_forward_hook(self.drop_hook))
                handles.append(m.register_forward_hook(self.post))
            torch.nn.functional.dropout = self.traced
            model.train()
            yield
        finally:
            torch.nn.functional.dropout = self.original
            for h in handles:
                h.remove()
            for m, flag in was_training.items():
                m.training = flag


def measure_rates(model: nn.Module, batches: Iterable[Any], sites: SiteMap | None = None, eager: bool = True,
                  forward: Any = None) -> dict[str, SiteMeasurement]:
    """Realized drop rate per site over one train-mode pass through ``batches``.

    Args:
        model: the model, with the rates to check already set (e.g. inside :func:`apply`).
        batches: dicts of model inputs (``input_ids``, ``attention_mask``, ...), or anything
            ``forward(model, batch)`` accepts.
        sites: the sites to report (default :func:`find_sites` of ``model``).
        eager: run attention on the eager path so kernel-internal dropout is observable.
        forward: ``forward(model, batch)``; default ``model(**batch)``.

    Returns:
        site id → :class:`SiteMeasurement` (``calls == 0``: the site never dropped anything, e.g.
        a rate set on an object the forward pass never reads).
    """
    sites = sites if sites is not None else find_sites(model)
    tracer = _Tracer(model)
    with tracer.installed(model), eager_attention(model) if eager else contextlib.nullcontext(), torch.no_grad():
        for b in batches:
            tracer.stack.clear()
            if forward is not None:
                forward(model, b)
            elif isinstance(b, Mapping):
                model(**b)
            else:
                model(b)
    return {s.id: _measurement(model, s, tracer.counter) for s in sites}


def _measurement(model: nn.Module, s: DropoutSite, counter: _Counter) -> SiteMeasurement:
    """One site's counts; module attention-probability dropout also counts its parent's calls."""
    keys = [s.module]
    if s.kind == "module" and s.role == "attention_probs":
        keys.append(s.module.rsplit(".", 1)[0] if "." in s.module else "")
    d = int(sum(counter.dropped.get(k, 0) for k in keys))
    t = int(sum(counter.total.get(k, 0) for k in keys))
    c = int(sum(counter.calls.get(k, 0) for k in keys))
    assigned = float(getattr(model.get_submodule(s.module) if s.module else model, s.attr))
    ud = counter.unit_dropped.get(s.module) if s.role != "attention_probs" else None
    ut = counter.unit_total.get(s.module) if s.role != "attention_probs" else None
    return SiteMeasurement(s.id, assigned, d, t, c, ud, ut)
