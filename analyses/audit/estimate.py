"""The audit's estimated time, printed before it starts (:mod:`analyses.cli.eta`).

The unit is one loss + gradient over the evaluation sequences, timed once (T). The audit's work in
those units: a Hessian-vector product ≈ 3.5 gradients (one costs 3–4 on CPU), a loss evaluation
(scan point, sharpness sample) ≈ 1/3 gradient, and the Fisher's per-sequence gradients ≈ 1.5 × their
share of the evaluation batch. The traces count their first Hutch++ round only: a trace that needs
more rounds (at most ``trace_max_matvecs`` products) takes longer, and the tqdm bar says by how much.
"""

from __future__ import annotations

from typing import Any

from analyses.cli.eta import announce, time_gradient

__all__ = ["audit_units", "announce_audit", "PRODUCT_GRADIENTS", "POINT_GRADIENTS"]

PRODUCT_GRADIENTS = 3.5
POINT_GRADIENTS = 1 / 3


def audit_units(cfg: Any, n_blocks: int, n_params: int) -> float:
    """The audit's work in gradients over the evaluation sequences (see the module docstring)."""
    eig = min(cfg.eig_max_iter, n_params)
    products = eig + cfg.full_trace_matvecs + (4 if cfg.hvp_mode == "auto" else 0)
    if cfg.block_curvature:
        products += n_blocks * (eig + cfg.trace_matvecs)
    points = (n_blocks + 1) * len(cfg.seeds) * cfg.points_1d + cfg.avg_samples + 1
    fisher = 1.5 * cfg.fisher_examples / cfg.eval_examples
    return PRODUCT_GRADIENTS * products + POINT_GRADIENTS * points + fisher + cfg.worst_steps + 1


def announce_audit(cfg: Any, target: Any, eval_data: list, n_blocks: int, n_params: int) -> str:
    """Time one gradient over ``eval_data`` (weights, modes and RNG untouched) and print the estimate."""
    unit_s = time_gradient(target.model, target.objective, eval_data)
    return announce(audit_units(cfg, n_blocks, n_params), unit_s, "gradients")
