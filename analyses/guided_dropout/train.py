"""One fine-tuning run of the study: a classifier from the checkpoint, an arm's regularizer, AdamW
with linear warmup and decay, then the test set, evaluated once: for the final model (the paper's
fixed-epoch recipe) or for the epoch with the best validation accuracy (the ``select`` recipe).

Paired by construction: for one (task, size, seed) every arm starts from the same weights (the
classifier head initialised once per seed), sees the same training examples in the same order,
and starts its dropout random stream from the same seed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from analyses.guided_dropout.arms import Arm
from landscape import dropout

__all__ = ["Encoded", "RunSpec", "encode", "evaluate", "train_run"]


@dataclass
class Encoded:
    """A tokenized set: ``input_ids``/``attention_mask`` (and ``token_type_ids``) ``[N, L]``, ``labels`` ``[N]``."""

    tensors: dict[str, Tensor]

    def __len__(self) -> int:
        return int(self.tensors["labels"].shape[0])

    def take(self, idx: Sequence[int] | Tensor) -> Encoded:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Encoded({k: v[idx] for k, v in self.tensors.items()})

    def batches(self, size: int, order: Tensor | None = None) -> list[dict[str, Tensor]]:
        n = len(self)
        order = torch.arange(n) if order is None else order
        out = []
        for i in range(0, n, size):
            idx = order[i:i + size]
            b = {k: v[idx] for k, v in self.tensors.items()}
            width = int(b["attention_mask"].sum(1).max())  # trim shared padding
            out.append({k: (v[:, :width] if v.dim() == 2 else v) for k, v in b.items()})
        return out


def encode(tokenizer: Any, examples: Sequence[tuple[str, str | None, int]], max_length: int) -> Encoded:
    """Tokenize (text, text_pair, label) examples, truncating each to ``max_length`` tokens."""
    a = [e[0] for e in examples]
    b = [e[1] for e in examples] if any(e[1] is not None for e in examples) else None
    if b is not None:
        b = [x or "" for x in b]
    enc = tokenizer(a, b, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    t = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    t["labels"] = torch.tensor([e[2] for e in examples], dtype=torch.long)
    return Encoded(t)


@dataclass(frozen=True)
class RunSpec:
    """The fixed recipe: AdamW(lr, weight decay), linear warmup over ``warmup`` of the steps, then decay;
    ``select``: keep the epoch with the best validation accuracy (else the final model)."""

    epochs: int = 6
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    eval_batch_size: int = 256
    grad_clip: float = 1.0
    select: bool = False


def evaluate(model: nn.Module, data: Encoded, batch_size: int = 256) -> dict[str, float]:
    """Accuracy and mean cross-entropy (nats) in eval mode."""
    was = model.training
    model.eval()
    correct, loss, n = 0, 0.0, 0
    with torch.inference_mode():
        for b in data.batches(batch_size):
            labels = b.pop("labels")
            logits = model(**b).logits.float()
            loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
            n += int(labels.numel())
    model.train(was)
    return {"acc": correct / max(n, 1), "loss": loss / max(n, 1)}


def _pull(model: nn.Module, anchor: Mapping[str, Tensor], weight: Mapping[str, Tensor]) -> Tensor:
    """Σ_i w_i (θ_i − θ0_i)², w = F / mean(F) over the scored backbone tensors (EWC / L2-SP style)."""
    params = dict(model.named_parameters())
    total = torch.zeros((), dtype=torch.float32)
    for n, w in weight.items():
        total = total + (w * (params[n] - anchor[n]).pow(2)).sum()
    return total


def _optimizer(model: nn.Module, spec: RunSpec, n_train: int) -> tuple[Any, Any]:
    """AdamW (no decay on 1-D tensors and LayerNorm) and the linear warmup-then-decay schedule."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "LayerNorm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec.lr)
    total = max(1, spec.epochs * math.ceil(n_train / spec.batch_size))
    warm = max(1, int(spec.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    return opt, sched


def train_run(model: nn.Module, init_state: Mapping[str, Tensor], arm: Arm, train: Encoded, val: Encoded | None,
              test: Encoded, spec: RunSpec, seed: int, fisher_weight: Mapping[str, Tensor] | None = None
              ) -> dict[str, Any]:
    """Fine-tune ``model`` from ``init_state`` under ``arm``; return per-epoch metrics and the test metrics
    of the final model, or with ``spec.select`` of the epoch with the best validation accuracy (ties:
    lower validation loss, then earlier)."""
    t0 = time.perf_counter()
    if spec.select and (val is None or len(val) == 0):
        raise ValueError("the select recipe chooses the epoch on a validation set; give one (val_size >= 1).")
    model.load_state_dict(init_state)
    opt, sched = _optimizer(model, spec, len(train))
    anchor = {n: init_state[n].detach().clone() for n in (fisher_weight or {})} if arm.l2 > 0 else None
    order_gen = torch.Generator().manual_seed(10_000 + seed)  # the data order: the same for every arm
    torch.manual_seed(seed)  # the dropout stream starts at the same state for every arm
    epochs: list[dict[str, float]] = []
    best: tuple[float, float, int] | None = None
    best_state: dict[str, Tensor] | None = None
    ctx = dropout.apply(model, arm.rates, noise=arm.noise, granularity=arm.granularity) if arm.rates is not None \
        else contextlib.nullcontext()
    with ctx:
        for epoch in range(spec.epochs):
            model.train()
            run_loss = 0.0
            for b in train.batches(spec.batch_size, torch.randperm(len(train), generator=order_gen)):
                labels = b.pop("labels")
                loss = nn.functional.cross_entropy(model(**b).logits.float(), labels)
                if anchor is not None and fisher_weight is not None:
                    loss = loss + 0.5 * arm.l2 * _pull(model, anchor, fisher_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if spec.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                opt.step()
                sched.step()
                run_loss += float(loss.detach()) * int(labels.numel())
            row = {"epoch": epoch + 1, "train_loss": run_loss / len(train)}
            if spec.select and val is not None:
                v = evaluate(model, val, spec.eval_batch_size)
                row.update(val_acc=v["acc"], val_loss=v["loss"])
                key = (-v["acc"], v["loss"], epoch)
                if best is None or key < best:
                    best, best_state = key, {k: t.detach().clone() for k, t in model.state_dict().items()}
            epochs.append(row)
    if best_state is not None and best is not None:
        model.load_state_dict(best_state)
    t = evaluate(model, test, spec.eval_batch_size)
    chosen = {"best_epoch": best[2] + 1, "val_acc": -best[0], "val_loss": best[1]} if best is not None else \
        {"best_epoch": spec.epochs}
    return {"epochs": epochs, **chosen, "test_acc": t["acc"], "test_loss": t["loss"],
            "seconds": time.perf_counter() - t0}
