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

The module is a little over 400 lines: every direction builder shares the filter-slice helpers
and the ``Direction`` file format, which belong together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import vectors
from landscape.params import ParamSpace, Selection, select
from landscape.util import model_fingerprint, tensors_fingerprint
from landscape.util.checks import check_finite_weights
from landscape.util.files import dumps, write_bytes
from landscape.util.results import JsonResult, plain

DIRECTION_FORMAT = "landscape.direction/1"
NORMALIZATIONS = ("filter", "tensor", "model", "none")
ONE_DIM_POLICIES = ("zero", "filter", "radial")
MASK_SCALINGS = ("filter_norm_of_masked", "match_full_norm")


class Direction(dict):
    """A parameter-space direction: ``dict[name, Tensor]`` plus ``meta`` (its recipe)."""

    def __init__(self, tensors: Mapping[str, Tensor], meta: dict[str, Any] | None = None) -> None:
        super().__init__(tensors)
        self.meta: dict[str, Any] = dict(meta or {})

    def norm(self) -> float:
        """‖d‖₂ over all entries."""
        return float(vectors.norm(self))

    def fingerprint(self) -> str:
        """Hash of the names, shapes and exact values (used to refuse resuming with other directions)."""
        return tensors_fingerprint(self)

    def __repr__(self) -> str:
        return f"Direction({len(self)} tensors, kind={self.meta.get('kind')!r}, norm={self.norm():.4g})"

    def to_dict(self) -> dict[str, Any]:
        """The recipe and summary (names, shapes, norm, fingerprint); the tensors go to :meth:`save`."""
        return {"meta": plain(self.meta), "norm": self.norm(), "fingerprint": self.fingerprint(),
                "shapes": {n: list(t.shape) for n, t in self.items()}}

    def save(self, path: str | Path) -> Path:
        """Write the tensors as ``.safetensors`` with the recipe in its metadata (atomically)."""
        from safetensors.torch import save

        blob = save({n: t.detach().cpu().contiguous() for n, t in self.items()},
                    metadata={"format": DIRECTION_FORMAT, "meta": dumps(plain(self.meta), indent=None),
                              "names": dumps(list(self), indent=None)})
        return write_bytes(path, blob)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> Direction:
        """Read a file written by :meth:`save`; with ``model``, check it fits the model's parameters."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"direction file {path} does not exist.")
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
            tensors = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{path} is not a readable .safetensors direction file ({exc}).") from None
        if header.get("format") != DIRECTION_FORMAT:
            raise ValueError(f"{path} is not a landscape direction file (format {header.get('format')!r}).")
        names = json.loads(header.get("names", "null")) or list(tensors)  # safetensors sorts its keys
        d = cls({n: tensors[n] for n in names}, json.loads(header.get("meta", "{}")))
        if model is not None:
            space = ParamSpace(model)
            check_direction(d, space)
            d = cls({n: t.to(space.params[n].device, space.params[n].dtype) for n, t in d.items()}, d.meta)
        return d


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


def _space_meta(space: ParamSpace) -> dict[str, Any]:
    return {"model_fingerprint": space.fingerprint, "n_tensors": len(space), "space_dim": space.dim}


# ----------------------------------------------------------------------------- random


def random(
    model: nn.Module,
    seed: int = 0,
    normalization: str = "filter",
    one_dim: str = "zero",
    *,
    params: Selection = None,
    mask_scaling: str = "filter_norm_of_masked",
) -> Direction:
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
        "distribution": "gaussian", **_space_meta(space),
    }
    if mask is None:
        d = _normalize(raw, theta, space, normalization, one_dim)
    else:
        m = {n: mask.masks[n].to(theta[n].device) if n in mask.masks else torch.zeros_like(theta[n], dtype=torch.bool) for n in theta}
        zero = {n: torch.zeros((), dtype=theta[n].dtype, device=theta[n].device) for n in theta}
        if mask_scaling == "filter_norm_of_masked":
            d_m = {n: torch.where(m[n], raw[n], zero[n]) for n in theta}
            w_m = {n: torch.where(m[n], theta[n], zero[n]) for n in theta}
            d = _normalize(d_m, w_m, space, normalization, one_dim)
        else:
            full = _normalize(raw, theta, space, normalization, one_dim)
            d = {n: torch.where(m[n], full[n], zero[n]) for n in theta}
            fn, mn = float(vectors.norm(full)), float(vectors.norm(d))
            if mn == 0.0:
                raise ValueError(
                    "the masked part of the direction is zero (the mask selects only tensors the "
                    f"one_dim={one_dim!r} policy zeroes); use one_dim='filter' or another mask."
                )
            d = {n: (t.double() * (fn / mn)).to(t.dtype) for n, t in d.items()}
        meta.update(
            mask_scaling=mask_scaling, mask={"granularity": mask.granularity, "count": mask.count(),
                                             "fraction": mask.fraction, **_jsonable(mask.meta)},
        )
    out = Direction(d, meta)
    out.meta["norm"] = out.norm()
    return out


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


def between(model_a: nn.Module, model_b: nn.Module | Mapping[str, Tensor], space: ParamSpace | None = None) -> Direction:
    """The interpolation direction d = θ_b − θ_a (e.g. pretrained → fine-tuned); α=1 reaches θ_b.

    ``model_b`` may be a model of the same architecture or a state dict.
    """
    space = space or ParamSpace(model_a)
    a = {n: p.detach() for n, p in space.params.items()}
    b = _param_values(model_b, space, "model_b")
    d = Direction({n: b[n] - a[n] for n in a}, {"kind": "between", **_space_meta(space)})
    d.meta["norm"] = d.norm()
    if d.meta["norm"] == 0.0:
        raise ValueError("model_a and model_b have identical weights: the direction between them is zero.")
    return d


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
                "tol": tol, "seed": seed, "n_matvecs": int(res.n_matvecs), **_space_meta(space)}
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


def pca(checkpoints: Sequence[nn.Module | Mapping[str, Tensor]], *, model: nn.Module | None = None, num_components: int = 2) -> PCADirections:
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
        dirs.append(Direction(vectors.from_flat(v, like), {"kind": "pca", "component": i, **_space_meta(space)}))
    ratio = (evals[:num_components] / evals.sum()).numpy()
    proj = (rows @ torch.stack(flat_dirs).T).numpy()
    for d, r in zip(dirs, ratio):
        d.meta.update(explained_variance_ratio=float(r), norm=d.norm())
    return PCADirections(dirs, ratio, proj, {"n_checkpoints": len(checkpoints), **_space_meta(space)})


# ----------------------------------------------------------------------------- checks


def check_direction(d: Mapping[str, Tensor], space: ParamSpace, what: str = "direction") -> dict[str, Tensor]:
    """Validate ``d`` against ``space``; return it keyed by canonical names on the parameters'
    device and dtype. Raises a clear error for another model, wrong shapes, non-finite or zero d."""
    meta = getattr(d, "meta", {}) or {}
    fp = meta.get("model_fingerprint")
    if fp is not None and fp != space.fingerprint:
        raise ValueError(
            f"{what} was made for a different model (architecture fingerprint {fp}, this model "
            f"{space.fingerprint}); build it from this model, e.g. directions.random(model, seed)."
        )
    if not d:
        raise ValueError(f"{what} is empty: it names no parameter.")
    alias_to = {a: n for n, al in space.aliases.items() for a in al}
    out: dict[str, Tensor] = {}
    for name, t in d.items():
        canon = alias_to.get(name, name)
        if canon not in space.params:
            raise ValueError(
                f"{what} names {name!r}, which is not a trainable parameter of this model: it was made "
                "for a different model or parameter selection."
            )
        p = space.params[canon]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"{what}[{name!r}] has shape {tuple(t.shape)}, the model's parameter has {tuple(p.shape)}.")
        out[canon] = t.detach().to(device=p.device, dtype=p.dtype)
    finite = torch.stack([torch.isfinite(t).all() for t in out.values()]).all()
    if not bool(finite):
        raise ValueError(f"{what} has NaN or infinite entries.")
    if float(vectors.norm(out)) == 0.0:
        raise ValueError(f"{what} is zero everywhere: every grid point would be the same model. "
                         "Check the mask and the one_dim policy.")
    return out
