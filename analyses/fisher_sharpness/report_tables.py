"""The tables of ``report.md``: variance components, results per model, arm E (constructions side by
side, the sweep, descriptive rows, the Fisher-loss comparison, masks), arm P and the FD check."""

from __future__ import annotations

import math
from typing import Any

from analyses.fisher_sharpness.hierarchy import LEVEL_NAMES
from analyses.fisher_sharpness.verdict import p_text

WORDS = {"filter": "filter-normalized then masked", "isotropic": "isotropic in the mask"}


def _ci(d: dict[str, Any], fmt: str = ".3g") -> str:
    lo, hi = d["interval"]
    return f"{d['estimate']:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _diff(d: dict[str, Any]) -> str:
    lo, hi = d["interval"]
    return f"{d['estimate']:+.3g} [{lo:+.3g}, {hi:+.3g}]"


def _ratio(d: dict[str, Any]) -> str:
    r, iv = d.get("ratio"), d.get("ratio_interval")
    if r is None or not math.isfinite(r) or not d.get("control", 0) > 0:
        return "- (control ≤ 0)"
    return f"×{r:.3g}" + (f" [{iv[0]:.3g}, {iv[1]:.3g}]" if iv else " (control not always > 0)")


def _width(b: dict[str, Any] | None) -> str:
    if not b:
        return "-"
    return f"{b['text']} ({b['n_censored']}/{b['n']} censored)" if b["n_censored"] else b["text"]


def endpoint_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Forest-plot rows on the endpoints' own scale (differences per token)."""
    eps = [(f"E primary, {c}", e) for c, e in res["arm_e"]["primary"].items()]
    eps += [(f"E top vs {c} (descriptive)", e) for c, e in res["arm_e"]["descriptive"].items()]
    eps += [("P top vs bottom half", e) for e in res["arm_p"].get("endpoints", {}).values()]
    return [{"label": label, "estimate": e["estimate"], "interval": tuple(e["interval"])} for label, e in eps]


def variance_section(res: dict[str, Any]) -> list[str]:
    """The variance-components table of the primary endpoint, one column pair per construction."""
    lines = ["## Variance components of the primary endpoint", "",
             "Each level's term V_L is the variance of the endpoint when that level alone is resampled; its share is "
             "V_L / Σ V (the multi-way bootstrap's variance is about Σ V; `analyses.fisher_sharpness.hierarchy`). A "
             "level with one unit is fixed: the intervals are conditional on it.", "",
             "| level | units | " + " | ".join(f"variance, {WORDS[c]} | share" for c in res["variance"]) + " |",
             "|---|---|" + "---|---|" * len(res["variance"])]
    first = next(iter(res["variance"].values()))["levels"]
    for lv, row in first.items():
        cells = []
        for comp in res["variance"].values():
            r = comp["levels"][lv]
            cells.append("fixed | -" if r["fixed"] else f"{r['variance']:.3g} | {r['share']:.0%}")
        lines.append(f"| {LEVEL_NAMES[lv]} | {row['units']} | " + " | ".join(cells) + " |")
    return lines + [""]


def models_section(res: dict[str, Any]) -> list[str]:
    """Each model's primary endpoints and arm P difference."""
    cons = list(res["arm_e"]["primary"])
    lines = ["## Results per model", "", "Top vs stratified (dᵀHd difference per token, 95% interval over the levels "
             "below the model) and arm P's top vs bottom half, on each model alone:", "",
             "| model | " + " | ".join(f"{WORDS[c]} | ratio" for c in cons) + " | arm P difference |",
             "|---|" + "---|---|" * len(cons) + "---|"]
    for row, name in zip(res["models"], res["meta"]["models"]):
        cells = [f"{_diff(row[c])} | {_ratio(row[c])}" for c in cons]
        p = row.get("arm_p")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_diff(p) if p else '-'} |")
    return lines + [""]


def _fisher_loss_lines(res: dict[str, Any]) -> list[str]:
    fl = res["fisher_loss"]
    lines = [f"**The Fisher's per-example loss.** This run ranks by the {fl['loss']} token loss per example (the "
             f"paper's is the mean); the top {fl['fraction']:g} masks under the {fl['loss']} and the {fl['other']} "
             f"loss overlap with Jaccard {fl['jaccard']:.3f}. Top vs stratified on the first cell under each:", "",
             f"| directions | {fl['loss']} Fisher | {fl['other']} Fisher |", "|---|---|---|"]
    for con, both in fl["by_construction"].items():
        lines.append(f"| {WORDS[con]} | {_diff(both[fl['loss']])} ({both[fl['loss']]['outcome']}) | "
                     f"{_diff(both[fl['other']])} ({both[fl['other']]['outcome']}) |")
    lines += ["", f"The answer {'changes' if fl['answer_changes'] else 'does not change'} with the Fisher's loss.", ""]
    return lines


