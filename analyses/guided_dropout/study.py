"""The controlled low-data study: does Fisher-guided dropout beat uniform dropout and its controls?

Steps (all written to ``out``):

1. the diagonal empirical Fisher of the MLM pretraining loss on held-out text (``fisher.safetensors``),
   with its convergence curve and a split-half check of the site ranking;
2. site rates: guided (rank-linear, p_max → p_min), its reversed and permuted controls (the same
   multiset of rates), uniform (the checkpoint's own rates, or ``uniform_rate`` when they are all 0);
3. for every task, training size and seed: one fine-tuning run per arm, paired (same examples,
   order, head initialisation and dropout stream start); ``runs.jsonl`` gets one line per finished
   run (:mod:`.grid`), and a rerun skips the runs already there. ``settings.json`` records the hash of
   every setting a run depends on (:class:`analyses.study.Resume`): a rerun under other settings is
   refused, naming them; the grid (tasks, sizes, seeds, arms) may grow;
4. ``result.json`` (means with 95% intervals, paired differences and tests, verdicts),
   ``figures/metric_vs_size.png``, ``figures/site_rates.png`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from analyses.cli.config_flags import seed_count
from analyses.guided_dropout import stats, tasks
from analyses.guided_dropout.grid import Setup, train_all
from analyses.study import FolderResult, Resume, Study, TextSettings, register, result_settings, setting
from landscape import dropout, fisher

log = logging.getLogger(__name__)

#: Bumped whenever a change alters run results, so resume never mixes runs of two versions.
STUDY_VERSION = 3
ARMS = ("none", "uniform", "guided", "reversed", "permuted", "gaussian", "fisher_l2", "unit")


@dataclass
class GuidedDropoutConfig(TextSettings):
    """Study settings. The defaults (one task, two sizes, five seeds, every arm) fit in 8 minutes on
    2 CPU cores with the cached default model; flags widen the grid."""

    checkpoint: str = setting("default", "local Hugging Face MLM checkpoint directory, or 'default'", positional=True)
    out: str = setting("runs/guided-dropout", "output folder (created if missing)", affects="nothing")
    tasks: tuple[str, ...] = setting(("topic",), "built-in tasks", affects="grid", choices=tasks.BUILTIN_TASKS)
    data: str | None = setting(None, "your labelled CSV/JSONL (text, optional text_pair, label) instead")
    test_data: str | None = setting(None, "a labelled test file for --data (default: hold out 25%)")
    sizes: tuple[int, ...] = setting((64, 256), "training sizes (train + validation)", affects="grid")
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4), "number of seeds (seed, seed+1, ...)", affects="grid",
                                     cli=seed_count(5))
    arms: tuple[str, ...] = setting(ARMS, "arms to run", affects="grid", choices=ARMS)
    epochs: int = setting(8, "epochs (small sets train for at least --min-steps steps)")
    min_steps: int = setting(60, "fewest optimizer steps per run")
    batch_size: int = setting(16, "examples per fine-tuning step")
    lr: float = setting(1e-3, "AdamW learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    warmup: float = setting(0.1, "fraction of the steps spent warming up the learning rate")
    max_length: int = setting(32, "tokens per example")
    val_fraction: float = setting(0.25, "share of each training size held out for validation")
    p_max: float = setting(0.1, "guided rate of the lowest-score site (paper: 0.1)")
    p_min: float = setting(0.0, "guided rate of the highest-score site (paper: 0)")
    uniform_rate: float | None = setting(None, "rate of the uniform arm (default: the checkpoint's own, or 0.1 if they "
                                         "are all 0)")
    score_method: str = setting("mean_of_means", "site score", choices=dropout.SCORE_METHODS)
    mapping: str = setting("rank_linear", "score-to-rate map", choices=dropout.MAPPINGS)
    l2_strength: float = setting(0.01, "strength of the Fisher-weighted L2 pull (fisher_l2 arm)", flag="--l2")
    fisher_examples: int = setting(128, "held-out sequences for the MLM Fisher")
    fisher_texts: str | None = setting(None, "text file, one example per line, for the MLM Fisher (default: the "
                                       "held-out docstring corpus)")
    fisher_batch_size: int = setting(16, "sequences per Fisher batch")
    n_test: int = setting(1000, "test examples per built-in task")
    n_classes: int = setting(8, "classes of the built-in topic task")
    threads: int | None = setting(1, "torch threads (1 is fastest for the small default model)", affects="nothing")
    seed: int = setting(0, "first seed; also the Fisher mask seed")
    resume: bool = setting(True, "reuse the runs already in --out/runs.jsonl (refused under other settings)",
                           affects="nothing")

    def __post_init__(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise ValueError(f"unknown arms {bad}; choose from {ARMS}.")
        badt = [t for t in self.tasks if t not in tasks.BUILTIN_TASKS]
        if self.data is None and (badt or not self.tasks):
            raise ValueError(f"unknown tasks {badt}; choose from {tasks.BUILTIN_TASKS} or give a labelled file.")
        if not self.sizes or any(s < 4 for s in self.sizes):
            raise ValueError(f"training sizes must be at least 4, got {self.sizes}.")
        if not self.seeds:
            raise ValueError("give at least one seed (five or more for intervals).")
        if self.uniform_rate is not None:
            dropout.rates.check_rates({"uniform_rate": self.uniform_rate})
        dropout.rates.check_rates({"p_max": self.p_max, "p_min": self.p_min})
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}.")

    def resume_settings(self) -> dict[str, Any]:
        """Every setting a single run's numbers depend on (the grid fields are not: a grid can grow on resume)."""
        return result_settings(self) | {"study_version": STUDY_VERSION}


