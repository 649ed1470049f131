"""The controlled low-data study: does Fisher-guided dropout beat the same amount of dropout placed
otherwise?

Steps (all written to ``out``):

1. the diagonal empirical Fisher of the MLM pretraining loss on held-out text (``fisher.safetensors``),
   with its convergence curve and the site ranks of two disjoint halves (:mod:`.stability`);
2. the arms' rates (:mod:`.arms`): the checkpoint's own (pretrain), uniform at guided's mean, guided,
   reversed and permuted (guided's multiset), Gaussian, Fisher-L2 and unit granularity;
3. for every task, training size and seed: one fine-tuning run per arm, paired (same examples,
   order, head initialisation and dropout stream start), under the ``paper`` recipe (fixed
   epochs, final model) or ``select`` (best epoch on ≥ 64 validation examples). ``runs.jsonl`` gets
   one line per finished run (:mod:`.grid`), and a rerun skips the runs already there;
   ``settings.json`` records the hash of every setting a run depends on
   (:class:`analyses.study.Resume`): a rerun under other settings is refused, naming them; the grid
   (tasks, sizes, seeds, arms) may grow. The (task, seed, size) units are independent: ``workers``
   processes train them at once (default: the usable cores; :mod:`.pool`), with the same numbers
   as one after another, and ``workers`` is not in the hash, so a run resumes under another count.
   With ``target_mde``, seeds are added one at a time (more where one seed has fewer units than
   workers) until both primary contrasts' minimum detectable effect is at most the target at every
   size, or ``max_seeds`` is reached (:func:`add_seeds_to_power`);
4. ``result.json`` (:mod:`.stats`: means with 95% intervals, the two primary contrasts with Holm
   p, MDE and TOST, the exploratory ones, verdict words), ``figures/`` and ``report.md``.
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
from analyses.guided_dropout.arms import ARM_DEFINITIONS, ARMS, DEFAULT_ARMS
from analyses.guided_dropout.grid import Runs, Setup, encode_tasks, open_runs, rates_record, wanted
from analyses.guided_dropout.pool import default_workers, train_seeds
from analyses.study import FolderResult, Resume, Study, TextSettings, register, result_settings, setting
from landscape import dropout, fisher

log = logging.getLogger(__name__)

#: Bumped whenever a change alters run results, so resume never mixes runs of two versions.
STUDY_VERSION = 4
RECIPES = ("paper", "select")


@dataclass
class GuidedDropoutConfig(TextSettings):
    """Study settings. The defaults (the topic task, two sizes, five seeds, eight arms, the paper
    recipe) fit in 8 minutes on 2 quiet CPU cores with the cached default model, also one worker
    at a time (``--workers 1``); flags widen the grid."""

    checkpoint: str = setting("default", "local Hugging Face MLM checkpoint directory, or 'default'", positional=True)
    out: str = setting("runs/guided-dropout", "output folder (created if missing)", affects="nothing")
    tasks: tuple[str, ...] = setting(("topic",), "built-in tasks", affects="grid", choices=tasks.BUILTIN_TASKS)
    data: str | None = setting(None, "your labelled CSV/JSONL (text, optional text_pair, label) instead")
    test_data: str | None = setting(None, "a labelled test file for --data (default: hold out 25%)")
    sizes: tuple[int, ...] = setting((64, 256), "training sizes (training examples per run)", affects="grid")
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4), "number of seeds (seed, seed+1, ...)", affects="grid",
                                     cli=seed_count(5))
    arms: tuple[str, ...] = setting(DEFAULT_ARMS, "arms to run (the report defines each)", affects="grid",
                                    choices=ARMS)
    recipe: str = setting("paper", "paper: fixed epochs, the final model kept; select: the best epoch on a "
                          "validation set of --val-size examples", choices=RECIPES)
    epochs: int = setting(8, "epochs (small sets train for at least --min-steps steps)")
    min_steps: int = setting(60, "fewest optimizer steps per run")
    batch_size: int | None = setting(None, "examples per step (default: paper 32, select 16)")
    lr: float | None = setting(None, "AdamW learning rate (default 1e-3: BERT's 2e-5 scaled to the small model)")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    warmup: float = setting(0.1, "fraction of the steps spent warming up the learning rate")
    max_length: int = setting(32, "tokens per example")
    val_size: int = setting(64, "validation examples per run for --recipe select, drawn besides the training size")
    p_max: float = setting(0.1, "guided rate of the lowest-score site (paper: 0.1)")
    p_min: float = setting(0.0, "guided rate of the highest-score site (paper: 0)")
    pretrain_rate: float = setting(0.1, "rate of the pretrain arm where the checkpoint's own rates are all 0")
    score_method: str = setting("mean_of_means", "site score", choices=dropout.SCORE_METHODS)
    mapping: str = setting("rank_linear", "score-to-rate map", choices=dropout.MAPPINGS)
    l2_strength: float = setting(0.01, "strength of the Fisher-weighted L2 pull (fisher_l2 arm)", flag="--l2")
    fisher_examples: int = setting(128, "held-out sequences for the MLM Fisher")
    fisher_texts: str | None = setting(None, "text file, one example per line, for the MLM Fisher (default: the "
                                       "held-out docstring corpus)")
    fisher_batch_size: int = setting(16, "sequences per Fisher batch")
    n_test: int = setting(800, "test examples per built-in task (the topic task's module split leaves ~95 pool "
                          "examples per class at 800)")
    n_classes: int = setting(8, "classes of the built-in topic task")
    equivalence_margin: float = setting(2.0, "TOST margin, in accuracy points", affects="nothing")
    target_mde: float | None = setting(None, "add seeds until both primary contrasts' MDE (points) is at most this "
                                       "at every size", affects="grid")
    max_seeds: int = setting(40, "most seeds --target-mde may reach", affects="grid")
    threads: int | None = setting(1, "torch threads per process (1 is fastest for the small default model)",
                                  affects="nothing")
    workers: int | None = setting(None, "processes training the grid's (task, seed, size) units at once (default: "
                                  "the usable cores; 1: one after another in this process); same numbers either way",
                                  affects="nothing")
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
            raise ValueError("give at least one seed (two or more for intervals).")
        if self.recipe not in RECIPES:
            raise ValueError(f"--recipe must be one of {RECIPES}, got {self.recipe!r}.")
        if self.recipe == "select" and self.val_size < 1:
            raise ValueError(f"--recipe select chooses the epoch on --val-size examples; give at least 1 (64 or more "
                             f"advised), got {self.val_size}.")
        dropout.rates.check_rates({"p_max": self.p_max, "p_min": self.p_min, "pretrain_rate": self.pretrain_rate})
        if self.target_mde is not None and (self.target_mde <= 0 or self.max_seeds < len(self.seeds)):
            raise ValueError(f"--target-mde must be positive and --max-seeds ({self.max_seeds}) at least the initial "
                             f"seeds ({len(self.seeds)}).")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1 (1: no worker processes), got {self.workers}.")
        if self.equivalence_margin <= 0:
            raise ValueError(f"--equivalence-margin must be positive (points), got {self.equivalence_margin}.")

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
    power: dict[str, Any] = field(default_factory=dict)
    arms: dict[str, str] = field(default_factory=dict)
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
    """The MLM Fisher (reused from ``out`` on resume) and the disjoint split-half check of the site ranking."""
    from analyses.guided_dropout.stability import split_half_stability

    path = out / "fisher.safetensors"
    if cfg.resume and path.is_file():
        F = fisher.FisherDiagonal.load(path, model=target.model)
    else:
        F = fisher.diagonal(target.model, target.objective, target.data, estimator="empirical", seed=cfg.seed,
                            progress=cfg.progress, convergence=True)
        F.save(path)
    half = split_half_stability(target.model, target.objective, target.data, cfg.score_method, cfg.p_max, cfg.p_min,
                                seed=cfg.seed)
    conv = F.convergence.to_dict() if F.convergence is not None else None
    info = {"estimator": F.estimator, "objective": target.objective.describe(),
            "n_examples": int(F.meta.get("n_examples", 0)), "n_examples_empty": F.meta.get("n_examples_empty"),
            "seconds": F.meta.get("seconds"), "convergence": conv,
            "examples_to_rho_0.95": F.convergence.examples_to_reach(0.95) if F.convergence else None,
            "split_half": half, "fingerprint": dropout.fisher_fingerprint(F.scores),
            "model_fingerprint": F.meta.get("model_fingerprint")}
    return F, info


def _build_tasks(cfg: GuidedDropoutConfig) -> list[tasks.Task]:
    if cfg.data is not None:
        return [tasks.file_task(cfg.data, cfg.test_data, seed=cfg.seed)]
    from landscape.models import corpus

    docs = corpus.stdlib_documents()
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


def _checkpoint_facts(ckpt: Path) -> dict[str, Any]:
    """The default model's held-out loss, unigram baseline, pretraining dropout and build time (its
    ``metadata.json``); empty for other checkpoints."""
    import json

    path = ckpt / "metadata.json"
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    keep = ("heldout_loss", "heldout_unigram_xent", "build_seconds", "cache_key")
    return {**{k: doc.get(k) for k in keep}, "dropout": (doc.get("config") or {}).get("dropout")}


def _summary(cfg: GuidedDropoutConfig, st: Setup, runs: Runs, seeds: list[int]) -> dict[str, Any]:
    done = [runs.done[k] for k in sorted(wanted(cfg, st, seeds)) if k in runs.done]
    return stats.summarize(done, margin=cfg.equivalence_margin / 100)


def n_workers(cfg: GuidedDropoutConfig) -> int:
    """``cfg.workers``, or the usable cores (:func:`.pool.default_workers`)."""
    return cfg.workers or default_workers()


def add_seeds_to_power(cfg: GuidedDropoutConfig, st: Setup, runs: Runs, data: dict[str, Any],
                       seeds: list[int]) -> tuple[list[int], dict[str, Any]]:
    """Sequential seeds: while a primary contrast's MDE exceeds ``cfg.target_mde`` at some task and size,
    train more seeds (resumed from ``runs.jsonl`` where already there), up to ``cfg.max_seeds``.

    A step adds one seed, or as many as keep every worker busy where one seed has fewer (task,
    size) units than workers (ceil(workers / units per seed)); it may then overshoot the sequential
    stopping point by the step's extra seeds. The stopping rule reads only the paired SDs (through
    the MDE), never the differences, so it does not steer the tests' outcome. Returns the seeds
    used and the power record."""
    assert cfg.target_mde is not None
    target = cfg.target_mde / 100
    workers = n_workers(cfg)
    step = -(-workers // (len(st.tasks) * len(cfg.sizes)))
    status = stats.power_status(_summary(cfg, st, runs, seeds), target)
    while not status["met"] and len(seeds) < cfg.max_seeds:
        new = [seeds[-1] + 1 + i for i in range(min(step, cfg.max_seeds - len(seeds)))]
        seeds.extend(new)
        runs.bar.total += len(new) * len(st.tasks) * len(cfg.sizes) * len(cfg.arms)
        train_seeds(cfg, st, runs, new, data, workers)
        status = stats.power_status(_summary(cfg, st, runs, seeds), target)
    outcome = "target met" if status["met"] else f"cap of {cfg.max_seeds} seeds reached before the target"
    return seeds, {**status, "sequential": True, "seeds_per_step": step, "outcome": outcome, "n_seeds": len(seeds)}


def _power(cfg: GuidedDropoutConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """The MDE record of a fixed-seed run (no target): the worst primary MDE, and the seeds a 2-point MDE needs."""
    status = stats.power_status(summary, (cfg.target_mde or 2.0) / 100)
    return {**status, "sequential": False, "outcome": "fixed seeds", "n_seeds": len(cfg.seeds)}


def _train(cfg: GuidedDropoutConfig, st: Setup, out: Path, key: str, started: float
           ) -> tuple[Runs, list[int], dict[str, Any], dict[str, Any]]:
    """Stage 2: the initial seeds, then (with ``target_mde``) more seeds to the power target."""
    from tqdm.auto import tqdm

    seeds = list(cfg.seeds)
    with tqdm(total=len(wanted(cfg, st, seeds)), desc="guided-dropout runs", disable=not cfg.progress,
              mininterval=1.0) as bar:
        runs = open_runs(cfg, out, key, bar, started)
        data = encode_tasks(cfg, st)
        train_seeds(cfg, st, runs, seeds, data, n_workers(cfg))
        if cfg.target_mde is not None:
            seeds, power = add_seeds_to_power(cfg, st, runs, data, seeds)
        else:
            power = _power(cfg, _summary(cfg, st, runs, seeds))
    rates = rates_record(st, cfg.pretrain_rate, seeds)
    rates.update(permuted={str(s): dropout.permuted_rates(st.guided.rates, seed=10_000 + s) for s in seeds},
                 score_method=cfg.score_method, mapping=cfg.mapping, p_max=cfg.p_max, p_min=cfg.p_min)
    return runs, seeds, rates, power


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
        runs, seeds, rates, power = _train(cfg, st, out, record.hash, t_start)
        done = [runs.done[k] for k in sorted(wanted(cfg, st, seeds))]
        summary = stats.summarize(done, margin=cfg.equivalence_margin / 100)
        timings = {"fisher_s": st.fisher_s, "run_mean_s": sum(runs.seconds) / max(1, len(runs.seconds)),
                   "total_s": time.perf_counter() - t_start}
        result = GuidedDropoutResult(
            config={**asdict(cfg), "seeds_used": seeds}, tasks={t.name: t.describe() for t in st.tasks},
            rates=rates, fisher=st.finfo, summary=summary, verdicts=stats.verdicts(summary), power=power,
            arms={a: ARM_DEFINITIONS[a] for a in cfg.arms}, runs=done,
            meta={"versions": versions(), "checkpoint": str(st.ckpt), "checkpoint_facts": _checkpoint_facts(st.ckpt),
                  "run_key": runs.key, "runs_total": len(done),
                  "runs_this_call": len(runs.seconds), "timings": timings, "threads": torch.get_num_threads(),
                  "workers": n_workers(cfg),
                  "recipe": {f"{r['task']} n = {r['size']}": {"lr": r.get("lr"), "batch_size": r.get("batch_size"),
                                                              "epochs": r["epochs_run"], "n_val": r["n_val"]}
                             for r in done},
                  "leakage": "the default model was pretrained (MLM) on the docstrings' text, never on these labels"},
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
                        help="the powered run: both tasks, sizes 64 and 256, seeds added until both primary "
                        "contrasts' MDE is at most 2 points (--target-mde) or --max-seeds")


def _full_grid(args: argparse.Namespace) -> None:
    if args.full:
        args.tasks, args.sizes = ["topic", "same_module"], [64, 256]
        args.target_mde = 2.0 if args.target_mde is None else args.target_mde


def summary(result: GuidedDropoutResult) -> str:
    """The arm table, each primary question's sentence and the power line (the run's own MDE)."""
    from analyses.guided_dropout.report import arm_table, power_line

    res = result.to_dict()
    return "\n".join([arm_table(res)] + [f"{task}: {q['sentence']}" for task, qs in res["verdicts"].items()
                                         for q in qs.values()] + [power_line(res)])


#: one line for ``landscape analyze --help``
HELP = "does guided dropout beat the same amount of dropout placed evenly or at random, in low-data fine-tuning?"
#: the command's long help (``landscape analyze NAME --help``)
DESCRIPTION = ("Does Fisher-guided dropout beat uniform dropout at its mean rate and its permuted control (the two "
               "primary contrasts, Holm-corrected, with minimum detectable effects and TOST equivalence)? Default "
               "settings (the topic task, sizes 64 and 256, 5 seeds, 8 arms, the paper recipe) fit in 8 minutes on "
               "2 CPU cores; --full adds seeds to a 2-point minimum detectable effect; --workers N trains N (task, "
               "seed, size) units at once (default: every usable core), with the same numbers.")


register(Study(name="guided-dropout", config=GuidedDropoutConfig, run=run, summary=summary,
               help=HELP, description=DESCRIPTION, files="result.json, runs.jsonl, rates.json, report.md and figures/",
               add_arguments=_full_flag, adjust=_full_grid))
