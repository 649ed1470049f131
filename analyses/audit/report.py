"""Figures, ``report.md`` and a self-contained ``report.html`` of a checkpoint audit.

``write_outputs(result, out)`` is called at the end of :func:`analyses.audit.run`; ``render(out)``
re-draws the figures from ``out/result.json`` alone (the curves are stored in it), computing no loss.
The HTML embeds every PNG as base64 (``<img src="data:image/png;base64,...">``), so the one file can
be mailed or archived; it is well-formed XHTML (it parses with ``xml.etree`` as well as HTML parsers).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from landscape.util.files import write_text
from landscape.util.results import as_dict

TITLE = "Sensitivity audit"
CAPTIONS = {
    "audit": "Fisher per block, top Hessian eigenvalue and trace of each diagonal Hessian block, and the loss "
             "along a filter-normalized random direction moving only that block ('all': every parameter).",
    "fisher": "Empirical diagonal Fisher, mean per tensor (left) and per block (right).",
    "convergence": "Fisher convergence: relative change against the final estimate and rank correlation of the "
                   "per-tensor scores as examples accumulate.",
    "sensitivity": "Loss along block-masked directions (band: min-max over seeds).",
}


def render(out: str | Path, result: Any = None, fmt: str = "png") -> dict[str, Path]:
    """Draw the figures into ``out/figures``; returns name -> path (``convergence`` only when recorded)."""
    from figures.audit import plot_audit
    from figures.convergence import plot_convergence
    from figures.curves import plot_curves
    from figures.fisher import plot_fisher

    out = Path(out)
    res = as_dict(out if result is None else result)
    figdir = out / "figures"
    paths = {name: figdir / f"{name}.{fmt}" for name in ("audit", "fisher", "convergence", "sensitivity")}
    name = res["meta"]["target"]
    plot_audit(res, title=f"{TITLE} of {name}", save=paths["audit"])
    fish = res["fisher"]
    plot_fisher(fish["per_tensor"], fish["per_layer"], title="Empirical Fisher (mean)", save=paths["fisher"])
    conv = fish.get("convergence")
    if conv and len(conv.get("n", [])) >= 2:
        plot_convergence(conv["n"], conv["rel_change"], conv["spearman"], title="Fisher convergence",
                         save=paths["convergence"])
    else:
        del paths["convergence"]
    curves = {b: np.asarray(v["sensitivity"]["curve"]["losses"]) for b, v in res["blocks"].items()}
    curves["all"] = np.asarray(res["overall"]["curve"]["losses"])
    plot_curves(curves, np.asarray(res["overall"]["curve"]["alphas"]), band="minmax",
                title=f"Loss along one block's direction ({len(res['config']['seeds'])} seed(s))",
                save=paths["sensitivity"])
    return paths


def _g(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{float(v):.4g}"


def block_rows(res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-block table (the last row is the whole model)."""
    head = ["block", "parameters", "Fisher (mean)", "λ₁ (top eigenvalue)", "trace ± stderr", "trace products",
            "trace / parameter", "curvature at 0", "loss rise at edge"]
    fl = res["fisher"]["per_layer"]
    rows = []
    for name, b in res["blocks"].items():
        s = b["sensitivity"]
        rows.append([name, _g(b["n_params"]), _g(fl.get(name)), _g(b["top_eigenvalue"]), with_error(b),
                     _g(b.get("trace_matvecs")), _g(b["trace_per_param"]), _g(s["curvature"]), _g(s["loss_at_edge"])])
    o = res["overall"]
    rows.append(["all", _g(o["n_params"]), _g(res["fisher"]["mean"]), _g(o["top_eigenvalue"]), with_error(o),
                 _g(o.get("trace_matvecs")), _g(o["trace_per_param"]), _g(o["curvature"]), _g(o["loss_at_edge"])])
    return head, rows


def with_error(entry: dict[str, Any], key: str = "trace") -> str:
    """``"value ± stderr"``, with ``" (noisy)"`` when the adaptive trace hit its product cap."""
    if entry.get(key) is None:
        return "-"
    text = f"{_g(entry[key])} ± {_g(entry.get(f'{key}_stderr'))}"
    return text + (" (noisy)" if entry.get(f"{key}_noisy") else "")


