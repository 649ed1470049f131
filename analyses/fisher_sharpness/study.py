"""The flagship study: is the loss sharper along high-Fisher parameters?

Sharma et al. (2024) show MLM-loss surfaces of bert-base in which the top-Fisher half of the
tensors looks *flatter* than the bottom half, and argue that high-Fisher parameters are the ones
the loss is most sensitive to. Two arms, each answering one question (:mod:`.arms`):

* **arm P**, the paper's protocol reproduced: all tensors ranked by mean Fisher and halved, 1-D
  tensors at zero direction, each moved tensor filter-normalized to its own weights, no norm
  matching. Primary endpoint: log(dᵀHd_top / dᵀHd_bottom); also per unit ‖d‖² (does the
  paper's picture survive normalizing by how far each half moves?);
* **arm E**, the controlled question at equal norm: element masks of matched size (top, a
  stratified random control, random, bottom), random masks redrawn per seed, ``match_full_norm``
  directions. Primary endpoint: log(dᵀHd_top / dᵀHd_control) for each control.

Numbers come from per-sequence loss sums on a pool of held-out sequences disjoint from the Fisher
ones (:mod:`.measure`), so the data variance is measured (bootstrap over sequences, disjoint
blocks) beside the direction-seed variance (:mod:`.statistics`). The verdict reads each primary
endpoint's 95 % interval (:mod:`.verdict`). Secondary metrics (loss rise at a fixed step, a
censoring-aware basin width, the restricted top eigenvalue with its convergence flag, the trace
with its standard error) are reported, never voted. Worst-case and average-case sharpness are
not computed: at 0.05‖θ‖ the former saturated far above uniform guessing, and the latter at small
ρ is ½ρ²·trace, which is reported itself.

Files under ``out``: ``result.json``, ``fisher.safetensors``, ``parts/`` (one JSON per finished
mask, each with the hash of every setting that changes a result: ``--resume`` reuses a part only
when its hash matches and refuses otherwise), ``arrays/`` (curves and 2D surfaces),
``figures/`` and ``report.md``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyses.cli.config_flags import seed_count, symmetric_range
from analyses.common import Target, load_target, read_texts, split_examples
from analyses.fisher_sharpness import arms, measure
from analyses.fisher_sharpness.estimate import announce_study
from analyses.fisher_sharpness.summary import summarize
from analyses.reference import find_reference
from analyses.study import FolderResult, Resume, Study, TextSettings, register, result_settings, setting
from landscape import fisher, scans
from landscape.params import ParamSpace
from landscape.scans.points import ExampleLosses
from landscape.util import versions
from landscape.util.files import write_npz
from landscape.util.fingerprints import data_fingerprint, weights_fingerprint


@dataclass
class FisherSharpnessConfig(TextSettings):
    """Settings; the defaults run the embedded default model in about 2.5 minutes on one CPU core (BENCHMARKS.md)."""

    checkpoint: str = setting("default", "local Hugging Face checkpoint directory, .safetensors or .pt file; 'default' "
                              "uses the embedded default model", positional=True)
    out: str = setting("runs/fisher-sharpness", "output folder (created if missing)", affects="nothing")
    texts: str | None = setting(None, "UTF-8 file, one text per line (default: the held-out stdlib docstrings)")
    max_length: int = setting(128, "tokens per sequence at most (capped at the model's positions)")
    fisher_examples: int = setting(64, "held-out sequences for the Fisher", flag="--examples")
    eval_examples: int = setting(128, "held-out sequences of the evaluation pool, disjoint from the Fisher ones")
    batch_size: int = setting(32, "sequences per batch")
    fractions: tuple[float, ...] = setting((0.1,), "arm E mask sizes as fractions in (0, 0.5]")
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4, 5, 6, 7), "number of direction seeds, SEED, SEED+1, ... (at "
                                     "least 2; random masks are redrawn per seed)", cli=seed_count(8, minimum=2))
    curve_seeds: int = setting(3, "the first seeds that also get 1D curves, loss rise and basin width (at most "
                                  "--seeds)")
    fd_step: float = setting(0.01, "h of the second difference, in units of the direction")
    range_1d: float = setting(1.5, "1D and 2D scan range", flag="--range", cli=symmetric_range(1.5))
    points_1d: int = setting(7, "points of each 1D curve", flag="--points")
    loss_rise_step: float = setting(0.5, "the step at which the loss rise is reported")
    basin_delta: float = setting(1.0, "basin = where the loss stays below L(θ₀) + basin_delta nats")
    basin_max_alpha: float = setting(16.0, "the line is extended up to this coefficient before censoring")
    grid_2d: int = setting(21, "points per side of arm P's 2D surfaces", flag="--grid")
    range_2d: float | None = setting(None, "2D range (default: the 1D range)", hidden=True)
    surface_examples: int = setting(32, "pool sequences used for the 2D surfaces")
    trace_matvecs: int = setting(4, "Hutchinson probes (one matvec each) per arm E mask")
    eig_iters: int = setting(8, "Lanczos steps per arm E mask")
    eig_tol: float = setting(1e-2, "relative tolerance of the top eigenvalue")
    eig_examples: int = setting(32, "pool sequences for the top-eigenvalue HVPs")
    n_boot: int = setting(2000, "bootstrap replicates", flag="--bootstrap")
    n_blocks: int = setting(8, "disjoint blocks of sequences for the data-variance split")
    mask_prob: float = setting(0.15, "MLM mask probability")
    seed: int = setting(0, "random seed (Fisher masks, first direction seed)")
    reference: str | None = setting("auto", "the paper's surfaces to show beside arm P: a folder, 'auto' (--reference "
                                    "lookup: $LANDSCAPE_REFERENCE, ../shared/reference) or 'none'", affects="nothing")
    device: str = setting("cpu", "torch device, e.g. cpu or cuda:0", affects="nothing")
    resume: bool = setting(False, "reuse finished parts in --out; refuses parts computed with other settings",
                           affects="nothing")

    def __post_init__(self) -> None:
        self.fractions, self.seeds = tuple(float(f) for f in self.fractions), tuple(int(s) for s in self.seeds)
        self.range_2d = self.range_1d if self.range_2d is None else self.range_2d
        self.curve_seeds = min(self.curve_seeds, len(self.seeds))
        if not self.fractions or any(not 0.0 < f <= 0.5 for f in self.fractions):
            raise ValueError("fractions must lie in (0, 0.5] (top and bottom masks must not overlap), got "
                             f"{self.fractions}.")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("give at least two distinct direction seeds (--seeds 2 or more: a spread needs two), got "
                             f"{self.seeds}.")
        if not 1 <= self.curve_seeds <= len(self.seeds):
            raise ValueError(f"curve_seeds must be between 1 and the number of seeds ({len(self.seeds)}), got "
                             f"{self.curve_seeds}.")
        if self.fisher_examples < 1 or self.eval_examples < 2:
            raise ValueError("fisher_examples must be ≥ 1 and eval_examples ≥ 2 (a bootstrap over sequences needs "
                             "two).")
        if self.points_1d < 3 or self.grid_2d < 3:
            raise ValueError("use at least 3 points in 1D and a 3×3 grid in 2D.")
        if not (self.fd_step > 0 and self.range_1d > 0 and self.range_2d > 0
                and 0 < self.loss_rise_step <= self.range_1d):
            raise ValueError("fd_step, range_1d and range_2d must be > 0, and loss_rise_step within (0, range_1d].")
        if self.surface_examples < 1 or self.eig_examples < 1 or self.n_blocks < 2:
            raise ValueError("surface_examples and eig_examples must be ≥ 1 and n_blocks ≥ 2.")
        if self.trace_matvecs < 2 or self.eig_iters < 1 or self.n_boot < 100:
            raise ValueError("need trace_matvecs ≥ 2 (for a standard error), eig_iters ≥ 1 and n_boot ≥ 100.")


@dataclass
class FisherSharpnessResult(FolderResult):
    """What :func:`run` returns and writes to ``result.json``.

    ``arm_p`` / ``arm_e``: per-mask summaries, primary endpoints (``endpoints``) and secondary
    metrics; ``verdict``: ``{"arm_p": [...], "arm_e": [...]}`` sentences; ``variance``: data vs
    seed variance; ``reference``: the paper's surfaces summarized (or why not)."""

    config: dict[str, Any]
    arm_p: dict[str, Any]
    arm_e: dict[str, Any]
    verdict: dict[str, Any]
    variance: dict[str, Any]
    pool: dict[str, Any]
    fisher: dict[str, Any]
    reference: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    out: str = ""


