"""The two arms' masks and directions.

**Arm P** (the paper's protocol, Sharma et al. 2024): rank *all* trainable tensors by mean
diagonal Fisher and split them into a top half and a bottom half (the bottom half takes the odd
one out). Directions are Gaussian, filter-normalized to each moved tensor's own weights
(``mask_scaling="filter_norm_of_masked"``), 1-D tensors (biases, LayerNorm) get a zero direction,
and nothing matches norms between the halves. "all" moves every tensor the same way. Because many
1-D tensors rank high, the top half may move few parameters: :func:`half_summary` counts them.

**Arm E** (the controlled question): element masks of one size over the matrix parameters
(≥ 2-D tensors), directions scaled to the norm of a full filter-normalized direction
(``match_full_norm``), so every mask moves the weights equally far:

* ``top`` / ``bottom``: the highest / lowest Fisher scores;
* ``random``: uniform over the space, redrawn per direction seed;
* ``stratified``: random, with the same number of elements in each tensor as ``top``, redrawn per
  seed. It keeps "which tensors" and randomizes "which elements within a tensor": the diagonal
  Fisher approximates the diagonal curvature, so top vs random alone is close to tautological.

Tensor-granularity masks are used only when top, bottom and random sets of k tensors can hold the
same number of parameters, i.e. when every matrix has the same size; :func:`tensor_mask_check`
says why they are dropped otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from landscape.fisher import FisherDiagonal
from landscape.params import ParamMask, ParamSpace
from landscape.scans import directions

ARM_P_HALVES = ("top", "bottom", "all")
ARM_E_MASKS = ("top", "stratified", "random", "bottom")
RANDOM_MASK_SEED = 7919  # random masks use seed + this, so they never share a stream with the directions
SECOND_DIRECTION = 10_000  # the 2D surfaces' second direction uses seed + this


def matrix_space(model: Any) -> ParamSpace:
    """The ≥ 2-D trainable tensors (embeddings and weight matrices), tied ones once."""
    full = ParamSpace(model)
    return ParamSpace.from_names(model, [n for n, p in full.params.items() if p.ndim >= 2])


# ----------------------------------------------------------------------------- arm P


def tensor_halves(F: FisherDiagonal) -> dict[str, list[str]]:
    """All scored tensors ranked by mean Fisher: ``{"top": first ⌊n/2⌋, "bottom": the rest}``."""
    means = F.per_tensor("mean")
    order = sorted(means, key=lambda n: -means[n])  # stable: ties keep parameter order
    k = len(order) // 2
    if k == 0:
        raise ValueError("arm P needs at least two trainable tensors to split into halves.")
    return {"top": order[:k], "bottom": order[k:]}


def half_summary(space: ParamSpace, names: list[str]) -> dict[str, Any]:
    """How many tensors a half holds, how many move (≥ 2-D), and how many parameters move."""
    moving = [n for n in names if space.params[n].ndim >= 2]
    return {"n_tensors": len(names), "n_moving_tensors": len(moving),
            "n_params_moved": int(sum(space.params[n].numel() for n in moving)),
            "n_params_held": int(sum(space.params[n].numel() for n in names)), "tensors": names, "moving": moving}


def arm_p_direction(model: Any, space: ParamSpace, names: list[str] | None, seed: int) -> directions.Direction:
    """The paper's direction: filter-normalized to the moved tensors' own weights, 1-D tensors zero.
    ``names`` None: every tensor ("all")."""
    if names is None:
        return directions.random(model, seed=seed, normalization="filter", one_dim="zero")
    mask = ParamMask.from_tensor_names(space, names)
    return directions.random(model, seed=seed, normalization="filter", one_dim="zero", params=mask,
                             mask_scaling="filter_norm_of_masked")


# ----------------------------------------------------------------------------- arm E


def stratified_random(top: ParamMask, seed: int) -> ParamMask:
    """A random mask with exactly as many elements in each tensor as ``top``."""
    g = torch.Generator().manual_seed(int(seed))
    masks = {}
    for n in top.space.names:
        p = top.space.params[n]
        k = int(top.masks[n].sum()) if n in top.masks else 0
        if k == 0:
            continue
        sel = torch.zeros(p.numel(), dtype=torch.bool)
        sel[torch.randperm(p.numel(), generator=g)[:k]] = True
        masks[n] = sel.view(p.shape).to(p.device)
    return ParamMask(top.space, masks, "element", {**top.meta, "which": "stratified", "seed": int(seed)})


@dataclass
class ArmEMasks:
    """The masks of one fraction; ``random`` and ``stratified`` are drawn per direction seed."""

    fraction: float
    top: ParamMask
    bottom: ParamMask
    draw_random: Callable[[int], ParamMask]
    draw_stratified: Callable[[int], ParamMask]

    def mask(self, which: str, seed: int) -> ParamMask:
        if which == "top":
            return self.top
        if which == "bottom":
            return self.bottom
        if which == "random":
            return self.draw_random(seed + RANDOM_MASK_SEED)
        if which == "stratified":
            return self.draw_stratified(seed + RANDOM_MASK_SEED)
        raise ValueError(f"unknown arm E mask {which!r}; use one of {ARM_E_MASKS}.")


def arm_e_masks(F_matrix: FisherDiagonal, fraction: float) -> ArmEMasks:
    """Top, bottom, random and stratified-random element masks of one size over the matrix space."""
    top = F_matrix.mask(fraction, which="top", granularity="element")
    bottom = F_matrix.mask(fraction, which="bottom", granularity="element")
    return ArmEMasks(fraction, top, bottom,
                     lambda s: F_matrix.mask(fraction, which="random", granularity="element", seed=s),
                     lambda s: stratified_random(top, s))


def arm_e_direction(model: Any, mask: ParamMask, seed: int) -> directions.Direction:
    """A filter-normalized direction on ``mask``, scaled to the norm of the full direction of the same seed."""
    return directions.random(model, seed=seed, normalization="filter", one_dim="zero", params=mask,
                             mask_scaling="match_full_norm")


def tensor_mask_check(space: ParamSpace, fractions: tuple[float, ...]) -> dict[str, Any]:
    """Whether k-tensor top/bottom/random masks can be matched in parameter count.

    They can only when every tensor has the same size (then any k tensors hold the same count);
    otherwise the reason names the sizes and the spread of a k-tensor mask's count.
    """
    sizes = sorted(int(p.numel()) for p in space.params.values())
    if len(set(sizes)) == 1:
        return {"kept": True, "reason": f"all {len(sizes)} matrices hold {sizes[0]:,} parameters"}
    spans = []
    for f in fractions:
        k = max(1, round(f * len(sizes)))
        spans.append(f"{k} tensors hold between {sum(sizes[:k]):,} and {sum(sizes[-k:]):,} parameters at fraction "
                     f"{f:g}")
    return {"kept": False,
            "reason": (f"dropped: the {len(sizes)} matrices range from {sizes[0]:,} to {sizes[-1]:,} parameters, so "
                       f"top, bottom and random tensor sets cannot be matched in size ({'; '.join(spans)}). "
                       "Element masks of matched size answer the question instead.")}
