"""Token-weighted objectives for Hugging Face models: ``MaskedLM``, ``CausalLM`` and ``HFLoss``.

sᵢ = Σ_t CE(logits_t, label_t) over example i's labelled positions (label ≠ -100), nᵢ = their
number; L = Σᵢsᵢ/Σᵢnᵢ is Hugging Face's loss for one batch holding all the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape import heads
from landscape.objectives.base import IGNORE_INDEX, SHIFT_KEY, Objective, Prepared, output_logits, to_model
from landscape.util import model_device, model_dtype


def _hf_batch(batch: Any) -> dict[str, Any]:
    """Dicts and BatchEncodings pass through; tuples are (input_ids[, attention_mask[, labels]])."""
    if isinstance(batch, Mapping):
        return dict(batch)
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        return dict(zip(["input_ids", "attention_mask", "labels"], batch))
    if isinstance(batch, Tensor):
        return {"input_ids": batch}
    raise TypeError(
        f"cannot read a batch of type {type(batch).__name__}: pass a dict/BatchEncoding with "
        "'input_ids', or a tuple (input_ids, attention_mask[, labels])."
    )


def _token_ce_terms(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example Σ_t CE and number of labelled positions; logits ``[B, T, V]``, labels ``[B, T]``."""
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    return ce.sum(dim=-1), (labels != IGNORE_INDEX).sum(dim=-1)


class _HFTokenObjective(Objective):
    weighting = "token"
    shift_labels = False
    model_keys: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
    #: Vocabulary projection only at labelled positions (:mod:`landscape.heads`): "auto", True or False.
    #: Set it on an instance (``obj.labelled_head = False``) to force the full head.
    labelled_head: bool | str = "auto"

    def forward(self, model: nn.Module, prepared: Prepared, params: Mapping[str, Tensor] | None = None) -> Any:
        index = prepared.get(heads.HEAD_INDEX)
        if index is None:
            return super().forward(model, prepared, params)
        with heads.gathered(model, index):
            return super().forward(model, prepared, params)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labelled_head": self.labelled_head}

    def model_inputs(self, prepared: Prepared) -> tuple[tuple, dict]:
        return (), {k: prepared[k] for k in self.model_keys if k in prepared}

    def shifts(self, prepared: Prepared) -> bool:
        """Whether position t predicts label t+1 in this prepared batch (causal LMs)."""
        return bool(prepared.get(SHIFT_KEY, self.shift_labels))

    def _labels(self, prepared: Prepared) -> Tensor:
        labels = prepared["labels"]
        return labels[..., 1:] if self.shifts(prepared) else labels

    def logits_and_targets(self, output: Any, prepared: Prepared) -> tuple[Tensor, Tensor]:
        logits = output_logits(output)
        head_labels = prepared.get(heads.HEAD_LABELS)
        if head_labels is not None and logits.shape[:-1] == head_labels.shape:  # labelled-position head
            return logits, head_labels
        labels = prepared["labels"]
        if self.shifts(prepared):
            return logits[:, :-1], labels[:, 1:]
        if labels.ndim == 1:  # sequence classification: logits [B, C], one term per example
            return logits.unsqueeze(1), labels.reshape(-1, 1)
        if logits.shape[:-1] == labels.shape:
            return logits, labels
        return logits.unsqueeze(1), labels.reshape(-1, 1)  # sequence classification: one term each

    def loss_terms(self, output: Any, prepared: Prepared) -> tuple[Tensor, Tensor]:
        logits, labels = self.logits_and_targets(output, prepared)
        return _token_ce_terms(logits, labels)

    def term_counts(self, prepared: Prepared) -> Tensor:
        labels = self._labels(prepared)
        if labels.ndim == 1:
            return (labels != IGNORE_INDEX).long()
        return (labels != IGNORE_INDEX).sum(dim=-1)

    def _move(self, batch: Mapping[str, Any], model: nn.Module) -> Prepared:
        device, dtype = model_device(model), model_dtype(model)
        return heads.attach(self, {k: to_model(v, device, dtype) for k, v in batch.items()}, model)


class HFLoss(_HFTokenObjective):
    """Cross-entropy on the labels already in the batch, as ``model(**batch).loss`` computes it.

    Args:
        shift_labels: predict token t+1 from position t (causal LMs). ``None`` infers it from the
            model (``config.is_decoder`` or a ``...ForCausalLM`` class).
    """

    name = "hf_loss"

    def __init__(self, shift_labels: bool | None = None) -> None:
        self.shift_labels = shift_labels  # type: ignore[assignment]  # None: decided per model

    def prepare(self, batch: Any, model: nn.Module) -> Prepared:
        b = _hf_batch(batch)
        if "labels" not in b:
            raise ValueError("HFLoss needs 'labels' in every batch; use MaskedLM or CausalLM to make them.")
        if isinstance(b["labels"], Tensor) and b["labels"].is_floating_point():
            raise ValueError("HFLoss scores integer class labels with cross-entropy; float labels (a regression "
                             "head) need objectives.Criterion(nn.MSELoss()) on (inputs, targets) batches.")
        shift = self.shift_labels
        if shift is None:  # decided for this model and recorded in the batch, never on the objective
            config = getattr(model, "config", None)
            shift = bool(getattr(config, "is_decoder", False)) or _is_causal_lm(model)
        b[SHIFT_KEY] = bool(shift)
        return self._move(b, model)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shift_labels": "per model" if self.shift_labels is None else self.shift_labels}


