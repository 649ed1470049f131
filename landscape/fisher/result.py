"""The result of a Fisher pass: per-parameter scores, summaries, masks, and files.

``FisherDiagonal.scores[name]`` has the parameter's shape; tied tensors appear once, under the
:class:`~landscape.params.ParamSpace` name (their aliases are in ``meta["aliases"]``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape import util
from landscape.fisher.convergence import Convergence
from landscape.params import ParamMask, ParamSpace, layer_group, layer_order

_REDUCE = ("mean", "sum", "max")
FORMAT = "landscape.fisher/1"


def _reduce(t: Tensor, how: str) -> float:
    if how not in _REDUCE:
        raise ValueError(f"reduce must be one of {_REDUCE}, got {how!r}.")
    t = t.double()
    return float(t.mean() if how == "mean" else t.sum() if how == "sum" else t.max())


@dataclass
class FisherDiagonal:
    """Diagonal Fisher scores with their metadata and convergence curves.

    Attributes:
        scores: ``dict[name, Tensor]`` in parameter shapes (tied tensors once).
        meta: estimator, counts (``n_examples`` = N), seeds, model fingerprint, versions.
        convergence: :class:`~landscape.fisher.convergence.Convergence` or ``None``.
        space: the parameter space scored (``None`` after :meth:`load` without a model).
    """

    scores: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    convergence: Convergence | None = None
    space: ParamSpace | None = None

    @property
    def names(self) -> list[str]:
        return list(self.scores)

    @property
    def estimator(self) -> str:
        return str(self.meta.get("estimator"))

    def per_tensor(self, reduce: str = "mean") -> dict[str, float]:
        """One number per tensor: the mean, sum or max of its scores."""
        return {n: _reduce(s, reduce) for n, s in self.scores.items()}

    def per_layer(self, reduce: str = "mean") -> dict[str, float]:
        """One number per group (``embeddings``, ``layer.<i>``, ``head``) over all its elements."""
        groups: dict[str, list[Tensor]] = {}
        for n, s in self.scores.items():
            groups.setdefault(layer_group(n), []).append(s.reshape(-1))
        return {g: _reduce(torch.cat(groups[g]), reduce) for g in sorted(groups, key=layer_order)}

    def restrict(self, space_or_names: ParamSpace | Sequence[str]) -> FisherDiagonal:
        """The same scores over the given tensors only (masks then rank within them).

        ``meta["restricted"]`` records the tensors kept and how many were scored; the convergence
        curves described all the scored tensors, so the restricted result has none.

        Raises:
            ValueError: names that were not scored, or a space of another model than these scores'.
        """
        if isinstance(space_or_names, ParamSpace):
            space = space_or_names
            if self.space is not None and space.model is not self.space.model:
                raise ValueError("restrict: the ParamSpace was built on another model than these scores; "
                                 "build it with ParamSpace(model, ...) on the scored model.")
        elif self.space is not None:
            space = ParamSpace.from_names(self.space.model, list(space_or_names))
        else:
            raise ValueError("these scores were loaded without a model: use FisherDiagonal.load(path, model=model), "
                             "or pass a ParamSpace, to restrict them.")
        missing = [n for n in space.names if n not in self.scores]
        if missing:
            raise ValueError(f"restrict: {', '.join(map(repr, missing[:3]))} were not scored "
                             f"(scored: {len(self.scores)} tensors); recompute the Fisher with params= covering them.")
        meta = {**self.meta, "restricted": {"names": space.names, "n_scored": len(self.scores)}}
        return FisherDiagonal({n: self.scores[n] for n in space.names}, meta, None, space)

    # ------------------------------------------------------------------ masks
    def mask(self, fraction: float, which: str = "top", granularity: str = "element", seed: int = 0) -> ParamMask:
        """Select a ``fraction`` of elements (or tensors) by score.

        ``which``: ``"top"`` (highest scores), ``"bottom"`` or ``"random"`` (uniform, ``seed``).
        ``granularity="element"``: k = max(1, round(fraction × #elements)) elements;
        ``"tensor"``: k = max(1, round(fraction × #tensors)) whole tensors ranked by mean score.
        For one fraction, k is the same for every ``which``, so comparisons are matched. Ties go to
        the earlier element (parameter order, then flat index).
        """
        if not (isinstance(fraction, (int, float)) and 0.0 < float(fraction) <= 1.0):
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
        if which not in ("top", "bottom", "random"):
            raise ValueError(f"which must be 'top', 'bottom' or 'random', got {which!r}.")
        if granularity not in ("element", "tensor"):
            raise ValueError(f"granularity must be 'element' or 'tensor', got {granularity!r}.")
        if self.space is None:
            raise ValueError("these scores were loaded without a model: "
                             "use FisherDiagonal.load(path, model=model) to build masks.")
        meta = {"fraction": float(fraction), "which": which, "granularity": granularity, "seed": int(seed),
                "estimator": self.estimator, "source": "fisher"}
        names = self.names
        if granularity == "tensor":
            k = max(1, round(float(fraction) * len(names)))
            if which == "random":
                order = torch.randperm(len(names), generator=torch.Generator().manual_seed(int(seed))).tolist()
            else:
                means = torch.tensor([self.scores[n].double().mean().item() for n in names])
                order = torch.sort(means, descending=(which == "top"), stable=True).indices.tolist()
            chosen = sorted(order[:k])
            return ParamMask.from_tensor_names(self.space, [names[i] for i in chosen], {**meta, "k": k})
        flat = torch.cat([self.scores[n].detach().double().reshape(-1).cpu() for n in names])
        dim = flat.numel()
        k = max(1, round(float(fraction) * dim))
        if which == "random":
            sel = torch.zeros(dim, dtype=torch.bool)
            sel[torch.randperm(dim, generator=torch.Generator().manual_seed(int(seed)))[:k]] = True
        else:
            key = -flat if which == "top" else flat  # select the k smallest keys
            thr = torch.kthvalue(key, k).values
            sel = key < thr
            ties = torch.nonzero(key == thr).reshape(-1)[: k - int(sel.sum())]
            sel[ties] = True
        masks, o = {}, 0
        for n in names:
            p = self.space.params[n]
            masks[n] = sel[o : o + p.numel()].view(p.shape).to(p.device)
            o += p.numel()
        return ParamMask(self.space, masks, "element", {**meta, "k": k})

    # ------------------------------------------------------------------ files
    @staticmethod
    def _paths(path: str | Path) -> tuple[Path, Path]:
        path = Path(path)
        st = path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")
        return st, st.with_suffix(".json")

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (scores) and ``<path>.json`` (metadata, convergence).

        Returns the safetensors path. ``path`` may already end in ``.safetensors``.
        """
        from safetensors.torch import save

        from landscape.util.files import write_bytes, write_json

        st, js = self._paths(path)
        tensors = {n: s.detach().cpu().contiguous() for n, s in self.scores.items()}
        write_bytes(st, save(tensors, metadata={"format": FORMAT, "estimator": self.estimator,
                                                "model_fingerprint": str(self.meta.get("model_fingerprint"))}))
        write_json(js, {"format": FORMAT, **self.to_dict()})
        return st

    def to_dict(self) -> dict[str, Any]:
        """Metadata, tensor names, per-tensor and per-layer means and the convergence curves (the
        scores themselves are tensors: :meth:`save` writes them)."""
        return {"meta": self.meta, "names": self.names, "per_tensor_mean": self.per_tensor("mean"),
                "per_layer_mean": self.per_layer("mean"),
                "convergence": None if self.convergence is None else self.convergence.to_dict()}

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> FisherDiagonal:
        """Read scores written by :meth:`save`; with ``model``, refuse scores of another model."""
        from safetensors.torch import load_file

        st, js = cls._paths(path)
        if not st.is_file():
            raise FileNotFoundError(f"{st}: no Fisher scores there (expected a file written by FisherDiagonal.save).")
        doc = json.loads(js.read_text()) if js.is_file() else {"meta": {}, "names": None, "convergence": None}
        raw = load_file(str(st))
        names = doc.get("names") or list(raw)
        scores = {n: raw[n] for n in names}
        meta = doc.get("meta", {})
        space = None
        if model is not None:
            have = util.model_fingerprint(model)
            want = meta.get("model_fingerprint")
            if want is not None and want != have:
                raise ValueError(
                    f"{st} holds Fisher scores for a different model (fingerprint {want}, "
                    f"{meta.get('model', {}).get('class', '?')}); this {type(model).__name__} has {have}. "
                    "Recompute the scores for this model."
                )
            space = ParamSpace.from_names(model, names)
            _check_shapes(scores, space.params, st)
            scores = {n: s.to(space.params[n].device) for n, s in scores.items()}
        conv = doc.get("convergence")
        convergence = None if conv is None else Convergence.from_dict(conv)
        return cls(scores=scores, meta=meta, convergence=convergence, space=space)


def _check_shapes(scores: Mapping[str, Tensor], params: Mapping[str, Tensor], where: Path) -> None:
    for n, s in scores.items():
        if n not in params:
            raise ValueError(f"{where}: scores name {n!r}, which is not a trainable parameter of the model.")
        if tuple(s.shape) != tuple(params[n].shape):
            raise ValueError(f"{where}: scores[{n!r}] has shape {tuple(s.shape)}, "
                             f"the parameter {tuple(params[n].shape)}.")
