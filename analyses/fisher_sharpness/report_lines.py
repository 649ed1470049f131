"""The answer lines (the report's opening, quoted by the README) and the secondary comparisons.

Arm P gets one answer, with its per-‖d‖² ratio as a derived number; arm E's answer is the
primary endpoint, top vs stratified, under each direction construction, and one line saying
whether the constructions agree and which level of the hierarchy dominates the variance.
"""

from __future__ import annotations

from typing import Any

from analyses.fisher_sharpness.hierarchy import LEVEL_NAMES
from analyses.fisher_sharpness.verdict import Value, compare_values, p_text, value_to_dict

CONSTRUCTION_WORDS = {"filter": "filter-normalized then masked", "isotropic": "isotropic in the mask"}


def _arm_p_line(arm_p: dict[str, Any]) -> list[str]:
    if not arm_p.get("endpoints"):
        return ["**Arm P (the paper's protocol)**: a half moves nothing (only 1-D tensors), so the paper's comparison "
                "cannot be made on this model."]
    h, e, d = arm_p["halves"], arm_p["endpoints"]["top_vs_bottom"], arm_p["per_norm2"]
    pic = {"flatter": "yes", "sharper": "no, the opposite (top half sharper)", "unclear": "not resolved"}[e["outcome"]]
    moved = (f"the top half ({h['top']['n_tensors']} tensors) moves {h['top']['n_moving_tensors']} of them, "
             f"{h['top']['n_params_moved']:,} parameters with ‖d‖ = {h['top']['norm']:.3g}; the bottom half moves "
             f"{h['bottom']['n_moving_tensors']} tensors, {h['bottom']['n_params_moved']:,} parameters with ‖d‖ = "
             f"{h['bottom']['norm']:.3g}")
    if d["top"] > 0 and d["bottom"] > 0:
        per = (f"per unit ‖d‖² the ratio is ×{d['ratio']:.3g}" + (f" [×{d['ratio_interval'][0]:.3g} to "
                                                                   f"×{d['ratio_interval'][1]:.3g}]"
                                                                   if d["ratio_interval"] else "")
               + f", the raw ratio times (‖d‖_bottom/‖d‖_top)² = {d['factor']:.3g}, which the filter "
                 "normalization fixes")
    else:
        per = (f"per unit ‖d‖², dᵀHd/‖d‖² is {d['top']:.3g} (top) against {d['bottom']:.3g} (bottom), the norms "
               "fixed by the filter normalization (no ratio: a side is not positive)")
    return [f"**Arm P (the paper's protocol)**: does the top-Fisher half look flatter? {pic}. {e['sentence']} Here "
            f"{moved}. Derived, not a separate answer: {per}."]


def _arm_e_lines(cfg: Any, res: dict[str, Any]) -> list[str]:
    primary, masks = res["arm_e"]["primary"], res["arm_e"]["masks"]
    lines = []
    for con, e in primary.items():
        count = masks.get(f"E-{cfg.fraction:g}-top-{con}", {}).get("count", 0)
        answer = {"sharper": "yes", "flatter": "no, the opposite", "unclear": "no clear difference"}[e["outcome"]]
        lines.append(f"**Arm E, primary: top vs stratified ({cfg.fraction:g} of the matrix parameters, {count:,} "
                     f"elements, equal ‖d‖, {CONSTRUCTION_WORDS[con]})**: is the top-Fisher mask sharper? {answer}. "
                     f"{e['sentence']} Holm-adjusted p {p_text(e['p_holm'], e['n_boot'])} (a family of two "
                     "constructions).")
    outcomes = {con: e["outcome"] for con, e in primary.items()}
    agree = len(set(outcomes.values())) == 1
    words = ", ".join(f"{CONSTRUCTION_WORDS[c]}: {o}" for c, o in outcomes.items())
    comp = next(iter(primary.values()))["components"]["levels"]
    top_level = max(comp, key=lambda lv: comp[lv]["share"] if comp[lv]["share"] == comp[lv]["share"] else -1)
    p = res["pool"]["design"]
    lines.append(f"**Arm E, the two constructions**: {'they agree' if agree else 'they disagree'} ({words}). The "
                 f"intervals resample {p['models']} model(s), {p['fisher_samples']} Fisher samples, {p['mask_draws']} "
                 f"MLM mask draws, {p['seeds']} direction seeds and {res['pool']['n_documents']} evaluation documents; "
                 f"{LEVEL_NAMES[top_level]} carry the largest share of the variance "
                 f"({comp[top_level]['share']:.0%}, {CONSTRUCTION_WORDS[next(iter(primary))]}).")
    return lines


def verdict_lines(cfg: Any, res: dict[str, Any]) -> dict[str, list[str]]:
    """``{"arm_p": [...], "arm_e": [...]}``: the answers, in words, each with its interval."""
    return {"arm_p": _arm_p_line(res["arm_p"]), "arm_e": _arm_e_lines(cfg, res)}


def _values(m: dict[str, Any]) -> dict[str, Value]:
    vals = {}
    if "loss_rise" in m:
        vals["loss_rise"] = Value(m["loss_rise"]["estimate"], interval=tuple(m["loss_rise"]["interval"]))
        b = m["basin_width"]
        vals["basin_width"] = Value(b["median"] if b["median"] is not None else b["lower_bound"],
                                    censored=b["median"] is None)
    if "top_eigenvalue" in m:
        vals["top_eigenvalue"] = Value(m["top_eigenvalue"]["value"])
    if "trace" in m:
        tr = m["trace"]
        vals["trace"] = Value(tr["value"], stderr=tr["stderr"], dof=len(tr.get("probes", [])) - 1 or None)
    return vals


def secondary_comparisons(cfg: Any, masks: dict[str, Any]) -> dict[str, Any]:
    """Top against each control on the first cell's secondary metrics (filter construction)."""
    key = lambda w: f"E-{cfg.fraction:g}-{w}-filter"  # noqa: E731
    if key("top") not in masks:
        return {}
    top = _values(masks[key("top")])
    out = {}
    for control in ("stratified", "random", "bottom"):
        ctrl = _values(masks.get(key(control), {}))
        out[control] = {m: compare_values(m, top[m], ctrl[m]) | {"top": value_to_dict(top[m]),
                                                                 "control": value_to_dict(ctrl[m])}
                        for m in top if m in ctrl}
    return out