def noise_note(res: dict[str, Any]) -> str:
    """How the traces were made precise, how many came out noisy, and the sequences every number used."""
    cfg = res["config"]
    noisy = [n for n, b in res["blocks"].items() if b.get("trace_noisy")] + (
        ["all"] if res["overall"].get("trace_noisy") else [])
    tol, cap = cfg.get("trace_rel_tol"), cfg.get("trace_max_matvecs")
    return (f"Traces: Hutch++ rounds of doubling products until stderr ≤ {tol} × |trace|, at most {cap} products; "
            f"{len(noisy)} of {len(res['blocks']) + 1} traces hit the cap (noisy: {', '.join(noisy) or 'none'}). "
            f"Fisher used {cfg['fisher_examples']} sequences; λ₁, traces, curves and sharpness used the same "
            f"{cfg['eval_examples']} other sequences; ± is one standard error.")


def overall_rows(res: dict[str, Any]) -> list[list[str]]:
    """The overall table's rows: quantity, value, note."""
    o = res["overall"]
    return [
        ["loss L(θ)", _g(o["loss0"])],
        ["top Hessian eigenvalue λ₁", _g(o["top_eigenvalue"])],
        ["Hessian trace (Hutch++)", f"{with_error(o)} ({_g(o.get('trace_matvecs'))} products)"],
        ["curvature at origin (1D, filter-normalized)", _g(o["curvature"])],
        ["basin width (1D)", _g(o["basin_width"])],
        ["average-case sharpness", f"{_g(o['avg_sharpness'])} ± {_g(o['avg_sharpness_stderr'])}"],
        ["worst-case sharpness (lower bound)", _g(o["worst_sharpness"])],
        ["sharpness radius r = radius·‖θ‖", f"{_g(o['radius'])} (‖θ‖ = {_g(o['theta_norm'])})"],
        ["Hessian-vector products (full model)", f"{o['n_matvecs']} ({o['hvp_mode']})"],
    ]


def setup_lines(res: dict[str, Any]) -> list[str]:
    """The report's setup paragraph: data, directions, estimators."""
    cfg, meta = res["config"], res["meta"]
    obj = meta["objective"]
    t = meta["timings"]
    return [
        f"Model: {meta['target']} ({meta['model_class']}, {meta['task']}, {meta['n_params']:,} parameters in "
        f"{meta['n_tensors']} tensors; tied weights counted once).",
        f"Objective: {obj.get('name')} (mask prob {obj.get('mask_prob', '-')}, mask seed {obj.get('seed', '-')}).",
        f"Data: Fisher on {cfg['fisher_examples']} held-out sequences; curvature, scans and sharpness on "
        f"{cfg['eval_examples']} other sequences.",
        f"Directions: Gaussian, filter-normalized, one-dimensional tensors {meta['direction']['one_dim']!r}; "
        f"α ∈ [−{cfg['range_1d']}, {cfg['range_1d']}] in {cfg['points_1d']} points; seeds {list(cfg['seeds'])}.",
        f"Curvature: Lanczos (tol {cfg['eig_tol']}, ≤ {cfg['eig_max_iter']} matvecs) and Hutch++ "
        f"(from {cfg['trace_matvecs']} matvecs per block, {cfg['full_trace_matvecs']} for the full model); "
        f"λ₁ reached the tolerance in {sum(bool(b.get('eig_converged')) for b in res['blocks'].values())} of "
        f"{len(res['blocks'])} blocks "
        f"({'and' if res['overall'].get('eig_converged') else 'but not'} for the full model); otherwise it is a lower "
        "bound.",
        f"Run time {t.get('total_s', 0):.0f} s (Fisher {t.get('fisher_s', 0):.0f} s, overall "
        f"{t.get('overall_s', 0):.0f} s, "
        f"blocks {t.get('blocks_s', 0):.0f} s). Weights and train/eval flags restored: {meta.get('restored')}.",
        noise_note(res),
        *[f"Block {g}: {note}." for g, note in (meta.get("block_notes") or {}).items()],
    ]


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *["| " + " | ".join(r) + " |" for r in rows]]


