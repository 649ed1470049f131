"""Stage 2 of the guided-dropout study: the grid of paired fine-tuning runs.

For every task, seed, training size and arm one run, paired across arms (same examples, order, head
initialisation and dropout stream start); ``runs.jsonl`` gets one line per finished run, tagged with
the settings hash, and a resumed study skips the runs already there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from analyses.cli.eta import announce
from analyses.guided_dropout import arms, tasks
from analyses.guided_dropout.train import RunSpec, encode, train_run

if TYPE_CHECKING:
    from analyses.guided_dropout.study import GuidedDropoutConfig

#: The paper recipe's learning rate, scaled to the small default model: BERT-base's 2e-5 scaled by
#: width (2e-5·768/128 = 1.2e-4) left the default model where it started (test accuracy 56% at
#: n = 64 and n = 256 alike, 2 seeds, guided and pretrain arms); 5e-4 gave 62/64% and 1e-3 61/67%,
#: the one rate at which more data helps. A recipe setting shared by every arm.
PAPER_LR = 1e-3
#: The paper recipe's batch size (BERT's fine-tuning batch).
PAPER_BATCH = 32


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


def sample_split(labels: torch.Tensor, size: int, seed: int, n_val: int = 0) -> tuple[list[int], list[int]]:
    """A class-stratified sample of ``size`` training and ``n_val`` validation pool indices, disjoint.

    Each class's pool is shuffled once; training takes its first t_k and validation the next v_k,
    with (t_k) and (v_k) dealt round robin over the classes (so they differ by at most one where
    the pool allows): both splits hold every class they can."""
    if size + n_val > len(labels):
        raise ValueError(f"training size {size} plus {n_val} validation examples exceed the task's pool of "
                         f"{len(labels)} examples; lower --sizes or --val-size.")
    g = torch.Generator().manual_seed(1_000_003 * seed + size)
    by_class = [torch.nonzero(labels == c).reshape(-1) for c in sorted(set(labels.tolist()))]
    order: list[list[int]] = [ix[torch.randperm(len(ix), generator=g)].tolist() for ix in by_class]

    def deal(n: int, used: list[int]) -> list[int]:
        counts = [0] * len(order)
        while n > 0:
            for k, ix in enumerate(order):
                if used[k] + counts[k] < len(ix) and n > 0:
                    counts[k] += 1
                    n -= 1
        return counts

    tr = deal(size, [0] * len(order))
    va = deal(n_val, tr)
    train = [i for ix, t in zip(order, tr) for i in ix[:t]]
    val = [i for ix, t, v in zip(order, tr, va) for i in ix[t:t + v]]
    return sorted(train), sorted(val)


def fisher_weights(scores: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EWC weights w = F / F̄ for the classifier's tensors that the Fisher scored, F̄ the mean over all
    their elements (one global scale, so tensors keep their relative Fisher)."""
    kept = {n: s.detach().double() for n, s in scores.items() if n in params}
    mean = sum(float(s.sum()) for s in kept.values()) / max(1, sum(s.numel() for s in kept.values()))
    return {n: (s / max(mean, 1e-30)).float() for n, s in kept.items()}


def run_spec(cfg: GuidedDropoutConfig, n_train: int) -> RunSpec:
    """The recipe for one training size: ``paper`` (fixed epochs, the final model, lr
    :data:`PAPER_LR`, batch :data:`PAPER_BATCH`) or ``select`` (lr 1e-3, batch 16, the best
    validation epoch); ``--lr``/``--batch-size`` override; small sets train for at least
    ``min_steps`` steps."""
    paper = cfg.recipe == "paper"
    lr = cfg.lr if cfg.lr is not None else (PAPER_LR if paper else 1e-3)
    batch = cfg.batch_size or (PAPER_BATCH if paper else 16)
    steps = -(-n_train // batch)
    return RunSpec(epochs=max(cfg.epochs, -(-cfg.min_steps // steps)), batch_size=batch, lr=lr,
                   weight_decay=cfg.weight_decay, warmup=cfg.warmup, select=not paper)


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


@dataclass
class Runs:
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
                runs: Runs) -> dict[str, Any]:
    """Stage 2, one (task, seed): every size and arm, paired; returns the rates' record."""
    pool, test = data
    clf = _classifier(st, task, seed)
    init = {k: v.detach().clone() for k, v in clf.state_dict().items()}
    rates = arms.seed_rates(clf, st.guided, cfg.pretrain_rate, [seed])
    fw = fisher_weights(st.F.scores, init)
    n_val = cfg.val_size if cfg.recipe == "select" else 0
    for size in cfg.sizes:
        tr_idx, va_idx = sample_split(pool.tensors["labels"], size, seed, n_val)
        train, val = pool.take(tr_idx), pool.take(va_idx) if va_idx else None
        spec = run_spec(cfg, len(train))
        for arm_name in cfg.arms:
            k = (task.name, size, seed, arm_name)
            if k not in runs.done:
                arm = arms.arm_for(arm_name, seed, rates, st.guided, cfg.l2_strength)
                r = train_run(clf, init, arm, train, val, test, spec, seed, fisher_weight=fw)
                runs.add(k, {"task": task.name, "size": size, "seed": seed, "arm": arm_name, "run_key": runs.key,
                             "n_train": len(train), "n_val": len(va_idx), "n_test": len(test),
                             "epochs_run": spec.epochs, "lr": spec.lr, "batch_size": spec.batch_size, **r})
            runs.bar.update(1)
    return rates


def open_runs(cfg: GuidedDropoutConfig, out: Path, key: str, bar: Any) -> Runs:
    """``out/runs.jsonl``'s finished runs under settings hash ``key`` (none, and the file removed, without resume)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = out / "runs.jsonl"
    if not cfg.resume and path.exists():
        path.unlink()
    return Runs(path, key, _read_done(path, key) if cfg.resume else {}, bar)


def encode_tasks(cfg: GuidedDropoutConfig, st: Setup) -> dict[str, tuple[Any, Any]]:
    """Every task's (pool, test), tokenized once."""
    return {t.name: (encode(st.target.tokenizer, t.pool, cfg.max_length),
                     encode(st.target.tokenizer, t.test, cfg.max_length)) for t in st.tasks}


def train_seeds(cfg: GuidedDropoutConfig, st: Setup, runs: Runs, seeds: Sequence[int],
                data: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Stage 2 for ``seeds``: every (task, size, seed, arm) run not in ``runs`` yet; returns the last rates' record.

    The first (task, seed) unit that computes anything prints the time estimate for the rest."""
    rates: dict[str, Any] = {}
    for task in st.tasks:
        for seed in seeds:
            t0, n0 = time.perf_counter(), len(runs.seconds)
            rates = _train_seed(cfg, st, task, seed, data[task.name], runs)
            if n0 == 0 and runs.seconds:
                left = sum(1 for k in wanted(cfg, st, seeds) if k not in runs.done)
                announce(left / len(runs.seconds), time.perf_counter() - t0, "(task, seed) units left")
    return rates


def wanted(cfg: GuidedDropoutConfig, st: Setup, seeds: Sequence[int]) -> list[tuple[str, int, int, str]]:
    """Every (task, size, seed, arm) run the settings ask for, for ``seeds``."""
    return [(t.name, s, sd, a) for t in st.tasks for s in cfg.sizes for sd in seeds for a in cfg.arms]
