"""Figures and ``report.md`` of the Fisher-sharpness study, drawn from its result files only.

``write_outputs(result, out)`` is called at the end of a run; ``render(out)`` re-draws every
figure from ``out/result.json`` and ``out/arrays/`` without computing a loss (``landscape plot``).
``report.md`` opens with the two answers (arm P, arm E), each with its interval; the same lines
are what the README's gallery quotes (:func:`answer_lines`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from landscape.util.results import as_dict

ANSWERS_HEADING = "## The two answers"


def render(out: str | Path, result: Any = None, fmt: str = "png") -> dict[str, Path]:
    """Draw every figure of a finished run into ``out/figures``; returns name -> path."""
    from figures.convergence import plot_convergence
    from figures.curves import plot_curves
    from figures.fisher import plot_fisher
    from figures.intervals import plot_intervals, plot_surface_rows

    out = Path(out)
    res = as_dict(out if result is None else result)
    figdir = out / "figures"
    paths: dict[str, Path] = {}
    fish = res["fisher"]
    paths["fisher"] = figdir / f"fisher.{fmt}"
    plot_fisher(fish["per_tensor"], fish["per_layer"], title="Empirical Fisher (mean per tensor / "
                                                             "layer)", save=paths["fisher"])
    if fish.get("convergence"):
        c = fish["convergence"]
        paths["convergence"] = figdir / f"convergence.{fmt}"
        plot_convergence(c["n"], c["rel_change"], c["spearman"], title="Fisher convergence", save=paths["convergence"])
    halves = {h: res["arm_p"]["halves"][h] for h in ("all", "top", "bottom")
              if "surface" in res["arm_p"]["halves"].get(h, {})}  # the paper's panel order
    if halves:
        surface_rows = {"ours": {f"{h} ({v['n_params_moved']:,} "
                                 "moved)": out / v["surface"]["path"] for h, v in halves.items()}}
        ref = res.get("reference") or {}
        if "surfaces" in ref:
            surface_rows["paper"] = {h: s["path"] for h, s in ref["surfaces"].items() if Path(s["path"]).is_file()}
            surface_rows = {k: v for k, v in surface_rows.items() if v}
        paths["surfaces_arm_p"] = figdir / f"surfaces_arm_p.{fmt}"
        cfg = res["config"]
        plot_surface_rows(surface_rows, title=f"Arm P: the paper's tensor halves, MLM loss over [-{cfg['range_2d']:g}, "
                                              f"{cfg['range_2d']:g}]²"
                          + (" (bottom row: the published bert-base surfaces)" if "paper" in surface_rows else ""),
                          save=paths["surfaces_arm_p"])
        curves = _curves(out, {h: v.get("curves") for h, v in halves.items()})
        if curves:
            paths["curves_arm_p"] = figdir / f"curves_arm_p.{fmt}"
            plot_curves(curves[0], curves[1], band="minmax", title="Arm P: 1D curves (band over "
                                                                   "seeds)", save=paths["curves_arm_p"])
    for group in res["arm_e"]["endpoints"]:
        masks = {v["which"]: v for v in res["arm_e"]["masks"].values() if f"{v['fraction']:g}" == group}
        curves = _curves(out, {w: v.get("curves") for w, v in masks.items()})
        if curves:
            paths[f"curves_arm_e_{group}"] = figdir / f"curves_arm_e_{group}.{fmt}"
            plot_curves(curves[0], curves[1], band="minmax", title=f"Arm E: 1D curves, {group} of matrix parameters, "
                                                                   "equal ‖d‖",
                        save=paths[f"curves_arm_e_{group}"])
    rows, log = _endpoint_rows(res)
    if rows:
        paths["endpoints"] = figdir / f"endpoints.{fmt}"
        n_all = 2 * bool(res["arm_p"].get("endpoints")) + sum(len(v) for v in res["arm_e"]["endpoints"].values())
        what = "dᵀHd ratio, top / control" if log else "dᵀHd difference, top − control"
        note = f"; {n_all - len(rows)} endpoint(s) given as differences are in the report" if len(rows) < n_all else ""
        plot_intervals(rows, log=log, reference=1.0 if log else 0.0, xlabel=what,
                       title=f"Primary endpoints with 95% bootstrap intervals{note}", save=paths["endpoints"])
    return paths


def _curves(out: Path, files: dict[str, str | None]) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    loaded: dict[str, np.ndarray] = {}
    alphas: np.ndarray | None = None
    for name, f in files.items():
        if f and (out / f).is_file():
            with np.load(out / f) as z:
                loaded[name], alphas = z["loss"], z["alphas"]
    return (loaded, alphas) if loaded and alphas is not None else None


def _endpoint_rows(res: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Forest-plot rows: the log-ratio endpoints on a ratio axis, or (when no endpoint is a
    log-ratio, e.g. curvatures that are not positive) the differences on a linear axis."""
    rows = []
    eps = [("P: top vs bottom half", res["arm_p"].get("endpoints", {}).get("top_vs_bottom")),
           ("P: same, per ‖d‖²", res["arm_p"].get("endpoints", {}).get("top_vs_bottom_per_norm2"))]
    for group, by_control in res["arm_e"]["endpoints"].items():
        eps += [(f"E {group}: top vs {c}", e) for c, e in by_control.items()]
    eps = [(label, e) for label, e in eps if e]
    log = any(e["kind"] == "log_ratio" for _, e in eps)
    f = math.exp if log else float
    for label, e in eps:
        if (e["kind"] == "log_ratio") == log:
            rows.append({"label": label, "estimate": f(e["estimate"]), "interval": tuple(f(x) for x in e["interval"]),
                         "extra": {"data only": tuple(f(x) for x in e["interval_data"]),
                                   "seeds only": tuple(f(x) for x in e["interval_seeds"])}})
    return rows, log


