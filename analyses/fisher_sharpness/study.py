"""The flagship study: is the loss sharper along high-Fisher parameters?

Sharma et al. (2024) show MLM-loss surfaces of bert-base in which the top-Fisher half of the
tensors looks *flatter* than the bottom half, and argue that high-Fisher parameters are the ones
the loss is most sensitive to. Two arms (:mod:`.arms`):

* **arm P**, the paper's protocol reproduced: all tensors ranked by mean Fisher and halved, 1-D
  tensors at zero direction, each moved tensor filter-normalized to its own weights. Endpoint:
  dᵀHd of the top half minus the bottom half's; the per-‖d‖² comparison is derived from it (the
  norms are fixed by the filter normalization), never a separate answer;
* **arm E**, the controlled question at equal norm: element masks of matched size. The **primary
  endpoint is top vs stratified** (a random mask with top's per-tensor counts) under two direction
  constructions, filter-normalized-then-masked and isotropic in the mask (:mod:`.cells`), Holm-
  corrected as a family of two. Top vs random and top vs bottom are descriptive: for a random
  direction on a mask E[dᵀHd] = Σᵢ Hᵢᵢdᵢ², and the diagonal Fisher tracks diag(H), so top beats
  them almost by construction. A mask-size sweep repeats top vs stratified at every fraction.

Every answer reads a hierarchical bootstrap over models, Fisher samples (masks recomputed on
each), MLM mask draws, direction seeds and evaluation documents (:mod:`.hierarchy`), with a
variance-components table. Scales are fixed by the design (:mod:`.summary`). Secondary metrics of
the first cell (loss rise, basin width, trace, top eigenvalue, the FD check of dᵀHd against an
exact Hessian-vector product) are reported, never voted.

Files under ``out``: ``result.json``, ``fisher-m*-k*-*.safetensors``, ``parts/`` (one JSON per
finished cell, resumable under the same settings hash only), ``arrays/``, ``figures/`` and
``report.md``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from analyses.common import Target
from analyses.fisher_sharpness import arms, cells, family, first_cell
from analyses.fisher_sharpness.config import FisherSharpnessConfig
from analyses.fisher_sharpness.estimate import announce_study
from analyses.fisher_sharpness.summary import summarize
from analyses.reference import find_reference
from analyses.study import FolderResult, Resume, Study, register, result_settings
from landscape import fisher
from landscape.fisher.estimators import ExampleLoss
from landscape.params import ParamSpace
from landscape.util import versions
from landscape.util.files import write_npz
from landscape.util.fingerprints import data_fingerprint, weights_fingerprint

__all__ = ["FisherSharpnessConfig", "FisherSharpnessResult", "run", "summary"]


@dataclass
class FisherSharpnessResult(FolderResult):
    """What :func:`run` returns and writes to ``result.json``.

    ``arm_p`` / ``arm_e``: per-mask statistics and endpoints (``arm_e["primary"]``: top vs
    stratified per construction; ``arm_e["sweep"]``: per fraction); ``verdict``: the answer lines;
    ``variance``: the variance-components tables; ``models``: per-model endpoints; ``fisher_loss``:
    the masks' Jaccard overlap under the mean and summed Fisher and whether the answer changes;
    ``checks``: the FD check of dᵀHd; ``reference``: the paper's surfaces summarized (or why not)."""

    config: dict[str, Any]
    arm_p: dict[str, Any]
    arm_e: dict[str, Any]
    verdict: dict[str, Any]
    variance: dict[str, Any]
    pool: dict[str, Any]
    fisher: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)
    fisher_loss: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
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
    members: list[family.Member]
    parts: Resume
    bar: Any
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, key: str, t0: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0


def fisher_sample(r: _Run, member: family.Member, k: int, loss: str | None = None) -> fisher.FisherDiagonal:
    """The empirical Fisher of ``member``'s sample ``k`` under ``loss`` (default: the run's), reused on resume."""
    cfg, model = r.cfg, member.target.model
    loss = loss or cfg.fisher_loss
    path = r.out / f"fisher-m{member.index}-k{k}-{loss}.safetensors"
    if cfg.resume and path.exists():
        return fisher.FisherDiagonal.load(path, model=model)
    t0 = time.perf_counter()
    F = fisher.diagonal(model, member.objective(0), member.fisher[k], estimator="empirical", params=ParamSpace(model),
                        seed=cfg.seed, progress=False, convergence=member.index == k == 0,
                        example_loss=cast(ExampleLoss, loss))
    F.meta["settings_hash"], F.meta["study_settings"] = r.parts.hash, r.parts.settings
    F.save(path)
    r.timed("fisher_s", t0)
    return F


def _cells(r: _Run) -> dict[str, Any]:
    """Every (model, Fisher sample, mask draw) cell, from ``parts/`` when resuming."""
    cfg, done = r.cfg, {}
    for mem in r.members:
        mspace = arms.matrix_space(mem.target.model)
        for k in range(cfg.fisher_samples):
            F: fisher.FisherDiagonal | None = None
            for d in range(cfg.mask_draws):
                key = f"cell-m{mem.index}-k{k}-r{d}"
                r.bar.set_postfix_str(key)
                part = r.parts.get(key)
                if part is None:
                    F = F or fisher_sample(r, mem, k)
                    t0 = time.perf_counter()
                    part = cells.measure_cell(cfg, mem.target.model, mem.objective(d), mem.eval, F, mspace,
                                              first=mem.index == k == d == 0, draw=d)
                    r.timed("cells_s", t0)
                    r.parts.put(key, part)
                done[key] = part
                r.bar.update(1)
    return done


