"""The flagship study: is the loss sharper along high-Fisher parameters?

Sharma et al. (2024) argue that the parameters with the highest Fisher scores on the pretraining
(MLM) objective are the ones the loss is most sensitive to, so perturbing them sharpens the loss
more than perturbing the same number of random or low-Fisher parameters. This analysis tests that:

1. the diagonal empirical Fisher of the MLM loss on held-out text, with its convergence curve;
2. top / random / bottom masks of matched size, at element and tensor granularity, for each
   fraction. Masks range over the matrix parameters (≥ 2-D tensors: embeddings and weights);
   biases and LayerNorm get a zero direction, as in the paper;
3. for every mask and direction seed: filter-normalized masked directions scaled to the norm of a
   full direction (``match_full_norm``, so all masks move the weights equally far), a 1D scan and a
   2D scan of the MLM loss, curvature at the origin, basin width, and average-case and worst-case
   sharpness in a ball of the same radius for every mask;
4. per mask: the top eigenvalue and the trace of the Hessian restricted to the mask;
5. mean ± std over seeds per mask, and a verdict (:mod:`analyses.fisher_sharpness.verdict`) per group.

Everything is written to ``out``: ``result.json``, ``fisher.safetensors``, ``arrays/`` (one
``.npz`` per scan), ``parts/`` (one JSON per finished mask, so an interrupted run resumes),
``figures/`` and ``report.md``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from analyses.common import FolderResult, Target, load_target, split_examples
from analyses.fisher_sharpness.verdict import Stat, verdict
from landscape import directions, fisher, hessian, scan, sharpness
from landscape.util.files import write_json
from landscape.params import ParamMask, ParamSpace
from landscape.util import versions

WHICHES = ("top", "random", "bottom")
SEED_METRICS = ("curvature", "basin_width", "loss_at_edge", "avg_sharpness", "worst_sharpness")
MASK_METRICS = ("top_eigenvalue", "trace", "trace_per_dim")


@dataclass
class FisherSharpnessConfig:
    """Settings; the defaults fit the embedded default model in a few minutes on 2 CPU cores."""

    checkpoint: str = "default"
    out: str = "runs/fisher-sharpness"
    fisher_examples: int = 64
    eval_examples: int = 8
    batch_size: int = 8
    fractions: tuple[float, ...] = (0.1, 0.5)
    granularities: tuple[str, ...] = ("element", "tensor")
    seeds: tuple[int, ...] = (0, 1, 2)
    points_1d: int = 15
    range_1d: float = 1.0
    grid_2d: int = 7
    range_2d: float = 1.0
    basin_delta: float = 1.0  # basin width at min(loss) + basin_delta nats
    radius: float = 0.05  # sharpness ball radius, as a fraction of ‖θ‖ over the masked space
    avg_samples: int = 8
    worst_steps: int = 5
    trace_matvecs: int = 9
    eig_tol: float = 1e-2
    eig_max_iter: int = 10  # Lanczos steps per mask; a capped run is recorded as not converged
    hvp_mode: str = "double_backward"  # 'auto' would time both modes (4 extra products) per mask
    mask_prob: float = 0.15
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0.0 < f <= 1.0 for f in self.fractions):
            raise ValueError(f"fractions must lie in (0, 1], got {self.fractions}.")
        bad = [g for g in self.granularities if g not in ("element", "tensor")]
        if bad or not self.granularities:
            raise ValueError(f"granularities must be 'element' and/or 'tensor', got {self.granularities}.")
        if len(self.seeds) < 1:
            raise ValueError("give at least one direction seed (three or more for a spread).")
        if self.points_1d < 5 or self.grid_2d < 3:
            raise ValueError("use at least 5 points in 1D and a 3×3 grid in 2D.")
        if self.fisher_examples < 1 or self.eval_examples < 1:
            raise ValueError("fisher_examples and eval_examples must be at least 1.")


@dataclass
class FisherSharpnessResult(FolderResult):
    """What :func:`run` returns and writes to ``result.json``."""

    config: dict[str, Any]
    masks: dict[str, dict[str, Any]]  # key -> {which, fraction, granularity, count, metrics}
    verdicts: dict[str, dict[str, Any]]  # "element@0.1" -> verdict
    fisher: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    out: str = ""



def mask_key(which: str, granularity: str, fraction: float) -> str:
    return f"{which}-{granularity}-{fraction:g}"


def group_key(granularity: str, fraction: float) -> str:
    return f"{granularity}@{fraction:g}"


def matrix_space(model: Any) -> ParamSpace:
    """The ≥ 2-D trainable tensors (embeddings and weight matrices), tied ones once."""
    full = ParamSpace(model)
    names = [n for n, p in full.params.items() if p.ndim >= 2]
    return ParamSpace.from_names(model, names)


def _theta_norm(space: ParamSpace) -> float:
    import torch

    return float(torch.linalg.vector_norm(torch.stack([p.detach().norm() for p in space.params.values()])))


def _seed_metrics(cfg: FisherSharpnessConfig, target: Target, data: list, mask: ParamMask, seed: int,
                  arrays: Path, key: str, radius: float) -> dict[str, float]:
    model, obj = target.model, target.objective
    d1 = directions.random(model, seed=seed, normalization="filter", one_dim="zero", params=mask, mask_scaling="match_full_norm")
    d2 = directions.random(model, seed=seed + 10_000, normalization="filter", one_dim="zero", params=mask, mask_scaling="match_full_norm")
    alphas = scan.coefficients(-cfg.range_1d, cfg.range_1d, cfg.points_1d)
    grid = scan.coefficients(-cfg.range_2d, cfg.range_2d, cfg.grid_2d)
    curve = scan.scan_1d(model, obj, data, d1, alphas, path=arrays / f"{key}_s{seed}_1d.npz", resume=cfg.resume,
                         progress=False, distributed=False)
    scan.scan_2d(model, obj, data, d1, d2, grid, grid, path=arrays / f"{key}_s{seed}_2d.npz", resume=cfg.resume,
                 progress=False, distributed=False)
    fit = sharpness.curvature_at_origin(curve)
    width = sharpness.basin_width(curve, delta=cfg.basin_delta)
    rho = radius / math.sqrt(mask.count())  # the same expected ‖δ‖ = radius for every mask
    avg = sharpness.average_sharpness(model, obj, data, rho=rho, num_samples=cfg.avg_samples, params=mask, seed=seed, progress=False)
    worst = sharpness.worst_case_sharpness(model, obj, data, rho=radius, steps=cfg.worst_steps, adaptive=False,
                                           params=mask, seed=seed, progress=False)
    edge = sharpness.loss_rise_at_edge(curve)
    return {
        "curvature": float(fit.curvature),
        "basin_width": float(width.width),
        "loss_at_edge": edge,
        "avg_sharpness": float(avg.value),
        "worst_sharpness": float(worst.value),
        "loss0": float(avg.loss0),
    }


def _mask_curvature(cfg: FisherSharpnessConfig, target: Target, data: list, mask: ParamMask,
                    check_determinism: bool) -> dict[str, Any]:
    op = hessian.HessianOperator(target.model, target.objective, data, params=mask, mode=cfg.hvp_mode,
                                 check_determinism=check_determinism)
    eig = hessian.top_eigenvalues(op, k=1, tol=cfg.eig_tol, seed=cfg.seed, max_iter=cfg.eig_max_iter, progress=False)
    tr = hessian.trace(op, num_matvecs=cfg.trace_matvecs, seed=cfg.seed, progress=False)
    return {
        "top_eigenvalue": float(eig.values[0]),
        "trace": float(tr.estimate),
        "trace_stderr": float(tr.stderr),
        "trace_per_dim": float(tr.estimate) / mask.count(),
        "eig_converged": bool(getattr(eig, "converged", True)),
        "n_matvecs": int(eig.n_matvecs + tr.n_matvecs),
    }


def run(config: FisherSharpnessConfig | None = None, target: Target | None = None) -> FisherSharpnessResult:
    """Run the study and write every output under ``config.out``; see the module docstring."""
    cfg = config or FisherSharpnessConfig()
    t_start = time.perf_counter()
    out = Path(cfg.out)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    if target is None:
        target = load_target(cfg.checkpoint, examples=cfg.fisher_examples + cfg.eval_examples,
                             batch_size=cfg.batch_size, device=cfg.device, seed=cfg.seed, mask_prob=cfg.mask_prob)
    fisher_data, eval_data = split_examples(target.data, cfg.fisher_examples, cfg.eval_examples, cfg.batch_size)
    space = matrix_space(target.model)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    fisher_path = out / "fisher.safetensors"
    if cfg.resume and fisher_path.exists():
        F = fisher.FisherDiagonal.load(fisher_path, model=target.model)
    else:
        F = fisher.diagonal(target.model, target.objective, fisher_data, estimator="empirical",
                            params=space, seed=cfg.seed, progress=cfg.progress, convergence=True)
        F.save(fisher_path)
    timings["fisher_s"] = time.perf_counter() - t0

    radius = cfg.radius * _theta_norm(space)
    masks: dict[str, dict[str, Any]] = {}
    plan = [(g, f, w) for g in cfg.granularities for f in cfg.fractions for w in WHICHES]
    bar = tqdm(plan, desc="masks", disable=not cfg.progress)
    t0 = time.perf_counter()
    for granularity, fraction, which in bar:
        key = mask_key(which, granularity, fraction)
        bar.set_postfix_str(key)
        part = out / "parts" / f"{key}.json"
        if cfg.resume and part.exists():
            masks[key] = json.loads(part.read_text())
            continue
        mask = F.mask(fraction, which=which, granularity=granularity, seed=cfg.seed)
        per_seed = [_seed_metrics(cfg, target, eval_data, mask, s, out / "arrays", key, radius) for s in cfg.seeds]
        curv = _mask_curvature(cfg, target, eval_data, mask, check_determinism=not masks)  # once per run
        entry = {
            "which": which, "granularity": granularity, "fraction": fraction,
            "count": mask.count(), "n_tensors": len(mask.names),
            "per_seed": per_seed, "curvature": curv,
            "metrics": {m: Stat.of([r[m] for r in per_seed]).to_dict() for m in SEED_METRICS}
            | {m: Stat.of([curv[m]]).to_dict() for m in MASK_METRICS},
        }
        write_json(part, entry)
        masks[key] = entry
    timings["masks_s"] = time.perf_counter() - t0

    verdicts = {}
    for granularity in cfg.granularities:
        for fraction in cfg.fractions:
            stats = {w: {m: Stat(**v) for m, v in masks[mask_key(w, granularity, fraction)]["metrics"].items()}
                     for w in WHICHES}
            verdicts[group_key(granularity, fraction)] = verdict(stats)
    timings["total_s"] = time.perf_counter() - t_start
    conv = F.convergence
    result = FisherSharpnessResult(
        config=asdict(cfg),
        masks=masks,
        verdicts=verdicts,
        fisher={
            "path": fisher_path.name,
            "per_tensor": F.per_tensor("mean"),
            "per_layer": F.per_layer("mean"),
            "convergence": None if conv is None else conv.to_dict(),
            "meta": F.meta,
        },
        meta={
            "target": target.name, "task": target.task, "objective": target.objective.describe(),
            "fisher_examples": cfg.fisher_examples, "eval_examples": cfg.eval_examples,
            "space": {"tensors": len(space), "dim": space.dim, "policy": "matrices only; biases/LayerNorm get zero direction"},
            "direction": {"normalization": "filter", "one_dim": "zero", "mask_scaling": "match_full_norm"},
            "radius": radius, "timings": timings, "versions": versions(), "checkpoint": target.meta,
        },
        out=str(out),
    )
    write_json(out / "result.json", result.to_dict())
    from analyses.fisher_sharpness.report import write_outputs

    write_outputs(result, out)
    return result
