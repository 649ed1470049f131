"""Stage 2 of the guided-dropout study: the grid of paired fine-tuning runs.

For every task, seed, training size and arm one run, paired across arms (same examples, order, head
initialisation and dropout stream start); ``runs.jsonl`` gets one line per finished run, tagged with
the settings hash, and a resumed study skips the runs already there. A :class:`Unit` (all arms of
one task, seed and size) draws everything from its seed and size, so units run in any order and
process (:mod:`.pool`) with the same numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

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


def _classifier(ckpt: Path, pad_token_id: int | None, n_labels: int, seed: int) -> Any:
    """A fresh classifier; its new head's initialisation depends on ``seed`` only, so every arm and size shares it."""
    from transformers import AutoModelForSequenceClassification

    from landscape.models.checkpoints import quiet_transformers

    torch.manual_seed(seed)
    with quiet_transformers():  # no "Loading weights" bar per unit between the study's lines
        clf = AutoModelForSequenceClassification.from_pretrained(ckpt, num_labels=n_labels, local_files_only=True)
    if getattr(clf.config, "pad_token_id", None) is None and pad_token_id is not None:
        clf.config.pad_token_id = pad_token_id
    return clf


@dataclass
class Runs:
    """Stage 2's bookkeeping: finished runs by (task, size, seed, arm), this call's timings, the log file,
    and when the study started (for the time estimate)."""

    path: Path
    key: str
    done: dict[tuple[str, int, int, str], dict[str, Any]]
    bar: Any
    seconds: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add(self, row: dict[str, Any]) -> None:
        """Append one finished run to ``runs.jsonl`` (only the parent process writes) and advance the bar."""
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        self.done[(row["task"], int(row["size"]), int(row["seed"]), row["arm"])] = row
        self.seconds.append(row["seconds"])
        self.bar.update(1)


@dataclass(frozen=True)
class Unit:
    """One independent piece of the grid: all ``arms`` (those not finished yet) of one (task, seed, size)."""

    task: str
    seed: int
    size: int
    arms: tuple[str, ...]


@dataclass
class UnitContext:
    """Everything a unit reads, and nothing more (picklable: a worker process may receive it by ``spawn``)."""

    cfg: GuidedDropoutConfig
    key: str
    ckpt: Path
    pad_token_id: int | None
    n_labels: dict[str, int]
    guided: Any
    scores: dict[str, torch.Tensor]
    data: dict[str, tuple[Any, Any]]


def unit_context(cfg: GuidedDropoutConfig, st: Setup, key: str, data: dict[str, tuple[Any, Any]]) -> UnitContext:
    """The units' shared inputs from stage 1 (the MLM model itself stays behind)."""
    return UnitContext(cfg, key, st.ckpt, st.target.tokenizer.pad_token_id, {t.name: len(t.classes) for t in st.tasks},
                       st.guided, dict(st.F.scores), data)


def train_unit(ctx: UnitContext, unit: Unit, emit: Callable[[dict[str, Any]], None]) -> None:
    """Train ``unit``'s arms one after another, paired, handing each finished run's row to ``emit``.

    The same numbers in any process and in any order of units: the classifier, its head and every
    random stream are seeded from (seed, size) alone."""
    cfg = ctx.cfg
    pool, test = ctx.data[unit.task]
    clf = _classifier(ctx.ckpt, ctx.pad_token_id, ctx.n_labels[unit.task], unit.seed)
    init = {k: v.detach().clone() for k, v in clf.state_dict().items()}
    rates = arms.seed_rates(clf, ctx.guided, cfg.pretrain_rate, [unit.seed])
    fw = fisher_weights(ctx.scores, init)
    n_val = cfg.val_size if cfg.recipe == "select" else 0
    tr_idx, va_idx = sample_split(pool.tensors["labels"], unit.size, unit.seed, n_val)
    train, val = pool.take(tr_idx), pool.take(va_idx) if va_idx else None
    spec = run_spec(cfg, len(train))
    for arm_name in unit.arms:
        arm = arms.arm_for(arm_name, unit.seed, rates, ctx.guided, cfg.l2_strength)
        r = train_run(clf, init, arm, train, val, test, spec, unit.seed, fisher_weight=fw)
        emit({"task": unit.task, "size": unit.size, "seed": unit.seed, "arm": arm_name, "run_key": ctx.key,
              "n_train": len(train), "n_val": len(va_idx), "n_test": len(test), "epochs_run": spec.epochs,
              "lr": spec.lr, "batch_size": spec.batch_size, **r})


def rates_record(st: Setup, pretrain_rate: float, seeds: Sequence[int]) -> dict[str, Any]:
    """The fixed-rate arms' rates on the classifier of the last task (:func:`arms.seed_rates`)."""
    task = st.tasks[-1]
    clf = _classifier(st.ckpt, st.target.tokenizer.pad_token_id, len(task.classes), seeds[-1])
    return arms.seed_rates(clf, st.guided, pretrain_rate, seeds)


def open_runs(cfg: GuidedDropoutConfig, out: Path, key: str, bar: Any, started: float | None = None) -> Runs:
    """``out/runs.jsonl``'s finished runs under settings hash ``key`` (none, and the file removed, without resume);
    ``started``: the study's start (``time.perf_counter``), for the time estimate."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    path = out / "runs.jsonl"
    if not cfg.resume and path.exists():
        path.unlink()
    return Runs(path, key, _read_done(path, key) if cfg.resume else {}, bar,
                started=time.perf_counter() if started is None else started)


def encode_tasks(cfg: GuidedDropoutConfig, st: Setup) -> dict[str, tuple[Any, Any]]:
    """Every task's (pool, test), tokenized once."""
    return {t.name: (encode(st.target.tokenizer, t.pool, cfg.max_length),
                     encode(st.target.tokenizer, t.test, cfg.max_length)) for t in st.tasks}


def units(cfg: GuidedDropoutConfig, st: Setup, runs: Runs, seeds: Sequence[int]) -> list[Unit]:
    """The units of ``seeds`` with at least one run not in ``runs`` yet, in (task, seed, size) order."""
    todo = [Unit(t.name, sd, s, tuple(a for a in cfg.arms if (t.name, s, sd, a) not in runs.done))
            for t in st.tasks for sd in seeds for s in cfg.sizes]
    return [u for u in todo if u.arms]


def unit_cost(cfg: GuidedDropoutConfig, unit: Unit) -> float:
    """A unit's relative cost: its runs × optimizer steps per run (sizes 64 and 256 differ little under
    the paper recipe's 60-step floor, but larger sizes or ``select`` do)."""
    spec = run_spec(cfg, unit.size)
    return len(unit.arms) * spec.epochs * -(-unit.size // spec.batch_size)


def wanted(cfg: GuidedDropoutConfig, st: Setup, seeds: Sequence[int]) -> list[tuple[str, int, int, str]]:
    """Every (task, size, seed, arm) run the settings ask for, for ``seeds``."""
    return [(t.name, s, sd, a) for t in st.tasks for s in cfg.sizes for sd in seeds for a in cfg.arms]
