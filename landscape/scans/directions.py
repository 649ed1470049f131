"""Directions in parameter space: filter-normalized random directions (Li et al., 2018),
interpolation directions, Hessian eigenvectors and PCA directions of a trajectory.

A direction is a :class:`Direction`: a ``dict[str, Tensor]`` over a :class:`params.ParamSpace`
(tied weights once, under their first name) plus ``.meta``, the recipe it was made with (seed,
normalization, policies, mask, model fingerprint). It works wherever a dict vector does
(``vectors.*``, ``Snapshot.set_offset``) and scans record its recipe.

Filter normalization rescales each output unit's slice dᶠ of a random Gaussian direction to the
norm of the same slice of the weight: dᶠ ← dᶠ·‖θᶠ‖/‖dᶠ‖. The slice is a row of an ``nn.Linear``
weight ``[out, in]`` and of an ``nn.Embedding`` (one token), ``w[i]`` of a convolution (dim 0), and
a column of a Hugging Face GPT-2 ``Conv1D`` weight, which is stored ``[in, out]``.

One-dimensional tensors (biases, LayerNorm) follow ``one_dim``:

* ``"zero"``: no movement (Li et al.'s ``--xignore biasbn``; the guided-dropout surfaces);
* ``"filter"``: the tensor is one filter, d ← d·‖θ‖/‖d‖;
* ``"radial"``: d = θ, what Li et al.'s ``normalize_directions_for_weights`` does without
  ``ignore='biasbn'`` (``d.copy_(w)`` for every tensor with ``dim() <= 1``), so a step α scales
  those tensors by (1 + α).

This module is the public home of every direction builder: :class:`Direction` and
:func:`check_direction` are defined in :mod:`landscape.scans.direction`, :func:`between`,
:func:`pca` and :func:`eigenvectors` in :mod:`landscape.scans.constructions`; all are importable
from here (``from landscape.scans import directions; directions.between(...)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from landscape import vectors
from landscape.params import ParamMask, ParamSpace, Selection, select
from landscape.scans.constructions import PCADirections, between, eigenvectors, isotropic_in_mask, pca
from landscape.scans.direction import DIRECTION_FORMAT, Direction, check_direction, space_meta
from landscape.util.checks import check_finite_weights

__all__ = ["Direction", "DIRECTION_FORMAT", "check_direction", "random", "orthogonalize", "between", "pca",
           "eigenvectors", "isotropic_in_mask", "PCADirections", "filter_axis", "filter_norms", "NORMALIZATIONS",
           "ONE_DIM_POLICIES", "MASK_SCALINGS", "Normalization", "OneDim", "MaskScaling"]

Normalization = Literal["filter", "tensor", "model", "none"]
OneDim = Literal["zero", "filter", "radial"]
MaskScaling = Literal["filter_norm_of_masked", "match_full_norm"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
ONE_DIM_POLICIES: tuple[str, ...] = get_args(OneDim)
MASK_SCALINGS: tuple[str, ...] = get_args(MaskScaling)


# ----------------------------------------------------------------------------- filter slices


def _is_hf_conv1d(module: nn.Module | None) -> bool:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return type(module).__name__ == "Conv1D"
    return isinstance(module, Conv1D)


def filter_axis(space: ParamSpace, name: str) -> int | None:
    """The axis indexing output units of parameter ``name``; ``None`` for tensors with ≤ 1 dim.

    HF ``Conv1D`` weights are ``[in, out]`` (axis 1); Linear, Conv and Embedding weights axis 0.
    """
    p = space.params[name]
    if p.ndim <= 1:
        return None
    if _is_hf_conv1d(space.owners.get(name)) and name.endswith("weight"):
        return p.ndim - 1
    return 0


def filter_norms(t: Tensor, axis: int) -> Tensor:
    """Norm of each slice ``t.select(axis, i)``, shape ``[t.shape[axis]]`` (float64)."""
    return torch.linalg.vector_norm(t.detach().double().movedim(axis, 0).reshape(t.shape[axis], -1), dim=1)


def _rescale_slices(d: Tensor, w: Tensor, axis: int | None) -> Tensor:
    """D with each slice along ``axis`` (the whole tensor if None) scaled to the norm of w's slice."""
    if axis is None:
        dn = torch.linalg.vector_norm(d.double())
        wn = torch.linalg.vector_norm(w.double())
        scale = torch.where(dn > 0, wn / dn.clamp_min(1e-300), torch.zeros_like(dn))
        return (d.double() * scale).to(d.dtype)
    dn, wn = filter_norms(d, axis), filter_norms(w, axis)
    scale = torch.where(dn > 0, wn / dn.clamp_min(1e-300), torch.zeros_like(dn))
    shape = [1] * d.ndim
    shape[axis] = -1
    return (d.double() * scale.view(shape).to(d.device)).to(d.dtype)


