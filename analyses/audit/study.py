"""Sensitivity audit of a checkpoint: where is the loss curved, and which blocks is it sensitive to?

For a model and held-out data (the MLM loss for masked LMs, next-token loss for causal LMs):

1. **Fisher**: the diagonal empirical Fisher Fᵢᵢ = (1/N) Σₙ (∂sₙ/∂θᵢ)² on ``fisher_examples``
   sequences, reduced per tensor and per block (mean), with its convergence curve;
2. **blocks**: the parameters grouped into ``embeddings``, ``layer.<i>`` (names with ``.<i>.`` after
   ``layer``/``layers``/``h``/``block``/``blocks``) and ``head`` (everything else), as
   :func:`landscape.params.layer_group` groups them. Tied weights count once, in the block of
   their first name (BERT's decoder weight is the word-embedding tensor: ``embeddings``);
3. per block, on ``eval_examples`` other sequences: the top eigenvalue λ₁ (Lanczos) and the trace
   (Hutch++) of the Hessian block H_bb, and a **1D sensitivity curve** L(θ + α·d_b) for a
   filter-normalized random direction d_b that moves only that block (one per seed);
4. **overall**: λ₁ and tr(H) of the full Hessian, a full-model 1D scan with its curvature at the
   origin (quadratic fit) and basin width, average-case sharpness E‖δ‖≈r [L(θ+δ)] − L(θ) and
   worst-case sharpness max_{‖δ‖≤r} L(θ+δ) − L(θ) (projected ascent, a lower bound), r = radius·‖θ‖.

Outputs under ``out``: ``result.json`` (fields :data:`RESULT_FIELDS`), ``fisher.safetensors``,
``arrays/sensitivity.npz`` (``alphas [n]``, ``blocks [B]``, ``losses [B, S, n]``, ``full [S, n]``)
plus one scan ``.npz`` per curve, ``parts/`` (one JSON per finished block, for ``resume``),
``figures/*.png``, ``report.md`` and a self-contained ``report.html``. The model's weights, buffers
and train/eval flags are restored exactly, also when the audit raises midway.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from analyses.audit.adaptive import block_curvature
from analyses.audit.estimate import announce_audit
from analyses.cli.config_flags import CliArg, seed_count, symmetric_range
from analyses.common import Target, heldout_texts, load_target, read_texts, split_examples
from analyses.study import FolderResult, Resume, Study, TextSettings, register, result_settings, setting
from landscape import curvature, fisher, scans, sharpness
from landscape.params import ParamSpace, group_note, layer_group, layer_order
from landscape.perturb import preserved
from landscape.scans import directions
from landscape.util import data_fingerprint, settings_fingerprint, versions, weights_fingerprint

RESULT_FIELDS = ("config", "blocks", "fisher", "overall", "meta", "out")
BLOCK_FIELDS = ("tensors", "n_params", "top_eigenvalue", "trace", "trace_stderr", "trace_noisy", "trace_matvecs",
                "trace_per_param", "eig_converged", "n_matvecs", "sensitivity")
OVERALL_FIELDS = ("n_params", "top_eigenvalue", "trace", "trace_stderr", "trace_noisy", "trace_matvecs",
                  "trace_per_param", "curvature",
                  "basin_width", "loss0", "avg_sharpness", "avg_sharpness_stderr", "worst_sharpness", "radius",
                  "n_matvecs", "curve")
FIGURES = ("audit", "fisher", "convergence", "sensitivity")


def _texts_file(path: str | None, args: Any) -> list[str] | None:
    return read_texts(path)


@dataclass
class AuditConfig(TextSettings):
    """Settings; the defaults audit the embedded default model in about two minutes on 2 CPU cores."""

    checkpoint: str = setting("default", "local Hugging Face checkpoint directory, .safetensors or .pt file; 'default' "
                              "audits the embedded default model", positional=True,
                              affects="nothing")  # the weights fingerprint stands for it
    out: str = setting("", "output folder (default: runs/audit-<checkpoint name>)", affects="nothing")
    fisher_examples: int = setting(24, "held-out sequences for the Fisher (≥ 1)", flag="--examples")
    eval_examples: int = setting(8, "held-out sequences for curvature, scans, sharpness (≥ 1)")
    batch_size: int = setting(8, "sequences per batch (≥ 1)")
    max_length: int = setting(128, "tokens per sequence at most (≥ 2; capped at the model's positions)")
    texts: list[str] | None = setting(None, "UTF-8 file of texts, one per line, or .csv / .jsonl with labels for "
                                      "sequence classifiers (default: the held-out stdlib docstrings)",
                                      cli=CliArg(type=str, metavar="FILE", convert=_texts_file))
    seeds: tuple[int, ...] = setting((0,), "direction seeds per sensitivity curve (≥ 1: seed, seed+1, ...)",
                                     cli=seed_count(1))
    points_1d: int = setting(9, "points of each 1D curve (≥ 5)", flag="--points")
    range_1d: float = setting(1.0, "curve coefficients α", flag="--range", cli=symmetric_range(1.0))
    one_dim: Literal["zero", "filter", "radial"] = setting(
        "filter", "biases/LayerNorm: moved as one filter (every block gets a direction), held at zero, or radial")
    block_curvature: bool = setting(True, "compute the per-block Hessian (off: curves only)")
    # "auto" times both HVP modes first (4 extra products); on CPU double backward won on the default
    # model (3.9 s vs 5.0 s per product under load) and forward-over-reverse's first call is slow
    hvp_mode: Literal["auto", "double_backward", "forward_over_reverse"] = setting(
        "double_backward", "Hessian-vector product mode (auto times both first)")
    eig_tol: float = setting(1e-2, "relative tolerance of the top eigenvalue")
    eig_max_iter: int = setting(10, "Lanczos matvecs at most, per block (≥ 2)", flag="--eig-iters")
    trace_matvecs: int = setting(6, "Hutch++ matvecs per block, first round (≥ 3, and ≥ 6 for an error estimate)")
    full_trace_matvecs: int = setting(0, "Hutch++ matvecs of the full model, first round (0: 1.5 × --trace-matvecs)")
    trace_rel_tol: float = setting(0.1, "add Hutch++ rounds of twice the products until stderr ≤ this × |trace|")
    trace_max_matvecs: int = setting(48, "Hutch++ products per trace at most, all rounds together (then: noisy)")
    radius: float = setting(0.01, "sharpness radius as a fraction of ‖θ‖ (> 0)")
    avg_samples: int = setting(6, "random perturbations of the average-case sharpness")
    worst_steps: int = setting(3, "ascent steps of the worst-case sharpness")
    basin_delta: float = setting(1.0, "basin = where the loss stays below L(θ₀) + basin_delta nats")
    mask_prob: float = setting(0.15, "MLM mask probability")
    seed: int = setting(0, "random seed (masks, directions, probes)")
    device: str = setting("cpu", "torch device, e.g. cpu or cuda:0", affects="nothing")
    resume: bool = setting(False, "reuse finished parts and scan points in --out (refused under other settings)",
                           affects="nothing")

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.full_trace_matvecs:
            self.full_trace_matvecs = max(3, (3 * self.trace_matvecs) // 2)
        if not self.out:
            name = "default" if self.checkpoint in ("",
                                                    "default") else Path(self.checkpoint).expanduser().resolve().name
            self.out = f"runs/audit-{name}"
        if not self.seeds:
            raise ValueError("give at least one direction seed.")
        if self.fisher_examples < 1 or self.eval_examples < 1:
            raise ValueError("fisher_examples and eval_examples must be at least 1.")
        if self.points_1d < 5 or not self.range_1d > 0:
            raise ValueError(f"use at least 5 scan points and a positive range (got {self.points_1d}, "
                             f"{self.range_1d}).")
        if self.trace_matvecs < 3 or self.full_trace_matvecs < 3:
            raise ValueError("Hutch++ needs trace_matvecs ≥ 3 (it uses multiples of 3).")
        if self.hvp_mode not in ("auto", *curvature.MODES):
            raise ValueError(f"hvp_mode must be 'auto' or one of {curvature.MODES}, got {self.hvp_mode!r}.")
        if self.eig_max_iter < 2:
            raise ValueError("eig_max_iter must be at least 2.")
        if not self.radius > 0 or self.avg_samples < 1 or self.worst_steps < 1:
            raise ValueError("radius must be positive and avg_samples, worst_steps at least 1.")
        if not self.trace_rel_tol > 0:
            raise ValueError(f"trace_rel_tol must be positive (e.g. 0.1), got {self.trace_rel_tol}.")


@dataclass
class AuditResult(FolderResult):
    """What :func:`run` returns and writes to ``result.json`` (see the module docstring)."""

    config: dict[str, Any]
    blocks: dict[str, dict[str, Any]]
    fisher: dict[str, Any]
    overall: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    out: str = ""

    def summary_table(self) -> str:
        """Per-block and overall numbers as a plain-text table."""
        from analyses.audit.report import summary_table

        return summary_table(self.to_dict())


# ----------------------------------------------------------------------------- pieces


def audit_blocks(model: nn.Module) -> dict[str, list[str]]:
    """Block name (``embeddings``, ``layer.<i>``, ``head``) -> canonical parameter names, in order."""
    groups: dict[str, list[str]] = {}
    for name in ParamSpace(model).names:
        groups.setdefault(layer_group(name), []).append(name)
    return {g: groups[g] for g in sorted(groups, key=layer_order)}


def block_space(model: nn.Module, names: list[str]) -> ParamSpace:
    """A :class:`ParamSpace` holding exactly ``names``."""
    return ParamSpace.from_names(model, names)


def _sensitivity(cfg: AuditConfig, target: Target, data: list, space: ParamSpace, tag: str,
                 arrays: Path) -> dict[str, Any]:
    """1D scans along block-masked filter-normalized directions, one per seed, and their summaries."""
    alphas = scans.coefficients(-cfg.range_1d, cfg.range_1d, cfg.points_1d)
    losses: list[list[float]] = []
    per_seed: list[dict[str, Any]] = []
    for s in cfg.seeds:
        d = directions.random(target.model, seed=s, normalization="filter", one_dim=cfg.one_dim, params=space)
        curve = scans.scan_1d(target.model, target.objective, data, d, alphas, path=arrays / f"scan_{tag}_s{s}.npz",
                             resume=cfg.resume, progress=False, distributed=False)
        loss = curve.values["loss"]
        fit = sharpness.curvature_at_origin(curve)
        width = sharpness.basin_width(curve, delta=cfg.basin_delta)
        per_seed.append({"seed": s, "curvature": fit.curvature, "basin_width": float(width.width),
                         "loss_at_edge": sharpness.loss_rise_at_edge(curve), "direction_norm": d.norm()})
        losses.append(loss.tolist())
    summary = {k: _finite(np.mean([r[k] for r in per_seed])) for k in ("curvature", "basin_width", "loss_at_edge")}
    for r in per_seed:  # no threshold crossing inside the scanned range: width unknown (null in JSON)
        r["basin_width"] = _finite(r["basin_width"])
    return summary | {
        "loss0": float(losses[0][sharpness.origin_index(alphas)]), "per_seed": per_seed,
        "curve": {"alphas": alphas.tolist(), "losses": losses},
    }


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _curvature(cfg: AuditConfig, target: Target, data: list, space: ParamSpace, mode: curvature.ModeChoice,
               matvecs: int, check: bool = False) -> tuple[dict[str, Any], str]:
    op = curvature.HessianOperator(target.model, target.objective, data, params=space, mode=mode,
                                   check_determinism=check)
    return block_curvature(op, eig_tol=cfg.eig_tol, eig_max_iter=cfg.eig_max_iter, num_matvecs=matvecs,
                           max_matvecs=cfg.trace_max_matvecs, rel_tol=cfg.trace_rel_tol, seed=cfg.seed), op.mode


# ----------------------------------------------------------------------------- run


def _check_checkpoint(checkpoint: str) -> None:
    """Refuse a checkpoint path that does not exist or is not a Hugging Face folder, before loading."""
    if checkpoint in ("", "default"):
        return
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; give a local Hugging Face checkpoint "
                                "directory (or omit it to audit the embedded default model).")
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a Hugging Face checkpoint directory (no config.json); point to "
                                "the folder that save_pretrained wrote.")


def _load(cfg: AuditConfig, target: Target | None) -> tuple[Target, list, list]:
    """Stage 1: the target and its Fisher / evaluation split (disjoint sequences)."""
    if target is None:
        _check_checkpoint(cfg.checkpoint)
        n = cfg.fisher_examples + cfg.eval_examples
        texts = cfg.texts
        if texts is None and cfg.checkpoint not in (None, "", "default"):
            texts = heldout_texts(n)
        target = load_target(cfg.checkpoint, examples=n, batch_size=cfg.batch_size, device=cfg.device, seed=cfg.seed,
                             texts=texts, max_length=cfg.max_length, mask_prob=cfg.mask_prob,
                             tokenizer=cfg.tokenizer, allow_unk=cfg.allow_unk)
    fisher_data, eval_data = split_examples(target.data, cfg.fisher_examples, cfg.eval_examples, cfg.batch_size)
    return target, fisher_data, eval_data


def run(config: AuditConfig | None = None, target: Target | None = None) -> AuditResult:
    """Audit ``target`` (default: ``config.checkpoint``) and write every output under ``config.out``."""
    cfg = config or AuditConfig()
    t_start = time.perf_counter()
    target, fisher_data, eval_data = _load(cfg, target)
    out = Path(cfg.out)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    parts = Resume(out, audit_settings(cfg, target, fisher_data + eval_data), cfg.resume)
    announce_audit(cfg, target, eval_data, len(audit_blocks(target.model)), ParamSpace(target.model).dim)
    with preserved(target.model) as state:
        result = _audit(cfg, target, fisher_data, eval_data, parts, t_start)
    result.meta["restored"] = state.is_restored()
    result.save(out)
    from analyses.audit.report import write_outputs

    write_outputs(result, out)
    result.meta["timings"]["total_s"] = time.perf_counter() - t_start
    result.save(out)
    return result


def audit_settings(cfg: AuditConfig, target: Target, data: list) -> dict[str, Any]:
    """Everything the audit's numbers depend on: the config, the weights and the data themselves."""
    texts = None if cfg.texts is None else [list(cfg.texts), getattr(cfg.texts, "labels", None)]
    return result_settings(cfg) | {
        "texts": None if texts is None else settings_fingerprint({"texts": texts}),
        "weights": weights_fingerprint(target.model), "data": data_fingerprint(data),
        "objective": target.objective.describe()}


