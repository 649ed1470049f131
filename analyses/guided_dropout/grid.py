"""Stage 2 of the guided-dropout study: the grid of paired fine-tuning runs.

For every task, seed, training size and arm one run, paired across arms (same examples, order, head
initialisation and dropout stream start); ``runs.jsonl`` gets one line per finished run, tagged with
the settings hash, and a resumed study skips the runs already there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from analyses.cli.eta import announce
from analyses.guided_dropout import tasks
from analyses.guided_dropout.train import Arm, RunSpec, encode, train_run
from landscape import dropout

if TYPE_CHECKING:
    from analyses.guided_dropout.study import GuidedDropoutConfig


@dataclass
class Setup:
    """Stage 1's products: tasks, the MLM target and its checkpoint folder, the Fisher and the guided rates."""

    tasks: list[tasks.Task]
    target: Any
    ckpt: Path
    F: Any
    finfo: dict[str, Any]
    guided: Any
    fisher_s: float


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
    """The finished runs of ``runs.jsonl`` made under settings hash ``key``."""
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


def _classifier(st: Setup, task: tasks.Task, seed: int) -> Any:
    """A fresh classifier for ``task``; its new head's initialisation is shared by every arm and size."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    clf = AutoModelForSequenceClassification.from_pretrained(st.ckpt, num_labels=len(task.classes),
                                                             local_files_only=True)
    if getattr(clf.config, "pad_token_id", None) is None and st.target.tokenizer.pad_token_id is not None:
        clf.config.pad_token_id = st.target.tokenizer.pad_token_id
    return clf


def _seed_rates(cfg: GuidedDropoutConfig, st: Setup, clf: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fixed-rate arms of one classifier (none, uniform, reversed) and the rates' record."""
    guided = st.guided
    sites = dropout.find_sites(clf)
    own = dropout.current_rates(clf, sites)
    uniform = own if any(own.values()) and cfg.uniform_rate is None else \
        dropout.uniform_rates(sites, 0.1 if cfg.uniform_rate is None else cfg.uniform_rate)
    rates = {"none": dropout.uniform_rates(sites, 0.0), "uniform": uniform,
             "reversed": dropout.reversed_rates(guided.rates, guided.scores)}
    info = {"guided": guided.rates, "reversed": rates["reversed"], "uniform": uniform,
            "uniform_source": "checkpoint" if uniform is own else "uniform_rate",
            "checkpoint_rates": own, "scores": guided.scores, "score_method": cfg.score_method,
            "mapping": cfg.mapping, "p_max": cfg.p_max, "p_min": cfg.p_min,
            "sites": guided.meta["sites"], "head_dropouts": sites.head,
            "unit_rates_range": {k: [float(v.min()), float(v.max())] for k, v in guided.unit_rates.items()},
            "permuted": {str(s): dropout.permuted_rates(guided.rates, seed=10_000 + s) for s in cfg.seeds}}
    return rates, info


@dataclass
class _Runs:
    """Stage 2's bookkeeping: finished runs by (task, size, seed, arm), this call's timings, the log file."""

    path: Path
    key: str
    done: dict[tuple[str, int, int, str], dict[str, Any]]
    bar: Any
    seconds: list[float] = field(default_factory=list)

    def add(self, k: tuple[str, int, int, str], row: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        self.done[k] = row
        self.seconds.append(row["seconds"])


def _train_seed(cfg: GuidedDropoutConfig, st: Setup, task: tasks.Task, seed: int, data: tuple[Any, Any],
                runs: _Runs) -> dict[str, Any]:
    """Stage 2, one (task, seed): every size and arm, paired; returns the rates' record."""
    pool, test = data
    clf = _classifier(st, task, seed)
    init = {k: v.detach().clone() for k, v in clf.state_dict().items()}
    rates, info = _seed_rates(cfg, st, clf)
    fw = fisher_weights(st.F.scores, init)
    for size in cfg.sizes:
        tr_idx, va_idx = sample_split(pool.tensors["labels"], size, seed, cfg.val_fraction)
        train, val = pool.take(tr_idx), pool.take(va_idx)
        steps = -(-len(train) // cfg.batch_size)
        spec = RunSpec(epochs=max(cfg.epochs, -(-cfg.min_steps // steps)), batch_size=cfg.batch_size, lr=cfg.lr,
                       weight_decay=cfg.weight_decay, warmup=cfg.warmup)
        for arm_name in cfg.arms:
            k = (task.name, size, seed, arm_name)
            if k not in runs.done:
                r = train_run(clf, init, _arm(arm_name, seed, rates, st.guided, cfg), train, val, test, spec, seed,
                              fisher_weight=fw)
                runs.add(k, {"task": task.name, "size": size, "seed": seed, "arm": arm_name, "run_key": runs.key,
                             "n_train": len(train), "n_val": len(val), "n_test": len(test),
                             "epochs_run": spec.epochs, **r})
            runs.bar.update(1)
    return info


def train_all(cfg: GuidedDropoutConfig, st: Setup, out: Path, key: str) -> tuple[_Runs, dict[str, Any]]:
    """Stage 2: every (task, size, seed, arm) run not already in ``runs.jsonl`` (made under settings hash ``key``)."""
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = out / "runs.jsonl"
    if not cfg.resume and path.exists():
        path.unlink()
    todo = len(st.tasks) * len(cfg.sizes) * len(cfg.seeds) * len(cfg.arms)
    rates_info: dict[str, Any] = {}
    with tqdm(total=todo, desc="guided-dropout runs", disable=not cfg.progress, mininterval=1.0) as bar:
        runs = _Runs(path, key, _read_done(path, key) if cfg.resume else {}, bar)
        for task in st.tasks:
            data = (encode(st.target.tokenizer, task.pool, cfg.max_length),
                    encode(st.target.tokenizer, task.test, cfg.max_length))
            for seed in cfg.seeds:
                t0, n0 = time.perf_counter(), len(runs.seconds)
                rates_info = _train_seed(cfg, st, task, seed, data, runs)
                if n0 == 0 and runs.seconds:  # the first (task, seed) unit that computed anything: the estimate
                    left = sum(1 for k in _wanted(cfg, st) if k not in runs.done)
                    announce(left / len(runs.seconds), time.perf_counter() - t0, "(task, seed) units left")
    return runs, rates_info


def _wanted(cfg: GuidedDropoutConfig, st: Setup) -> list[tuple[str, int, int, str]]:
    """Every (task, size, seed, arm) run the settings ask for."""
    return [(t.name, s, sd, a) for t in st.tasks for s in cfg.sizes for sd in cfg.seeds for a in cfg.arms]
