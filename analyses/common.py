"""What every subcommand and analysis needs first: a model, a tokenizer, an objective and
held-out data, from the embedded default or a local checkpoint."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import torch
from torch import nn

from landscape import objectives
from landscape.models.checkpoints import load_checkpoint, max_positions, quiet_transformers, texts_to_batches
from landscape.models.tokens import check_unknown_tokens, token_stats

log = logging.getLogger("landscape")

@dataclass
class Target:
    """A model ready to analyse: ``data`` is a list of raw batches (input_ids/attention_mask)."""

    model: nn.Module
    tokenizer: Any
    objective: objectives.Objective
    data: list[dict[str, torch.Tensor]]
    name: str
    task: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_examples(self) -> int:
        return sum(int(b["input_ids"].shape[0]) for b in self.data)


def heldout_texts(n: int | None = None) -> list[str]:
    """The embedded corpus's held-out docstrings (never trained on by the default model); the
    first ``n`` when given."""
    from landscape.models.corpus import split_texts, stdlib_docstrings

    texts = split_texts(stdlib_docstrings())[1]
    return texts if n is None else texts[:n]


class Texts(list):
    """A list of texts, with ``labels`` (one per text, int or label name) when the file had them."""

    labels: list[int | str | None] | None = None


@overload
def read_texts(path: None) -> None: ...
@overload
def read_texts(path: str | Path) -> Texts: ...
def read_texts(path: str | Path | None) -> Texts | None:
    """The ``--texts`` file: one example per non-empty line of a UTF-8 text file, or labelled
    examples from a ``.csv`` (columns ``text`` and ``label`` under a header row) or ``.jsonl``
    (``{"text": ..., "label": ...}`` per line); None for None. Labels feed sequence classifiers."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--texts {p} is not a file; give a UTF-8 text file with one text per line "
                                "(or .csv / .jsonl with text and label).")
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--texts {p} is not UTF-8 text.") from None
    if p.suffix.lower() in (".csv", ".jsonl"):
        rows = _read_csv(p, raw) if p.suffix.lower() == ".csv" else _read_jsonl(p, raw)
        out = Texts(t for t, _ in rows)
        labels = [y for _, y in rows]
        out.labels = None if all(y is None for y in labels) else labels
        if out.labels is not None and any(y is None for y in labels):
            raise ValueError(f"--texts {p}: some rows have a label and some do not; label every row or none.")
    else:
        out = Texts(line.strip() for line in raw.splitlines() if line.strip())
    if not out:
        raise ValueError(f"--texts {p} holds no non-empty text.")
    return out


def _label(value: Any) -> int | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"label {value!r} is neither a class index nor a label name.")
    return int(value) if isinstance(value, int) or value.strip().lstrip("-").isdigit() else value.strip()


def _read_csv(p: Path, raw: str) -> list[tuple[str, int | str | None]]:
    reader = csv.DictReader(raw.splitlines())
    if reader.fieldnames is None or "text" not in reader.fieldnames:
        raise ValueError(f"--texts {p}: a CSV needs a header row with a 'text' column (and 'label' for classifiers).")
    rows = []
    for i, row in enumerate(reader, 2):
        text = (row.get("text") or "").strip()
        try:
            label = _label(row.get("label"))
        except ValueError as exc:
            raise ValueError(f"--texts {p} line {i}: {exc}") from None
        if text:
            rows.append((text, label))
    return rows


def _read_jsonl(p: Path, raw: str) -> list[tuple[str, int | str | None]]:
    rows = []
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--texts {p} line {i} is not JSON ({exc.msg}).") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise ValueError(f"--texts {p} line {i}: expected an object with a 'text' string (and 'label').")
        try:
            label = _label(obj.get("label"))
        except ValueError as exc:
            raise ValueError(f"--texts {p} line {i}: {exc}") from None
        if obj["text"].strip():
            rows.append((obj["text"].strip(), label))
    return rows