def _normalize(
    raw: dict[str, Tensor], theta: dict[str, Tensor], space: ParamSpace, normalization: str, one_dim: str
) -> dict[str, Tensor]:
    """Apply ``normalization`` and ``one_dim`` to ``raw`` against reference weights ``theta``."""
    out: dict[str, Tensor] = {}
    for name, d in raw.items():
        w = theta[name]
        if w.ndim <= 1:
            if one_dim == "zero":
                out[name] = torch.zeros_like(d)
            elif one_dim == "radial":
                out[name] = w.detach().clone()
            elif normalization == "none":
                out[name] = d
            else:  # one filter
                out[name] = _rescale_slices(d, w, None)
            continue
        if normalization == "filter":
            out[name] = _rescale_slices(d, w, filter_axis(space, name))
        elif normalization == "tensor":
            out[name] = _rescale_slices(d, w, None)
        else:  # model / none: rescaled globally below
            out[name] = d
    if normalization == "model":
        moving = [n for n in out if theta[n].ndim > 1 or one_dim == "filter"]
        dn = float(vectors.norm({n: out[n].double() for n in moving})) if moving else 0.0
        wn = float(vectors.norm({n: theta[n].double() for n in moving})) if moving else 0.0
        for n in moving:
            out[n] = (out[n].double() * (wn / dn if dn > 0 else 0.0)).to(out[n].dtype)
    return out


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {list(allowed)}, got {value!r}.")


# ----------------------------------------------------------------------------- random


def random(model: nn.Module, seed: int = 0, normalization: Normalization = "filter", one_dim: OneDim = "zero", *,
           params: Selection = None, mask_scaling: MaskScaling = "filter_norm_of_masked") -> Direction:
    """A Gaussian direction d ~ N(0, I) over the space, normalized against the weights θ.

    Args:
        model: the model whose current weights θ set the scale.
        seed: draw seed (``vectors.randn_like``: the same on every rank and device).
        normalization: ``"filter"`` (each output unit's slice gets ‖θᶠ‖), ``"tensor"`` (each
            tensor gets ‖θ_k‖, Li et al.'s ``layer``), ``"model"`` (‖d‖ = ‖θ‖ over the moving
            tensors) or ``"none"`` (raw Gaussian).
        one_dim: policy for tensors with ≤ 1 dim: ``"zero"``, ``"filter"`` or ``"radial"`` (d = θ).
        params: which parameters exist in the direction (see :func:`landscape.params.select`):
            all trainable ones (None), globs, a ``ParamSpace``, or a ``ParamMask`` whose
            coordinates alone move (zero elsewhere; the mask's space is the direction's space).
        mask_scaling: with a mask, ``"filter_norm_of_masked"`` normalizes d⊙m against θ⊙m (each
            filter's masked slice gets the norm of the masked slice of θ), ``"match_full_norm"``
            takes the unmasked direction D of the same seed and scales m⊙D to ‖D‖, so top-,
            bottom- and random-Fisher perturbations are compared at equal norm.

    Returns:
        a :class:`Direction` with every name of the space; ``meta`` records the recipe.
    """
    _check_choice(normalization, NORMALIZATIONS, "normalization")
    _check_choice(one_dim, ONE_DIM_POLICIES, "one_dim")
    _check_choice(mask_scaling, MASK_SCALINGS, "mask_scaling")
    space, mask = select(model, params)
    check_finite_weights(model)  # a NaN weight would give a NaN filter norm
    theta = {n: p.detach() for n, p in space.params.items()}
    raw = vectors.randn_like(theta, seed)
    meta: dict[str, Any] = {
        "kind": "random", "seed": int(seed), "normalization": normalization, "one_dim": one_dim,
        "distribution": "gaussian", **space_meta(space),
    }
    if mask is None:
        d = _normalize(raw, theta, space, normalization, one_dim)
    else:
        d = _masked(raw, theta, space, mask, normalization, one_dim, mask_scaling)
        meta.update(mask_scaling=mask_scaling, mask={"granularity": mask.granularity, "count": mask.count(),
                                                     "fraction": mask.fraction, **_jsonable(mask.meta)})
    out = Direction(d, meta)
    out.meta["norm"] = out.norm()
    return out