def _fisher(cfg: AuditConfig, target: Target, data: list, full: ParamSpace, out: Path) -> fisher.FisherDiagonal:
    """Stage 2: the empirical Fisher (reused from ``out`` on resume)."""
    path = out / "fisher.safetensors"
    if cfg.resume and path.exists():
        return fisher.FisherDiagonal.load(path, model=target.model)
    F = fisher.diagonal(target.model, target.objective, data, estimator="empirical", params=full, seed=cfg.seed,
                        progress=cfg.progress, convergence=True)
    F.save(path)
    return F


def _blocks(cfg: AuditConfig, target: Target, data: list, parts: Resume,
            hvp_mode: curvature.ModeChoice) -> dict[str, dict[str, Any]]:
    """Stage 4: per block, the Hessian block's λ₁ and trace and the 1D sensitivity curves."""
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(audit_blocks(target.model).items(), desc="audit blocks", disable=not cfg.progress)
    for name, names in bar:
        bar.set_postfix_str(name)
        entry = parts.get(f"block_{name}")
        if entry is None:
            space = block_space(target.model, names)
            entry = {"tensors": names, "n_params": space.dim}
            if cfg.block_curvature:
                entry.update(_curvature(cfg, target, data, space, hvp_mode, cfg.trace_matvecs)[0])
            else:
                entry.update({k: None for k in BLOCK_FIELDS if k not in ("tensors", "n_params", "sensitivity")})
            entry["sensitivity"] = _sensitivity(cfg, target, data, space, name, parts.out / "arrays")
            parts.put(f"block_{name}", entry)
        results[name] = entry
    return results


