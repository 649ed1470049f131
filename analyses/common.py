"""What every subcommand and analysis needs first: a model, a tokenizer, an objective and
held-out data, from the embedded default or a local checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import torch
from torch import nn

from landscape import objectives
from landscape.models.checkpoints import load_checkpoint, texts_to_batches

R = TypeVar("R", bound="FolderResult")


class FolderResult:
    """Mixin for an analysis result dataclass that :func:`run` writes to ``<out>/result.json``:
    ``to_dict()`` and ``load(out)`` (``out``: the run's folder, or its result.json)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def load(cls: type[R], out: str | Path) -> R:
        """Read ``out/result.json`` back."""
        from landscape.util.files import read_json

        path = Path(out) / "result.json" if Path(out).is_dir() else Path(out)
        return cls(**read_json(path, what=f"{cls.__name__} file"))


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


@overload
def read_texts(path: None) -> None: ...
@overload
def read_texts(path: str | Path) -> list[str]: ...
def read_texts(path: str | Path | None) -> list[str] | None:
    """Non-empty lines of a UTF-8 text file, one example each (the ``--texts`` flag); None for None."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--texts {p} is not a file; give a UTF-8 text file with one text per line.")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"--texts {p} holds no non-empty line.")
    return lines


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
) -> Target:
    """Load ``checkpoint`` ("default" or a local path) with held-out data and its objective.

    Data: the default model's held-out sequences; for another checkpoint, ``texts`` (or the
    held-out docstrings of the embedded corpus) tokenized with the checkpoint's tokenizer.
    MLMs get ``MaskedLM(mask_prob, seed)``; causal LMs get ``CausalLM()``.
    """
    if checkpoint in (None, "", "default"):
        from landscape.models.default_model import load_default

        dm = load_default()
        model, tokenizer, task, name = dm.model, dm.tokenizer, "mlm", "default"
        data = dm.heldout_batches(batch_size=batch_size, max_examples=examples) if texts is None else None
        meta = {"checkpoint": "default", "default_model": dm.metadata, "path": str(dm.path)}
    else:
        ck = load_checkpoint(checkpoint)
        model, tokenizer, task, name = ck.model, ck.tokenizer, ck.task, Path(checkpoint).name
        data, meta = None, {"checkpoint": str(Path(checkpoint).resolve())}
    if data is None:
        if tokenizer is None:
            raise ValueError(f"{checkpoint} has no tokenizer files; save the tokenizer beside the model.")
        if texts is None:
            texts = heldout_texts()
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < max_length:
            max_length = limit  # e.g. the default model's 64-token rows
        data = texts_to_batches(tokenizer, texts, max_length=max_length, batch_size=batch_size)
    data = _limit(data, examples)
    model = model.to(device)
    if task == "mlm":
        objective: objectives.Objective = objectives.MaskedLM(mask_prob=mask_prob, seed=seed, tokenizer=tokenizer)
    else:
        objective = objectives.CausalLM()
    return Target(model, tokenizer, objective, data, name, task, meta)


def split_examples(data: list[dict[str, torch.Tensor]], n_first: int, n_second: int,
                   batch_size: int = 8) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """The first ``n_first`` examples and the next ``n_second``, re-batched by ``batch_size``
    (e.g. Fisher data and scan data drawn from one held-out pool without overlap)."""
    rows = [{k: v[i : i + 1] for k, v in b.items()} for b in data for i in range(int(b["input_ids"].shape[0]))]
    if len(rows) < n_first + n_second:
        raise ValueError(f"need {n_first + n_second} held-out examples (fisher_examples + eval_examples), the data has "
                         f"{len(rows)}; lower --examples / --eval-examples or give more text.")

    def rebatch(rs: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [{k: torch.cat([r[k] for r in rs[i : i + batch_size]]) for k in rs[0]} for i in range(0, len(rs), batch_size)]

    return rebatch(rows[:n_first]), rebatch(rows[n_first : n_first + n_second])


def result_dict(out: str | Path | None, result: Any = None) -> dict[str, Any]:
    """An analysis result as a dict: ``result`` itself (dict or object with ``to_dict()``), or
    ``out/result.json`` when ``result`` is None (re-drawing figures from files)."""
    from landscape.util.files import read_json

    if result is not None:
        return result if isinstance(result, dict) else result.to_dict()
    if out is None:
        raise ValueError("give a result object or the folder holding its result.json.")
    return read_json(Path(out) / "result.json", what="analysis result")
