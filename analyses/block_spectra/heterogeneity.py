"""Block heterogeneity: Jensen–Shannon divergence between the blocks' Hessian spectral densities.

Zhang et al. (2024, "Why Transformers Need Adam: A Hessian Perspective") call a Hessian *block
heterogeneous* when the spectra of its diagonal blocks differ, and measure it by the Jensen–Shannon
distance between the blocks' SLQ densities, averaged over all pairs of blocks (their JS₀, taken at
initialization). Here, for blocks b = 1..B with SLQ nodes θ and weights τ (per run):

1. one common grid t₁..t_G spanning every block's nodes ± 5σ, with σ = ``sigma_fraction`` × (the
   range of all nodes);
2. each block's Gaussian-smoothed density φ_b(t) = (1/R) Σᵣ Σⱼ τᵣⱼ N(t; θᵣⱼ, σ²) on that grid,
   normalized to a probability vector p_b (Σ_g p_b(t_g) = 1);
3. JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2, **natural log**: 0 for identical densities,
   at most ln 2 ≈ 0.693 for densities with disjoint support (divide by ln 2 for bits, maximum 1);
4. the heterogeneity is the mean of JS over the B(B−1)/2 pairs.

With ``scale="top"`` each block's Ritz values are first divided by its largest |Ritz value|: the
shapes of the spectra are compared, not their scales (on raw scale a few large-eigenvalue blocks
stretch the grid and the others collapse into one spike near 0, so their JS is near 0).

One σ for all blocks keeps the comparison fair: the densities differ only where the spectra do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

#: the largest Jensen–Shannon divergence (natural log): two densities with disjoint support
JS_MAX = math.log(2.0)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence ½KL(p‖m) + ½KL(q‖m), m = (p+q)/2, in nats (0 … ln 2).

    Args:
        p, q: non-negative weights ``[G]`` on the same grid (each normalized to sum 1 here).
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"p and q must be 1-D and of one shape, got {p.shape} and {q.shape}.")
    if (p < 0).any() or (q < 0).any() or not p.sum() > 0 or not q.sum() > 0:
        raise ValueError("p and q must be non-negative with a positive sum.")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        on = a > np.finfo(np.float64).tiny  # subnormal masses carry nothing, and their m may underflow to 0
        return float(np.sum(a[on] * np.log(a[on] / m[on])))

    return min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), JS_MAX)


def common_grid(nodes: Sequence[Sequence[np.ndarray]], sigma_fraction: float = 0.01,
                num_grid: int = 1000) -> tuple[np.ndarray, float]:
    """``(grid [num_grid], σ)``: one grid over every block's nodes ± 5σ, σ = fraction × node range.

    Args:
        nodes: per block, per SLQ run, the Ritz values θ.
    """
    if not sigma_fraction > 0 or num_grid < 2:
        raise ValueError(f"sigma_fraction must be > 0 and num_grid ≥ 2, got {sigma_fraction}, {num_grid}.")
    flat = np.concatenate([np.asarray(n, dtype=np.float64).ravel() for block in nodes for n in block])
    lo, hi = float(flat.min()), float(flat.max())
    sigma = sigma_fraction * max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    return np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(num_grid)), sigma


def smoothed_density(nodes: Sequence[np.ndarray], weights: Sequence[np.ndarray], grid: np.ndarray,
                     sigma: float) -> np.ndarray:
    """φ(t) = (1/R) Σᵣ Σⱼ τᵣⱼ N(t; θᵣⱼ, σ²) on ``grid`` ``[G]`` from R runs of nodes θ and weights τ."""
    density = np.zeros_like(grid, dtype=np.float64)
    for theta, tau in zip(nodes, weights):
        theta, tau = np.asarray(theta, dtype=np.float64), np.asarray(tau, dtype=np.float64)
        density += np.exp(-0.5 * ((grid[:, None] - theta[None, :]) / sigma) ** 2) @ tau
    return density / (len(nodes) * sigma * math.sqrt(2 * math.pi))


def js_matrix(densities: Sequence[np.ndarray]) -> np.ndarray:
    """The symmetric ``[B, B]`` matrix of pairwise JS divergences (zero diagonal)."""
    b = len(densities)
    out = np.zeros((b, b))
    for i in range(b):
        for j in range(i + 1, b):
            out[i, j] = out[j, i] = js_divergence(densities[i], densities[j])
    return out


def heterogeneity(nodes: Sequence[Sequence[np.ndarray]], weights: Sequence[Sequence[np.ndarray]],
                  sigma_fraction: float = 0.01, num_grid: int = 1000,
                  scale: Literal["raw", "top"] = "raw") -> dict[str, object]:
    """Block heterogeneity of B ≥ 2 blocks' SLQ spectra: the mean pairwise JS on a common grid.

    ``scale="raw"`` compares the eigenvalues as they are (scale and shape); ``"top"`` first divides each
    block's Ritz values by its largest |Ritz value|, so only the shapes of the spectra are compared
    (as Zhang et al. normalize their plotted spectra).

    Returns ``{"js_mean": float (nats), "js_max": float, "js": [B, B] list, "grid": [G] list,
    "densities": [B, G] list, "sigma": float, "log_base": "e"}``.
    """
    if len(nodes) != len(weights) or len(nodes) < 2:
        raise ValueError(f"give nodes and weights of at least 2 blocks, got {len(nodes)} and {len(weights)}.")
    if scale not in ("raw", "top"):
        raise ValueError(f"scale must be 'raw' or 'top', got {scale!r}.")
    if scale == "top":
        nodes = [[np.asarray(n, dtype=np.float64) / _top(block) for n in block] for block in nodes]
    grid, sigma = common_grid(nodes, sigma_fraction, num_grid)
    dens = [smoothed_density(n, w, grid, sigma) for n, w in zip(nodes, weights)]
    js = js_matrix(dens)
    pairs = js[np.triu_indices(len(dens), 1)]
    return {"js_mean": float(pairs.mean()), "js_max": float(pairs.max()), "js": js.tolist(), "grid": grid.tolist(),
            "densities": [d.tolist() for d in dens], "sigma": float(sigma), "log_base": "e",
            "scale": scale}


def _top(block: Sequence[np.ndarray]) -> float:
    """The largest |Ritz value| of a block (1 for an all-zero block)."""
    top = max(float(np.abs(np.asarray(n, dtype=np.float64)).max()) for n in block)
    return top if top > 0 else 1.0
