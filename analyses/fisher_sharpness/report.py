"""Figures and ``report.md`` of the Fisher-sharpness study, drawn from its result files only.

``write_outputs(result, out)`` is called at the end of a run; ``render(out)`` re-draws every
figure from ``out/result.json`` and ``out/arrays/`` without computing a loss (``landscape plot``).
``report.md`` opens with the answers (arm P, arm E's primary endpoint under both constructions),
each with its hierarchical interval; the same lines are what the README's gallery quotes
(:func:`answer_lines`). The tables are in :mod:`.report_tables`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from analyses.fisher_sharpness import report_tables as tables
from landscape.util.results import as_dict

ANSWERS_HEADING = "## The two answers"


def _curves(out: Path, files: dict[str, str | None]) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    loaded: dict[str, np.ndarray] = {}
    alphas: np.ndarray | None = None
    for name, f in files.items():
        if f and (out / f).is_file():
            with np.load(out / f) as z:
                loaded[name], alphas = z["loss"], z["alphas"]
    return (loaded, alphas) if loaded and alphas is not None else None


def _render_arm_p(res: dict[str, Any], out: Path, figdir: Path, fmt: str, paths: dict[str, Path]) -> None:
    from figures.curves import plot_curves
    from figures.intervals import plot_surface_rows

    halves = {h: res["arm_p"]["halves"][h] for h in ("all", "top", "bottom")
              if "surface" in res["arm_p"]["halves"].get(h, {})}  # the paper's panel order
    if not halves:
        return
    rows = {"ours": {f"{h} ({v['n_params_moved']:,} moved)": out / v["surface"]["path"] for h, v in halves.items()}}
    ref = res.get("reference") or {}
    if "surfaces" in ref:
        rows["paper"] = {h: s["path"] for h, s in ref["surfaces"].items() if Path(s["path"]).is_file()}
        rows = {k: v for k, v in rows.items() if v}
    r2 = res["config"]["range_2d"]
    paths["surfaces_arm_p"] = figdir / f"surfaces_arm_p.{fmt}"
    plot_surface_rows(rows, title=f"Arm P: the paper's tensor halves, MLM loss over [-{r2:g}, {r2:g}]²"
                      + (" (bottom row: the published bert-base surfaces)" if "paper" in rows else ""),
                      save=paths["surfaces_arm_p"])
    curves = _curves(out, {h: v.get("curves") for h, v in halves.items()})
    if curves:
        paths["curves_arm_p"] = figdir / f"curves_arm_p.{fmt}"
        plot_curves(curves[0], curves[1], band="minmax", title="Arm P: 1D curves (band over seeds)",
                    save=paths["curves_arm_p"])


def render(out: str | Path, result: Any = None, fmt: str = "png") -> dict[str, Path]:
    """Draw every figure of a finished run into ``out/figures``; returns name -> path."""
    from figures.convergence import plot_convergence
    from figures.curves import plot_curves
    from figures.fisher import plot_fisher
    from figures.fisher_sharpness import plot_mask_sweep
    from figures.intervals import plot_intervals

    out = Path(out)
    res = as_dict(out if result is None else result)
    figdir = out / "figures"
    paths: dict[str, Path] = {}
    fish = res["fisher"]
    paths["fisher"] = figdir / f"fisher.{fmt}"
    plot_fisher(fish["per_tensor"], fish["per_layer"], title=f"Empirical Fisher ({fish['example_loss']} token loss "
                "per example; mean per tensor / layer)", save=paths["fisher"])
    if fish.get("convergence"):
        c = fish["convergence"]
        paths["convergence"] = figdir / f"convergence.{fmt}"
        plot_convergence(c["n"], c["rel_change"], c["spearman"], title="Fisher convergence", save=paths["convergence"])
    _render_arm_p(res, out, figdir, fmt, paths)
    main = f"{res['config']['fraction']:g}"
    masks = {v["which"]: v for v in res["arm_e"]["masks"].values() if v.get("construction") == "filter"}
    curves = _curves(out, {w: v.get("curves") for w, v in masks.items()})
    if curves:
        paths[f"curves_arm_e_{main}"] = figdir / f"curves_arm_e_{main}.{fmt}"
        plot_curves(curves[0], curves[1], band="minmax", title=f"Arm E: 1D curves, {main} of matrix parameters, "
                    "equal ‖d‖ (filter-normalized then masked)", save=paths[f"curves_arm_e_{main}"])
    rows = tables.endpoint_rows(res)
    if rows:
        paths["endpoints"] = figdir / f"endpoints.{fmt}"
        plot_intervals(rows, log=False, reference=0.0, xlabel="dᵀHd difference per token, top − control",
                       title="Endpoints with 95% hierarchical intervals (primary first)", save=paths["endpoints"])
    if res["arm_e"].get("sweep"):
        paths["sweep"] = figdir / f"sweep.{fmt}"
        plot_mask_sweep(res["arm_e"]["sweep"], title="Top vs stratified against the mask size (95% hierarchical "
                        "intervals)", save=paths["sweep"])
    return paths


def answer_lines(res: dict[str, Any]) -> list[str]:
    """The verdict bullets that open ``report.md`` (and that the README quotes)."""
    return [f"- {line}" for line in res["verdict"]["arm_p"] + res["verdict"]["arm_e"]]


def _setup(res: dict[str, Any]) -> list[str]:
    cfg, meta, pool = res["config"], res["meta"], res["pool"]
    d = pool["design"]
    return ["## Setup", "",
            f"Model(s): {', '.join(f'`{m}`' for m in meta['models'])} ({meta['task']}), {meta['space']['tensors']} "
            f"trainable tensors, {meta['space']['dim']:,} parameters; objective {meta['objective']['name']} (mask "
            f"prob {meta['objective'].get('mask_prob', '-')}).",
            f"Design: {d['models']} model(s) × {d['fisher_samples']} disjoint Fisher samples of "
            f"{cfg['fisher_examples']} sequences (empirical Fisher, per-example gradient of the {cfg['fisher_loss']} "
            f"token loss; masks recomputed on each) × {d['mask_draws']} MLM mask draws × {d['seeds']} direction "
            f"seeds, on a pool of {pool['n_sequences']} other held-out sequences in {pool['n_documents']} documents "
            f"({meta['documents']}); {pool['n_terms']:,} masked tokens and loss {pool['loss0']:.3f} nats at θ₀ in "
            "the first cell.",
            f"dᵀHd: central second difference with h = {cfg['fd_step']:g} (two forward passes per direction), "
            "summed per sequence and divided by the masked tokens. Secondary metrics on the first cell: 1D curves, "
            f"loss rise at α = ±{cfg['loss_rise_step']:g} and basin width (below L(θ₀) + {cfg['basin_delta']:g} nat, "
            f"line extended up to α = {cfg['basin_max_alpha']:g}) for the first {cfg['curve_seeds']} seeds; 2D "
            f"surfaces {cfg['grid_2d']}×{cfg['grid_2d']} over [-{cfg['range_2d']:g}, {cfg['range_2d']:g}]² on "
            f"{cfg['surface_examples']} sequences.", ""]


def report_markdown(res: dict[str, Any], figures: dict[str, Path], out: Path) -> str:
    """The text of ``report.md``."""
    lines = ["# Is the loss sharper along high-Fisher parameters?", "", ANSWERS_HEADING, "", *answer_lines(res), "",
             "Each answer reads a 95% interval of a hierarchical bootstrap (models, Fisher samples, MLM mask draws, "
             "direction seeds and evaluation documents resampled together); arm E's primary endpoint is top vs "
             "stratified, Holm-corrected over the two direction constructions. Scales are fixed by the design: dᵀHd is "
             "not positive by construction, so endpoints are differences per token, with the ratio beside them. "
             "Secondary metrics below are reported, never voted.", ""]
    lines += _setup(res)
    lines += tables.variance_section(res)
    lines += tables.models_section(res)
    lines += tables.arm_e_section(res)
    lines += tables.arm_p_section(res)
    lines += tables.checks_section(res)
    lines += ["## Figures", ""]
    lines += [f"![{name}](figures/{p.name})" for name, p in figures.items()]
    t = res["meta"].get("timings", {})
    lines += ["", "## Timings", "", ", ".join(f"{k} {v:.1f}" for k, v in t.items()) or "-", ""]
    return "\n".join(lines)


def write_outputs(result: Any, out: str | Path) -> dict[str, Path]:
    """Figures plus ``report.md`` for a finished run."""
    from landscape.util.files import write_text

    out = Path(out)
    res = as_dict(result)
    figures = render(out, res)
    write_text(out / "report.md", report_markdown(res, figures, out))
    return figures


def summary_text(res: dict[str, Any]) -> str:
    """The primary endpoints, the sweep and the verdict, as plain text."""
    rows = ["Arm E, top vs stratified (dHd difference per token [95% hierarchical CI], ratio):"]
    for r in res["arm_e"]["sweep"]:
        lo, hi = r["interval"]
        rows.append(f"  {r['fraction']:<6g}{r['construction']:<10}{r['estimate']:+.3g} [{lo:+.3g}, {hi:+.3g}]  "
                    f"x{r['ratio']:.3g}" if math.isfinite(r["ratio"]) else "")
    rows += ["", "Verdict:"]
    rows += [f"- {line}" for line in res["verdict"]["arm_p"] + res["verdict"]["arm_e"]]
    return "\n".join(rows)
