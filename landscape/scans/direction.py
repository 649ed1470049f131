"""A parameter-space direction and its file: :class:`Direction` (a ``dict[str, Tensor]`` over a
:class:`~landscape.params.ParamSpace` plus ``.meta``, the recipe it was made with), and
:func:`check_direction`, the one validation of a direction against a model's parameters.

The builders live in :mod:`landscape.scans.directions` (random, orthogonalize) and
:mod:`landscape.scans.constructions` (between, pca, eigenvectors); ``directions`` exports them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape import vectors
from landscape.params import ParamSpace
from landscape.util import tensors_fingerprint
from landscape.util.files import dumps, write_bytes
from landscape.util.results import plain

__all__ = ["Direction", "DIRECTION_FORMAT", "check_direction", "space_meta"]

DIRECTION_FORMAT = "landscape.direction/1"


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


def space_meta(space: ParamSpace) -> dict[str, Any]:
    """The recipe entries every direction records about its space (fingerprint, size)."""
    return {"model_fingerprint": space.fingerprint, "n_tensors": len(space), "space_dim": space.dim}


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
            raise ValueError(f"{what}[{name!r}] has shape {tuple(t.shape)}, "
                             f"the model's parameter has {tuple(p.shape)}.")
        out[canon] = t.detach().to(device=p.device, dtype=p.dtype)
    finite = torch.stack([torch.isfinite(t).all() for t in out.values()]).all()
    if not bool(finite):
        raise ValueError(f"{what} has NaN or infinite entries.")
    if float(vectors.norm(out)) == 0.0:
        raise ValueError(f"{what} is zero everywhere: every grid point would be the same model. "
                         "Check the mask and the one_dim policy.")
    return out