def _find_reference(setting: str | None) -> tuple[Path | None, str | None]:
    """(folder of the paper's surfaces or None, why not). ``auto`` uses :func:`analyses.reference.find_reference`
    and skips quietly without the files or h5py; an explicit folder must hold them and needs h5py."""
    import importlib.util

    if setting in (None, "", "none"):
        return None, "not requested (--reference none)"
    has_h5py = importlib.util.find_spec("h5py") is not None
    if setting != "auto":
        try:
            path = find_reference(setting)
        except FileNotFoundError:
            raise FileNotFoundError(f"--reference {setting} holds no surf_res256_bert.h5; give the folder of the "
                                    "guided-dropout surfaces, or --reference none.") from None
        if not has_h5py:
            raise ValueError("--reference needs h5py to read the paper's HDF5 surfaces: pip install h5py "
                             "(or pip install -e '.[h5]'), or use --reference none.")
        return path, None
    try:
        path = find_reference()
    except FileNotFoundError:
        return None, "the paper's surfaces were not found (give --reference DIR or set LANDSCAPE_REFERENCE)"
    if not has_h5py:
        return None, f"found in {path}, but reading HDF5 needs h5py (pip install h5py)"
    return path, None


@dataclass
class _Run:
    """One run's shared state, passed from stage to stage."""

    cfg: FisherSharpnessConfig
    out: Path
    target: Target
    eval_data: list
    parts: Resume
    space: ParamSpace
    ev: ExampleLosses
    s0: np.ndarray
    common: dict[str, Any]
    bar: Any
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, key: str, t0: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0