def _audit(cfg: AuditConfig, target: Target, fisher_data: list, eval_data: list, parts: Resume,
           t_start: float) -> AuditResult:
    """Stages 2 to 4 (Fisher, overall, blocks), each timed, then the result object."""
    full, timings = ParamSpace(target.model), {}
    t0 = time.perf_counter()
    F = _fisher(cfg, target, fisher_data, full, parts.out)
    timings["fisher_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    overall = parts.get("overall")
    if overall is None:
        overall = _overall(cfg, target, eval_data, full, parts.out / "arrays")
        parts.put("overall", overall)
    timings["overall_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = _blocks(cfg, target, eval_data, parts, overall["hvp_mode"])
    timings["blocks_s"] = time.perf_counter() - t0
    _save_arrays(parts.out / "arrays" / "sensitivity.npz", results, overall)
    timings["total_s"] = time.perf_counter() - t_start
    return _result(cfg, target, F, full, results, overall, timings)


def _result(cfg: AuditConfig, target: Target, F: fisher.FisherDiagonal, full: ParamSpace,
            results: dict[str, dict[str, Any]], overall: dict[str, Any], timings: dict[str, float]) -> AuditResult:
    """Stage 5: the result object."""
    total = sum(float(s.double().sum()) for s in F.scores.values())
    conv = F.convergence
    return AuditResult(
        config={k: v for k,
                v in asdict(cfg).items() if k != "texts"} | {"texts": None if cfg.texts is None else len(cfg.texts)},
        blocks=results,
        fisher={"path": "fisher.safetensors", "per_tensor": F.per_tensor("mean"), "per_layer": F.per_layer("mean"),
                "per_layer_sum": F.per_layer("sum"), "mean": total / full.dim,
                "convergence": None if conv is None else conv.to_dict(), "meta": F.meta},
        overall=overall,
        meta={"target": target.name, "task": target.task, "objective": target.objective.describe(),
              "model_class": type(target.model).__name__, "n_params": full.dim, "n_tensors": len(full),
              "fisher_examples": cfg.fisher_examples, "eval_examples": cfg.eval_examples,
              "direction": {"normalization": "filter", "one_dim": cfg.one_dim, "distribution": "gaussian",
                            "block_masking": "ParamSpace of the block (other blocks get no direction)"},
              "estimators": {"fisher": "empirical diagonal, per-sequence gradients",
                             "top_eigenvalue": f"lanczos, tol {cfg.eig_tol}, at most {cfg.eig_max_iter} matvecs",
                             "trace": "hutch++", "worst_sharpness": "projected normalized gradient ascent (lower "
                                                                    "bound)"},
              "block_notes": {g: note for g in results if (note := group_note(g))},
              "timings": timings, "resumed": cfg.resume, "versions": versions(), "checkpoint": target.meta},
        out=str(cfg.out),
    )


def _overall(cfg: AuditConfig, target: Target, data: list, full: ParamSpace, arrays: Path) -> dict[str, Any]:
    model, obj = target.model, target.objective
    curv, mode = _curvature(cfg, target, data, full, cfg.hvp_mode, cfg.full_trace_matvecs, check=True)
    sens = _sensitivity(cfg, target, data, full, "full", arrays)
    theta = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in full.params.values()))
    r = cfg.radius * theta
    avg = sharpness.average_sharpness(model, obj, data, rho=r / math.sqrt(full.dim), num_samples=cfg.avg_samples,
                                      params=full, seed=cfg.seed, progress=False)
    worst = sharpness.worst_case_sharpness(model, obj, data, rho=r, steps=cfg.worst_steps, adaptive=False, params=full,
                                           seed=cfg.seed, progress=False)
    return curv | {
        "n_params": full.dim, "hvp_mode": mode, "theta_norm": theta, "radius": r,
        "curvature": sens["curvature"], "basin_width": sens["basin_width"], "loss_at_edge": sens["loss_at_edge"],
        "loss0": float(avg.loss0), "avg_sharpness": float(avg.value),
        "avg_sharpness_stderr": _finite(avg.stderr),
        "worst_sharpness": float(worst.value), "curve": sens["curve"], "per_seed": sens["per_seed"],
    }


