"""From the raw per-seed, per-sequence numbers of each mask to the result: per-mask statistics,
primary endpoints with intervals, secondary metrics, data vs seed variance, and the verdict."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from analyses.fisher_sharpness import statistics as st
from analyses.fisher_sharpness.verdict import Value, compare_values, endpoint_verdict, value_to_dict

LABELS = {"top": "the top-Fisher mask", "stratified": "the stratified random mask", "random": "the random mask",
          "bottom": "the bottom-Fisher mask"}


def _curv(entry: dict[str, Any]) -> np.ndarray:
    return np.asarray(entry["curv"], np.float64)


def _per_norm2(entry: dict[str, Any]) -> np.ndarray:
    return _curv(entry) / np.asarray(entry["norms"], np.float64)[:, None] ** 2


def mask_stats(entry: dict[str, Any], counts: np.ndarray, cfg: Any) -> dict[str, Any]:
    """Curvature (and per ‖d‖²) with intervals and variance split, loss rise, basin width."""
    kw = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    out = {"norm": float(np.mean(entry["norms"])), "norms": entry["norms"],
           "curvature": st.mean_interval(_curv(entry), counts, **kw),
           "curvature_per_norm2": st.mean_interval(_per_norm2(entry), counts, **kw),
           "variance": st.variance_split(_curv(entry), counts, n_blocks=cfg.n_blocks, **kw)}
    if entry.get("rise"):
        out["loss_rise"] = st.mean_interval(np.asarray(entry["rise"]), counts, **kw) | {"step": cfg.loss_rise_step}
        w = entry["widths"]
        out["basin_width"] = st.censored_median([x["lower_bound"] for x in w], [x["censored"] for x in w]) | {
            "delta": cfg.basin_delta, "max_alpha": cfg.basin_max_alpha}
    return out


def _secondaries(s: dict[str, Any], entry: dict[str, Any]) -> dict[str, Value]:
    vals = {}
    if "loss_rise" in s:
        vals["loss_rise"] = Value(s["loss_rise"]["estimate"], interval=tuple(s["loss_rise"]["interval"]))
        b = s["basin_width"]
        vals["basin_width"] = Value(b["median"] if b["median"] is not None else b["lower_bound"],
                                    censored=b["median"] is None)
    if "top_eigenvalue" in entry:
        vals["top_eigenvalue"] = Value(entry["top_eigenvalue"]["value"])
    if "trace" in entry:
        vals["trace"] = Value(entry["trace"]["value"], stderr=entry["trace"]["stderr"])
    return vals


def _summarize_p(cfg: Any, raw_p: dict[str, Any], counts: np.ndarray, out: Path) -> tuple[dict[str, Any], list[str]]:
    """Arm P: per-half statistics and surfaces, the top-vs-bottom endpoints and their verdict lines."""
    from analyses.fisher_sharpness.reference import surface_summary
    from landscape.scans.results import Surface

    kw = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    arm_p: dict[str, Any] = {"halves": {}, "endpoints": {}}
    for half, entry in raw_p.items():
        row: dict[str, Any] = dict(entry["summary"])
        if "skipped" in entry:
            row["skipped"] = entry["skipped"]
        else:
            row |= mask_stats(entry, counts, cfg)
            surf = Surface.load(out / entry["surface"])
            row["surface"] = {"path": entry["surface"], **surface_summary(surf.xs, surf.ys, surf.values["loss"])}
            row["curves"] = f"arrays/P-{half}_curves.npz"
        arm_p["halves"][half] = row
    if not all("skipped" not in raw_p[h] for h in ("top", "bottom")):
        return arm_p, ["Arm P: a half moves nothing (only 1-D tensors), so the paper's comparison cannot be made on "
                       "this model."]
    raw = st.contrast(_curv(raw_p["top"]), _curv(raw_p["bottom"]), counts, **kw)
    norm = st.contrast(_per_norm2(raw_p["top"]), _per_norm2(raw_p["bottom"]), counts, **kw)
    halves = dict(top="the top half", control="the bottom half")
    arm_p["endpoints"] = {
        "top_vs_bottom": raw | endpoint_verdict(raw, quantity="directional curvature dᵀHd", **halves),
        "top_vs_bottom_per_norm2": norm | endpoint_verdict(norm, quantity="dᵀHd/‖d‖²", **halves)}
    return arm_p, _arm_p_lines(arm_p)


def _summarize_e_group(cfg: Any, fraction: float, raw_e: dict[str, Any], counts: np.ndarray,
                       arm_e: dict[str, Any]) -> list[str]:
    """Arm E, one mask size: per-mask statistics, the endpoints against each control, secondary metrics."""
    kw = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    keys = {w: f"E-{fraction:g}-{w}" for w in ("top", "stratified", "random", "bottom")}
    for which, key in keys.items():
        entry = raw_e[key]
        arm_e["masks"][key] = {"which": which, "fraction": fraction, "count": entry["count"],
                               "n_tensors": entry["n_tensors"], **mask_stats(entry, counts,
                                                                             cfg), "trace": entry["trace"],
                               "top_eigenvalue": entry["top_eigenvalue"], "curves": f"arrays/{key}_curves.npz"}
    group = f"{fraction:g}"
    arm_e["endpoints"][group], arm_e["secondary"][group] = {}, {}
    top_vals = _secondaries(arm_e["masks"][keys["top"]], raw_e[keys["top"]])
    for control in ("stratified", "random", "bottom"):
        c = st.contrast(_curv(raw_e[keys["top"]]), _curv(raw_e[keys[control]]), counts, **kw)
        c |= endpoint_verdict(c, quantity="directional curvature dᵀHd at equal ‖d‖", top="the top-Fisher mask",
                              control=LABELS[control])
        arm_e["endpoints"][group][control] = c
        ctrl_vals = _secondaries(arm_e["masks"][keys[control]], raw_e[keys[control]])
        arm_e["secondary"][group][control] = {
            m: compare_values(m, top_vals[m], ctrl_vals[m]) | {"top": value_to_dict(top_vals[m]),
                                                               "control": value_to_dict(ctrl_vals[m])}
            for m in top_vals if m in ctrl_vals}
    return _arm_e_lines(fraction, arm_e["endpoints"][group], arm_e["masks"][keys["top"]]["count"])


def summarize(cfg: Any, raw_p: dict[str, Any], raw_e: dict[str, Any], pool: dict[str, Any], alphas: np.ndarray, *,
              tensor_check: dict[str, Any], reference_dir: Path | None, out: Path,
              reference_note: str | None = None) -> dict[str, Any]:
    """Raw numbers -> both arms' statistics, endpoints and verdict lines, the variance split, the reference."""
    from analyses.fisher_sharpness.reference import reference_summaries

    counts = np.asarray(pool["counts"], np.float64)
    sums0 = np.asarray(pool["sums0"], np.float64)
    arm_p, verdict_p = _summarize_p(cfg, raw_p, counts, out)
    arm_e: dict[str, Any] = {"masks": {}, "endpoints": {}, "secondary": {}, "tensor_masks": tensor_check}
    verdict_e: list[str] = []
    for fraction in cfg.fractions:
        verdict_e += _summarize_e_group(cfg, fraction, raw_e, counts, arm_e)
    variance = _variance_summary(arm_p, arm_e)
    reference = (reference_summaries(reference_dir) if reference_dir is not None
                 else {"missing": reference_note or "not requested"})
    return {"arm_p": arm_p, "arm_e": arm_e, "verdict": {"arm_p": verdict_p, "arm_e": verdict_e}, "variance": variance,
            "reference": reference, "pool": {"slices_of_8": _slice_losses(sums0, counts, 8)}}


