"""Figures and ``report.md`` of the Fisher-sharpness study, drawn from its result files only.

``write_outputs(result, out)`` is called at the end of a run; ``render(out)`` re-draws everything
from ``out/result.json`` and ``out/arrays/`` without recomputing a loss (``landscape plot``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from analyses.common import result_dict
from landscape.scans.results import Curve, Surface
from landscape.util.files import write_text

PLOT_METRICS = ("curvature", "basin_width", "avg_sharpness", "worst_sharpness", "top_eigenvalue", "trace_per_dim")


def render(out: str | Path, result: Any = None, fmt: str = "png") -> dict[str, Path]:
    """Draw every figure of a finished run into ``out/figures``; returns name -> path."""
    from figures.comparison import plot_mask_metrics
    from figures.convergence import plot_convergence
    from figures.curves import plot_curves
    from figures.fisher import plot_fisher
    from figures.surfaces import plot_surfaces

    out = Path(out)
    res = result_dict(out, result)
    figdir = out / "figures"
    paths: dict[str, Path] = {}
    fish = res["fisher"]
    paths["fisher"] = figdir / f"fisher.{fmt}"
    plot_fisher(fish["per_tensor"], fish["per_layer"], title="Empirical Fisher (mean per tensor / layer)", save=paths["fisher"])
    if fish.get("convergence"):
        c = fish["convergence"]
        paths["convergence"] = figdir / f"convergence.{fmt}"
        plot_convergence(c["n"], c["rel_change"], c["spearman"], title="Fisher convergence", save=paths["convergence"])
    cfg = res["config"]
    for gran in cfg["granularities"]:
        for frac in cfg["fractions"]:
            tag = f"{gran}-{frac:g}"
            curves, surfaces = {}, {}
            for which in ("top", "random", "bottom"):
                key = f"{which}-{gran}-{frac:g}"
                files = [out / "arrays" / f"{key}_s{s}_1d.npz" for s in cfg["seeds"]]
                loaded = [Curve.load(f) for f in files if f.exists()]
                if loaded:
                    curves[which] = np.stack([c.values["loss"] for c in loaded])
                    alphas = loaded[0].alphas
                surf = out / "arrays" / f"{key}_s{cfg['seeds'][0]}_2d.npz"
                if surf.exists():
                    surfaces[which] = Surface.load(surf)
            if curves:
                paths[f"curves_{tag}"] = figdir / f"curves_{tag}.{fmt}"
                plot_curves(curves, alphas, band="minmax",
                            title=f"MLM loss along masked directions ({gran}, {frac:g}; band: {len(cfg['seeds'])} seeds)",
                            save=paths[f"curves_{tag}"])
            if surfaces:
                paths[f"surfaces_{tag}"] = figdir / f"surfaces_{tag}.{fmt}"
                plot_surfaces(surfaces, kind="contourf", title=f"MLM loss surfaces ({gran} masks, fraction {frac:g}, seed {cfg['seeds'][0]})",
                              save=paths[f"surfaces_{tag}"])
    paths["metrics"] = figdir / f"metrics.{fmt}"
    plot_mask_metrics(res["masks"], PLOT_METRICS, title="Sharpness by mask (mean ± std over seeds)", save=paths["metrics"])
    return paths


def _fmt(stat: dict[str, Any]) -> str:
    if stat["n"] <= 1:
        return f"{stat['mean']:.4g}"
    return f"{stat['mean']:.4g} ± {stat['std']:.2g}"


def report_markdown(res: dict[str, Any], figures: dict[str, Path], out: Path) -> str:
    """The text of ``report.md``: setup, verdicts, a metric table per group, and the figures."""
    cfg, meta = res["config"], res["meta"]
    conv = res["fisher"].get("convergence") or {}
    lines = [
        "# Is the loss sharper along high-Fisher parameters?",
        "",
        f"Model: `{meta['target']}` ({meta['task']}); objective {meta['objective']['name']}"
        f" (mask prob {meta['objective'].get('mask_prob', '-')}, seed {meta['objective'].get('seed', '-')}).",
        f"Fisher: empirical, {cfg['fisher_examples']} held-out sequences; scans and curvature on "
        f"{cfg['eval_examples']} other sequences. Space: {meta['space']['tensors']} matrix tensors, "
        f"{meta['space']['dim']:,} parameters ({meta['space']['policy']}).",
        f"Directions: filter-normalized, masked, scaled to a full direction's norm; seeds {list(cfg['seeds'])}. "
        f"Sharpness radius {meta['radius']:.4g} (= {cfg['radius']} ‖θ‖) for every mask.",
    ]
    if conv.get("spearman"):
        lines.append(f"Fisher convergence: per-tensor rank correlation with the final ranking reaches 0.95 at "
                     f"{_reach(conv)} examples.")
    lines += ["", "## Verdict", ""]
    for group, v in res["verdicts"].items():
        lines.append(f"- **{group}**: {v['summary']}")
    for group, v in res["verdicts"].items():
        gran, frac = group.split("@")
        lines += ["", f"## {gran} masks, fraction {frac}", "",
                  "| metric | top | random | bottom |", "|---|---|---|---|"]
        keys = {w: f"{w}-{gran}-{frac}" for w in ("top", "random", "bottom")}
        for metric in res["masks"][keys["top"]]["metrics"]:
            row = [_fmt(res["masks"][keys[w]]["metrics"][metric]) for w in ("top", "random", "bottom")]
            lines.append(f"| {metric} | " + " | ".join(row) + " |")
        lines += ["", *[f"- {c['sentence']}" for c in v["comparisons"]]]
    lines += ["", "## Figures", ""]
    for name, path in figures.items():
        lines.append(f"![{name}]({path.relative_to(out).as_posix()})")
    t = meta["timings"]
    lines += ["", f"Run time: {t['total_s']:.0f} s (Fisher {t['fisher_s']:.0f} s, masks {t['masks_s']:.0f} s). "
              f"Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "."]
    return "\n".join(lines) + "\n"


def _reach(conv: dict[str, Any], threshold: float = 0.95) -> str:
    from landscape.fisher.convergence import Convergence

    n = Convergence.from_dict(conv).examples_to_reach(threshold)
    return "more than the available" if n is None else str(n)


def write_outputs(result: Any, out: str | Path) -> dict[str, Path]:
    """Figures plus ``report.md`` for a finished run."""
    out = Path(out)
    res = result_dict(None, result)
    figures = render(out, res)
    write_text(out / "report.md", report_markdown(res, figures, out))
    return figures