def _save_arrays(path: Path, blocks: dict[str, dict[str, Any]], overall: dict[str, Any]) -> None:
    from landscape.util.files import write_npz

    write_npz(path, {
        "alphas": np.asarray(overall["curve"]["alphas"]),
        "blocks": np.asarray(list(blocks), dtype=str),
        "losses": np.asarray([b["sensitivity"]["curve"]["losses"] for b in blocks.values()], dtype=np.float64),
        "full": np.asarray(overall["curve"]["losses"], dtype=np.float64),
        "top_eigenvalue": np.asarray([np.nan if b["top_eigenvalue"] is None else b["top_eigenvalue"]
                                      for b in blocks.values()]),
        "trace": np.asarray([np.nan if b["trace"] is None else b["trace"] for b in blocks.values()]),
    })


def summary(result: AuditResult) -> str:
    """The audit's table, as ``landscape audit`` prints it."""
    return result.summary_table()


#: one line for ``landscape analyze --help``
HELP = "sensitivity audit of a checkpoint: Fisher, Hessian blocks, per-block 1D curves, sharpness, HTML report"
#: the command's long help (``landscape analyze NAME --help``)
DESCRIPTION = ("Sensitivity audit of a checkpoint: per-tensor and per-layer Fisher, per-block curvature and 1D "
               "sensitivity, overall sharpness; report.md and a self-contained report.html. Raise --examples, "
               "--eval-examples, --seeds, --points, --eig-iters and --trace-matvecs for tighter estimates (time grows "
               "about linearly).")


register(Study(name="audit", config=AuditConfig, run=run, summary=summary,
               help=HELP, description=DESCRIPTION, files="result.json, report.md, report.html and figures/"))
