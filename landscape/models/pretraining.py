"""Masked-LM pretraining of the embedded default model: BERT's 80/10/10 masking, AdamW with a
linear warmup and decay, and the loss curve kept in the cache entry's metadata.

The recipe's settings are stated once, in :class:`PretrainRecipe`;
:class:`~landscape.models.default_model.DefaultModelConfig` extends it with the model and corpus,
so the cache key covers both and keeps one home.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from landscape.models.corpus import SPECIAL_TOKENS

__all__ = ["PretrainRecipe", "maskable", "pretrain", "loss_curve"]


@dataclass(frozen=True)
class PretrainRecipe:
    """The settings :func:`pretrain` reads; the defaults are the embedded default model's.

    Tuned on a 2-core CPU for the best held-out loss per second: a large training mask rate (40 %),
    and a high learning rate with a longer warmup. With dropout 0.1, 1,500 steps reach a held-out
    loss 1.25 / 1.65 / 1.87 nats below unigram at lr 3e-3 / 4e-3 (warmup 100) / 5e-3 (warmup 150);
    6e-3 diverged without dropout (post-LN BERT). 1,150 steps keep a quiet build under 4 minutes
    (gap 1.57 for seed 0; seeds 1 and 2 escape the unigram plateau later: see BENCHMARKS.md).
    """

    seed: int = 0
    steps: int = 1150
    batch_size: int = 64
    lr: float = 5e-3
    warmup_steps: int = 150
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    train_mask_prob: float = 0.4  # pretraining only; evaluation always masks 15%


def maskable(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: list[int]) -> torch.Tensor:
    """Positions that may be masked: real tokens (attention 1) that are not special tokens."""
    return attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids))


def _mask_batch(ids: torch.Tensor, attn: torch.Tensor, cfg: PretrainRecipe, special_ids: list[int],
                mask_id: int, vocab_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT 80/10/10 masking. Returns (corrupted ids, boolean selection of predicted positions)."""
    sel = (torch.rand(ids.shape, generator=gen) < cfg.train_mask_prob) & maskable(ids, attn, special_ids)
    u = torch.rand(ids.shape, generator=gen)
    rand_ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, ids.shape, generator=gen)
    out = torch.where(sel & (u < 0.8), torch.full_like(ids, mask_id), ids)
    out = torch.where(sel & (u >= 0.8) & (u < 0.9), rand_ids, out)
    return out, sel


def _masked_loss(model: Any, ids: torch.Tensor, attn: torch.Tensor, targets: torch.Tensor,
                 sel: torch.Tensor, bucket: int = 128) -> torch.Tensor:
    """Mean MLM cross-entropy, running the LM head only on the selected positions.

    The gathered positions are padded (with ignored targets) to a multiple of ``bucket``:
    a different size every step fragments glibc's heap (RSS grew by GBs over a build).
    """
    am = None if bool(attn.all()) else attn
    hidden = model.bert(input_ids=ids, attention_mask=am).last_hidden_state
    idx = sel.flatten().nonzero().squeeze(1)
    pad = -idx.numel() % bucket
    tgt = torch.cat([targets.flatten()[idx], targets.new_full((pad,), -100)])
    idx = torch.cat([idx, idx.new_zeros(pad)])
    logits = model.cls(hidden.reshape(-1, hidden.shape[-1])[idx])
    return torch.nn.functional.cross_entropy(logits.float(), tgt, ignore_index=-100)


def pretrain(model: Any, data: dict[str, torch.Tensor], cfg: PretrainRecipe, special_ids: list[int],
             mask_id: int, progress: bool = True, callback: Callable[[int], None] | None = None) -> list[float]:
    """Pretrain ``model`` in place with MLM (AdamW, linear warmup + decay). Returns per-step losses.

    ``callback(step)`` is called after each optimizer step (e.g. for evaluation during tuning).
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    ids_all, attn_all = data["input_ids"], data["attention_mask"]
    n = ids_all.shape[0]
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in name]
    no_decay = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "LayerNorm" not in name)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_lambda(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    model.train()
    order = torch.randperm(n, generator=gen)
    pos, losses = 0, []
    bar = tqdm(range(cfg.steps), desc="pretraining default model", disable=not progress, mininterval=1.0)
    for _ in bar:
        if pos + cfg.batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        ids, attn = ids_all[idx], attn_all[idx]
        corrupted, sel = _mask_batch(ids, attn, cfg, special_ids, mask_id, model.config.vocab_size, gen)
        if not bool(sel.any()):
            continue
        loss = _masked_loss(model, corrupted, attn, ids, sel)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        losses.append(loss.item())
        if callback is not None:
            callback(len(losses))
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    model.eval()
    return losses


def loss_curve(losses: list[float], points: int = 20) -> list[list[float]]:
    """[[step, mean train loss over the preceding window], ...] at ``points`` evenly spaced steps."""
    w = max(1, len(losses) // points)
    return [[i + w, round(sum(losses[i:i + w]) / len(losses[i:i + w]), 4)] for i in range(0, len(losses), w)]
