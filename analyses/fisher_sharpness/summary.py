"""From the cells' raw numbers to the result: hierarchical endpoints, the sweep, per-model results,
variance components, the Fisher-loss comparison, the first cell's secondaries and the verdict.

**Scales are fixed by the design** (:data:`SCALES`), never by the replicates: a log-ratio only
where both sides are positive by construction, a difference otherwise. dᵀHd of the Hessian is not
positive by construction (the Hessian is indefinite away from an exact minimum; a pretrained
26M-parameter BERT gave a negative dᵀHd for the paper's bottom half), so every curvature endpoint
is a difference of per-token dᵀHd; the ratio top/control is shown beside it, descriptive, with
its interval only when the control is positive in every replicate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from analyses.fisher_sharpness import hierarchy as hi
from analyses.fisher_sharpness.cells import CONSTRUCTIONS, mask_key
from analyses.fisher_sharpness.secondary import first_cell_masks, sweep_rows
from analyses.fisher_sharpness.verdict import endpoint_verdict

#: endpoint -> scale, decided before the data (see the module docstring)
SCALES: dict[str, hi.Scale] = {"arm_p": "difference", "primary": "difference", "descriptive": "difference",
                               "sweep": "difference"}
LABELS = {"top": "the top-Fisher mask", "stratified": "the stratified random mask", "random": "the random mask",
          "bottom": "the bottom-Fisher mask"}
CONSTRUCTION_WORDS = {"filter": "filter-normalized then masked", "isotropic": "isotropic in the mask"}


class Cells:
    """The raw cells as ``[M, K, R, S, N]`` arrays per mask, ``counts [M, R, N]`` and the documents."""

    def __init__(self, raw: dict[str, Any], cfg: Any, groups: list[np.ndarray]) -> None:
        self.raw, self.cfg, self.groups = raw, cfg, np.asarray(groups[0])
        self.M, self.K, self.R = len(groups), cfg.fisher_samples, cfg.mask_draws

    def cell(self, m: int, k: int, r: int) -> dict[str, Any]:
        return self.raw[f"cell-m{m}-k{k}-r{r}"]

    def draws(self, arm: str, key: str) -> int:
        """Mask draws that measured ``key`` (the sweep's other fractions: the first only)."""
        return sum(1 for r in range(self.R) if key in self.cell(0, 0, r)[arm])

    def array(self, arm: str, key: str) -> np.ndarray:
        """``[M, K, R', S, N]`` per-sequence curvature numerators of one mask, R' its draws."""
        R = self.draws(arm, key)
        return np.asarray([[[self.cell(m, k, r)[arm][key]["curv"] for r in range(R)] for k in range(self.K)]
                           for m in range(self.M)], np.float64)

    def counts(self, draws: int | None = None) -> np.ndarray:
        """``[M, R', N]`` masked tokens per sequence under the first ``draws`` mask draws."""
        R = self.R if draws is None else draws
        return np.asarray([[self.cell(m, 0, r)["counts"] for r in range(R)] for m in range(self.M)], np.float64)

    def norms(self, arm: str, key: str) -> np.ndarray:
        return np.asarray([self.cell(m, k, r)[arm][key]["norms"] for m in range(self.M) for k in range(self.K)
                           for r in range(self.R)], np.float64)


def _endpoint(c: Cells, arm: str, top: str, control: str, scale: hi.Scale, models: slice = slice(None)) -> dict:
    t, k = c.array(arm, top)[models], c.array(arm, control)[models]
    return hi.endpoint(t, k, c.counts(t.shape[2])[models], c.groups, scale=scale, n_boot=c.cfg.n_boot,
                       seed=c.cfg.seed)


def _primary(c: Cells) -> dict[str, Any]:
    """Top vs stratified at the main fraction under each construction, Holm-corrected as one family."""
    f = c.cfg.fraction
    eps = {con: _endpoint(c, "E", mask_key(f, "top", con), mask_key(f, "stratified", con), SCALES["primary"])
           for con in CONSTRUCTIONS}
    adjusted = hi.holm({con: e["p"] for con, e in eps.items()})
    for con, e in eps.items():
        e |= {"p_holm": adjusted[con]["p_holm"], "rejected": adjusted[con]["rejected"]}
        e |= endpoint_verdict(e, quantity=f"dᵀHd per token at equal ‖d‖ ({CONSTRUCTION_WORDS[con]} directions)",
                              top="the top-Fisher mask", control="the stratified random mask", rejected=e["rejected"])
    return eps


def _descriptive(c: Cells) -> dict[str, Any]:
    """Top vs random and top vs bottom (filter construction): descriptive rows, not answers."""
    f = c.cfg.fraction
    out = {}
    for control in ("random", "bottom"):
        e = _endpoint(c, "E", mask_key(f, "top", "filter"), mask_key(f, control, "filter"), SCALES["descriptive"])
        out[control] = e | endpoint_verdict(e, quantity="dᵀHd per token at equal ‖d‖", top="the top-Fisher mask",
                                            control=LABELS[control])
    return out


def _arm_p(c: Cells) -> dict[str, Any]:
    """Top vs bottom half, and the per-‖d‖² comparison derived from it (the norms are fixed)."""
    first = c.cell(0, 0, 0)["P"]
    halves = {h: dict(v["summary"]) | ({"skipped": v["skipped"]} if "skipped" in v else {}) for h, v in first.items()}
    if any("skipped" in first.get(h, {"skipped": 1}) for h in ("top", "bottom")):
        return {"halves": halves, "endpoints": {}}
    e = _endpoint(c, "P", "top", "bottom", SCALES["arm_p"])
    e |= endpoint_verdict(e, quantity="dᵀHd per token", top="the top half", control="the bottom half")
    norm2 = {h: float(np.mean(c.norms("P", h) ** 2)) for h in ("top", "bottom")}
    for h in ("top", "bottom"):
        halves[h]["norm"] = math.sqrt(norm2[h])
    scale = norm2["bottom"] / norm2["top"]
    derived = {"ratio": e["ratio"] * scale, "factor": scale,
               "ratio_interval": None if e["ratio_interval"] is None else [x * scale for x in e["ratio_interval"]],
               "top": e["top"] / norm2["top"], "bottom": e["control"] / norm2["bottom"]}
    return {"halves": halves, "endpoints": {"top_vs_bottom": e}, "per_norm2": derived}


def _per_model(c: Cells) -> list[dict[str, Any]]:
    """The primary endpoints and arm P's on each model alone (levels below the model resampled)."""
    rows = []
    f = c.cfg.fraction
    for m in range(c.M):
        one = slice(m, m + 1)
        row: dict[str, Any] = {"model": m}
        for con in CONSTRUCTIONS:
            e = _endpoint(c, "E", mask_key(f, "top", con), mask_key(f, "stratified", con), SCALES["primary"], one)
            row[con] = {k: e[k] for k in ("estimate", "interval", "ratio", "ratio_interval", "top", "control")}
        if "skipped" not in c.cell(m, 0, 0)["P"].get("top", {"skipped": 1}):
            e = _endpoint(c, "P", "top", "bottom", SCALES["arm_p"], one)
            row["arm_p"] = {k: e[k] for k in ("estimate", "interval", "ratio")}
        rows.append(row)
    return rows


def _fisher_loss(c: Cells, other: dict[str, Any]) -> dict[str, Any]:
    """Top vs stratified on the first cell under this run's Fisher and the other loss's; does the answer change?"""
    f, cell = c.cfg.fraction, c.cell(0, 0, 0)
    counts = np.asarray(cell["counts"], np.float64)[None, None, :]
    rows, changes = {}, False
    for con in CONSTRUCTIONS:
        t, s = mask_key(f, "top", con), mask_key(f, "stratified", con)
        both = {}
        for name, src in ((other["loss"], cell["E"]), (other["other"], other["E"])):
            e = hi.endpoint(np.asarray(src[t]["curv"])[None, None, None], np.asarray(src[s]["curv"])[None, None, None],
                            counts, c.groups, scale=SCALES["primary"], n_boot=c.cfg.n_boot, seed=c.cfg.seed)
            both[name] = {"estimate": e["estimate"], "interval": e["interval"], "ratio": e["ratio"],
                          "outcome": endpoint_verdict(e, quantity="", top="", control="")["outcome"]}
        changes |= both[other["loss"]]["outcome"] != both[other["other"]]["outcome"]
        rows[con] = both
    return {"loss": other["loss"], "other": other["other"], "jaccard": other["jaccard"], "fraction": f,
            "by_construction": rows, "answer_changes": changes}


def summarize(cfg: Any, raw: dict[str, Any], extras: dict[str, Any], other: dict[str, Any],
              groups: list[np.ndarray], *, reference_dir: Path | None, out: Path,
              reference_note: str | None = None) -> dict[str, Any]:
    """Raw cells -> both arms' endpoints, the sweep, per-model rows, variance components, the verdict."""
    from analyses.fisher_sharpness.reference import reference_summaries
    from analyses.fisher_sharpness.report_lines import secondary_comparisons, verdict_lines

    c = Cells(raw, cfg, groups)
    arm_p = _arm_p(c)
    arm_p["halves"] = first_cell_masks(cfg, c.cell(0, 0, 0), "P", arm_p["halves"], extras, out, c.groups)
    primary = _primary(c)
    arm_e: dict[str, Any] = {"primary": primary, "descriptive": _descriptive(c),
             "sweep": sweep_rows(cfg, c.cell(0, 0, 0), lambda t, s: _endpoint(c, "E", t, s, SCALES["sweep"])),
             "masks": first_cell_masks(cfg, c.cell(0, 0, 0), "E", {}, extras, out, c.groups)}
    arm_e["secondary"] = secondary_comparisons(cfg, arm_e["masks"])
    variance = {con: e["components"] for con, e in primary.items()}
    fisher_loss = _fisher_loss(c, other)
    cell0 = c.cell(0, 0, 0)
    counts0, sums0 = np.asarray(cell0["counts"], np.float64), np.asarray(cell0["sums0"], np.float64)
    pool = {"n_sequences": int(c.groups.size), "n_documents": int(np.unique(c.groups).size),
            "n_terms": int(counts0.sum()), "loss0": float(sums0.sum() / counts0.sum()), "n_cells": len(raw),
            "design": {"models": c.M, "fisher_samples": c.K, "mask_draws": c.R, "seeds": len(cfg.seeds)}}
    reference = (reference_summaries(reference_dir) if reference_dir is not None
                 else {"missing": reference_note or "not requested"})
    res = {"arm_p": arm_p, "arm_e": arm_e, "variance": variance, "models": _per_model(c), "fisher_loss": fisher_loss,
           "checks": {k: v["fd_check"] for k, v in extras["masks"].items()}, "reference": reference, "pool": pool}
    res["verdict"] = verdict_lines(cfg, res)
    return res
