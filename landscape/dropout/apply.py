"""Set dropout rates on a model and undo them exactly.

``with apply(model, rates): ...`` sets each site's rate (``nn.Dropout.p`` or the float attribute
that the attention kernel reads at call time) and, on exit, puts back the original objects, also
when the body raised. Parameters are never touched. Noise variants, at the sites whose dropout is
a module call (hidden states; not the attention probabilities, which drop inside the kernel):

* ``granularity="unit"``: an element-wise mask with a per-unit probability p_u along the last
  axis: y = x · m / (1 − p_u), m ~ Bernoulli(1 − p_u);
* ``noise="gaussian"``: y = x · (1 + σ ε), ε ~ N(0, 1), σ² = p / (1 − p) (the variance of
  Bernoulli dropout at rate p; Srivastava et al., 2014), in train mode only; eval is exact.

At attention-probability sites both variants fall back to Bernoulli dropout at the site's rate
(recorded in :attr:`Applied.fallbacks`). For ``transformers.Trainer``, call :func:`set_rates` and
``.restore()`` or wrap ``trainer.train()`` in ``with apply(...)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape.dropout import rates as _rates
from landscape.dropout.guided import FORMAT, DropoutRates
from landscape.dropout.sites import DropoutSite, SiteMap, _resolve, find_sites

__all__ = ["GRANULARITIES", "NOISES", "Applied", "apply", "current_rates", "set_rates"]

NOISES = ("bernoulli", "gaussian")
GRANULARITIES = ("site", "unit")
_MISSING = object()


@dataclass
class Applied:
    """Handle of rates set on a model; :meth:`restore` undoes them (idempotent)."""

    model: nn.Module
    sites: SiteMap
    originals: list[tuple[nn.Module, str, Any]] = field(default_factory=list)
    hooks: list[Any] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)
    noise: str = "bernoulli"
    granularity: str = "site"

    def restore(self) -> None:
        """Remove the hooks and put the original rate objects back, in reverse order."""
        while self.hooks:
            self.hooks.pop().remove()
        while self.originals:
            mod, attr, value = self.originals.pop()
            if value is _MISSING:
                delattr(mod, attr)
            else:
                setattr(mod, attr, value)


def _as_maps(rates: Any) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Site rates and unit rates from a ``DropoutRates``, a ``rates.json`` path, the dict read from
    that file (``{"format": "landscape.dropout-rates/1", "rates": ...}``) or a plain ``{site: p}``."""
    if isinstance(rates, (str, PathLike)):
        rates = DropoutRates.load(Path(rates))
    elif isinstance(rates, Mapping) and ("format" in rates or isinstance(rates.get("rates"), Mapping)):
        if rates.get("format") != FORMAT:
            raise ValueError(f"rates dict has format {rates.get('format')!r}, not {FORMAT!r}: pass the dict read "
                             "from a rates.json written by DropoutRates.save, a DropoutRates, a path, or "
                             "{site id: rate}.")
        rates = DropoutRates.from_dict(rates, "rates dict")
    if hasattr(rates, "rates"):
        return dict(rates.rates), dict(getattr(rates, "unit_rates", {}) or {})
    if isinstance(rates, Mapping):
        return {k: v for k, v in rates.items()}, {}
    raise TypeError(f"rates must be a DropoutRates, a rates.json path, the dict read from it, or a mapping site id -> "
                    f"float, got {type(rates).__name__}.")


def _unit_hook(p_u: Tensor, site: str):
    keep = (1.0 - p_u).float()

    def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        if not module.training:
            return out
        if out.shape[-1] != keep.numel():
            raise ValueError(f"unit rates for site {site!r} have {keep.numel()} units; its tensor has last axis "
                             f"{out.shape[-1]}.")
        k = keep.to(device=out.device, dtype=out.dtype)
        mask = torch.bernoulli(k.expand(out.shape).contiguous())
        return out * mask / k.clamp_min(1e-12)

    return hook