def report_markdown(res: dict[str, Any], figures: dict[str, Path], out: Path) -> str:
    """The text of ``report.md``."""
    lines = [f"# {TITLE}: {res['meta']['target']}", "", *[f"- {s}" for s in setup_lines(res)], "",
             "## Blocks", "", *_md_table(*block_rows(res)), "", "## Whole model", "",
             *_md_table(["quantity", "value"], overall_rows(res)), "", "## Figures", ""]
    for name, path in figures.items():
        lines += [f"![{name}]({path.relative_to(out).as_posix()})", "", f"*{CAPTIONS[name]}*", ""]
    v = res["meta"]["versions"]
    lines += ["Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "."]
    return "\n".join(lines) + "\n"


def _html_table(head: list[str] | None, rows: list[list[str]]) -> str:
    e = html.escape
    th = "" if head is None else "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{th}<tbody>{body}</tbody></table>"


CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1.5em 0}"
       "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}")


def report_html(res: dict[str, Any], figures: dict[str, Path]) -> str:
    """A self-contained XHTML page: setup, tables, base64-embedded figures and the metadata."""
    e = html.escape
    parts = [f"<h1>{e(TITLE)}: {e(res['meta']['target'])}</h1>", "<ul>",
             *[f"<li>{e(s)}</li>" for s in setup_lines(res)], "</ul>",
             "<h2>Blocks</h2>", _html_table(*block_rows(res)),
             "<h2>Whole model</h2>", _html_table(["quantity", "value"], overall_rows(res)), "<h2>Figures</h2>"]
    for name, path in figures.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{e(name)}" src="data:image/png;base64,{data}" />'
                     f"<figcaption>{e(CAPTIONS[name])}</figcaption></figure>")
    meta = {k: v for k, v in res["meta"].items()}
    parts += ["<h2>Configuration</h2>", f"<pre>{e(json.dumps(res['config'], indent=1))}</pre>",
              "<h2>Metadata</h2>", f"<pre>{e(json.dumps(meta, indent=1, default=str))}</pre>"]
    return ('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n'
            '<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8" />'
            f"<title>{e(TITLE)}: {e(res['meta']['target'])}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_outputs(result: Any, out: str | Path) -> dict[str, Path]:
    """Figures, ``report.md`` and ``report.html`` for a finished audit."""
    out = Path(out)
    res = as_dict(result)
    figures = render(out, res)
    write_text(out / "report.md", report_markdown(res, figures, out))
    write_text(out / "report.html", report_html(res, figures))
    return figures


def summary_table(res: dict[str, Any]) -> str:
    """Per-block and overall numbers as a plain-text table; traces as ``value ± stderr``, ``*``: noisy."""
    cols = ("n_params", "fisher", "top_eig", "trace ± stderr", "products", "trace/param", "curvature", "edge_loss")
    widths = (13, 13, 13, 24, 10, 13, 13, 13)
    head = f"{'block':<12}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths))
    rows = [head, "-" * len(head)]
    fl = res["fisher"]["per_layer"]
    entries = [(name, b, fl.get(name, float("nan")), b["sensitivity"]) for name, b in res["blocks"].items()]
    o = res["overall"]
    entries.append(("all", o, res["fisher"]["mean"], o))
    for name, b, fish, s in entries:
        trace = "-" if b["trace"] is None else f"{_num(b['trace'])} ± {_num(b.get('trace_stderr'))}" + (
            " *" if b.get("trace_noisy") else "  ")
        vals = (_num(b["n_params"]), _num(fish), _num(b["top_eigenvalue"]), trace, _num(b.get("trace_matvecs")),
                _num(b["trace_per_param"]), _num(s["curvature"]), _num(s["loss_at_edge"]))
        rows.append(f"{name:<12}" + "".join(f"{v:>{w}}" for v, w in zip(vals, widths)))
    rows += [f"{g}: {note}" for g, note in (res.get("meta", {}).get("block_notes") or {}).items()]
    rows += ["", f"loss {o['loss0']:.4g}; average sharpness {o['avg_sharpness']:.4g} ± "
                 f"{_num(o['avg_sharpness_stderr'])}, "
                 f"worst-case sharpness ≥ {o['worst_sharpness']:.4g} (radius {o['radius']:.4g})", noise_note(res)
             + " *: the trace hit its product cap (stderr above the tolerance)."]
    return "\n".join(rows)


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{float(v):.4g}"