def _mask_table(res: dict[str, Any]) -> list[str]:
    lines = ["Per mask on the first cell (main fraction):", "",
             "| mask | elements | tensors | ‖d‖ | dᵀHd [95% CI] | loss rise | basin width | top eigenvalue | "
             "trace ± SE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, m in res["arm_e"]["masks"].items():
        eig, tr = m.get("top_eigenvalue"), m.get("trace")
        lines.append(f"| {key} | {m['count']:,} | {m['n_tensors']} | {m['norm']:.3g} | {_ci(m['curvature'])} | "
                     f"{_ci(m['loss_rise']) if 'loss_rise' in m else '-'} | {_width(m.get('basin_width'))} | "
                     + (f"{eig['value']:.3g}{'' if eig['converged'] else ' (not converged)'}" if eig else "-") + " | "
                     + (f"{tr['value']:.3g} ± {tr['stderr']:.2g}" if tr else "-") + " |")
    return lines + [""]


def arm_e_section(res: dict[str, Any]) -> list[str]:
    """Constructions side by side, the sweep, descriptive rows, the Fisher-loss comparison, masks."""
    e = res["arm_e"]
    lines = ["## Arm E: matched element masks at equal norm", "",
             "The two direction constructions side by side (primary endpoint, top vs stratified at the main "
             "fraction, Holm over the two):", "",
             "| directions | dᵀHd top | dᵀHd stratified | difference [95% CI] | ratio | Holm p | MDE (80%) | outcome |",
             "|---|---|---|---|---|---|---|---|"]
    for con, p in e["primary"].items():
        lines.append(f"| {WORDS[con]} | {p['top']:.3g} | {p['control']:.3g} | {_diff(p)} | {_ratio(p)} | "
                     f"{p_text(p['p_holm'], p['n_boot']).lstrip('= ')} | ±{p['mde80']:.3g} | {p['outcome']} |")
    lines += ["", "Mask-size sweep (top vs stratified at every fraction; figure `sweep`; fractions other than the main "
              "one are measured in the first MLM mask draw only, so their intervals hold the mask draw fixed):", "",
              "| fraction | elements | directions | difference [95% CI] | ratio [95% CI] |", "|---|---|---|---|---|"]
    for r in e["sweep"]:
        lines.append(f"| {r['fraction']:g} | {r['count']:,} | {WORDS[r['construction']]} | {_diff(r)} | "
                     f"{_ratio(r)} |")
    lines += ["", "Descriptive rows, not answers: for a random direction d on a mask, E[dᵀHd] = Σᵢ Hᵢᵢdᵢ², and the "
              "diagonal Fisher tracks diag(H), so the top mask beats a random or a bottom-Fisher mask almost by "
              "construction; only the stratified control (same tensors, same counts) asks whether the Fisher picks "
              "the sharp elements *within* a tensor.", ""]
    for control, d in e["descriptive"].items():
        lines.append(f"- top vs {control}: {_diff(d)}, ratio {_ratio(d)}.")
    lines += [""] + _fisher_loss_lines(res) + _mask_table(res)
    lines += ["Secondary metrics, top against each control (reported, not voted):", ""]
    for control, comps in e.get("secondary", {}).items():
        words = "; ".join(f"{m}: {c['outcome']} ({c['reason']})" for m, c in comps.items())
        lines.append(f"- vs {control}: {words}.")
    return lines + [""]


def arm_p_section(res: dict[str, Any]) -> list[str]:
    """The halves, the endpoint with its derived per-‖d‖² row, and the surfaces."""
    p = res["arm_p"]
    lines = ["## Arm P: the paper's protocol", "",
             "| half | tensors | moving | parameters moved | ‖d‖ | dᵀHd [95% CI] (first cell) | loss rise | basin |",
             "|---|---|---|---|---|---|---|---|"]
    for half, h in p["halves"].items():
        if "skipped" in h:
            lines.append(f"| {half} | {h['n_tensors']} | 0 | 0 | - | {h['skipped']} | - | - |")
            continue
        lines.append(f"| {half} | {h['n_tensors']} | {h['n_moving_tensors']} | {h['n_params_moved']:,} | "
                     f"{h['norm']:.3g} | {_ci(h['curvature'])} | "
                     f"{_ci(h['loss_rise']) if 'loss_rise' in h else '-'} | {_width(h.get('basin_width'))} |")
    for e in p.get("endpoints", {}).values():
        lines += ["", f"- top vs bottom half, every cell: {e['sentence']}"]
    if p.get("per_norm2"):
        d = p["per_norm2"]
        lines.append(f"- derived per unit ‖d‖² (not a separate answer; the norms are fixed by the filter "
                     f"normalization): top {d['top']:.3g}, bottom {d['bottom']:.3g}"
                     + (f", ratio ×{d['ratio']:.3g} = the raw ratio × {d['factor']:.3g}." if d["top"] > 0 < d["bottom"]
                        else "."))
    lines += ["", "Surface summaries (ours; the paper's published bert-base surfaces):", "",
              "| surface | min | max | fitted curvature at 0 | loss rise at r = 0.25 / 0.5 / 1 |",
              "|---|---|---|---|---|"]
    rows = [(f"ours, {h}", v["surface"]) for h, v in p["halves"].items() if "surface" in v]
    ref = res.get("reference") or {}
    rows += [(f"paper, {h}", s) for h, s in ref.get("surfaces", {}).items()]
    for label, s in rows:
        rise = " / ".join(f"{s['loss_rise'].get(r, float('nan')):.3g}" for r in ("0.25", "0.5", "1"))
        lines.append(f"| {label} | {s['min']:.3g} | {s['max']:.3g} | {s['curvature']:.3g} | {rise} |")
    if "missing" in ref:
        lines += ["", f"Paper reference: {ref['missing']}."]
    return lines + [""]


def checks_section(res: dict[str, Any]) -> list[str]:
    """The FD check of dᵀHd against an exact Hessian-vector product, per mask."""
    lines = ["## Check of the finite-difference dᵀHd on this model", "",
             "Relative error of the second difference against the exact dᵀ(Hd) (one Hessian-vector product), first "
             "seed's direction per mask:", "", "| mask | h | relative error |", "|---|---|---|"]
    for key, c in res["checks"].items():
        lines.append(f"| {key} | {c['h']:g} | {c['relative_error']:.2g} |")
    return lines + [""]
