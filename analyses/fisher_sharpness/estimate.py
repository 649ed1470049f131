"""The study's estimated time, printed before any cell starts, and the ``--budget`` cap.

The cap is in minutes on the reference machine (2 CPU cores) and is applied from the model's size
(parameters × tokens), not from a timing, so the settings a run uses, and its resume hash, do not
depend on this machine's load; the printed estimate is timed here.

The unit is one loss + gradient over one evaluation sequence, timed on the first model's first
batch (:func:`analyses.cli.eta.time_gradient`). Work is counted in gradients over the pool of N
sequences: a forward pass ≈ 1/3 gradient, a Hessian-vector product ≈ 3.5, both scaled by the share
of the pool they run on; a per-example Fisher gradient ≈ 1.5/N. With C = models × Fisher samples ×
mask draws cells and S seeds:

* every cell: one L(θ₀) pass and two passes per direction, for 2 arm-P halves, top and stratified
  at the main fraction under both constructions, random and bottom; the sweep's other fractions
  (top and stratified, both constructions) in the first mask draw of each Fisher sample;
* the first cell: arm P's "all", the curve seeds' 1D lines (``points_1d`` + about 6 basin points)
  for 7 masks, three 2D surfaces on ``surface_examples`` sequences, and per main-fraction mask the
  trace (``trace_matvecs`` products), the top eigenvalue (``eig_iters``) and the FD check (one
  product, two gradients) on ``eig_examples``; the other Fisher loss's masks (top, stratified);
* the Fisher: (models × samples + 1) × ``fisher_examples`` per-example gradients.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from analyses.cli.eta import announce, format_duration, time_gradient

__all__ = ["study_units", "fit_budget", "announce_study", "reference_sequence_s", "PRODUCT_GRADIENTS",
           "FORWARD_GRADIENTS", "REFERENCE_S_PER_PARAM_TOKEN"]

PRODUCT_GRADIENTS = 3.5
FORWARD_GRADIENTS = 1 / 3
BASIN_POINTS = 6
MAIN_MASKS = 4  # top, stratified, random, bottom at the main fraction (filter construction)
#: one loss + gradient per parameter and token on the reference machine (2 CPU cores), calibrated on the
#: default model quiet: 0.299 s per gradient over 128 sequences of 64 tokens, 686,080 parameters
REFERENCE_S_PER_PARAM_TOKEN = 5.3e-11


def reference_sequence_s(model: Any, data: list) -> float:
    """Seconds of one sequence's gradient on the reference machine: the model's parameters × the mean
    real tokens per sequence in ``data`` × :data:`REFERENCE_S_PER_PARAM_TOKEN`. It depends on the model
    and data only, so ``--budget`` lowers the same settings on any machine under any load."""
    n_params = sum(p.numel() for p in model.parameters())
    masks = [b["attention_mask"] if "attention_mask" in b else b["input_ids"].ne(-1) for b in data]
    tokens = float(sum(int(m.sum()) for m in masks)) / max(1, sum(int(m.shape[0]) for m in masks))
    return REFERENCE_S_PER_PARAM_TOKEN * n_params * tokens


def study_units(cfg: Any, n_eval: int) -> float:
    """The study's work in gradients over the ``n_eval``-sequence pool (see the module docstring)."""
    n = max(n_eval, 1)
    S = len(cfg.seeds)
    cells = cfg.models * cfg.fisher_samples * cfg.mask_draws
    per_cell = 1 + 2 * S * (2 + 4 + 2)  # arm P halves; main fraction: top/stratified × 2 constructions, 2 descriptive
    sweep = 2 * S * 4 * (len(cfg.fractions) - 1) * cfg.models * cfg.fisher_samples  # other fractions: first draw
    curves = min(cfg.curve_seeds, S) * (cfg.points_1d + BASIN_POINTS) * (3 + MAIN_MASKS)
    surfaces = 3 * cfg.grid_2d**2 * min(cfg.surface_examples, n) / n
    other_fisher = 1 + 2 * S * 4
    forwards = cells * per_cell + sweep + 2 * S + curves + surfaces + other_fisher
    eig_share = min(cfg.eig_examples, n) / n
    products = MAIN_MASKS * (cfg.trace_matvecs + (cfg.eig_iters + 1) * eig_share)
    gradients = MAIN_MASKS * 2 * eig_share + 1.5 * (cfg.models * cfg.fisher_samples + 1) * cfg.fisher_examples / n
    return FORWARD_GRADIENTS * forwards + PRODUCT_GRADIENTS * products + gradients