@dataclass
class GuidedDropoutResult(FolderResult):
    """What :func:`run` returns and writes to ``result.json``."""

    config: dict[str, Any]
    tasks: dict[str, Any]
    rates: dict[str, Any]
    fisher: dict[str, Any]
    summary: dict[str, Any]
    verdicts: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    out: str = ""

    _not_saved = ("runs",)  # every run is in runs.jsonl


def _checkpoint(cfg: GuidedDropoutConfig) -> tuple[Any, Path]:
    """The MLM target (model, objective, held-out data) and the checkpoint directory."""
    from analyses.common import load_target, read_texts

    texts = None if cfg.fisher_texts is None else read_texts(cfg.fisher_texts)
    target = load_target(cfg.checkpoint, examples=cfg.fisher_examples, batch_size=cfg.fisher_batch_size, seed=cfg.seed,
                         texts=texts, tokenizer=cfg.tokenizer, allow_unk=cfg.allow_unk)
    path = Path(target.meta["path"]) if cfg.checkpoint in (None, "", "default") else Path(cfg.checkpoint)
    if not path.is_dir():
        raise ValueError(f"{cfg.checkpoint}: the study fine-tunes a classifier and needs a Hugging Face checkpoint "
                         "directory.")
    return target, path


def _fisher(cfg: GuidedDropoutConfig, target: Any, out: Path) -> tuple[Any, dict[str, Any]]:
    """The MLM Fisher (reused from ``out`` on resume) and the split-half check of the site ranking."""
    path = out / "fisher.safetensors"
    if cfg.resume and path.is_file():
        F = fisher.FisherDiagonal.load(path, model=target.model)
    else:
        F = fisher.diagonal(target.model, target.objective, target.data, estimator="empirical", seed=cfg.seed,
                            progress=cfg.progress, convergence=True)
        F.save(path)
    n = int(F.meta.get("n_examples", 0))
    half = max(1, n // 2)
    Fh = fisher.diagonal(target.model, target.objective, target.data, estimator="empirical", seed=cfg.seed,
                         max_examples=half, progress=False, convergence=False)
    sites = dropout.find_sites(target.model)
    full = dropout.site_scores(sites, F.scores, cfg.score_method)
    part = dropout.site_scores(sites, Fh.scores, cfg.score_method)
    from scipy.stats import spearmanr

    rho = float(spearmanr([full[k] for k in full], [part[k] for k in full]).statistic) if len(full) > 2 else None
    conv = F.convergence.to_dict() if F.convergence is not None else None
    info = {"estimator": F.estimator, "objective": target.objective.describe(), "n_examples": n,
            "n_examples_empty": F.meta.get("n_examples_empty"), "seconds": F.meta.get("seconds"),
            "convergence": conv,
            "examples_to_rho_0.95": F.convergence.examples_to_reach(0.95) if F.convergence else None,
            "site_rank_split_half": {"n_half": half, "spearman": rho,
                                     "same_rates": dropout.rank_linear(full) == dropout.rank_linear(part)},
            "fingerprint": dropout.fisher_fingerprint(F.scores), "model_fingerprint": F.meta.get("model_fingerprint")}
    return F, info


def _build_tasks(cfg: GuidedDropoutConfig) -> list[tasks.Task]:
    if cfg.data is not None:
        return [tasks.file_task(cfg.data, cfg.test_data, seed=cfg.seed)]
    docs = tasks.labelled_docstrings()
    out = []
    for name in cfg.tasks:
        if name == "topic":
            out.append(tasks.topic_task(cfg.n_classes, cfg.n_test, docs=docs))
        else:
            out.append(tasks.same_module_task(cfg.n_test, seed=cfg.seed, docs=docs))
    return out


def _setup(cfg: GuidedDropoutConfig, out: Path) -> Setup:
    """Stage 1: tasks (bad labelled files fail before any computing), target, Fisher, guided rates."""
    task_list = _build_tasks(cfg)
    target, ckpt = _checkpoint(cfg)
    dropout.find_sites(target.model)  # a checkpoint without dropout sites fails here
    t0 = time.perf_counter()
    F, finfo = _fisher(cfg, target, out)
    t_fisher = time.perf_counter() - t0
    guided = dropout.guided_rates(target.model, F, cfg.score_method, cfg.mapping, cfg.p_max, cfg.p_min, units=True)
    guided.meta["checkpoint"] = str(ckpt)
    guided.save(out / "rates.json")
    return Setup(task_list, target, ckpt, F, finfo, guided, t_fisher)


def run(cfg: GuidedDropoutConfig) -> GuidedDropoutResult:
    """Run (or resume) the study; see the module docstring for what is written."""
    from landscape.util import versions

    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        record = Resume(out, cfg.resume_settings(), cfg.resume)  # refuses other settings before any computing
        st = _setup(cfg, out)
        runs, rates_info = train_all(cfg, st, out, record.hash)
        wanted = {(t.name, s, sd, a) for t in st.tasks for s in cfg.sizes for sd in cfg.seeds for a in cfg.arms}
        done = [runs.done[k] for k in sorted(wanted)]
        summary = stats.summarize(done)
        timings = {"fisher_s": st.fisher_s, "run_mean_s": sum(runs.seconds) / max(1, len(runs.seconds)),
                   "total_s": time.perf_counter() - t_start}
        result = GuidedDropoutResult(
            config=asdict(cfg), tasks={t.name: t.describe() for t in st.tasks}, rates=rates_info, fisher=st.finfo,
            summary=summary, verdicts=stats.verdict(summary), runs=done,
            meta={"versions": versions(), "checkpoint": str(st.ckpt), "run_key": runs.key, "runs_total": len(done),
                  "runs_this_call": len(runs.seconds), "timings": timings,
                  "leakage": "the default model was pretrained (MLM) on the docstrings' text, never on these labels",
                  "threads": torch.get_num_threads()},
            out=str(out))
        result.save(out)
        from analyses.guided_dropout.report import write_outputs

        write_outputs(result, out)
        result.meta["timings"]["total_s"] = time.perf_counter() - t_start
        result.save(out)
        return result
    finally:
        torch.set_num_threads(old_threads)



def _full_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", action="store_true",
                        help="the full grid: both tasks, sizes 64 256 512, 10 seeds, 12 epochs")