def _label_ids(labels: list[int | str], model: nn.Module) -> list[int]:
    """Class indices from ints or label names (``config.label2id``), checked against ``num_labels``."""
    config = getattr(model, "config", None)
    n = int(getattr(config, "num_labels", 0) or 0)
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    out = []
    for y in labels:
        if isinstance(y, str):
            if y not in label2id:
                raise ValueError(f"label {y!r} is not one of the model's labels {sorted(label2id)}; use those names or "
                                 "class indices.")
            y = label2id[y]
        if n and not 0 <= y < n:
            raise ValueError(f"label {y} is outside the model's {n} classes (0..{n - 1}).")
        out.append(int(y))
    return out


def _limit(batches: list[dict[str, torch.Tensor]], examples: int | None) -> list[dict[str, torch.Tensor]]:
    if examples is None:
        return batches
    if examples < 1:
        raise ValueError(f"--examples must be at least 1, got {examples}.")
    out, left = [], examples
    for b in batches:
        if left <= 0:
            break
        take = min(left, int(b["input_ids"].shape[0]))
        out.append({k: v[:take] for k, v in b.items()})
        left -= take
    return out


def load_target(
    checkpoint: str = "default",
    examples: int | None = 64,
    batch_size: int = 8,
    device: str = "cpu",
    seed: int = 0,
    texts: list[str] | None = None,
    max_length: int = 128,
    mask_prob: float = 0.15,
    tokenizer: str | Path | None = None,
    allow_unk: bool = False,
) -> Target:
    """Load ``checkpoint`` ("default", a local path or a hub name in the local cache) with held-out
    data and its objective.

    Data: the default model's held-out sequences; for another checkpoint, ``texts`` (or the
    held-out docstrings of the embedded corpus) tokenized with the checkpoint's tokenizer.
    MLMs get ``MaskedLM(mask_prob, seed)``; causal LMs get ``CausalLM()``; sequence classifiers
    get ``HFLoss()`` and need labelled ``texts`` (:class:`Texts` with ``labels``).

    Requests the data cannot meet are lowered and said: more ``examples`` than there are (logged,
    and ``meta["examples_requested"]``/``meta["examples_used"]``/``meta["notes"]``), a ``max_length``
    above the model's position embeddings (capped, ``meta["max_length"]``).

    ``tokenizer``: a tokenizer folder or file for a checkpoint saved without one. Before any
    computing, the share of ``[UNK]`` tokens and of truncated texts is measured on the texts used
    (``meta["tokens"]``); over 5% ``[UNK]`` is a ``ValueError`` naming the likely cause, unless
    ``allow_unk``.
    """
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"--batch-size must be ≥ 1 and --max-length ≥ 2, got {batch_size} and {max_length}.")
    model, tok, task, name, data, meta = _load_model(checkpoint, tokenizer, texts is None, batch_size, examples)
    notes: list[str] = []
    labels = getattr(texts, "labels", None)
    if task == "cls" and (texts is None or labels is None):
        raise ValueError(f"{name} is a sequence classifier: give labelled texts, --texts FILE.csv (columns text,label) "
                         "or FILE.jsonl ({\"text\": ..., \"label\": ...} per line).")
    if data is None:
        data = _text_batches(model, tok, texts, str(checkpoint), task, meta, notes, max_length=max_length,
                             batch_size=batch_size, examples=examples, allow_unk=allow_unk)
    available = sum(int(b["input_ids"].shape[0]) for b in data)
    data = _limit(data, examples)
    if examples is not None and examples > available:
        notes.append(f"--examples {examples} lowered to {available}: the data holds only {available} examples.")
    meta.update(examples_requested=examples, examples_used=sum(int(b["input_ids"].shape[0]) for b in data))
    for note in notes:
        log.warning("landscape: %s", note)
    if notes:
        meta["notes"] = notes
    return Target(model.to(device), tok, _objective(task, mask_prob, seed, tok), data, name, task, meta)