class CausalLM(_HFTokenObjective):
    """Next-token cross-entropy for GPT-2-like models; labels default to ``input_ids`` with padding
    (``attention_mask == 0``) set to -100."""

    name = "causal_lm"
    shift_labels = True

    def prepare(self, batch: Any, model: nn.Module) -> Prepared:
        b = _hf_batch(batch)
        if "labels" not in b:
            labels = b["input_ids"].clone()
            if "attention_mask" in b:
                labels[b["attention_mask"] == 0] = IGNORE_INDEX
            b["labels"] = labels
        return self._move(b, model)


def _is_causal_lm(model: nn.Module) -> bool:
    """True for ``transformers`` causal-LM classes (``...ForCausalLM``, ``GPT2LMHeadModel``, ...)."""
    name = type(model).__name__
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()):
            return True
    except ImportError:  # pragma: no cover
        pass
    return name.endswith("ForCausalLM") or name.endswith("LMHeadModel")


def _example_seed(seed: int, ids: Tensor) -> int:
    h = hashlib.sha256(f"{seed}:".encode())
    h.update(ids.to(torch.int64).cpu().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


class MaskedLM(_HFTokenObjective):
    """BERT's masked-LM loss with masks fixed by ``(seed, example)``.

    Each example's mask is drawn from a generator seeded by ``seed`` and the example's own token
    ids, so the loss is a deterministic function of the weights whatever the batching, order or
    sharding. Of the non-special, non-padding tokens, each is chosen with probability ``mask_prob``;
    a chosen token is replaced by [MASK] (80%), a random token (10%) or kept (10%), and only chosen
    positions carry a label. An example where nothing was chosen carries no loss term.

    Args:
        mask_prob: probability that a token is chosen.
        seed: mask seed.
        tokenizer: optional; supplies ``mask_token_id`` and the special ids when not given.
        mask_token_id: id of [MASK]; else taken from ``tokenizer`` or ``model.config``.
        special_token_ids: ids never masked; else the tokenizer's special ids, else the config's
            pad/bos/eos/sep/cls ids.
    """

    name = "masked_lm"

    def __init__(
        self,
        mask_prob: float = 0.15,
        seed: int = 0,
        tokenizer: Any = None,
        mask_token_id: int | None = None,
        special_token_ids: Sequence[int] | None = None,
    ) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}.")
        self.mask_prob = float(mask_prob)
        self.seed = int(seed)
        if mask_token_id is None and tokenizer is not None:
            mask_token_id = tokenizer.mask_token_id
        if special_token_ids is None and tokenizer is not None:
            special_token_ids = list(tokenizer.all_special_ids)
        self.mask_token_id = mask_token_id
        self.special_token_ids = None if special_token_ids is None else sorted(set(int(i) for i in special_token_ids))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mask_prob": self.mask_prob, "seed": self.seed,
                "mask_token_id": self.mask_token_id}

    def _resolve_ids(self, model: nn.Module) -> tuple[int, list[int], int]:
        config = getattr(model, "config", None)
        mask_id = self.mask_token_id if self.mask_token_id is not None else getattr(config, "mask_token_id", None)
        if mask_id is None:
            raise ValueError(
                "MaskedLM does not know the [MASK] token id: pass MaskedLM(tokenizer=tok) or mask_token_id=..."
            )
        special = self.special_token_ids
        if special is None:
            special = [
                int(i)
                for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
                if (i := getattr(config, key, None)) is not None
            ]
        vocab = getattr(config, "vocab_size", None)
        if vocab is None:
            raise ValueError("MaskedLM needs model.config.vocab_size for random replacements.")
        return int(mask_id), special, int(vocab)

    def mask_batch(self, input_ids: Tensor, attention_mask: Tensor | None, model: nn.Module) -> tuple[Tensor, Tensor]:
        """Masked ``input_ids`` and ``labels`` (both ``[B, T]``) for one batch, on the CPU."""
        mask_id, special, vocab = self._resolve_ids(model)
        ids = input_ids.detach().cpu().long()
        attn = torch.ones_like(ids) if attention_mask is None else attention_mask.detach().cpu()
        eligible = (attn != 0) & ~torch.isin(ids, torch.tensor(special, dtype=torch.long))
        out_ids, labels = ids.clone(), torch.full_like(ids, IGNORE_INDEX)
        for i in range(ids.shape[0]):
            # Every draw is made over the example's own (unpadded) tokens only, so its mask does not
            # depend on the padded batch length, i.e. on its batch-mates or the batch size.
            pos = (attn[i] != 0).nonzero().squeeze(1)
            own = ids[i, pos]
            g = torch.Generator().manual_seed(_example_seed(self.seed, own))
            t = int(pos.numel())
            chosen = (torch.rand(t, generator=g) < self.mask_prob) & eligible[i, pos]
            action = torch.rand(t, generator=g)
            random_tokens = torch.randint(0, vocab, (t,), generator=g)
            lab = torch.full_like(own, IGNORE_INDEX)
            lab[chosen] = own[chosen]
            new = own.clone()
            new[chosen & (action < 0.8)] = mask_id
            swap = chosen & (action >= 0.8) & (action < 0.9)
            new[swap] = random_tokens[swap]
            out_ids[i, pos], labels[i, pos] = new, lab
        return out_ids, labels

    def prepare(self, batch: Any, model: nn.Module) -> Prepared:
        b = _hf_batch(batch)
        if "input_ids" not in b:
            raise ValueError("MaskedLM needs 'input_ids' in every batch.")
        b.pop("labels", None)
        b["input_ids"], b["labels"] = self.mask_batch(b["input_ids"], b.get("attention_mask"), model)
        return self._move(b, model)