def _slice_losses(sums0: np.ndarray, counts: np.ndarray, size: int) -> dict[str, Any]:
    n = sums0.size // size
    losses = [float(sums0[i * size:(i + 1) * size].sum() / counts[i * size:(i + 1) * size].sum()) for i in range(n)]
    return {"size": size, "n": n, "min": min(losses) if losses else math.nan,
            "max": max(losses) if losses else math.nan,
            "losses": losses}


def _arm_p_lines(arm_p: dict[str, Any]) -> list[str]:
    h = arm_p["halves"]
    raw, norm = arm_p["endpoints"]["top_vs_bottom"], arm_p["endpoints"]["top_vs_bottom_per_norm2"]
    pic = {"flatter": "yes", "sharper": "no, the opposite (top half "
                                        "sharper)", "unclear": "not resolved"}[raw["outcome"]]
    keeps = {"flatter": "yes", "sharper": "no, it reverses (top half sharper per unit ‖d‖²)",
             "unclear": "no, it vanishes (no clear difference per unit ‖d‖²)"}[norm["outcome"]]
    moved = (f"the top half ({h['top']['n_tensors']} tensors) moves {h['top']['n_moving_tensors']} of them, "
             f"{h['top']['n_params_moved']:,} parameters with ‖d‖ = {h['top']['norm']:.3g}; the bottom half moves "
             f"{h['bottom']['n_moving_tensors']} tensors, {h['bottom']['n_params_moved']:,} parameters with ‖d‖ = "
             f"{h['bottom']['norm']:.3g}")
    return [f"**Arm P (the paper's protocol)**: does the top-Fisher half look flatter? {pic}. {raw['sentence']} Here "
            f"{moved}.",
            f"**Arm P per unit ‖d‖²**: does it survive normalizing by ‖d‖²? {keeps}. {norm['sentence']}"]


