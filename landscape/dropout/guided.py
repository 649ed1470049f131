"""Guided dropout rates as an object: made from a Fisher diagonal, saved and loaded as JSON.

``guided_rates(model, F)`` does the paper's recipe in one call: find the sites, score each by the
mean of the tensor means of the Fisher of the tensors it guards, and map the scores to rates by
rank, p = p_max − (p_max − p_min)·r/(n−1) (r = 0 for the lowest score).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape.dropout import rates as _rates
from landscape.dropout.sites import SiteMap, find_sites

__all__ = ["FORMAT", "DropoutRates", "fisher_fingerprint", "guided_rates"]

FORMAT = "landscape.dropout-rates/1"


def fisher_fingerprint(scores: Mapping[str, Tensor]) -> str:
    """A short SHA-256 of the Fisher scores' names, shapes and values (bit-exact)."""
    h = hashlib.sha256()
    for name in sorted(scores):
        t = scores[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@dataclass
class DropoutRates:
    """A rate per site (``rates``: site id → p), optional per-unit rates, and their provenance.

    Attributes:
        rates: site id → rate in [0, 1).
        scores: site id → site score (empty for hand-made rates).
        unit_rates: site id → ``[width]`` rates for unit-granularity dropout (hidden-state sites).
        meta: ``model_class``, ``model_type``, ``model_fingerprint`` (of the model the sites were
            found on), ``fisher_fingerprint``, ``fisher_model_fingerprint``, ``method``, ``mapping``,
            ``p_max``, ``p_min``, ``sites`` (each site's role, module, guarded tensors).
    """

    rates: dict[str, float]
    scores: dict[str, float] = field(default_factory=dict)
    unit_rates: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _rates.check_rates(self.rates)
        for sid, u in self.unit_rates.items():
            if u.numel() and (float(u.min()) < 0.0 or float(u.max()) >= 1.0):
                raise ValueError(f"unit rates for {sid!r} lie outside [0, 1) "
                                 f"(range {float(u.min()):g}..{float(u.max()):g}).")

    def with_rates(self, rates: Mapping[str, float], **meta: Any) -> DropoutRates:
        """The same provenance with other site rates (controls: reversed, permuted, uniform)."""
        return DropoutRates(dict(rates), dict(self.scores), {}, {**self.meta, **meta})

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "rates": self.rates, "scores": self.scores,
                "unit_rates": {k: [round(float(x), 8) for x in v.tolist()] for k, v in self.unit_rates.items()},
                "meta": self.meta}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "rates") -> DropoutRates:
        if doc.get("format") != FORMAT or not isinstance(doc.get("rates"), dict):
            raise ValueError(f"{where} is not a rates file (expected format {FORMAT!r}, written by DropoutRates.save).")
        units = {k: torch.tensor(v, dtype=torch.float64) for k, v in (doc.get("unit_rates") or {}).items()}
        rates = {k: float(v) for k, v in doc["rates"].items()}
        return cls(rates, dict(doc.get("scores") or {}), units, dict(doc.get("meta") or {}))

    def save(self, path: str | Path) -> Path:
        """Write the rates as JSON (atomically)."""
        from landscape.util.files import write_json

        path = Path(path)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> DropoutRates:
        """Read a rates file; with ``model``, refuse rates whose sites it does not have."""
        from landscape.util.files import read_json

        doc = read_json(path, what="rates file", hint="write one with DropoutRates.save or `landscape guided-dropout`")
        out = cls.from_dict(doc, str(path))
        if model is not None:
            out.check_model(model, str(path))
        return out

    def check_model(self, model: nn.Module, where: str = "these rates") -> SiteMap:
        """The model's sites, after checking that every rated site exists there."""
        sites = find_sites(model)
        want = self.meta.get("model_type")
        if want and sites.model_type and want != sites.model_type:
            raise ValueError(f"{where} were made for a {self.meta.get('model_class', want)} ({want}); this model is a "
                             f"{sites.model_class} ({sites.model_type}).")
        missing = [k for k in self.rates if k not in sites.ids]
        if missing:
            raise ValueError(f"{where} rate sites this {sites.model_class} lacks ({missing[:3]}); it has {sites.ids}.")
        return sites


def guided_rates(model: nn.Module, fisher: Any, method: str = "mean_of_means", mapping: str = "rank_linear",
                 p_max: float = 0.1, p_min: float = 0.0, units: bool = False) -> DropoutRates:
    """The paper's guided-dropout rates for ``model`` from a Fisher diagonal.

    Args:
        model: the pretrained model (any head on the backbone the Fisher was computed on).
        fisher: a :class:`landscape.fisher.FisherDiagonal` (or a ``dict[name, Tensor]`` of scores),
            ideally of the MLM pretraining loss on held-out text, as in the paper.
        method: site score, one of :data:`landscape.dropout.rates.SCORE_METHODS`.
        mapping: ``"rank_linear"`` (the paper's) or ``"log_linear"``.
        p_max, p_min: the rate range; the paper uses 0.1 and 0.
        units: also compute per-unit rates (unit granularity, beyond the paper).

    Raises:
        ValueError: scores from another model, no dropout site, rates outside [0, 1).
    """
    scores_t = fisher.scores if hasattr(fisher, "scores") else dict(fisher)
    meta_f = getattr(fisher, "meta", {}) or {}
    sites = find_sites(model)
    scores = _rates.site_scores(sites, scores_t, method, model=model)
    rates = _rates.map_scores(scores, mapping, p_max, p_min)
    unit = _rates.unit_rates(_rates.unit_scores(model, sites, scores_t), rates) if units else {}
    from landscape.util import model_fingerprint

    meta = {"model_class": sites.model_class, "model_type": sites.model_type,
            "model_fingerprint": model_fingerprint(model), "fisher_fingerprint": fisher_fingerprint(scores_t),
            "fisher_model_fingerprint": meta_f.get("model_fingerprint"),
            "fisher_model_class": meta_f.get("model_class"), "fisher_estimator": meta_f.get("estimator"),
            "fisher_examples": meta_f.get("n_examples"), "method": method, "mapping": mapping, "p_max": p_max,
            "p_min": p_min, "sites": {s.id: s.to_dict() for s in sites}, "head_dropouts": sites.head,
            "unmatched_dropouts": [list(u) for u in sites.unmatched]}
    return DropoutRates(rates, scores, unit, meta)
