"""Per-mask numbers of the first cell (reported, never voted) and the mask-size sweep's rows.

Per mask of the first cell: dᵀHd per token with its interval over documents and seeds, ‖d‖, and
for the curve seeds the loss rise ½(L(+a) + L(−a)) − L(0) and a censoring-aware basin width; arm
E's main-fraction masks add the trace, the restricted top eigenvalue and the FD check; arm P's
halves add their 2D surface's summary numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from analyses.fisher_sharpness import hierarchy as hi
from analyses.fisher_sharpness.cells import CONSTRUCTIONS, mask_key
from analyses.fisher_sharpness.statistics import censored_median


def _interval(num: Any, counts: np.ndarray, groups: np.ndarray, cfg: Any) -> dict[str, Any]:
    """The mean q of one cell's ``[S, N]`` numerators with its interval over documents and seeds."""
    a = np.asarray(num, np.float64)[None, None, None]
    reps = hi.replicates({"q": a}, counts[None, None], groups, n_boot=cfg.n_boot, seed=cfg.seed)["q"]
    return {"estimate": hi.estimate(a, counts[None, None]), "interval": hi.percentile_interval(reps),
            "sd": float(np.std(reps, ddof=1))}


def _mask_row(cfg: Any, entry: dict[str, Any], counts: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {"norm": float(np.mean(entry["norms"])), "norms": entry["norms"],
                           "curvature": _interval(entry["curv"], counts, groups, cfg)}
    if entry.get("rise"):
        row["loss_rise"] = _interval(entry["rise"], counts, groups, cfg) | {"step": cfg.loss_rise_step}
        w = entry["widths"]
        row["basin_width"] = censored_median([x["lower_bound"] for x in w], [x["censored"] for x in w]) | {
            "delta": cfg.basin_delta, "max_alpha": cfg.basin_max_alpha}
    return row


def first_cell_masks(cfg: Any, cell: dict[str, Any], arm: str, rows: dict[str, Any], extras: dict[str, Any],
                     out: Path, groups: np.ndarray) -> dict[str, Any]:
    """Arm ``"P"`` (update ``rows``, the halves) or ``"E"`` (main-fraction masks): the first cell's numbers."""
    from analyses.fisher_sharpness.reference import surface_summary
    from landscape.scans.results import Surface

    counts = np.asarray(cell["counts"], np.float64)
    rows = {k: dict(v) for k, v in rows.items()}
    for key, entry in cell[arm].items():
        if "skipped" in entry:
            continue
        if arm == "E" and not key.startswith(f"E-{cfg.fraction:g}-"):
            continue
        row = rows.setdefault(key, {})
        row |= _mask_row(cfg, entry, counts, groups)
        if arm == "P":
            surf_entry = extras["surfaces"].get(key)
            if surf_entry:
                surf = Surface.load(out / surf_entry["surface"])
                row["surface"] = {"path": surf_entry["surface"], **surface_summary(surf.xs, surf.ys,
                                                                                  surf.values["loss"])}
            row["curves"] = f"arrays/P-{key}_curves.npz"
            continue
        _, fraction, which, construction = key.split("-", 3)
        row |= {"which": which, "fraction": float(fraction), "construction": construction, "count": entry["count"],
                "n_tensors": entry["n_tensors"]}
        if key in extras["masks"]:
            row |= extras["masks"][key] | {"curves": f"arrays/{key}_curves.npz"}
    return rows


def sweep_rows(cfg: Any, cell: dict[str, Any], endpoint: Callable[[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Top vs stratified at every fraction and construction (hierarchical intervals)."""
    rows = []
    for fraction in cfg.fractions:
        for con in CONSTRUCTIONS:
            top = mask_key(fraction, "top", con)
            e = endpoint(top, mask_key(fraction, "stratified", con))
            rows.append({"fraction": fraction, "construction": con, "count": cell["E"][top]["count"],
                         **{k: e[k] for k in ("estimate", "interval", "ratio", "ratio_interval", "top", "control",
                                              "scale", "p")}})
    return rows
