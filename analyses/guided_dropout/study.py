"""The controlled low-data study: does Fisher-guided dropout beat uniform dropout and its controls?

Steps (all written to ``out``):

1. the diagonal empirical Fisher of the MLM pretraining loss on held-out text (``fisher.safetensors``),
   with its convergence curve and a split-half check of the site ranking;
2. site rates: guided (rank-linear, p_max → p_min), its reversed and permuted controls (the same
   multiset of rates), uniform (the checkpoint's own rates, or ``uniform_rate`` when they are all 0);
3. for every task, training size and seed: one fine-tuning run per arm, paired (same examples,
   order, head initialisation and dropout stream start); ``runs.jsonl`` gets one line per finished
   run, and a rerun skips the runs already there (same settings);
4. ``result.json`` (means with 95% intervals, paired differences and tests, verdicts),
   ``figures/metric_vs_size.png``, ``figures/site_rates.png`` and ``report.md``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from analyses.common import FolderResult
from analyses.guided_dropout import stats, tasks
from analyses.guided_dropout.train import Arm, RunSpec, encode, train_run
from landscape import dropout, fisher
from landscape.util.fingerprints import settings_fingerprint

log = logging.getLogger(__name__)

#: Bumped whenever a change alters run results, so resume never mixes runs of two versions.
STUDY_VERSION = 3
ARMS = ("none", "uniform", "guided", "reversed", "permuted", "gaussian", "fisher_l2", "unit")


@dataclass
class GuidedDropoutConfig:
    """Study settings. The defaults (one task, two sizes, five seeds, every arm) fit in 8 minutes on
    2 CPU cores with the cached default model; flags widen the grid."""

    checkpoint: str = "default"
    out: str = "runs/guided-dropout"
    tasks: tuple[str, ...] = ("topic",)
    data: str | None = None  # a user CSV/JSONL task replaces the built-in tasks
    test_data: str | None = None
    sizes: tuple[int, ...] = (64, 256)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    arms: tuple[str, ...] = ARMS
    epochs: int = 8
    min_steps: int = 60  # small sets train for at least this many steps
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_length: int = 32
    val_fraction: float = 0.25
    p_max: float = 0.1
    p_min: float = 0.0
    uniform_rate: float | None = None
    score_method: str = "mean_of_means"
    mapping: str = "rank_linear"
    l2_strength: float = 0.01
    fisher_examples: int = 128
    fisher_texts: str | None = None  # a text file, one example per line (default: the held-out corpus)
    fisher_batch_size: int = 16
    n_test: int = 1000
    n_classes: int = 8
    threads: int | None = 1
    seed: int = 0
    resume: bool = True
    progress: bool = True

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

    def run_key(self) -> str:
        """Hash of every setting a single run's numbers depend on (resume reuses only matching runs)."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("out", "resume", "progress", "sizes", "seeds", "arms",
                                                                    "tasks", "threads")}
        keep["study_version"] = STUDY_VERSION
        return settings_fingerprint(keep)


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("runs")  # every run is in runs.jsonl
        return d


def _checkpoint(cfg: GuidedDropoutConfig) -> tuple[Any, Path]:
    """The MLM target (model, objective, held-out data) and the checkpoint directory."""
    from analyses.common import load_target, read_texts

    texts = None if cfg.fisher_texts is None else read_texts(cfg.fisher_texts)
    target = load_target(cfg.checkpoint, examples=cfg.fisher_examples, batch_size=cfg.fisher_batch_size, seed=cfg.seed,
                         texts=texts)
    path = Path(target.meta["path"]) if cfg.checkpoint in (None, "", "default") else Path(cfg.checkpoint)
    if not path.is_dir():
        raise ValueError(f"{cfg.checkpoint}: the study fine-tunes a classifier and needs a Hugging Face checkpoint directory.")
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
            "convergence": conv, "examples_to_rho_0.95": F.convergence.examples_to_reach(0.95) if F.convergence else None,
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