def _gaussian_hook(p: float):
    sigma = math.sqrt(p / (1.0 - p))

    def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        if not module.training or sigma == 0.0:
            return out
        return out * (1.0 + sigma * torch.randn_like(out))

    return hook


def _hookable(site: DropoutSite) -> bool:
    """Whether the site's dropout is a module call (hidden states), so a hook can replace its noise."""
    return site.kind == "module" and site.role != "attention_probs"


def _remember(applied: Applied, mod: nn.Module, attr: str) -> None:
    applied.originals.append((mod, attr, mod.__dict__[attr] if attr in mod.__dict__ else _MISSING))


def set_rates(model: nn.Module, rates: Any, noise: str = "bernoulli", granularity: str = "site",
              sites: SiteMap | None = None, strict: bool = True) -> Applied:
    """Set ``rates`` (a :class:`~landscape.dropout.guided.DropoutRates`, a ``rates.json`` path, the dict
    read from it, or ``{site id: p}``) on
    ``model`` and return the :class:`Applied` handle that undoes it.

    Args:
        noise: ``"bernoulli"`` (standard dropout) or ``"gaussian"`` (train mode only).
        granularity: ``"site"`` or ``"unit"`` (needs ``rates.unit_rates``; sites without unit rates
            keep their site rate).
        strict: every site of the model must get a rate (else missing sites keep theirs).

    Raises:
        ValueError: a rate outside [0, 1), an unknown site, a site left without a rate (strict),
            or unit granularity without unit rates.
    """
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}.")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")
    site_rates, units = _as_maps(rates)
    _rates.check_rates(site_rates)
    sites = sites if sites is not None else find_sites(model)
    unknown = [k for k in site_rates if k not in sites.ids]
    if unknown:
        raise ValueError(f"rates name sites this {sites.model_class} does not have: {unknown[:3]} "
                         f"(it has {sites.ids}).")
    if strict and (missing := [s for s in sites.ids if s not in site_rates]):
        raise ValueError(f"no rate for sites {missing[:3]}; give every site a rate or pass strict=False.")
    if granularity == "unit" and not units and any(_hookable(s) for s in sites):
        raise ValueError("granularity='unit' needs per-unit rates: make them with guided_rates(..., units=True).")
    applied = Applied(model, sites, rates=dict(site_rates), noise=noise, granularity=granularity)
    try:
        for site in sites:
            if site.id not in site_rates:
                continue
            p = float(site_rates[site.id])
            holder = _resolve(model, site.module)
            hookable = _hookable(site)
            use_unit = granularity == "unit" and site.id in units
            _remember(applied, holder, site.attr)
            if hookable and (use_unit or (noise == "gaussian" and p > 0)):
                setattr(holder, site.attr, 0.0)  # the module passes x through; the hook adds the noise
                hook = _unit_hook(units[site.id], site.id) if use_unit else _gaussian_hook(p)
                applied.hooks.append(holder.register_forward_hook(hook))
            else:
                if (use_unit or noise == "gaussian") and p > 0 and not hookable:
                    applied.fallbacks.append(site.id)
                setattr(holder, site.attr, p)
    except BaseException:
        applied.restore()
        raise
    return applied


@contextlib.contextmanager
def apply(model: nn.Module, rates: Any, noise: str = "bernoulli", granularity: str = "site",
          sites: SiteMap | None = None, strict: bool = True) -> Iterator[Applied]:
    """Context manager around :func:`set_rates`; the originals come back on exit, also after an exception.

    Example::

        with dropout.apply(model, rates):
            Trainer(model=model, args=args, train_dataset=ds).train()
    """
    applied = set_rates(model, rates, noise=noise, granularity=granularity, sites=sites, strict=strict)
    try:
        yield applied
    finally:
        applied.restore()


def current_rates(model: nn.Module, sites: SiteMap | None = None) -> dict[str, float]:
    """Site id → the rate the model holds now."""
    sites = sites if sites is not None else find_sites(model)
    return {s.id: float(getattr(_resolve(model, s.module), s.attr)) for s in sites}

