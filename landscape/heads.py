"""The labelled-position head: run a language model's vocabulary projection only where a label is.

A masked LM scores ~15 % of the positions, yet its head projects every position onto the whole
vocabulary (BERT-base: 768 × 30,522 per token, several times the cost of a transformer layer).
Here a forward *pre-hook* on the model's output embedding (``model.get_output_embeddings()``, the
decoder ``nn.Linear``) gathers the labelled rows of its input, so the logits come out as
``[B, P, V]`` for the P ≤ T labelled positions of each row, and the loss uses the same rows. The
per-example sums sᵢ are unchanged (the unlabelled positions contributed exactly 0), and the
gradient of every parameter is unchanged, because nothing before the head mixes in the logits of
unlabelled positions.

Generic by construction: no model code is patched, only the input of the output embedding is
indexed, so it works for BERT, RoBERTa, DistilBERT, ELECTRA and ModernBERT (tested against the full
head to 1e-6) and for causal LMs (GPT-2's ``lm_head``), where position t is gathered when label
t + 1 is set; this subsumes ``logits_to_keep``, which can only keep the same positions in every row.

Rows are padded to P = the largest labelled count in the batch with position 0 and label -100, so
the prepared batch has fixed shapes and runs under ``torch.func.vmap`` (per-example Fisher, batched
scan points). Prepared batches carry the gather index under :data:`HEAD_INDEX` and the gathered
targets under :data:`HEAD_LABELS`; ``labels`` stays as it was (term counts use it).

Safety: in the default ``"auto"`` setting the first batch a model sees is evaluated both ways (two
rows, no grad) and the head is used only if the per-example losses agree to 1e-5 relative and the
output embedding really receives ``[B, T, H]``; otherwise the full head is kept and a note is logged.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from landscape.util import deterministic_eval, log_once

__all__ = ["HEAD_INDEX", "HEAD_LABELS", "attach", "gathered", "output_module"]

HEAD_INDEX = "_head_index"
HEAD_LABELS = "_head_labels"
IGNORE_INDEX = -100
#: In "auto", skip the gather when more than this fraction of the positions would be kept.
AUTO_MAX_FRACTION = 0.75

_VERIFIED: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


def output_module(model: nn.Module) -> nn.Module | None:
    """The module whose input is the per-position hidden state fed to the vocabulary projection."""
    inner = getattr(model, "_inner", None)  # landscape's functional wrapper (fisher's _FunctionalModel)
    if isinstance(inner, nn.Module):
        model = inner
    get = getattr(model, "get_output_embeddings", None)
    if get is None:
        return None
    try:
        module = get()
    except (NotImplementedError, AttributeError):
        return None
    return module if isinstance(module, nn.Linear) else None


def head_rows(labels: Tensor, shift: bool) -> tuple[Tensor, Tensor]:
    """Gather index ``[B, P]`` and gathered targets ``[B, P]`` (-100 on padding) for ``labels [B, T]``.

    With ``shift`` (causal LMs), position t predicts label t + 1, so t is kept when label t + 1 is set.
    """
    target = labels[:, 1:] if shift else labels
    keep = target != IGNORE_INDEX  # [B, T'] over the positions that produce a prediction
    p = max(int(keep.sum(1).max()) if keep.numel() else 0, 1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :p]  # labelled positions first
    gathered = torch.where(keep.gather(1, order), target.gather(1, order), torch.full_like(order, IGNORE_INDEX))
    return order.contiguous(), gathered.contiguous()


@contextlib.contextmanager
def gathered(model: nn.Module, index: Tensor) -> Iterator[None]:
    """Inside the block, the output embedding of ``model`` sees only rows ``index [B, P]`` of its
    input ``[B, T, H]``: its output is ``[B, P, V]``. Works under ``torch.func`` transforms."""
    module = output_module(model)
    if module is None:
        raise RuntimeError(f"{type(model).__name__} has no nn.Linear output embedding to gather rows for.")

    def pre_hook(_mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        if x.ndim != 3 or x.shape[0] != index.shape[0]:
            raise RuntimeError(f"labelled-position head: the output embedding received shape {tuple(x.shape)}, "
                               f"expected [B={index.shape[0]}, T, H].")
        return (torch.take_along_dim(x, index.unsqueeze(-1), dim=1), *args[1:])

    handle = module.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


def attach(objective: Any, prepared: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """``prepared`` with :data:`HEAD_INDEX`/:data:`HEAD_LABELS` added when the head applies.

    ``objective.labelled_head``: ``"auto"`` (verified once per model, skipped when most positions
    carry a label), ``True`` (always, raising if the model has no output embedding) or ``False``.
    """
    setting = getattr(objective, "labelled_head", "auto")
    if setting is False:
        return prepared
    labels, ids = prepared.get("labels"), prepared.get("input_ids")
    module = output_module(model)
    usable = isinstance(labels, Tensor) and labels.ndim == 2 and isinstance(ids, Tensor) and ids.shape == labels.shape
    if module is None or not usable:
        if setting is True:
            raise ValueError(f"labelled_head=True needs token labels [B, T] and an nn.Linear output embedding; "
                             f"{type(model).__name__} has "
                             f"{'none' if module is None else 'it, but the labels are not [B, T]'}.")
        return prepared
    assert isinstance(labels, Tensor) and module is not None  # checked by `usable` above
    index, targets = head_rows(labels, objective.shifts(prepared))
    if setting == "auto" and index.shape[1] > AUTO_MAX_FRACTION * labels.shape[1]:
        return prepared
    out = {**prepared, HEAD_INDEX: index, HEAD_LABELS: targets}
    if setting == "auto":
        ok = _VERIFIED.get(model)
        if ok is None:
            ok = _verify(objective, prepared, out, model)
            _VERIFIED[model] = ok
        if not ok:
            return prepared
    return out


@torch.no_grad()
def _verify(objective: Any, full: dict[str, Any], head: dict[str, Any], model: nn.Module) -> bool:
    """Per-example losses of two rows, full head vs labelled-position head, agree to 1e-5 relative."""
    rows = min(2, full["labels"].shape[0])
    size = full["labels"].shape[0]

    def take(p: dict[str, Any]) -> dict[str, Any]:
        return {k: v[:rows] if isinstance(v, Tensor) and v.ndim and v.shape[0] == size else v for k, v in p.items()}

    forward = type(objective).forward  # the class's own forward: internal plumbing, not a counted evaluation
    try:
        with deterministic_eval(model):
            a = objective.loss_terms(forward(objective, model, take(full)), take(full))[0]
            b = objective.loss_terms(forward(objective, model, take(head)), take(head))[0]
        ok = bool(torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-6 * float(a.abs().max().clamp_min(1))))
        reason = "" if ok else f"losses differ ({a.tolist()} vs {b.tolist()})"
    except Exception as exc:  # noqa: BLE001 - any failure means: keep the full head
        ok, reason = False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if ok:
        log_once(f"landscape: {type(model).__name__} projects onto the vocabulary only at labelled positions.")
    else:
        log_once(f"landscape: labelled-position head not used for {type(model).__name__} ({reason}); full head.")
    return ok