def _load(cfg: FisherSharpnessConfig, target: Target | None) -> tuple[Target, list, list]:
    """Stage 1: the target and its Fisher / evaluation split (disjoint sequences)."""
    if target is None:
        target = load_target(cfg.checkpoint, examples=cfg.fisher_examples + cfg.eval_examples,
                             batch_size=cfg.batch_size, device=cfg.device, seed=cfg.seed, texts=read_texts(cfg.texts),
                             max_length=cfg.max_length, mask_prob=cfg.mask_prob, tokenizer=cfg.tokenizer,
                             allow_unk=cfg.allow_unk)
    fisher_data, eval_data = split_examples(target.data, cfg.fisher_examples, cfg.eval_examples, cfg.batch_size)
    return target, fisher_data, eval_data


def _fisher(cfg: FisherSharpnessConfig, target: Target, data: list, space: ParamSpace, parts: Resume,
            out: Path) -> fisher.FisherDiagonal:
    """Stage 2: the empirical Fisher on the Fisher sequences (reused from ``out`` on resume)."""
    path = out / "fisher.safetensors"
    if cfg.resume and path.exists():
        return fisher.FisherDiagonal.load(path, model=target.model)
    F = fisher.diagonal(target.model, target.objective, data, estimator="empirical", params=space, seed=cfg.seed,
                        progress=cfg.progress, convergence=True)
    F.meta["settings_hash"], F.meta["study_settings"] = parts.hash, parts.settings
    F.save(path)
    return F


def _arm_p_half(r: _Run, half: str, names: list[str] | None, grid: np.ndarray, surface_data: list) -> dict[str, Any]:
    """Arm P, one half: per-seed numbers along the paper's directions and one 2D surface."""
    cfg, model, seeds = r.cfg, r.target.model, list(r.cfg.seeds)
    info = arms.half_summary(r.space, names if names is not None else r.space.names)
    done: dict[str, Any] = {"summary": info}
    if info["n_moving_tensors"] == 0:
        done["skipped"] = "this half holds only 1-D tensors, which get a zero direction: nothing moves"
        return done
    make = lambda s: arms.arm_p_direction(model, r.space, names, s)  # noqa: E731
    done |= measure.per_seed(r.ev, r.s0, make, seeds, **r.common)
    t_s = time.perf_counter()
    key = f"P-{half}"
    surf = scans.scan_2d(model, r.target.objective, surface_data, make(seeds[0]),
                         make(seeds[0] + arms.SECOND_DIRECTION),
                         grid, grid, path=r.out / "arrays" / f"{key}_2d.npz", resume=cfg.resume, progress=False,
                         distributed=False)
    r.timed("surfaces_s", t_s)
    centre = int(np.argmin(np.abs(grid)))
    done["surface"] = f"arrays/{key}_2d.npz"
    done["surface_loss0"] = float(surf.values["loss"][centre, centre])
    return done