def _steps(cfg: Any) -> list[tuple[str, dict[str, Any]]]:
    """The reductions, in order: (what, new settings); each applies only if it lowers the estimate.

    Direction seeds and plot resolution go first, then the pool (down to 128), the sweep, the
    surfaces and Hessian-vector products, the pool again (down to 32), and last the levels of the
    hierarchy (mask draws, Fisher samples), since those decide what the interval covers."""
    seeds = tuple(cfg.seeds[:2])
    return [("--seeds 2", {"seeds": seeds, "curve_seeds": min(cfg.curve_seeds, 2)}),
            ("--curve-seeds 1", {"curve_seeds": 1}), ("--grid 7", {"grid_2d": min(cfg.grid_2d, 7)}),
            *((f"--eval-examples {n}", {"eval_examples": n}) for n in (256, 128) if n < cfg.eval_examples),
            (f"--fractions {cfg.fraction:g}", {"fractions": (cfg.fraction,)}),
            ("--grid 5 --surface-examples 8", {"grid_2d": min(cfg.grid_2d, 5),
                                                "surface_examples": min(cfg.surface_examples, 8)}),
            ("--trace-matvecs 2 --eig-iters 2", {"trace_matvecs": 2, "eig_iters": min(cfg.eig_iters, 2)}),
            *((f"--eval-examples {n}", {"eval_examples": n}) for n in (64, 32) if n < cfg.eval_examples),
            ("--mask-draws 1", {"mask_draws": 1}),
            ("--fisher-samples 2", {"fisher_samples": min(cfg.fisher_samples, 2)}),
            ("--points 5 --eig-examples 8", {"points_1d": min(cfg.points_1d, 5), "eig_examples": 8})]


def fit_budget(cfg: Any, sequence_s: float) -> tuple[Any, list[str], float, float]:
    """(settings lowered until the estimate fits ``cfg.budget`` minutes, what was lowered, the estimate
    before and after in seconds). ``sequence_s``: one gradient over one sequence, in seconds."""

    def seconds(c: Any) -> float:
        return study_units(c, c.eval_examples) * sequence_s * c.eval_examples

    before = seconds(cfg)
    if not cfg.budget:
        return cfg, [], before, before
    lowered: list[str] = []
    for what, change in _steps(cfg):
        if seconds(cfg) <= cfg.budget * 60:
            break
        new = dataclasses.replace(cfg, **change)
        if seconds(new) < seconds(cfg):
            cfg = new
            lowered.append(what)
    return cfg, lowered, before, seconds(cfg)


def announce_study(cfg: Any, target: Any, eval_data: list) -> Any:
    """Lower the settings to ``--budget`` on the reference machine if needed (deterministic: from the
    model's size, :func:`reference_sequence_s`), time one gradient per sequence on the pool's first
    batch, print this machine's estimate (and what was lowered), and return the settings to run."""
    first = eval_data[:1]
    fitted, lowered, before, after = fit_budget(cfg, reference_sequence_s(target.model, eval_data))
    if lowered:
        print(f"the full settings would take {format_duration(before)} on the reference 2-core CPU, over --budget "
              f"{cfg.budget:g} min: lowered {', '.join(lowered)} (set them yourself, or --budget 0, to choose "
              "otherwise)", flush=True)
        if after > cfg.budget * 60:
            print(f"still over the budget at the smallest settings: {format_duration(after)}", flush=True)
    n_first = max(1, sum(int(b["input_ids"].shape[0]) for b in first))
    sequence_s = time_gradient(target.model, target.objective, first) / n_first
    announce(study_units(fitted, fitted.eval_examples), sequence_s * fitted.eval_examples,
             "gradients over the pool")
    return fitted