def _masked(raw: dict[str, Tensor], theta: dict[str, Tensor], space: ParamSpace, mask: ParamMask, normalization: str,
            one_dim: str, mask_scaling: str) -> dict[str, Tensor]:
    """The masked direction m⊙d, normalized as ``mask_scaling`` says (see :func:`random`)."""
    m = {n: mask.masks[n].to(t.device) if n in mask.masks else torch.zeros_like(t, dtype=torch.bool)
         for n, t in theta.items()}
    zero = {n: torch.zeros((), dtype=t.dtype, device=t.device) for n, t in theta.items()}
    if mask_scaling == "filter_norm_of_masked":
        d_m = {n: torch.where(m[n], raw[n], zero[n]) for n in theta}
        w_m = {n: torch.where(m[n], theta[n], zero[n]) for n in theta}
        return _normalize(d_m, w_m, space, normalization, one_dim)
    full = _normalize(raw, theta, space, normalization, one_dim)
    d = {n: torch.where(m[n], full[n], zero[n]) for n in theta}
    fn, mn = float(vectors.norm(full)), float(vectors.norm(d))
    if mn == 0.0:
        raise ValueError("the masked part of the direction is zero (the mask selects only tensors the "
                         f"one_dim={one_dim!r} policy zeroes); use one_dim='filter' or another mask.")
    return {n: (t.double() * (fn / mn)).to(t.dtype) for n, t in d.items()}


def _jsonable(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None), list, tuple))}


# ----------------------------------------------------------------------------- other builders


def orthogonalize(d1: Mapping[str, Tensor], d2: Mapping[str, Tensor], keep_norm: bool = True) -> Direction:
    """Gram–Schmidt: e = d2 − (⟨d1,d2⟩/⟨d1,d1⟩)·d1, so ⟨d1, e⟩ = 0 (computed in float64).

    With ``keep_norm`` e is rescaled to ‖d2‖. ``meta`` extends d2's recipe.
    """
    vectors.check_like(d2, d1, "d2")
    a = {k: t.double() for k, t in d1.items()}
    b = {k: t.double() for k, t in d2.items()}
    aa = float(vectors.dot(a, a))
    if aa == 0.0:
        raise ValueError("cannot orthogonalize against d1: it is zero everywhere.")
    e = vectors.add(b, a, alpha=-float(vectors.dot(a, b)) / aa)
    en = float(vectors.norm(e))
    if en == 0.0:
        raise ValueError("d2 is parallel to d1: nothing is left after orthogonalizing.")
    if keep_norm:
        e = vectors.scale(e, float(vectors.norm(b)) / en)
    meta = dict(getattr(d2, "meta", {}))
    meta.update(orthogonalized_to=getattr(d1, "meta", {}).get("kind", "direction"), keep_norm=keep_norm)
    out = Direction({k: e[k].to(d2[k].dtype) for k in d2}, meta)
    out.meta["norm"] = out.norm()
    return out
