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

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from analyses.common import Target, load_target, read_texts, split_examples
from analyses.fisher_sharpness import arms, measure
from analyses.fisher_sharpness.summary import summarize
from landscape import fisher, scans
from landscape.params import ParamSpace
from landscape.scans.points import ExampleLosses
from landscape.util import versions
from landscape.util.files import dumps, read_json, write_json, write_npz
from landscape.util.fingerprints import data_fingerprint, settings_fingerprint, weights_fingerprint

#: config fields that never change a number (everything else goes into the settings hash)
NOT_RESULT_SETTINGS = ("out", "resume", "progress", "device", "reference")


@dataclass
class FisherSharpnessConfig:
    """Settings; the defaults run the embedded default model in about 2.5 minutes on one CPU core (BENCHMARKS.md)."""

    checkpoint: str = "default"
    out: str = "runs/fisher-sharpness"
    texts: str | None = None  # UTF-8 file, one text per line (default: the held-out stdlib docstrings)
    max_length: int = 128
    fisher_examples: int = 64
    eval_examples: int = 128  # the evaluation pool, disjoint from the Fisher sequences
    batch_size: int = 32
    fractions: tuple[float, ...] = (0.1,)  # arm E mask sizes
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)  # direction seeds (random masks redrawn per seed)
    curve_seeds: int = 3  # the first seeds also get 1D curves, loss rise and basin width
    fd_step: float = 0.01  # h of the second difference, in units of the direction
    range_1d: float = 1.5
    points_1d: int = 7
    loss_rise_step: float = 0.5
    basin_delta: float = 1.0  # basin = where the loss stays below L(θ₀) + basin_delta nats
    basin_max_alpha: float = 16.0  # the line is extended up to this coefficient before censoring
    grid_2d: int = 21  # arm P surfaces: grid_2d × grid_2d over [-range_2d, range_2d]²
    range_2d: float = 1.5
    surface_examples: int = 32  # the first sequences of the pool, for the 2D pictures only
    trace_probes: int = 4
    eig_iter: int = 8
    eig_tol: float = 1e-2
    eig_examples: int = 32
    n_boot: int = 2000
    n_blocks: int = 8
    mask_prob: float = 0.15
    seed: int = 0
    reference: str | None = "auto"  # the paper's surfaces: a folder, "auto" (look beside the repo) or None
    device: str = "cpu"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.fractions, self.seeds = tuple(float(f) for f in self.fractions), tuple(int(s) for s in self.seeds)
        if not self.fractions or any(not 0.0 < f <= 0.5 for f in self.fractions):
            raise ValueError(f"fractions must lie in (0, 0.5] (top and bottom masks must not overlap), got {self.fractions}.")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"give at least two distinct direction seeds (a spread needs two), got {self.seeds}.")
        if not 1 <= self.curve_seeds <= len(self.seeds):
            raise ValueError(f"curve_seeds must be between 1 and the number of seeds ({len(self.seeds)}), got {self.curve_seeds}.")
        if self.fisher_examples < 1 or self.eval_examples < 2:
            raise ValueError("fisher_examples must be ≥ 1 and eval_examples ≥ 2 (a bootstrap over sequences needs two).")
        if self.points_1d < 3 or self.grid_2d < 3:
            raise ValueError("use at least 3 points in 1D and a 3×3 grid in 2D.")
        if not (self.fd_step > 0 and self.range_1d > 0 and self.range_2d > 0 and 0 < self.loss_rise_step <= self.range_1d):
            raise ValueError("fd_step, range_1d and range_2d must be > 0, and loss_rise_step within (0, range_1d].")
        if self.surface_examples < 1 or self.eig_examples < 1 or self.n_blocks < 2:
            raise ValueError("surface_examples and eig_examples must be ≥ 1 and n_blocks ≥ 2.")
        if self.trace_probes < 2 or self.eig_iter < 1 or self.n_boot < 100:
            raise ValueError("need trace_probes ≥ 2 (for a standard error), eig_iter ≥ 1 and n_boot ≥ 100.")

    def result_settings(self) -> dict[str, Any]:
        """Every setting that changes a number (what a part file's hash covers)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_RESULT_SETTINGS}


@dataclass
class FisherSharpnessResult:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, out: str | Path | None = None) -> Path:
        return write_json(Path(out or self.out) / "result.json", self.to_dict())

    @classmethod
    def load(cls, out: str | Path) -> FisherSharpnessResult:
        """Read ``out/result.json`` back (``out``: the run's folder, or the result.json itself)."""
        path = Path(out) / "result.json" if Path(out).is_dir() else Path(out)
        doc = read_json(path, what="fisher-sharpness result")
        if "arm_p" not in doc:
            raise ValueError(f"{path} is not a fisher-sharpness result of this version (no arm_p); rerun the study.")
        return cls(**doc)


class Parts:
    """One JSON per finished mask under ``out/parts``, each tagged with the settings hash."""

    def __init__(self, out: Path, settings: dict[str, Any], resume: bool) -> None:
        self.dir, self.settings, self.resume = out / "parts", settings, resume
        self.hash = settings_fingerprint(settings)
        self.dir.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> dict[str, Any] | None:
        """The finished part ``key`` when resuming and its settings match; raises when they differ."""
        path = self.dir / f"{key}.json"
        if not (self.resume and path.is_file()):
            return None
        doc = read_json(path, what="part file")
        self.check(path, doc.get("settings_hash"), doc.get("settings"))
        return doc["data"]

    def check(self, path: Path, stored_hash: str | None, stored: dict[str, Any] | None) -> None:
        """Raise, naming the settings that differ, unless ``stored_hash`` is this run's hash."""
        if stored_hash == self.hash:
            return
        old = stored or {}
        diff = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
        shown = (", ".join(f"{k}={old.get(k)!r} (now {self.settings.get(k)!r})" for k in diff[:4]) if stored
                 else "the file records no settings")
        raise ValueError(f"cannot resume from {path}: it was computed with other settings ({shown}); "
                         "use another --out, or drop --resume to recompute everything.")

    def put(self, key: str, data: dict[str, Any]) -> None:
        write_json(self.dir / f"{key}.json", {"settings_hash": self.hash, "settings": self.settings, "data": data})


def _find_reference(setting: str | None) -> tuple[Path | None, str | None]:
    """(folder of the paper's surfaces or None, why not). ``auto`` looks beside the repository and
    in $LANDSCAPE_REFERENCE_DIR and skips quietly without the files or h5py; an explicit folder
    must hold them and needs h5py."""
    import importlib.util
    import os

    if setting in (None, "", "none"):
        return None, "not requested (--reference none)"
    has_h5py = importlib.util.find_spec("h5py") is not None
    if setting != "auto":
        path = Path(setting)
        if not (path / "surf_res256_bert.h5").is_file():
            raise FileNotFoundError(f"--reference {path} holds no surf_res256_bert.h5; give the folder of the "
                                    "guided-dropout surfaces, or --reference none.")
        if not has_h5py:
            raise ValueError("--reference needs h5py to read the paper's HDF5 surfaces: pip install h5py "
                             "(or pip install -e '.[h5]'), or use --reference none.")
        return path, None
    root = Path(__file__).resolve().parents[2]
    for cand in (os.environ.get("LANDSCAPE_REFERENCE_DIR", ""), root.parent / "shared" / "reference" / "guided-dropout-surfaces",
                 root / "shared" / "reference" / "guided-dropout-surfaces", Path("/work/shared/reference/guided-dropout-surfaces")):
        if cand and (Path(cand) / "surf_res256_bert.h5").is_file():
            if not has_h5py:
                return None, f"found in {cand}, but reading HDF5 needs h5py (pip install h5py)"
            return Path(cand), None
    return None, "the paper's surfaces were not found (give --reference DIR)"


def run(config: FisherSharpnessConfig | None = None, target: Target | None = None) -> FisherSharpnessResult:
    """Run both arms and write every output under ``config.out``; see the module docstring."""
    cfg = config or FisherSharpnessConfig()
    t_start = time.perf_counter()
    out = Path(cfg.out)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    reference_dir, reference_note = _find_reference(cfg.reference)
    if target is None:
        target = load_target(cfg.checkpoint, examples=cfg.fisher_examples + cfg.eval_examples, batch_size=cfg.batch_size,
                             device=cfg.device, seed=cfg.seed, texts=read_texts(cfg.texts), max_length=cfg.max_length,
                             mask_prob=cfg.mask_prob)
    fisher_data, eval_data = split_examples(target.data, cfg.fisher_examples, cfg.eval_examples, cfg.batch_size)
    model, obj = target.model, target.objective
    settings = cfg.result_settings() | {"model_weights": weights_fingerprint(model),
                                        "data": data_fingerprint(fisher_data + eval_data), "objective": obj.describe()}
    settings = json.loads(dumps(settings, indent=None))  # the form it takes in a part file (tuples -> lists)
    parts = Parts(out, settings, cfg.resume)
    timings: dict[str, float] = {}
    bar = _progress(cfg)

    t0 = time.perf_counter()
    space = ParamSpace(model)
    fisher_path = out / "fisher.safetensors"
    F = None
    if cfg.resume and fisher_path.exists():
        F = fisher.FisherDiagonal.load(fisher_path, model=model)
        parts.check(fisher_path, F.meta.get("settings_hash"), F.meta.get("study_settings"))
    if F is None:
        F = fisher.diagonal(model, obj, fisher_data, estimator="empirical", params=space, seed=cfg.seed,
                            progress=cfg.progress, convergence=True)
        F.meta["settings_hash"], F.meta["study_settings"] = parts.hash, settings
        F.save(fisher_path)
    timings["fisher_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ev = ExampleLosses(model, obj, eval_data)
    s0 = ev.origin()
    pool = {"n_sequences": ev.n_examples, "n_terms": int(ev.counts.sum()), "loss0": float(ev.pooled(s0)),
            "sums0": s0.tolist(), "counts": ev.counts.tolist()}
    alphas = measure.curve_alphas(cfg.range_1d, cfg.points_1d, cfg.loss_rise_step)
    common: dict[str, Any] = dict(fd_step=cfg.fd_step, curve_seeds=cfg.curve_seeds, alphas=alphas, rise_step=cfg.loss_rise_step,
                  basin_delta=cfg.basin_delta, basin_max_alpha=cfg.basin_max_alpha)
    seeds = list(cfg.seeds)

    # arm P: the paper's tensor halves
    halves = arms.tensor_halves(F)
    surface_data = split_examples(eval_data, min(cfg.surface_examples, ev.n_examples), 0, cfg.batch_size)[0]
    grid = scans.coefficients(-cfg.range_2d, cfg.range_2d, cfg.grid_2d)
    raw_p: dict[str, Any] = {}
    for half in arms.ARM_P_HALVES:
        bar(f"arm P {half}")
        key = f"P-{half}"
        done = parts.get(key)
        if done is None:
            names = halves.get(half)
            info = arms.half_summary(space, names if names is not None else space.names)
            done = {"summary": info}
            if info["n_moving_tensors"] == 0:
                done["skipped"] = "this half holds only 1-D tensors, which get a zero direction: nothing moves"
            else:
                make = lambda s, names=names: arms.arm_p_direction(model, space, names, s)
                done |= measure.per_seed(ev, s0, make, seeds, **common)
                t_s = time.perf_counter()
                surf = scans.scan_2d(model, obj, surface_data, make(seeds[0]), make(seeds[0] + arms.SECOND_DIRECTION), grid, grid,
                                    path=out / "arrays" / f"{key}_2d.npz", resume=cfg.resume, progress=False, distributed=False)
                timings["surfaces_s"] = timings.get("surfaces_s", 0.0) + time.perf_counter() - t_s
                done["surface"] = f"arrays/{key}_2d.npz"
                done["surface_loss0"] = float(surf.values["loss"][int(np.argmin(np.abs(grid))), int(np.argmin(np.abs(grid)))])
            parts.put(key, done)
        raw_p[half] = done
    timings["arm_p_s"] = time.perf_counter() - t0

    # arm E: matched element masks at equal norm
    t0 = time.perf_counter()
    mspace = arms.matrix_space(model)
    F_matrix = F.restrict(mspace)
    eig_data = split_examples(eval_data, min(cfg.eig_examples, ev.n_examples), 0, cfg.batch_size)[0]
    raw_e: dict[str, Any] = {}
    for fraction in cfg.fractions:
        masks = arms.arm_e_masks(F_matrix, fraction)
        for which in arms.ARM_E_MASKS:
            bar(f"arm E {which} {fraction:g}")
            key = f"E-{fraction:g}-{which}"
            done = parts.get(key)
            if done is None:
                make = lambda s, which=which: arms.arm_e_direction(model, masks.mask(which, s), s)
                done = measure.per_seed(ev, s0, make, seeds, **common)
                m0 = masks.mask(which, seeds[0])
                done["count"] = m0.count()
                done["n_tensors"] = len(m0.names)
                t_s = time.perf_counter()
                done["trace"] = measure.masked_trace(model, obj, eval_data, m0, probes=cfg.trace_probes, seed=cfg.seed)
                t_e = time.perf_counter()
                done["top_eigenvalue"] = measure.masked_top_eigenvalue(model, obj, eig_data, m0, max_iter=cfg.eig_iter,
                                                                       tol=cfg.eig_tol, seed=cfg.seed)
                timings["trace_s"] = timings.get("trace_s", 0.0) + t_e - t_s
                timings["eigenvalue_s"] = timings.get("eigenvalue_s", 0.0) + time.perf_counter() - t_e
                parts.put(key, done)
            raw_e[key] = done
    timings["arm_e_s"] = time.perf_counter() - t0

    for key, entry in {**{f"P-{h}": v for h, v in raw_p.items()}, **raw_e}.items():
        if entry.get("curves"):
            write_npz(out / "arrays" / f"{key}_curves.npz", {"alphas": alphas, "loss": np.asarray(entry["curves"])})

    t0 = time.perf_counter()
    summary = summarize(cfg, raw_p, raw_e, pool, alphas, tensor_check=arms.tensor_mask_check(mspace, cfg.fractions),
                        reference_dir=reference_dir, reference_note=reference_note, out=out)
    timings["statistics_s"] = time.perf_counter() - t0
    conv = F.convergence
    result = FisherSharpnessResult(
        config=asdict(cfg), pool={k: v for k, v in pool.items() if k not in ("sums0", "counts")} | summary.pop("pool"),
        fisher={"path": fisher_path.name, "per_tensor": F.per_tensor("mean"), "per_layer": F.per_layer("mean"),
                "convergence": None if conv is None else conv.to_dict(), "meta": F.meta, "halves": halves},
        meta={"target": target.name, "task": target.task, "objective": obj.describe(), "settings_hash": parts.hash,
              "space": {"tensors": len(space), "dim": space.dim, "matrix_tensors": len(mspace), "matrix_dim": mspace.dim},
              "timings": timings, "versions": versions(), "checkpoint": target.meta,
              "forward_passes": ev.n_forward},
        out=str(out), **summary,
    )
    timings["total_s"] = time.perf_counter() - t_start
    result.save(out)
    from analyses.fisher_sharpness.report import write_outputs

    write_outputs(result, out)
    timings["total_with_figures_s"] = time.perf_counter() - t_start
    result.save(out)
    return result


def _progress(cfg: FisherSharpnessConfig):
    """A one-line stage printer for long runs (silent without ``progress``)."""
    import sys

    start = time.perf_counter()

    def show(stage: str) -> None:
        if cfg.progress:
            print(f"[{time.perf_counter() - start:6.1f} s] {stage}", file=sys.stderr, flush=True)

    return show
