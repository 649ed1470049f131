"""Labelled tasks for the guided-dropout study: two built offline from the stdlib docstring corpus,
and any user CSV/JSONL file.

* ``topic``: which top-level stdlib package a docstring comes from (the K largest packages,
  balanced: every class has the same number of pool and test examples), split by module: each
  module (``.py`` file) feeds either the pool or the test set, never both;
* ``same_module``: whether two docstrings come from the same module (``.py`` file); balanced
  positives and negatives; test pairs come from modules that no training pair uses.

Each has a fixed test set (800 examples by default) disjoint from the training pool. Leakage
policy: the default model was pretrained (MLM) on the docstrings' text, never on these labels, as
GLUE tasks reuse Wikipedia text that BERT saw.

User files: CSV with a header, or JSONL, with ``text``, optional ``text_pair`` and ``label``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landscape.models import corpus

__all__ = ["BUILTIN_TASKS", "Task", "file_task", "same_module_task", "topic_task"]

BUILTIN_TASKS = ("topic", "same_module")


@dataclass
class Task:
    """Examples as (text, text_pair or None, label index); ``pool`` for training, ``test`` fixed;
    ``pool_groups``/``test_groups``: each example's source module where the task has one."""

    name: str
    classes: list[str]
    pool: list[tuple[str, str | None, int]]
    test: list[tuple[str, str | None, int]]
    meta: dict[str, Any] = field(default_factory=dict)
    pool_groups: list[str] = field(default_factory=list)
    test_groups: list[str] = field(default_factory=list)

    @property
    def pair(self) -> bool:
        return any(ex[1] is not None for ex in self.pool[:50])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "classes": self.classes, "n_pool": len(self.pool), "n_test": len(self.test),
                "pair": self.pair, **self.meta}


