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

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from analyses.common import FolderResult, Target, heldout_texts, load_target, split_examples
from landscape import curvature, fisher, scans, sharpness
from landscape.params import ParamSpace, group_note, layer_group, layer_order
from landscape.perturb import preserved
from landscape.scans import directions
from landscape.util import data_fingerprint, settings_fingerprint, versions, weights_fingerprint
from landscape.util.files import read_json, write_json

RESULT_FIELDS = ("config", "blocks", "fisher", "overall", "meta", "out")
BLOCK_FIELDS = ("tensors", "n_params", "top_eigenvalue", "trace", "trace_stderr", "trace_per_param",
                "eig_converged", "n_matvecs", "sensitivity")
OVERALL_FIELDS = ("n_params", "top_eigenvalue", "trace", "trace_stderr", "trace_per_param", "curvature",
                  "basin_width", "loss0", "avg_sharpness", "avg_sharpness_stderr", "worst_sharpness", "radius",
                  "n_matvecs", "curve")
FIGURES = ("audit", "fisher", "convergence", "sensitivity")


@dataclass
class AuditConfig:
    """Settings; the defaults audit the embedded default model in about two minutes on 2 CPU cores."""

    checkpoint: str = "default"
    out: str = "runs/audit"
    fisher_examples: int = 24
    eval_examples: int = 8
    batch_size: int = 8
    max_length: int = 128
    texts: list[str] | None = None  # held-out texts for a non-default checkpoint (default: stdlib docstrings)
    seeds: tuple[int, ...] = (0,)
    points_1d: int = 9
    range_1d: float = 1.0
    one_dim: directions.OneDim = "filter"  # biases/LayerNorm move as one filter, so every block has a direction
    block_curvature: bool = True
    # "auto" times both HVP modes first (4 extra products); on CPU double backward won on the default
    # model (3.9 s vs 5.0 s per product under load) and forward-over-reverse's first call is slow
    hvp_mode: curvature.ModeChoice = "double_backward"
    eig_tol: float = 1e-2
    eig_max_iter: int = 10
    trace_matvecs: int = 6
    full_trace_matvecs: int = 9
    radius: float = 0.01  # sharpness radius as a fraction of ‖θ‖
    avg_samples: int = 6
    worst_steps: int = 3
    basin_delta: float = 1.0
    mask_prob: float = 0.15
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ValueError("give at least one direction seed.")
        if self.fisher_examples < 1 or self.eval_examples < 1:
            raise ValueError("fisher_examples and eval_examples must be at least 1.")
        if self.points_1d < 5 or not self.range_1d > 0:
            raise ValueError(f"use at least 5 scan points and a positive range (got {self.points_1d}, {self.range_1d}).")
        if self.trace_matvecs < 3 or self.full_trace_matvecs < 3:
            raise ValueError("Hutch++ needs trace_matvecs ≥ 3 (it uses multiples of 3).")
        if self.hvp_mode not in ("auto", *curvature.MODES):
            raise ValueError(f"hvp_mode must be 'auto' or one of {curvature.MODES}, got {self.hvp_mode!r}.")
        if self.eig_max_iter < 2:
            raise ValueError("eig_max_iter must be at least 2.")
        if not self.radius > 0 or self.avg_samples < 1 or self.worst_steps < 1:
            raise ValueError("radius must be positive and avg_samples, worst_steps at least 1.")


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
        return summary_table(self.to_dict())


def summary_table(res: dict[str, Any]) -> str:
    """Per-block and overall numbers as a plain-text table."""
    cols = ("n_params", "fisher", "top_eig", "trace", "trace/param", "curvature", "edge_loss")
    head = f"{'block':<12}" + "".join(f"{c:>13}" for c in cols)
    rows = [head, "-" * len(head)]
    fl = res["fisher"]["per_layer"]
    for name, b in res["blocks"].items():
        s = b["sensitivity"]
        vals = (b["n_params"], fl.get(name, float("nan")), b["top_eigenvalue"], b["trace"], b["trace_per_param"],
                s["curvature"], s["loss_at_edge"])
        rows.append(f"{name:<12}" + "".join(f"{_num(v):>13}" for v in vals))
    o = res["overall"]
    rows.append(f"{'all':<12}" + "".join(f"{_num(v):>13}" for v in (
        o["n_params"], res["fisher"]["mean"], o["top_eigenvalue"], o["trace"], o["trace_per_param"], o["curvature"],
        o["loss_at_edge"])))
    rows += [f"{g}: {note}" for g, note in (res.get("meta", {}).get("block_notes") or {}).items()]
    rows += ["", f"loss {o['loss0']:.4g}; average sharpness {o['avg_sharpness']:.4g} ± {_num(o['avg_sharpness_stderr'])}, "
                 f"worst-case sharpness ≥ {o['worst_sharpness']:.4g} (radius {o['radius']:.4g})"]
    return "\n".join(rows)


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{float(v):.4g}"


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