def _arm_e_lines(fraction: float, endpoints: dict[str, Any], count: int) -> list[str]:
    lines = []
    for control, c in endpoints.items():
        answer = {"sharper": "yes", "flatter": "no, the opposite", "unclear": "no clear difference"}[c["outcome"]]
        lines.append(f"**Arm E ({fraction:g} of the matrix parameters, {count:,} elements, equal ‖d‖), top vs "
                     f"{control}**: "
                     f"is the top-Fisher mask sharper? {answer}. {c['sentence']}")
    return lines


def _variance_summary(arm_p: dict[str, Any], arm_e: dict[str, Any]) -> dict[str, Any]:
    """Per mask: data SE / seed SE and block SD / seed SD of the curvature; per endpoint: SD of the
    log-ratio from resampling sequences vs from resampling seeds."""
    rows = {}
    for name, s in [*((f"P-{k}", v) for k, v in arm_p["halves"].items()), *arm_e["masks"].items()]:
        v = s.get("variance")
        if v is None:
            continue
        rows[name] = {"data_se": v["data_se"], "seed_se": v["seed_se"], "block_sd": v["block_sd"],
                      "seed_sd": v["seed_sd"],
                      "block_size": v["block_size"],
                      "se_ratio": v["data_se"] / v["seed_se"] if v["seed_se"] else math.nan,
                      "sd_ratio": v["block_sd"] / v["seed_sd"] if v["seed_sd"] else math.nan}
    endpoints = {}
    for name, e in arm_p.get("endpoints", {}).items():
        endpoints[f"P {name}"] = {"sd_data": e["sd_data"], "sd_seeds": e["sd_seeds"], "kind": e["kind"]}
    for group, eps in arm_e["endpoints"].items():
        for control, e in eps.items():
            endpoints[f"E {group} top vs "
                      f"{control}"] = {"sd_data": e["sd_data"], "sd_seeds": e["sd_seeds"], "kind": e["kind"]}
    se = [r["se_ratio"] for r in rows.values() if math.isfinite(r["se_ratio"])]
    sd = [r["sd_ratio"] for r in rows.values() if math.isfinite(r["sd_ratio"])]
    ep = [e["sd_data"] / e["sd_seeds"] for e in endpoints.values() if e["sd_seeds"] > 0 and e["kind"] == "log_ratio"]
    text = ""
    if se and sd:
        size = next(iter(rows.values()))["block_size"]
        text = ("Per mask, the standard error of the curvature from resampling sequences is "
                f"{min(se):.2g}–{max(se):.2g}× the one "
                f"from resampling direction seeds (median {np.median(se):.2g}×); one {size}-sequence block differs "
                "from the next "
                f"{min(sd):.2g}–{max(sd):.2g}× as much as one seed's direction from the next (median "
                f"{np.median(sd):.2g}×).")
        if ep:
            text += (" For the endpoints (log-ratios of two masks measured on the same sequences), resampling "
                     "sequences gives "
                     f"{min(ep):.2g}–{max(ep):.2g}× the SD of resampling seeds.")
    return {"masks": rows, "endpoints": endpoints, "summary": text}