def _load_model(checkpoint: str, tokenizer: str | Path | None, default_data: bool, batch_size: int,
                examples: int | None) -> tuple[nn.Module, Any, str, str, list[dict[str, torch.Tensor]] | None,
                                              dict[str, Any]]:
    """(model, tokenizer, task, name, data, meta) of ``checkpoint``; ``data``: the default model's
    held-out batches when ``default_data``, else None (the caller tokenizes texts)."""
    if checkpoint in (None, "", "default"):
        from landscape.models.default_model import load_default

        if tokenizer is not None:
            raise ValueError("the default model has its own tokenizer; --tokenizer is for other checkpoints.")
        with quiet_transformers():
            dm = load_default()
        data = dm.heldout_batches(batch_size=batch_size, max_examples=examples) if default_data else None
        meta: dict[str, Any] = {"checkpoint": "default", "default_model": dm.metadata, "path": str(dm.path)}
        return dm.model, dm.tokenizer, "mlm", "default", data, meta
    ck = load_checkpoint(checkpoint, tokenizer=tokenizer)
    return ck.model, ck.tokenizer, ck.task, Path(checkpoint).name, None, {"checkpoint": str(ck.path.resolve())}


def _objective(task: str, mask_prob: float, seed: int, tokenizer: Any) -> objectives.Objective:
    """The task's loss: ``MaskedLM(mask_prob, seed)``, ``HFLoss()`` (classifiers) or ``CausalLM()``."""
    if task == "mlm":
        return objectives.MaskedLM(mask_prob=mask_prob, seed=seed, tokenizer=tokenizer)
    return objectives.HFLoss() if task == "cls" else objectives.CausalLM()


def _text_batches(model: nn.Module, tok: Any, texts: list[str] | None, checkpoint: str, task: str,
                  meta: dict[str, Any], notes: list[str], *, max_length: int, batch_size: int,
                  examples: int | None, allow_unk: bool) -> list[dict[str, torch.Tensor]]:
    """``texts`` (default: the held-out docstrings) tokenized into batches, after the token check;
    records ``meta["max_length"]`` and ``meta["tokens"]`` and appends lowered requests to ``notes``."""
    if tok is None:
        raise ValueError(f"{checkpoint} has no tokenizer files (none beside the model or a folder up); save the "
                         "tokenizer beside the model or pass --tokenizer DIR|FILE (tokenizer=).")
    labels = getattr(texts, "labels", None)
    if texts is None:
        texts = heldout_texts()
    limit = getattr(tok, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < max_length:
        max_length = limit  # e.g. the default model's 64-token rows
    positions = max_positions(model)
    if positions is not None and positions < max_length:
        notes.append(f"--max-length {max_length} lowered to {positions}, the model's position embeddings.")
        max_length = positions
    meta["max_length"] = max_length
    meta["tokens"] = token_stats(tok, texts[:examples] if examples is not None else texts, max_length)
    check_unknown_tokens(meta["tokens"], tok, allow_unk)
    return texts_to_batches(tok, texts, max_length=max_length, batch_size=batch_size,
                            labels=_label_ids(list(labels), model) if task == "cls" and labels is not None else None)


def _cat_padded(rows: list[torch.Tensor], key: str) -> torch.Tensor:
    """Concatenate single-example rows along dim 0, right-padding per-token rows that came from
    batches of different padded lengths (attention 0, label -100, id 0: positions with no effect)."""
    if rows[0].ndim < 2 or len({r.shape[1] for r in rows}) == 1:
        return torch.cat(rows)
    width = max(r.shape[1] for r in rows)
    fill = -100 if key == "labels" else 0
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=fill) for r in rows])


def split_examples(data: list[dict[str, torch.Tensor]], n_first: int, n_second: int,
                   batch_size: int = 8) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """The first ``n_first`` examples and the next ``n_second``, re-batched by ``batch_size``
    (e.g. Fisher data and scan data drawn from one held-out pool without overlap)."""
    rows = [{k: v[i : i + 1] for k, v in b.items()} for b in data for i in range(int(b["input_ids"].shape[0]))]
    if len(rows) < n_first + n_second:
        raise ValueError(f"need {n_first + n_second} held-out examples (fisher_examples + eval_examples), the data has "
                         f"{len(rows)}; lower --examples / --eval-examples or give more text.")

    def rebatch(rs: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [{k: _cat_padded([r[k] for r in rs[i : i + batch_size]], k) for k in rs[0]}
                for i in range(0, len(rs), batch_size)]

    return rebatch(rows[:n_first]), rebatch(rows[n_first : n_first + n_second])
