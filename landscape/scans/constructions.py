"""Directions built from other models, from curvature or from a mask: :func:`between` (θ_b − θ_a),
:func:`pca` (top PCA directions of a trajectory, Li et al. §7), :func:`eigenvectors` (top
Hessian eigenvectors) and :func:`isotropic_in_mask` (Gaussian on a mask's elements at a given
norm). Exported by :mod:`landscape.scans.directions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import vectors
from landscape.params import ParamMask, ParamSpace, Selection
from landscape.scans.direction import Direction, space_meta
from landscape.util import model_fingerprint
from landscape.util.results import JsonResult

__all__ = ["between", "pca", "eigenvectors", "isotropic_in_mask", "PCADirections"]


def _param_values(source: nn.Module | Mapping[str, Tensor], space: ParamSpace, what: str) -> dict[str, Tensor]:
    if isinstance(source, nn.Module):
        if model_fingerprint(source) != space.fingerprint:
            raise ValueError(f"{what} has a different architecture (parameter names/shapes) than the reference model.")
        named: dict[str, Tensor] = dict(source.named_parameters(remove_duplicate=False))
    else:
        named = {n: t for n, t in source.items()}
    out = {}
    for n, p in space.params.items():
        for cand in (n, *space.aliases[n]):
            if cand in named:
                t = named[cand]
                break
        else:
            raise KeyError(f"{what} has no tensor {n!r} (nor its aliases); is it a checkpoint of the same model?")
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"{what}[{n!r}] has shape {tuple(t.shape)}, the model has {tuple(p.shape)}.")
        out[n] = t.detach().to(device=p.device, dtype=p.dtype)
    return out


def between(model_a: nn.Module, model_b: nn.Module | Mapping[str, Tensor],
            space: ParamSpace | None = None) -> Direction:
    """The interpolation direction d = θ_b − θ_a (e.g. pretrained → fine-tuned); α=1 reaches θ_b.

    ``model_b`` may be a model of the same architecture or a state dict.
    """
    space = space or ParamSpace(model_a)
    a = {n: p.detach() for n, p in space.params.items()}
    b = _param_values(model_b, space, "model_b")
    d = Direction({n: b[n] - a[n] for n in a}, {"kind": "between", **space_meta(space)})
    d.meta["norm"] = d.norm()
    if d.meta["norm"] == 0.0:
        raise ValueError("model_a and model_b have identical weights: the direction between them is zero.")
    return d


def isotropic_in_mask(model: nn.Module, mask: ParamMask, *, norm: float, seed: int = 0) -> Direction:
    """An isotropic direction inside ``mask``: d = ‖d‖·(m⊙z)/‖m⊙z‖, z ~ N(0, I), zero off the mask.

    Every selected element gets the same variance, whatever the norm of its row or tensor (unlike
    a filter-normalized direction, whose masked entries scale with their row's weight norm). Used
    to compare masks at equal ``norm`` without the filter scaling deciding where the norm goes.

    Args:
        model: the model the mask's space belongs to (only names and shapes are read).
        mask: the element mask; its space is the direction's space.
        norm: the target ‖d‖₂ (> 0), e.g. the norm of a filter-normalized direction of the same seed.
        seed: draw seed (:func:`landscape.vectors.randn_like`).
    """
    if not norm > 0:
        raise ValueError(f"isotropic_in_mask needs a positive norm, got {norm}.")
    space = mask.space
    theta = {n: p.detach() for n, p in space.params.items()}
    raw = vectors.randn_like(theta, seed)
    d = {n: torch.where(mask.masks[n].to(t.device), t, torch.zeros((), dtype=t.dtype, device=t.device))
         if n in mask.masks else torch.zeros_like(t) for n, t in raw.items()}
    raw_norm = float(vectors.norm(d))
    if raw_norm == 0.0:
        raise ValueError("the mask selects no element, so an isotropic direction inside it is zero; give a "
                         "non-empty mask.")
    scaled = {n: (t.double() * (norm / raw_norm)).to(t.dtype) for n, t in d.items()}
    meta = {"kind": "isotropic_in_mask", "seed": int(seed), "distribution": "gaussian", "target_norm": float(norm),
            "mask": {"granularity": mask.granularity, "count": mask.count(), "fraction": mask.fraction},
            **space_meta(space)}
    out = Direction(scaled, meta)
    out.meta["norm"] = out.norm()
    return out


def eigenvectors(
    model: nn.Module, objective: Any, data: Any, *, k: int = 2, params: Selection = None,
    tol: float = 1e-3, method: str = "lanczos", seed: int = 0,
) -> list[Direction]:
    """The top-``k`` Hessian eigenvectors (unit norm) as directions, via ``curvature.top_eigenvalues``.

    Each direction's ``meta`` holds its eigenvalue, the method and the matvec count.
    """
    from landscape import curvature  # deferred: landscape.curvature imports landscape.scans

    op = curvature.HessianOperator(model, objective, data, params=params)
    res = curvature.top_eigenvalues(op, k=k, tol=tol, method=method, seed=seed)
    space = ParamSpace(model)
    out = []
    for i, (lam, v) in enumerate(zip(res.values, res.vectors)):
        meta = {"kind": "hessian_eigenvector", "index": i, "eigenvalue": float(lam), "method": method,
                "tol": tol, "seed": seed, "n_matvecs": int(res.n_matvecs), **space_meta(space)}
        d = Direction({n: t.detach() for n, t in v.items()}, meta)
        d.meta["norm"] = d.norm()
        out.append(d)
    return out


@dataclass
class PCADirections(JsonResult):
    """Top-two PCA directions of a trajectory, relative to its final point (Li et al., §7).

    ``directions``: two unit-norm :class:`Direction`; ``explained_variance_ratio``: ``[2]``;
    ``projections``: ``[n_checkpoints, 2]`` coordinates of θ_i − θ_final on the directions.
    """

    _transient = ("directions",)  # save each with Direction.save

    directions: list[Direction]
    explained_variance_ratio: np.ndarray
    projections: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def pca(checkpoints: Sequence[nn.Module | Mapping[str, Tensor]], *, model: nn.Module | None = None,
        num_components: int = 2) -> PCADirections:
    """PCA of the trajectory matrix M = [θ_i − θ_final]_{i<n} (columns centered, as sklearn's PCA).

    Args:
        checkpoints: models or state dicts in training order; the last is the reference θ_final.
        model: defines the parameter space when ``checkpoints`` are state dicts (default: the
            last checkpoint if it is a model).
    """
    if len(checkpoints) < num_components + 1:
        raise ValueError(f"pca needs at least {num_components + 1} checkpoints, got {len(checkpoints)}.")
    ref = model if model is not None else checkpoints[-1]
    if not isinstance(ref, nn.Module):
        raise TypeError("pca of state dicts needs model=... to know the parameter space.")
    space = ParamSpace(ref)
    thetas = [_param_values(c, space, f"checkpoint {i}") for i, c in enumerate(checkpoints)]
    final = {n: t.double() for n, t in thetas[-1].items()}
    rows = torch.stack([vectors.to_flat({n: t.double() - final[n] for n, t in th.items()}) for th in thetas])
    m = rows[:-1]
    centered = m - m.mean(dim=0, keepdim=True)
    gram = centered @ centered.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    if float(evals[num_components - 1]) <= 0:
        raise ValueError("the trajectory spans fewer than two dimensions; PCA directions are undefined.")
    like = {n: p.detach() for n, p in space.params.items()}
    dirs, flat_dirs = [], []
    for i in range(num_components):
        v = centered.T @ evecs[:, i]
        v = v / torch.linalg.vector_norm(v)
        flat_dirs.append(v)
        dirs.append(Direction(vectors.from_flat(v, like), {"kind": "pca", "component": i, **space_meta(space)}))
    ratio = (evals[:num_components] / evals.sum()).numpy()
    proj = (rows @ torch.stack(flat_dirs).T).numpy()
    for d, r in zip(dirs, ratio):
        d.meta.update(explained_variance_ratio=float(r), norm=d.norm())
    return PCADirections(dirs, ratio, proj, {"n_checkpoints": len(checkpoints), **space_meta(space)})