def _arm_p(r: _Run, F: fisher.FisherDiagonal) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stage 3: arm P, the paper's tensor halves. Returns (raw numbers per half, the halves)."""
    t0 = time.perf_counter()
    cfg = r.cfg
    halves = arms.tensor_halves(F)
    surface_data = split_examples(r.eval_data, min(cfg.surface_examples, r.ev.n_examples), 0, cfg.batch_size)[0]
    r2 = cfg.range_1d if cfg.range_2d is None else cfg.range_2d
    grid = scans.coefficients(-r2, r2, cfg.grid_2d)
    raw: dict[str, Any] = {}
    for half in arms.ARM_P_HALVES:
        r.bar.set_postfix_str(f"arm P {half}")
        done = r.parts.get(f"P-{half}")
        if done is None:
            done = _arm_p_half(r, half, halves.get(half), grid, surface_data)
            r.parts.put(f"P-{half}", done)
        raw[half] = done
        r.bar.update(1)
    r.timed("arm_p_s", t0)
    return raw, halves


def _arm_e_mask(r: _Run, masks: Any, which: str, eig_data: list) -> dict[str, Any]:
    """Arm E, one mask: per-seed numbers at equal norm, the masked trace and top eigenvalue."""
    cfg, model = r.cfg, r.target.model
    make = lambda s: arms.arm_e_direction(model, masks.mask(which, s), s)  # noqa: E731
    done = measure.per_seed(r.ev, r.s0, make, list(cfg.seeds), **r.common)
    m0 = masks.mask(which, cfg.seeds[0])
    done["count"], done["n_tensors"] = m0.count(), len(m0.names)
    t_s = time.perf_counter()
    done["trace"] = measure.masked_trace(model, r.target.objective, r.eval_data, m0, probes=cfg.trace_matvecs,
                                         seed=cfg.seed)
    r.timed("trace_s", t_s)
    t_e = time.perf_counter()
    done["top_eigenvalue"] = measure.masked_top_eigenvalue(model, r.target.objective, eig_data, m0,
                                                           max_iter=cfg.eig_iters,
                                                           tol=cfg.eig_tol, seed=cfg.seed)
    r.timed("eigenvalue_s", t_e)
    return done


def _arm_e(r: _Run, F: fisher.FisherDiagonal, mspace: ParamSpace) -> dict[str, Any]:
    """Stage 4: arm E, matched element masks at equal norm."""
    t0 = time.perf_counter()
    cfg = r.cfg
    F_matrix = F.restrict(mspace)
    eig_data = split_examples(r.eval_data, min(cfg.eig_examples, r.ev.n_examples), 0, cfg.batch_size)[0]
    raw: dict[str, Any] = {}
    for fraction in cfg.fractions:
        masks = arms.arm_e_masks(F_matrix, fraction)
        for which in arms.ARM_E_MASKS:
            r.bar.set_postfix_str(f"arm E {which} {fraction:g}")
            key = f"E-{fraction:g}-{which}"
            done = r.parts.get(key)
            if done is None:
                done = _arm_e_mask(r, masks, which, eig_data)
                r.parts.put(key, done)
            raw[key] = done
            r.bar.update(1)
    r.timed("arm_e_s", t0)
    return raw


def _start(cfg: FisherSharpnessConfig, target: Target, fisher_data: list, eval_data: list, bar: Any) -> tuple[_Run,
                                                                                                              dict]:
    """The resume record (settings hash over the config, weights, data, objective) and the evaluation pool."""
    model, obj = target.model, target.objective
    settings = result_settings(cfg) | {"model_weights": weights_fingerprint(model),
                                       "data": data_fingerprint(fisher_data + eval_data), "objective": obj.describe()}
    parts = Resume(cfg.out, settings, cfg.resume)
    ev = ExampleLosses(model, obj, eval_data)
    s0 = ev.origin()
    pool = {"n_sequences": ev.n_examples, "n_terms": int(ev.counts.sum()), "loss0": float(ev.pooled(s0)),
            "sums0": s0.tolist(), "counts": ev.counts.tolist()}
    alphas = measure.curve_alphas(cfg.range_1d, cfg.points_1d, cfg.loss_rise_step)
    common: dict[str, Any] = dict(fd_step=cfg.fd_step, curve_seeds=cfg.curve_seeds, alphas=alphas,
                                  rise_step=cfg.loss_rise_step, basin_delta=cfg.basin_delta,
                                  basin_max_alpha=cfg.basin_max_alpha)
    return _Run(cfg, Path(cfg.out), target, eval_data, parts, ParamSpace(model), ev, s0, common, bar), pool