def _h(text: str, salt: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{salt}\x00{text}".encode()).digest()[:8], "big") / 2.0**64


def _split_modules(docs: list[corpus.Document], n_test: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Whole modules, in a fixed hashed order, go to the test side until it holds ``n_test`` docstrings;
    the test side is cut to ``n_test`` and the remaining modules form the pool."""
    by_mod: dict[str, list[str]] = defaultdict(list)
    for d in docs:
        by_mod[d.module].append(d.text)
    test: list[tuple[str, str]] = []
    pool: list[tuple[str, str]] = []
    for m in sorted(by_mod, key=lambda m: (_h(m, "topic-module"), m)):
        side = test if len(test) < n_test else pool
        side += [(m, t) for t in sorted(by_mod[m], key=lambda t: _h(t, "topic"))]
    return pool, test[:n_test]


def topic_task(n_classes: int = 8, n_test: int = 800, docs: list[corpus.Document] | None = None) -> Task:
    """Top-level package classification over the ``n_classes`` packages with most docstrings, split
    by module: no module feeds both the pool and the test set (a module's docstrings share words).
    ``docs`` defaults to :func:`landscape.models.corpus.stdlib_documents`."""
    docs = corpus.stdlib_documents() if docs is None else docs
    packages = {d.module.split(".")[0] for d in docs if "." in d.module}  # a single-file module is not a package
    by_pkg: dict[str, list[corpus.Document]] = defaultdict(list)
    for d in docs:
        if d.module.split(".")[0] in packages:
            by_pkg[d.module.split(".")[0]].append(d)
    ranked = sorted(by_pkg, key=lambda k: (-len(by_pkg[k]), k))[:n_classes]
    if len(ranked) < 2:
        raise ValueError("the stdlib corpus has fewer than two packages with docstrings.")
    classes = sorted(ranked)
    per_test = -(-n_test // len(classes))
    sides = {c: _split_modules(by_pkg[c], per_test) for c in classes}
    short = [c for c in classes if len(sides[c][1]) < per_test or not sides[c][0]]
    if short:
        raise ValueError(f"package {short[0]!r} has too few docstrings outside its test modules; lower n_test "
                         f"({n_test}) or n_classes ({n_classes}).")
    per_pool = min(len(sides[c][0]) for c in classes)
    task = Task("topic", classes, [], [])
    for y, c in enumerate(classes):
        pool, test = sides[c]
        pool = sorted(pool, key=lambda mt: _h(mt[1], "topic"))[:per_pool]  # spread over every pool module
        task.test += [(t, None, y) for _, t in test]
        task.test_groups += [m for m, _ in test]
        task.pool += [(t, None, y) for _, t in pool]
        task.pool_groups += [m for m, _ in pool]
    task.meta = {"per_class_pool": per_pool, "per_class_test": per_test,
                 "split": "by module: no module feeds both the pool and the test set",
                 "modules": {"pool": len(set(task.pool_groups)), "test": len(set(task.test_groups))},
                 "docstrings_per_package": {c: len(by_pkg[c]) for c in classes}}
    return task


def same_module_task(n_test: int = 1000, n_pool: int = 4096, test_fraction: float = 0.3, seed: int = 0,
                     docs: list[corpus.Document] | None = None) -> Task:
    """Pairs of docstrings: label 1 if both come from the same module. Modules are split between
    pool and test, so no test docstring appears in a training pair."""
    docs = corpus.stdlib_documents() if docs is None else docs
    by_mod: dict[str, list[str]] = defaultdict(list)
    for d in docs:
        by_mod[d.module].append(d.text)
    mods = sorted(m for m in by_mod if len(by_mod[m]) >= 2)
    test_mods = [m for m in mods if _h(m, "same_module") < test_fraction]
    pool_mods = [m for m in mods if _h(m, "same_module") >= test_fraction]
    if len(test_mods) < 2 or len(pool_mods) < 2:
        raise ValueError("too few modules with two or more docstrings for the same-module task.")

    def pairs(ms: list[str], n: int, rng: random.Random) -> list[tuple[str, str | None, int]]:
        out: list[tuple[str, str | None, int]] = []
        weights = [len(by_mod[m]) for m in ms]
        for i in range(n):
            if i % 2 == 0:
                m = rng.choices(ms, weights)[0]
                a, b = rng.sample(by_mod[m], 2)
                out.append((a, b, 1))
            else:
                m1, m2 = rng.sample(ms, 2)
                out.append((rng.choice(by_mod[m1]), rng.choice(by_mod[m2]), 0))
        return out

    test = pairs(test_mods, n_test, random.Random(seed + 1))
    pool = pairs(pool_mods, n_pool, random.Random(seed + 2))
    return Task("same_module", ["different", "same"], pool, test,
                {"n_test_modules": len(test_mods), "n_pool_modules": len(pool_mods),
                 "split": "by module: test pairs come from modules that no training pair uses"})


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no labelled data file there (give a CSV or JSONL with text, [text_pair,] "
                                "label).")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ValueError(f"{path}:{i} is not a JSON object.") from None
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict) or r.get("text") in (None, "") or r.get("label") in (None, ""):
            raise ValueError(f"{path}: row {i} lacks a 'text' or 'label' value (columns: text, optional text_pair, "
                             "label).")
    if not rows:
        raise ValueError(f"{path} holds no examples.")
    return rows


def file_task(path: str | Path, test_path: str | Path | None = None, test_fraction: float = 0.25,
              seed: int = 0) -> Task:
    """A user task from CSV/JSONL (``text``, optional ``text_pair``, ``label``).

    Without ``test_path``, a fixed ``test_fraction`` of the rows (chosen by a hash of each row's
    text) is the test set. With it, every test label must occur in the training file.
    """
    path = Path(path)
    rows = _read_rows(path)
    classes = sorted({str(r["label"]) for r in rows})
    if len(classes) < 2:
        raise ValueError(f"{path}: every row has the label {classes[0]!r}; a classification task needs two classes.")
    index = {c: i for i, c in enumerate(classes)}

    def ex(r: dict[str, Any]) -> tuple[str, str | None, int]:
        pair = r.get("text_pair")
        return (str(r["text"]), None if pair in (None, "") else str(pair), index[str(r["label"])])

    if test_path is None:
        keyed = [(_h(f"{r['text']}\x00{r.get('text_pair')}", f"file{seed}"), ex(r)) for r in rows]
        test = [e for k, e in keyed if k < test_fraction]
        pool = [e for k, e in keyed if k >= test_fraction]
    else:
        test_rows = _read_rows(Path(test_path))
        unknown = sorted({str(r["label"]) for r in test_rows} - set(classes))
        if unknown:
            raise ValueError(f"{test_path}: labels {unknown[:5]} do not occur in {path.name} (its classes: "
                             f"{classes[:10]}).")
        pool, test = [ex(r) for r in rows], [ex(r) for r in test_rows]
    if not test or not pool:
        raise ValueError(f"{path}: too few rows to hold out a test set; give more rows or --test-data.")
    return Task(path.stem, classes, pool, test, {"source": str(path),
                                                 "test_source": str(test_path) if test_path else None})