def sample_split(labels: torch.Tensor, size: int, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """A class-stratified sample of ``size`` pool indices, split into train and validation within
    each class. Class k contributes c_k examples (round robin over classes, so the c_k differ by at
    most one where the pool allows), of which max(1, round(val_fraction · c_k)) go to validation
    (none when c_k = 1), so both splits hold every class."""
    if size > len(labels):
        raise ValueError(f"training size {size} exceeds the task's pool of {len(labels)} examples.")
    g = torch.Generator().manual_seed(1_000_003 * seed + size)
    by_class = [torch.nonzero(labels == c).reshape(-1) for c in sorted(set(labels.tolist()))]
    order: list[list[int]] = [ix[torch.randperm(len(ix), generator=g)].tolist() for ix in by_class]
    counts = [0] * len(order)
    left = size
    while left > 0:
        for k, ix in enumerate(order):
            if counts[k] < len(ix) and left > 0:
                counts[k] += 1
                left -= 1
    train: list[int] = []
    val: list[int] = []
    for ix, c in zip(order, counts):
        n_val = 0 if c < 2 else min(c - 1, max(1, round(val_fraction * c)))
        val += ix[:n_val]
        train += ix[n_val:c]
    return sorted(train), sorted(val)


def fisher_weights(scores: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EWC weights w = F / F̄ for the classifier's tensors that the Fisher scored, F̄ the mean over all
    their elements (one global scale, so tensors keep their relative Fisher)."""
    kept = {n: s.detach().double() for n, s in scores.items() if n in params}
    mean = sum(float(s.sum()) for s in kept.values()) / max(1, sum(s.numel() for s in kept.values()))
    return {n: (s / max(mean, 1e-30)).float() for n, s in kept.items()}


def _arm(name: str, seed: int, rates: dict[str, Any], guided: Any, cfg: GuidedDropoutConfig) -> Arm:
    if name == "none":
        return Arm(name, rates["none"])
    if name == "uniform":
        return Arm(name, rates["uniform"])
    if name == "guided":
        return Arm(name, guided.rates)
    if name == "reversed":
        return Arm(name, rates["reversed"])
    if name == "permuted":
        return Arm(name, dropout.permuted_rates(guided.rates, seed=10_000 + seed))
    if name == "gaussian":
        return Arm(name, guided.rates, noise="gaussian")
    if name == "fisher_l2":
        return Arm(name, rates["uniform"], l2=cfg.l2_strength)
    return Arm(name, guided, granularity="unit")


def _read_done(path: Path, key: str) -> dict[tuple[str, int, int, str], dict[str, Any]]:
    done: dict[tuple[str, int, int, str], dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interrupt
        if r.get("run_key") == key:
            done[(r["task"], int(r["size"]), int(r["seed"]), r["arm"])] = r
    return done


def run(cfg: GuidedDropoutConfig) -> GuidedDropoutResult:
    """Run (or resume) the study; see the module docstring for what is written."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from landscape.util import versions
    from landscape.util.files import write_json

    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        task_list = _build_tasks(cfg)  # bad labelled files fail before any computing
        target, ckpt = _checkpoint(cfg)
        dropout.find_sites(target.model)  # a checkpoint without dropout sites fails here
        t0 = time.perf_counter()
        F, finfo = _fisher(cfg, target, out)
        t_fisher = time.perf_counter() - t0
        guided = dropout.guided_rates(target.model, F, cfg.score_method, cfg.mapping, cfg.p_max, cfg.p_min, units=True)
        guided.meta["checkpoint"] = str(ckpt)
        guided.save(out / "rates.json")
        hf_logging.set_verbosity_error()
        key = cfg.run_key()
        runs_path = out / "runs.jsonl"
        done = _read_done(runs_path, key) if cfg.resume else {}
        if not cfg.resume and runs_path.exists():
            runs_path.unlink()
        rates_info: dict[str, Any] = {}
        timings: list[float] = []
        todo = len(task_list) * len(cfg.sizes) * len(cfg.seeds) * len(cfg.arms)
        from tqdm.auto import tqdm

        bar = tqdm(total=todo, desc="guided-dropout runs", disable=not cfg.progress, mininterval=1.0)
        for task in task_list:
            pool = encode(target.tokenizer, task.pool, cfg.max_length)
            test = encode(target.tokenizer, task.test, cfg.max_length)
            for seed in cfg.seeds:
                torch.manual_seed(seed)  # the new head's initialisation, shared by every arm and size
                clf = AutoModelForSequenceClassification.from_pretrained(ckpt, num_labels=len(task.classes),
                                                                         local_files_only=True)
                if getattr(clf.config, "pad_token_id", None) is None and target.tokenizer.pad_token_id is not None:
                    clf.config.pad_token_id = target.tokenizer.pad_token_id
                init = {k: v.detach().clone() for k, v in clf.state_dict().items()}
                sites = dropout.find_sites(clf)
                own = dropout.current_rates(clf, sites)
                uniform = own if any(own.values()) and cfg.uniform_rate is None else \
                    dropout.uniform_rates(sites, 0.1 if cfg.uniform_rate is None else cfg.uniform_rate)
                rates = {"none": dropout.uniform_rates(sites, 0.0), "uniform": uniform,
                         "reversed": dropout.reversed_rates(guided.rates, guided.scores)}
                rates_info = {"guided": guided.rates, "reversed": rates["reversed"], "uniform": uniform,
                              "uniform_source": "checkpoint" if uniform is own else "uniform_rate",
                              "checkpoint_rates": own, "scores": guided.scores, "score_method": cfg.score_method,
                              "mapping": cfg.mapping, "p_max": cfg.p_max, "p_min": cfg.p_min,
                              "sites": guided.meta["sites"], "head_dropouts": sites.head,
                              "unit_rates_range": {k: [float(v.min()), float(v.max())] for k, v in guided.unit_rates.items()},
                              "permuted": {str(s): dropout.permuted_rates(guided.rates, seed=10_000 + s) for s in cfg.seeds}}
                fw = fisher_weights(F.scores, init)
                for size in cfg.sizes:
                    tr_idx, va_idx = sample_split(pool.tensors["labels"], size, seed, cfg.val_fraction)
                    train, val = pool.take(tr_idx), pool.take(va_idx)
                    steps = -(-len(train) // cfg.batch_size)
                    spec = RunSpec(epochs=max(cfg.epochs, -(-cfg.min_steps // steps)), batch_size=cfg.batch_size, lr=cfg.lr,
                                   weight_decay=cfg.weight_decay, warmup=cfg.warmup)
                    for arm_name in cfg.arms:
                        k = (task.name, size, seed, arm_name)
                        if k in done:
                            bar.update(1)
                            continue
                        arm = _arm(arm_name, seed, rates, guided, cfg)
                        r = train_run(clf, init, arm, train, val, test, spec, seed, fisher_weight=fw)
                        row = {"task": task.name, "size": size, "seed": seed, "arm": arm_name, "run_key": key,
                               "n_train": len(train), "n_val": len(val), "n_test": len(test), "epochs_run": spec.epochs, **r}
                        with open(runs_path, "a") as fh:
                            fh.write(json.dumps(row) + "\n")
                        done[k] = row
                        timings.append(r["seconds"])
                        bar.update(1)
        bar.close()
        wanted = {(t.name, s, sd, a) for t in task_list for s in cfg.sizes for sd in cfg.seeds for a in cfg.arms}
        runs = [done[k] for k in sorted(wanted)]
        summary = stats.summarize(runs)
        result = GuidedDropoutResult(
            config=asdict(cfg), tasks={t.name: t.describe() for t in task_list}, rates=rates_info, fisher=finfo,
            summary=summary, verdicts=stats.verdict(summary), runs=runs,
            meta={"versions": versions(), "checkpoint": str(ckpt), "run_key": key, "runs_total": len(runs),
                  "runs_this_call": len(timings), "timings": {"fisher_s": t_fisher, "run_mean_s": sum(timings) / max(1, len(timings)),
                                                           "total_s": time.perf_counter() - t_start},
                  "leakage": "the default model was pretrained (MLM) on the docstrings' text, never on these labels",
                  "threads": torch.get_num_threads()},
            out=str(out))
        write_json(out / "result.json", result.to_dict())
        from analyses.guided_dropout.report import write_outputs

        write_outputs(result, out)
        result.meta["timings"]["total_s"] = time.perf_counter() - t_start
        write_json(out / "result.json", result.to_dict())
        return result
    finally:
        torch.set_num_threads(old_threads)