def run(config: FisherSharpnessConfig | None = None, target: Target | None = None) -> FisherSharpnessResult:
    """Run both arms and write every output under ``config.out``; see the module docstring."""
    cfg = config or FisherSharpnessConfig()
    t_start = time.perf_counter()
    (Path(cfg.out) / "arrays").mkdir(parents=True, exist_ok=True)
    reference_dir, reference_note = _find_reference(cfg.reference)
    target, fisher_data, eval_data = _load(cfg, target)
    announce_study(cfg, target, eval_data, sum(int(b["input_ids"].shape[0]) for b in eval_data))
    from tqdm.auto import tqdm

    with tqdm(total=len(arms.ARM_P_HALVES) + len(cfg.fractions) * len(arms.ARM_E_MASKS), desc="fisher-sharpness masks",
              disable=not cfg.progress) as bar:
        r, pool = _start(cfg, target, fisher_data, eval_data, bar)
        t0 = time.perf_counter()
        F = _fisher(cfg, target, fisher_data, r.space, r.parts, r.out)
        r.timed("fisher_s", t0)
        raw_p, halves = _arm_p(r, F)
        mspace = arms.matrix_space(target.model)
        raw_e = _arm_e(r, F, mspace)
    alphas = r.common["alphas"]
    for key, entry in {**{f"P-{h}": v for h, v in raw_p.items()}, **raw_e}.items():
        if entry.get("curves"):
            write_npz(r.out / "arrays" / f"{key}_curves.npz", {"alphas": alphas, "loss": np.asarray(entry["curves"])})
    t0 = time.perf_counter()
    summary = summarize(cfg, raw_p, raw_e, pool, alphas, tensor_check=arms.tensor_mask_check(mspace, cfg.fractions),
                        reference_dir=reference_dir, reference_note=reference_note, out=r.out)
    r.timed("statistics_s", t0)
    result = _result(r, F, halves, mspace, pool, summary)
    r.timings["total_s"] = time.perf_counter() - t_start
    result.save(r.out)
    from analyses.fisher_sharpness.report import write_outputs

    write_outputs(result, r.out)
    r.timings["total_with_figures_s"] = time.perf_counter() - t_start
    result.save(r.out)
    return result


def _result(r: _Run, F: fisher.FisherDiagonal, halves: dict[str, Any], mspace: ParamSpace, pool: dict[str, Any],
            summary: dict[str, Any]) -> FisherSharpnessResult:
    """Stage 5: the result object (``r.timings`` is shared, so later timings still reach it)."""
    conv, space, target = F.convergence, r.space, r.target
    return FisherSharpnessResult(
        config=asdict(r.cfg), pool={k: v for k, v in pool.items() if k not in ("sums0",
                                                                               "counts")} | summary.pop("pool"),
        fisher={"path": "fisher.safetensors", "per_tensor": F.per_tensor("mean"), "per_layer": F.per_layer("mean"),
                "convergence": None if conv is None else conv.to_dict(), "meta": F.meta, "halves": halves},
        meta={"target": target.name, "task": target.task, "objective": target.objective.describe(),
              "settings_hash": r.parts.hash,
              "space": {"tensors": len(space), "dim": space.dim, "matrix_tensors": len(mspace),
                        "matrix_dim": mspace.dim},
              "timings": r.timings, "versions": versions(), "checkpoint": target.meta,
              "forward_passes": r.ev.n_forward},
        out=str(r.out), **summary,
    )


def summary(result: FisherSharpnessResult) -> str:
    """The answers, as the report states them."""
    from analyses.fisher_sharpness.report import summary_text

    return summary_text(result.to_dict())


#: one line for ``landscape analyze --help``
HELP = "the paper's tensor halves (arm P) and matched masks at equal norm (arm E)"
#: the command's long help (``landscape analyze NAME --help``)
DESCRIPTION = ("Arm P reproduces the paper's protocol (all tensors ranked by mean Fisher and halved, "
               "filter-normalized, 1-D tensors fixed); arm E compares top-Fisher element masks with a stratified "
               "random, a random and a bottom-Fisher mask of the same size at equal norm. Each arm's answer reads one "
               "endpoint's 95% bootstrap interval (Sharma et al., 2024).")


register(Study(name="fisher-sharpness", config=FisherSharpnessConfig, run=run, summary=summary,
               help=HELP, description=DESCRIPTION, files="result.json, report.md and figures/"))