def _full_grid(args: argparse.Namespace) -> None:
    if args.full:
        args.tasks, args.sizes, args.epochs = ["topic", "same_module"], [64, 256, 512], 12
        args.seeds = max(args.seeds, 10)


def summary(result: GuidedDropoutResult) -> str:
    """The arm table and each question's sentence."""
    from analyses.guided_dropout.report import arm_table

    res = result.to_dict()
    return "\n".join([arm_table(res)] + [f"{task}: {q['sentence']}" for task, qs in res["verdicts"].items()
                                         for q in qs.values()])


#: one line for ``landscape analyze --help``
HELP = "does guided dropout beat uniform dropout and its permuted/reversed controls in low-data fine-tuning?"
#: the command's long help (``landscape analyze NAME --help``)
DESCRIPTION = ("Does Fisher-guided dropout beat uniform dropout and its permuted/reversed controls in low-data "
               "fine-tuning? Default settings (one task, sizes 64 and 256, 5 seeds, every arm) take a few minutes on "
               "2 CPU cores.")


register(Study(name="guided-dropout", config=GuidedDropoutConfig, run=run, summary=summary,
               help=HELP, description=DESCRIPTION, files="result.json, runs.jsonl, rates.json, report.md and figures/",
               add_arguments=_full_flag, adjust=_full_grid))