def answer_lines(res: dict[str, Any]) -> list[str]:
    """The verdict bullets that open ``report.md`` (and that the README quotes)."""
    return [f"- {line}" for line in res["verdict"]["arm_p"] + res["verdict"]["arm_e"]]


def _ci(d: dict[str, Any], fmt: str = ".3g") -> str:
    lo, hi = d["interval"]
    return f"{d['estimate']:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _width(b: dict[str, Any] | None) -> str:
    if not b:
        return "-"
    return f"{b['text']} ({b['n_censored']}/{b['n']} censored)" if b["n_censored"] else b["text"]


def report_markdown(res: dict[str, Any], figures: dict[str, Path], out: Path) -> str:
    """The text of ``report.md``."""
    cfg, meta, pool = res["config"], res["meta"], res["pool"]
    lines = ["# Is the loss sharper along high-Fisher parameters?", "", ANSWERS_HEADING, "", *answer_lines(res), "",
             "Each answer reads one primary endpoint's 95% bootstrap interval (sequences and direction seeds resampled "
             "together); secondary metrics below are reported, never voted.", "", "## Setup", "",
             f"Model `{meta['target']}` ({meta['task']}), {meta['space']['tensors']} trainable tensors, "
             f"{meta['space']['dim']:,} "
             f"parameters; objective {meta['objective']['name']} (mask prob {meta['objective'].get('mask_prob', '-')}, "
             f"seed {meta['objective'].get('seed', '-')}).",
             f"Fisher: empirical, {cfg['fisher_examples']} held-out sequences. Evaluation pool: {pool['n_sequences']} "
             "other held-out "
             f"sequences ({pool['n_terms']:,} masked tokens), loss at θ₀ {pool['loss0']:.3f} nats; disjoint 8-sequence "
             "slices of "
             f"the pool range {pool['slices_of_8']['min']:.2f}–{pool['slices_of_8']['max']:.2f} nats.",
             f"Directional curvature dᵀHd: central second difference with h = {cfg['fd_step']:g} (two forward passes "
             "per "
             f"direction), {len(cfg['seeds'])} direction seeds; 1D curves, loss rise at α = ±{cfg['loss_rise_step']:g} "
             "and basin "
             f"width (loss below L(θ₀) + {cfg['basin_delta']:g} nat, line extended up to α = "
             f"{cfg['basin_max_alpha']:g}) for the "
             f"first {cfg['curve_seeds']} seeds. 2D surfaces: {cfg['grid_2d']}×{cfg['grid_2d']} over "
             f"[-{cfg['range_2d']:g}, "
             f"{cfg['range_2d']:g}]² on the first {cfg['surface_examples']} sequences of the pool.", ""]
    lines += _arm_p_section(res)
    lines += _arm_e_section(res)
    lines += _variance_section(res)
    lines += ["## Figures", ""] + [f"![{n}]({p.relative_to(out).as_posix()})" for n, p in figures.items()]
    t = meta["timings"]
    lines += ["", f"Run time: {t.get('total_s', float('nan')):.0f} s before figures (Fisher {t['fisher_s']:.0f} s, arm "
                  "P "
              f"{t['arm_p_s']:.0f} s, arm E {t['arm_e_s']:.0f} s); {meta.get('forward_passes', 0)} forward passes over "
              "the pool. "
              "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "."]
    return "\n".join(lines) + "\n"


def _arm_p_section(res: dict[str, Any]) -> list[str]:
    p = res["arm_p"]
    lines = ["## Arm P: the paper's protocol", "",
             "All trainable tensors ranked by mean Fisher and halved; 1-D tensors get a zero direction; each moved "
             "tensor is "
             "filter-normalized to its own weights; no norm matching between halves.", "",
             "| half | tensors | moving tensors | parameters moved | ‖d‖ | dᵀHd [95% CI] | dᵀHd/‖d‖² [95% CI] | loss "
             "rise | basin width |",
             "|---|---|---|---|---|---|---|---|---|"]
    for half, h in p["halves"].items():
        if "skipped" in h:
            lines.append(f"| {half} | {h['n_tensors']} | 0 | 0 | - | {h['skipped']} | | | |")
            continue
        lines.append(f"| {half} | {h['n_tensors']} | {h['n_moving_tensors']} | {h['n_params_moved']:,} | "
                     f"{h['norm']:.3g} | "
                     f"{_ci(h['curvature'])} | {_ci(h['curvature_per_norm2'], '.3e')} | "
                     f"{_ci(h['loss_rise']) if 'loss_rise' in h else '-'} | {_width(h.get('basin_width'))} |")
    for name, e in p.get("endpoints", {}).items():
        lines += ["", f"- {name}: {e['sentence']}"]
    lines += ["", "Surface summaries (ours on the default model; the paper's published bert-base surfaces):", "",
              "| surface | min | max | fitted curvature at 0 | loss rise at r = "
              "" + " / ".join(("0.25", "0.5", "1")) + " |",
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


def _arm_e_section(res: dict[str, Any]) -> list[str]:
    e = res["arm_e"]
    lines = ["## Arm E: matched element masks at equal norm", "",
             "Element masks of one size over the matrix parameters; `stratified` draws as many random elements in each "
             "tensor "
             "as `top` holds there; random and stratified masks are redrawn per seed; every direction has the norm of "
             "a full "
             "filter-normalized direction.", "",
             f"Tensor-granularity masks: {e['tensor_masks']['reason']}", "",
             "| mask | elements | tensors | dᵀHd [95% CI] | loss rise [95% CI] | basin width | top eigenvalue | trace "
             "± SE |",
             "|---|---|---|---|---|---|---|---|"]
    for key, m in e["masks"].items():
        eig = m["top_eigenvalue"]
        tr = m["trace"]
        lines.append(f"| {key} | {m['count']:,} | {m['n_tensors']} | {_ci(m['curvature'])} | {_ci(m['loss_rise'])} | "
                     f"{_width(m.get('basin_width'))} | "
                     f"{eig['value']:.3g}{'' if eig['converged'] else ' (not converged)'} | "
                     f"{tr['value']:.3g} ± {tr['stderr']:.2g} |")
    lines += ["", "Primary endpoint, log-ratio of dᵀHd (top / control), 95% intervals from resampling sequences and "
                  "seeds "
              "together, sequences only, and seeds only:", "",
              "| fraction | control | ratio | joint | sequences only | seeds only | outcome "
              "|", "|---|---|---|---|---|---|---|"]
    for group, eps in e["endpoints"].items():
        for control, c in eps.items():
            f = ((lambda iv: f"{math.exp(iv[0]):.3g}–{math.exp(iv[1]):.3g}") if c["kind"] == "log_ratio"
                 else (lambda iv: f"{iv[0]:+.3g}–{iv[1]:+.3g}"))
            est = f"{math.exp(c['estimate']):.3g}" if c["kind"] == "log_ratio" else f"{c['estimate']:+.3g}"
            lines.append(f"| {group} | {control} | {est} | {f(c['interval'])} | {f(c['interval_data'])} | "
                         f"{f(c['interval_seeds'])} | {c['outcome']} |")
    lines += ["", "Secondary metrics, top against each control (reported, not voted):", ""]
    for group, by_control in e["secondary"].items():
        for control, comps in by_control.items():
            words = "; ".join(f"{m}: {c['outcome']} ({c['reason']})" for m, c in comps.items())
            lines.append(f"- {group}, vs {control}: {words}.")
    lines += ["", "Not computed: worst-case sharpness (at a ball of 0.05‖θ‖ it saturated every mask at 20–30 nats, far "
                  "above "
              "uniform guessing, so it separated nothing), average-case sharpness (at small ρ it is ½ρ²·trace, "
              "reported as the "
              "trace) and trace per dimension (the trace divided by a count that is equal across masks).", ""]
    return lines


def _variance_section(res: dict[str, Any]) -> list[str]:
    v = res["variance"]
    lines = ["## Data variance and seed variance", "", v["summary"], "",
             "| mask | SE over sequences | SE over seeds | SD across blocks | SD across seeds | block size |",
             "|---|---|---|---|---|---|"]
    for name, r in v["masks"].items():
        lines.append(f"| {name} | {r['data_se']:.3g} | {r['seed_se']:.3g} | {r['block_sd']:.3g} | {r['seed_sd']:.3g} | "
                     f"{r['block_size']} |")
    lines += ["", "| endpoint | kind | SD from sequences | SD from seeds |", "|---|---|---|---|"]
    for name, r in v["endpoints"].items():
        lines.append(f"| {name} | {r.get('kind', 'log_ratio').replace('_', '-')} | {r['sd_data']:.3g} | "
                     f"{r['sd_seeds']:.3g} |")
    return lines + [""]


def write_outputs(result: Any, out: str | Path) -> dict[str, Path]:
    """Figures plus ``report.md`` for a finished run."""
    from landscape.util.files import write_text

    out = Path(out)
    res = as_dict(result)
    figures = render(out, res)
    write_text(out / "report.md", report_markdown(res, figures, out))
    return figures


def summary_text(res: dict[str, Any]) -> str:
    """The arm P table, arm E endpoints and the verdict, as plain text."""
    rows = ["Arm P (the paper's tensor halves):",
            f"  {'half':<7}{'tensors':>8}{'moving':>8}{'params moved':>14}{'|d|':>9}{'dHd':>10}  "
            f"{'95% CI':<20}{'dHd/|d|^2':>11}"]
    for half, h in res["arm_p"]["halves"].items():
        if "skipped" in h:
            rows.append(f"  {half:<7}{h['n_tensors']:>8}{0:>8}{0:>14}  {h['skipped']}")
            continue
        c, n = h["curvature"], h["curvature_per_norm2"]
        rows.append(f"  {half:<7}{h['n_tensors']:>8}{h['n_moving_tensors']:>8}{h['n_params_moved']:>14,}"
                    f"{h['norm']:>9.3g}"
                    f"{c['estimate']:>10.3g}  [{c['interval'][0]:.3g}, "
                    f"{c['interval'][1]:.3g}]".ljust(20) + f"{n['estimate']:>11.3e}")
    rows.append("Arm E endpoints (ratio of dHd, top / control, 95% interval):")
    for group, eps in res["arm_e"]["endpoints"].items():
        for control, e in eps.items():
            if e["kind"] == "log_ratio":
                lo, hi = (math.exp(x) for x in e["interval"])
                rows.append(f"  {group} vs {control:<11} x{math.exp(e['estimate']):.3g} [{lo:.3g}, {hi:.3g}]  "
                            f"({e['outcome']})")
            else:
                rows.append(f"  {group} vs {control:<11} diff {e['estimate']:+.3g} [{e['interval'][0]:+.3g}, "
                            f"{e['interval'][1]:+.3g}]  ({e['outcome']})")
    rows += ["", "Variance: " + res["variance"]["summary"], "", "Verdict:"]
    rows += [f"- {line}" for line in res["verdict"]["arm_p"] + res["verdict"]["arm_e"]]
    return "\n".join(rows)
