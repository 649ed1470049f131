"""Per-block Hessian spectra: a grid of densities, and λ₁ and trace by block and layer."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from figures import style


def _as_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    if hasattr(result, "to_dict"):
        return result.to_dict()
    from landscape.util.results import as_dict

    return as_dict(result)


def _density(nodes: list[list[float]], weights: list[list[float]], num: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A block's own SLQ density φ(t) = (1/R) Σᵣ Σⱼ τᵣⱼ N(t; θᵣⱼ, σ²), σ = 1% of its node range: (grid, φ)."""
    flat = np.concatenate([np.asarray(n, dtype=np.float64) for n in nodes])
    lo, hi = float(flat.min()), float(flat.max())
    sigma = 0.01 * max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, num)
    dens = np.zeros_like(grid)
    for theta, tau in zip(nodes, weights):
        dens += np.exp(-0.5 * ((grid[:, None] - np.asarray(theta)[None, :]) / sigma) ** 2) @ np.asarray(tau)
    return grid, dens / (len(nodes) * sigma * math.sqrt(2 * math.pi))


def _split(block: str) -> tuple[str, str]:
    if block.startswith("layer."):
        group, _, role = block.rpartition(".")
        return group, role
    return block, block


def _by_layer(ax: Any, blocks: dict[str, dict[str, Any]], value: Any, ylabel: str) -> None:
    """One line per role over the layers (x), embeddings and head as single points at the ends."""
    layers = list(dict.fromkeys(_split(b)[0] for b in blocks))
    roles = list(dict.fromkeys(_split(b)[1] for b in blocks))
    for i, role in enumerate(roles):
        pts = [(layers.index(_split(b)[0]), value(v)) for b, v in blocks.items() if _split(b)[1] == role]
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=4, color=style.color(i), label=role)
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    values = np.asarray([value(v) for v in blocks.values()], dtype=np.float64)
    if (values > 0).all():
        ax.set_yscale("log")
    else:  # negative estimates (a noisy trace, an indefinite block): linear within 1e-3 of the largest |value|
        ax.set_yscale("symlog", linthresh=max(1e-3 * float(np.abs(values).max()), 1e-12))
    ax.legend(frameon=False, fontsize=7, ncol=2)


def plot_block_spectra(result: Any, *, title: str | None = None, ncols: int = 8, dpi: int = style.DPI,
                       save: str | os.PathLike | None = None) -> Figure:
    """Densities of every block (one panel each, log density axis, top eigenvalues as ticks), then λ₁ and
    tr(H_bb)/dim by layer with one line per role.

    ``result``: a block-spectra result (object, dict or its folder / result.json); each block needs
    ``density`` (``nodes``, ``weights`` per SLQ run), ``top_eigenvalues`` and ``trace_per_param``.
    """
    res = _as_dict(result)
    blocks = res["blocks"]
    if not blocks:
        raise ValueError("the result has no blocks to draw.")
    ncols = max(1, min(ncols, len(blocks)))
    nrows = math.ceil(len(blocks) / ncols)
    js = res.get("heterogeneity", {}).get("js_mean")
    with style.context():
        fig = style.new_figure(2.0 * ncols, 1.7 * nrows + 3.2, dpi=dpi)
        gs = fig.add_gridspec(nrows + 2, ncols, height_ratios=[1.0] * nrows + [0.25, 1.8])
        for i, (name, b) in enumerate(blocks.items()):
            ax = fig.add_subplot(gs[i // ncols, i % ncols])
            grid, dens = _density(b["density"]["nodes"], b["density"]["weights"])
            ax.plot(grid, np.maximum(dens, 1e-8 * dens.max()), color=style.color(0), lw=1)
            ax.set_yscale("log")
            ev = np.asarray(b["top_eigenvalues"], dtype=np.float64)
            ax.plot(ev, np.full_like(ev, 0.03), "|", ms=8, color=style.color(3), transform=ax.get_xaxis_transform())
            ax.set_title(name, fontsize=8)
            ax.tick_params(labelsize=6)
        ax1 = fig.add_subplot(gs[nrows + 1, : max(1, ncols // 2)])
        _by_layer(ax1, blocks, lambda v: v["top_eigenvalues"][0], style.label("λ₁ (top eigenvalue)"))
        ax2 = fig.add_subplot(gs[nrows + 1, max(1, ncols // 2):] if ncols > 1 else gs[nrows + 1, 0])
        _by_layer(ax2, blocks, lambda v: v["trace_per_param"], "tr(H_bb) / parameters")
        head = title or "Hessian spectra by block"
        fig.suptitle(head if js is None else f"{head}: heterogeneity (mean pairwise JS) = {js:.3g} nats")
    return style.finish(fig, save, dpi)
