"""The block-spectra table, figure and ``report.md``, from a result or its folder (no recomputing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from landscape.util.files import write_text
from landscape.util.results import as_dict

FIGURE = "block_spectra"
CAPTION = ("Top: each block's Hessian spectral density (stochastic Lanczos quadrature, Gaussian-smoothed, log "
           "density; ticks: the top eigenvalues). Bottom: the top eigenvalue λ₁ and the trace per parameter of "
           "each diagonal Hessian block, by layer, one line per role.")


def _g(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{float(v):.4g}"


def block_rows(res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per block: size, top eigenvalues, trace ± stderr, trace/param, mean JS to the others."""
    het = res["heterogeneity"]
    order = het.get("blocks", list(res["blocks"]))
    js = np.asarray(het["js"], dtype=np.float64)
    mean_js = js.sum(1) / max(len(order) - 1, 1)
    head = ["block", "parameters", "top eigenvalues", "trace", "± stderr", "trace / parameter", "converged",
            "mean JS to others", "matvecs"]
    rows = []
    for i, name in enumerate(order):
        b = res["blocks"][name]
        rows.append([name, _g(b["n_params"]), ", ".join(_g(v) for v in b["top_eigenvalues"]), _g(b["trace"]),
                     _g(b["trace_stderr"]), _g(b["trace_per_param"]), _g(b["eig_converged"]),
                     _g(float(mean_js[i])) if len(order) > 1 else "-", _g(b["n_matvecs"])])
    return head, rows


def block_table(res: Any) -> str:
    """The per-block table as aligned plain text."""
    head, rows = block_rows(as_dict(res))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head, *rows])


def markdown(res: dict[str, Any], figure: str | None) -> str:
    """``report.md``: settings, heterogeneity, the table and the figure."""
    head, rows = block_rows(res)
    cfg, het, meta = res["config"], res["heterogeneity"], res["meta"]
    lines = [f"# Block spectra of {meta.get('target', cfg.get('checkpoint'))}", "",
             f"Hessian of the loss on {cfg['examples']} held-out sequences, one diagonal block per row: top "
             f"{cfg['top_k']} eigenvalues (the Ritz values of the SLQ runs' Lanczos, tol {cfg['eig_tol']}), "
             f"Hutch++ trace from {cfg['trace_matvecs']} matvecs (± one standard error), SLQ density from "
             f"{cfg['density_runs']} run(s) of {max(cfg['lanczos_steps'], cfg['eig_max_iter'])} Lanczos steps.", ""]
    if het.get("js_mean") is not None:
        lines += [f"**Block heterogeneity** (Zhang et al., 2024): mean pairwise Jensen–Shannon divergence between "
                  f"the blocks' densities on one grid ({het.get('scale', 'raw')} scale, σ = {het['sigma']:.3g}) = "
                  f"**{het['js_mean']:.4g} nats** (0: identical spectra; ln 2 ≈ 0.693: disjoint); largest pair "
                  f"{het['js_max']:.4g}.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = meta.get("block_notes") or {}
    lines += [""] + [f"- {b}: {n}" for b, n in notes.items()] + ([""] if notes else [])
    if figure:
        lines += [f"![block spectra]({figure})", "", CAPTION, ""]
    lines += [f"{meta.get('world_size', 1)} process(es), {meta.get('seconds', float('nan')):.0f} s."]
    return "\n".join(lines) + "\n"


def render(out: str | Path, result: Any = None, fmt: str = "png") -> Path:
    """Draw ``out/figures/block_spectra.<fmt>`` from ``out/result.json`` (or ``result``); returns its path."""
    from figures.block_spectra import plot_block_spectra

    res = as_dict(Path(out) if result is None else result)
    path = Path(out) / "figures" / f"{FIGURE}.{fmt}"
    plot_block_spectra(res, title=f"Hessian spectra by block of {res['meta'].get('target', '')}", save=path)
    return path


def write_outputs(result: Any, out: str | Path) -> dict[str, Path]:
    """The figure and ``report.md`` under ``out``."""
    res = as_dict(result)
    fig = render(out, res)
    md = write_text(Path(out) / "report.md", markdown(res, f"figures/{fig.name}"))
    return {"figure": fig, "report": md}