def _sensitivity(cfg: AuditConfig, target: Target, data: list, space: ParamSpace, tag: str, arrays: Path) -> dict[str, Any]:
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
                         "loss_at_edge": sharpness.loss_rise_at_edge(curve),
                         "direction_norm": d.norm()})
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
    op = curvature.HessianOperator(target.model, target.objective, data, params=space, mode=mode, check_determinism=check)
    with warnings.catch_warnings():  # a capped Lanczos run is expected; eig_converged records it
        warnings.filterwarnings("ignore", message="Lanczos did not reach")
        eig = curvature.top_eigenvalues(op, k=1, tol=cfg.eig_tol, max_iter=min(cfg.eig_max_iter, op.dim), seed=cfg.seed,
                                      progress=False)
    tr = curvature.trace(op, num_matvecs=matvecs, seed=cfg.seed, progress=False)
    return {"top_eigenvalue": float(eig.values[0]), "eig_converged": bool(eig.converged), "trace": float(tr.estimate),
            "trace_stderr": _finite(tr.stderr), "trace_per_param": float(tr.estimate) / op.dim,
            "n_matvecs": int(eig.n_matvecs + tr.n_matvecs)}, op.mode


# ----------------------------------------------------------------------------- run


def run(config: AuditConfig | None = None, target: Target | None = None) -> AuditResult:
    """Audit ``target`` (default: ``config.checkpoint``) and write every output under ``config.out``."""
    cfg = config or AuditConfig()
    t_start = time.perf_counter()
    if target is None:
        n = cfg.fisher_examples + cfg.eval_examples
        texts = cfg.texts
        if texts is None and cfg.checkpoint not in (None, "", "default"):
            texts = heldout_texts(n)
        target = load_target(cfg.checkpoint, examples=n, batch_size=cfg.batch_size, device=cfg.device, seed=cfg.seed,
                             texts=texts, max_length=cfg.max_length, mask_prob=cfg.mask_prob)
    fisher_data, eval_data = split_examples(target.data, cfg.fisher_examples, cfg.eval_examples, cfg.batch_size)
    out = Path(cfg.out)
    for sub in ("arrays", "parts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    check_resume_settings(out / "parts", audit_settings(cfg, target, fisher_data + eval_data), cfg.resume)
    with preserved(target.model) as state:
        result = _audit(cfg, target, fisher_data, eval_data, out, t_start)
    result.meta["restored"] = state.is_restored()
    write_json(out / "result.json", result.to_dict())
    from analyses.audit.report import write_outputs

    write_outputs(result, out)
    result.meta["timings"]["total_s"] = time.perf_counter() - t_start
    write_json(out / "result.json", result.to_dict())
    return result


#: AuditConfig fields that do not change any number (where to write, whether to resume, the device).
_NOT_SETTINGS = ("out", "resume", "progress", "device", "texts", "checkpoint")


def audit_settings(cfg: AuditConfig, target: Target, data: list) -> dict[str, Any]:
    """Everything the audit's numbers depend on: the config, the weights and the data themselves."""
    texts = None if cfg.texts is None else [list(cfg.texts), getattr(cfg.texts, "labels", None)]
    return {**{k: v for k, v in asdict(cfg).items() if k not in _NOT_SETTINGS},
            "texts": None if texts is None else settings_fingerprint({"texts": texts}),
            "weights": weights_fingerprint(target.model), "data": data_fingerprint(data),
            "objective": target.objective.describe()}


def check_resume_settings(parts: Path, settings: dict[str, Any], resume: bool) -> None:
    """Keep ``parts/`` consistent with one settings record (``parts/settings.json``).

    A fresh run deletes old parts and records its settings; ``resume`` refuses parts recorded with
    other settings (naming what changed) or with none, instead of reusing them under new labels."""
    record = parts / "settings.json"
    old_parts = sorted(p for p in parts.glob("*.json") if p.name != "settings.json")
    if resume and (old_parts or record.is_file() or (parts.parent / "fisher.safetensors").exists()):
        if not record.is_file():
            raise ValueError(f"cannot resume from {parts.parent}: its parts carry no settings record; run without "
                             "--resume (or use another --out).")
        old = read_json(record, what="audit settings").get("settings", {})
        changed = sorted(k for k in set(old) | set(settings) if json.dumps(old.get(k), sort_keys=True, default=str)
                         != json.dumps(settings.get(k), sort_keys=True, default=str))
        if changed:
            raise ValueError(f"cannot resume from {parts.parent}: it was made with other settings ({', '.join(changed)} "
                             "differ); run without --resume to start over, or use another --out.")
        return
    if not resume:
        for p in old_parts:
            p.unlink()
    write_json(record, {"fingerprint": settings_fingerprint(settings), "settings": settings})


def _audit(cfg: AuditConfig, target: Target, fisher_data: list, eval_data: list, out: Path, t_start: float) -> AuditResult:
    model, timings = target.model, {}
    full = ParamSpace(model)
    blocks = audit_blocks(model)

    t0 = time.perf_counter()
    fisher_path = out / "fisher.safetensors"
    if cfg.resume and fisher_path.exists():
        F = fisher.FisherDiagonal.load(fisher_path, model=model)
    else:
        F = fisher.diagonal(model, target.objective, fisher_data, estimator="empirical", params=full, seed=cfg.seed,
                            progress=cfg.progress, convergence=True)
        F.save(fisher_path)
    timings["fisher_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    part = out / "parts" / "overall.json"
    if cfg.resume and part.exists():
        overall = json.loads(part.read_text())
    else:
        overall = _overall(cfg, target, eval_data, full, out / "arrays")
        write_json(part, overall)
    timings["overall_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(blocks.items(), desc="audit blocks", disable=not cfg.progress)
    for name, names in bar:
        bar.set_postfix_str(name)
        part = out / "parts" / f"block_{name}.json"
        if cfg.resume and part.exists():
            results[name] = json.loads(part.read_text())
            continue
        space = block_space(model, names)
        entry: dict[str, Any] = {"tensors": names, "n_params": space.dim}
        if cfg.block_curvature:
            curv, _ = _curvature(cfg, target, eval_data, space, overall["hvp_mode"], cfg.trace_matvecs)
            entry.update(curv)
        else:
            entry.update({k: None for k in BLOCK_FIELDS if k not in ("tensors", "n_params", "sensitivity")})
        entry["sensitivity"] = _sensitivity(cfg, target, eval_data, space, name, out / "arrays")
        write_json(part, entry)
        results[name] = entry
    timings["blocks_s"] = time.perf_counter() - t0
    _save_arrays(out / "arrays" / "sensitivity.npz", results, overall)

    per_tensor = F.per_tensor("mean")
    total = sum(float(s.double().sum()) for s in F.scores.values())
    conv = F.convergence
    timings["total_s"] = time.perf_counter() - t_start
    return AuditResult(
        config={k: v for k, v in asdict(cfg).items() if k != "texts"} | {"texts": None if cfg.texts is None else len(cfg.texts)},
        blocks=results,
        fisher={"path": fisher_path.name, "per_tensor": per_tensor, "per_layer": F.per_layer("mean"),
                "per_layer_sum": F.per_layer("sum"), "mean": total / full.dim,
                "convergence": None if conv is None else conv.to_dict(), "meta": F.meta},
        overall=overall,
        meta={"target": target.name, "task": target.task, "objective": target.objective.describe(),
              "model_class": type(model).__name__, "n_params": full.dim, "n_tensors": len(full),
              "fisher_examples": cfg.fisher_examples, "eval_examples": cfg.eval_examples,
              "direction": {"normalization": "filter", "one_dim": cfg.one_dim, "distribution": "gaussian",
                            "block_masking": "ParamSpace of the block (other blocks get no direction)"},
              "estimators": {"fisher": "empirical diagonal, per-sequence gradients",
                             "top_eigenvalue": f"lanczos, tol {cfg.eig_tol}, at most {cfg.eig_max_iter} matvecs",
                             "trace": "hutch++", "worst_sharpness": "projected normalized gradient ascent (lower bound)"},
              "block_notes": {g: note for g in results if (note := group_note(g))},
              "timings": timings, "resumed": cfg.resume, "versions": versions(), "checkpoint": target.meta},
        out=str(out),
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
        "top_eigenvalue": np.asarray([np.nan if b["top_eigenvalue"] is None else b["top_eigenvalue"] for b in blocks.values()]),
        "trace": np.asarray([np.nan if b["trace"] is None else b["trace"] for b in blocks.values()]),
    })
