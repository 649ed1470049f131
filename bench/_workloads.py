"""Workloads shared by the benchmark scripts: the floor every ratio is measured against."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def gradient_fn(model: nn.Module, objective: Any, batch: Any, run: nn.Module | None = None) -> Callable[[], None]:
    """A closure computing one gradient of the summed loss of ``batch`` (prepared once with ``model``),
    evaluated through ``run`` (default ``model``; e.g. its ``torch.compile`` wrapper) in the same
    evaluation state (eval mode, math attention) as the curvature products it is compared with."""
    from landscape import util

    target = model if run is None else run
    prepared = objective.prepare(batch, model)
    params = [p for p in model.parameters() if p.requires_grad]

    def grad() -> None:
        with util.deterministic_eval(target):
            s, _ = objective.loss_sum(target, prepared)
            torch.autograd.grad(s, params)

    return grad


def random_mlm_batch(vocab_size: int, sequences: int, seq_len: int, quick: bool) -> tuple[list[dict], Any]:
    """One batch of random token ids ``[sequences, seq_len]`` (CLS ... SEP, ids ≥ 1000 unless ``quick``)
    and BERT's ``MaskedLM`` objective (mask id 103, special ids 0/100-103), seeded: the scale workloads."""
    from landscape import objectives

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000 if not quick else 5, vocab_size, (sequences, seq_len), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    data = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
    obj = objectives.MaskedLM(mask_prob=0.15, seed=0, mask_token_id=103, special_token_ids=[0, 100, 101, 102, 103])
    return data, obj