def _start(cfg: FisherSharpnessConfig, members: list[family.Member]) -> Resume:
    """The resume record: the settings hash over the config, every model's weights, data and objective."""
    settings = result_settings(cfg) | {
        "model_weights": [weights_fingerprint(m.target.model) for m in members],
        "data": [data_fingerprint([b for s in m.fisher for b in s] + m.eval) for m in members],
        "objective": members[0].target.objective.describe(), "documents": [m.groups.tolist() for m in members]}
    return Resume(cfg.out, settings, cfg.resume)


def _members(cfg: FisherSharpnessConfig, targets: Target | list[Target] | None,
             groups: Any) -> tuple[FisherSharpnessConfig, list[family.Member]]:
    """Load the family, print the estimate (lowering settings to ``--budget``) and split the data."""
    given = [targets] if isinstance(targets, Target) else targets
    members = family.load_family(cfg, given, groups)
    fitted = announce_study(cfg, members[0].target, members[0].eval)
    if fitted != cfg:
        members = [family.split_member(fitted, m.index, m.target, m.row_groups, m.documents) for m in members]
    if len({m.groups.size for m in members}) != 1:
        raise ValueError("the models' evaluation pools differ in size; give every model the same held-out rows.")
    return fitted, members


def run(config: FisherSharpnessConfig | None = None, target: Target | list[Target] | None = None,
        groups: Any = None) -> FisherSharpnessResult:
    """Run both arms on every cell and write every output under ``config.out``; see the module docstring.

    ``target``: a model with data (or a list: a family) instead of ``config.checkpoint``; ``groups``:
    the document of each of its held-out rows (default: every row its own document)."""
    cfg = config or FisherSharpnessConfig()
    t_start = time.perf_counter()
    (Path(cfg.out) / "arrays").mkdir(parents=True, exist_ok=True)
    reference_dir, reference_note = _find_reference(cfg.reference)
    cfg, members = _members(cfg, target, groups)
    from tqdm.auto import tqdm

    n_cells = len(members) * cfg.fisher_samples * cfg.mask_draws
    with tqdm(total=n_cells + 2, desc="fisher-sharpness cells", disable=not cfg.progress) as bar:
        r = _Run(cfg, Path(cfg.out), members, _start(cfg, members), bar)
        raw = _cells(r)
        t0 = time.perf_counter()
        F0 = fisher_sample(r, members[0], 0)
        extras = first_cell.extras(r, raw["cell-m0-k0-r0"], F0)
        bar.update(1)
        other = first_cell.other_fisher_loss(r, F0, lambda loss: fisher_sample(r, members[0], 0, loss))
        bar.update(1)
        r.timed("first_cell_extras_s", t0)
    _write_curves(r.out, raw["cell-m0-k0-r0"], cfg)
    t0 = time.perf_counter()
    summary_ = summarize(cfg, raw, extras, other, [m.groups for m in members], reference_dir=reference_dir,
                         reference_note=reference_note, out=r.out)
    r.timed("statistics_s", t0)
    result = _result(r, F0, summary_, sum(int(c.get("n_forward", 0)) for c in raw.values()))
    r.timings["total_s"] = time.perf_counter() - t_start
    result.save(r.out)
    from analyses.fisher_sharpness.report import write_outputs

    write_outputs(result, r.out)
    r.timings["total_with_figures_s"] = time.perf_counter() - t_start
    result.save(r.out)
    return result


def _write_curves(out: Path, cell: dict[str, Any], cfg: FisherSharpnessConfig) -> None:
    """The first cell's 1D curves as ``arrays/<mask>_curves.npz``."""
    from analyses.fisher_sharpness.measure import curve_alphas

    alphas = curve_alphas(cfg.range_1d, cfg.points_1d, cfg.loss_rise_step)
    entries = {f"P-{h}": v for h, v in cell["P"].items()} | cell["E"]
    for key, entry in entries.items():
        if entry.get("curves"):
            write_npz(out / "arrays" / f"{key}_curves.npz", {"alphas": alphas, "loss": np.asarray(entry["curves"])})


def _result(r: _Run, F: fisher.FisherDiagonal, summary_: dict[str, Any], n_forward: int) -> FisherSharpnessResult:
    """Stage 5: the result object (``r.timings`` is shared, so later timings still reach it)."""
    conv, m0 = F.convergence, r.members[0]
    space, mspace = ParamSpace(m0.target.model), arms.matrix_space(m0.target.model)
    return FisherSharpnessResult(
        config=asdict(r.cfg), pool=summary_.pop("pool"),
        fisher={"path": f"fisher-m0-k0-{r.cfg.fisher_loss}.safetensors", "per_tensor": F.per_tensor("mean"),
                "per_layer": F.per_layer("mean"), "example_loss": r.cfg.fisher_loss,
                "convergence": None if conv is None else conv.to_dict(), "meta": F.meta},
        meta={"target": m0.target.name, "task": m0.target.task, "objective": m0.target.objective.describe(),
              "settings_hash": r.parts.hash, "models": [m.target.name for m in r.members],
              "documents": m0.documents, "n_documents": int(np.unique(m0.groups).size),
              "space": {"tensors": len(space), "dim": space.dim, "matrix_tensors": len(mspace),
                        "matrix_dim": mspace.dim},
              "timings": r.timings, "versions": versions(), "checkpoint": m0.target.meta, "forward_passes": n_forward},
        out=str(r.out), **summary_,
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
