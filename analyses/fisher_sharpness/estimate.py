"""The study's estimated time, printed before the arms start (:mod:`analyses.cli.eta`).

The unit is one loss + gradient over the evaluation pool, timed once (T). The study's work in those
units: a Hessian-vector product ≈ 3.5 gradients, a forward pass ≈ 1/3 gradient, both scaled by the
share of the pool they run on; the Fisher's per-sequence gradients ≈ 1.5 × their share of the pool.
Per mask: every seed's dᵀHd (3 forward passes), the curve seeds' 1D lines (``points_1d`` points plus
about 6 for the bracketed basin), the Hutchinson trace (``trace_matvecs`` products over the pool) and
the top eigenvalue (``eig_iters`` products over ``eig_examples``); arm P adds two 2D surfaces.
"""

from __future__ import annotations

from typing import Any

from analyses.cli.eta import announce, time_gradient

__all__ = ["study_units", "announce_study", "PRODUCT_GRADIENTS", "FORWARD_GRADIENTS"]

PRODUCT_GRADIENTS = 3.5
FORWARD_GRADIENTS = 1 / 3
BASIN_POINTS = 6


def study_units(cfg: Any, n_eval: int) -> float:
    """The study's work in gradients over the ``n_eval``-sequence pool (see the module docstring)."""
    n_eval = max(n_eval, 1)
    per_mask_forwards = len(cfg.seeds) * 3 + min(cfg.curve_seeds, len(cfg.seeds)) * (cfg.points_1d + BASIN_POINTS)
    arm_e_masks = 4 * len(cfg.fractions)
    surface_forwards = 2 * cfg.grid_2d**2 * min(cfg.surface_examples, n_eval) / n_eval
    products = arm_e_masks * (cfg.trace_matvecs + cfg.eig_iters * min(cfg.eig_examples, n_eval) / n_eval)
    fisher = 1.5 * cfg.fisher_examples / n_eval
    forwards = (2 + arm_e_masks) * per_mask_forwards + surface_forwards
    return PRODUCT_GRADIENTS * products + FORWARD_GRADIENTS * forwards + fisher


def announce_study(cfg: Any, target: Any, eval_data: list, n_eval: int) -> str:
    """Time a gradient over the pool's first batch, scaled to the pool (weights, modes and RNG
    untouched), and print the estimate."""
    first = eval_data[:1]
    n_first = max(1, sum(int(b["input_ids"].shape[0]) for b in first))
    unit_s = time_gradient(target.model, target.objective, first) * n_eval / n_first
    return announce(study_units(cfg, n_eval), unit_s, "gradients over the pool")
