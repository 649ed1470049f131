"""Diagonal Fisher information: every estimator choice explicit, exact where it claims to be.

For examples i = 1..N with per-example loss sums sᵢ(θ) (``objective.loss_terms``: for an MLM, the
sequence's cross-entropy *summed* over its masked tokens; for a ``Criterion``, the example's loss)
and predictive distributions p(y | xᵢ, θ) = softmax(logits) at each labelled position:

* ``empirical``  F = (1/N) Σᵢ (∇sᵢ)², with the true labels. Exact per-example gradients (the
  paper's estimator: MLM loss, batch size 1, eval mode).
* ``mc``         F = (1/N) Σᵢ (1/K) Σₖ (∇sᵢ(ŷᵏ))², labels ŷᵏ sampled from the model itself at every
  labelled position (K = ``mc_samples``). Unbiased for the true Fisher.
* ``exact``      F = (1/N) Σᵢ Σ_t Σ_c p_tc (J_tᵀ(p_t − e_c))², the expectation over labels in closed
  form (cross terms between positions vanish because E[p − e_y] = 0). Costs C·P gradients per
  example (C classes, P positions), so it is refused above ``exact_limit``.
* ``batch``      F = (1/N) Σ_b (Σ_{i∈b} ∇sᵢ)² / n_b over the data's mini-batches b (n_b examples with
  a labelled term). Cheap and **biased**: it equals ``empirical`` plus the cross terms
  (1/N) Σ_b (1/n_b) Σ_{i≠j∈b} ∇sᵢ∇sⱼ minus (1/N) Σ_b (1 − 1/n_b) Σ_{i∈b} (∇sᵢ)²; with one
  example per batch it is ``empirical``.

Counting: N counts the examples with at least one labelled term. An example whose labels are all
-100 has sᵢ ≡ 0, contributes zero and is *not* counted in N (it carries no information about the
loss); ``meta["n_examples_empty"]`` reports how many there were. ``max_examples`` caps the
examples *read* (empty ones included).

Per-example gradients come from ``torch.func`` (``vmap`` over ``grad``/``vjp`` of
``functional_call``) in chunks of ``chunk_size`` examples; a model that ``vmap`` cannot run falls
back to a per-example loop, with a logged note. Hugging Face models get their 2-D padding mask
expanded to the equivalent 4-D mask first (checked against the 2-D result), because the 2-D path
inspects the mask's values. Evaluation runs in eval mode on the math attention backend; the
caller's train/eval flags are restored and the weights are never written.

Under ``torchrun`` examples are sharded by index (example g to rank g mod world; ``batch``: batch b
to rank b mod world) and the sums are all-reduced, so the result equals the single-process one to
floating-point tolerance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from landscape import util
from landscape.fisher.convergence import Convergence, convergence_from_rows, default_checkpoints
from landscape.fisher.per_example import _batch_size, _Engine, _raw_size, _select, _slice_raw, hf_4d_attention_mask
from landscape.fisher.result import FisherDiagonal
from landscape.objectives import Objective
from landscape.params import ParamSpace, Selection, select
from landscape.util.checks import check_finite_loss, check_finite_weights

__all__ = ["diagonal", "ESTIMATORS", "hf_4d_attention_mask"]

log = logging.getLogger("landscape.fisher")
ESTIMATORS = ("empirical", "mc", "exact", "batch")
PER_EXAMPLE = ("auto", "vmap", "loop")


def _space_of(model: nn.Module, params: Selection) -> ParamSpace:
    space, mask = select(model, params)
    if mask is not None:
        raise TypeError("Fisher scores a whole ParamSpace, not a ParamMask: pass params=mask.space, then mask the scores.")
    return space


def _check_args(estimator: str, max_examples: int | None, mc_samples: int, chunk_size: int, per_example: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}.")
    if max_examples is not None and int(max_examples) < 1:
        raise ValueError(f"max_examples must be at least 1 (got {max_examples}): a Fisher estimate needs examples.")
    if int(mc_samples) < 1:
        raise ValueError(f"mc_samples must be at least 1, got {mc_samples}.")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    if per_example not in PER_EXAMPLE:
        raise ValueError(f"per_example must be one of {PER_EXAMPLE}, got {per_example!r}.")


def diagonal(
    model: nn.Module,
    objective: Objective,
    data: Iterable[Any],
    *,
    estimator: str = "empirical",
    max_examples: int | None = None,
    mc_samples: int = 1,
    seed: int = 0,
    chunk_size: int = 16,
    params: ParamSpace | str | Sequence[str] | None = None,
    progress: bool = True,
    convergence: bool | Sequence[int] = True,
    per_example: str = "auto",
    exact_limit: int = 4096,
    dist: util.DistContext | None = None,
) -> FisherDiagonal:
    """Diagonal Fisher scores of ``model``'s parameters on ``data`` (see the module docstring).

    Args:
        model: any module; evaluated in eval mode, weights untouched, flags restored.
        objective: an :class:`~landscape.objectives.Objective` (mc/exact need categorical logits).
        data: a re-iterable of raw batches.
        estimator: ``"empirical"`` | ``"mc"`` | ``"exact"`` | ``"batch"`` (biased).
        max_examples: read at most this many examples (``None``: all).
        mc_samples: label draws K per example for ``"mc"``.
        seed: seeds the ``"mc"`` label draws (example g uses (seed, g)).
        chunk_size: examples per ``vmap`` call (bounds memory: about chunk_size × #params floats);
            for ``"exact"``, (position, class) pairs per call.
        params: a ``ParamSpace``, or name glob(s) selecting parameters; ``None``: all trainable.
        progress: show a tqdm bar (rank 0 only).
        convergence: record the convergence curves (``True``: geometric checkpoints 1, 2, 4, ..., N;
            or a list of example counts); ``False`` to skip.
        per_example: ``"auto"`` (vmap, loop fallback), ``"vmap"`` or ``"loop"``.
        exact_limit: largest C×P (classes × positions) ``"exact"`` accepts per example.
        dist: distributed context; default ``util.dist_context()``.

    Returns:
        :class:`FisherDiagonal` with ``scores[name]`` of the parameter's shape (tied tensors once).

    Raises:
        ValueError: unknown estimator, ``max_examples < 1``, data with no labelled example, an
            ``"exact"`` output space above ``exact_limit``, mc/exact without categorical logits.
    """
    _check_args(estimator, max_examples, mc_samples, chunk_size, per_example)
    ctx = dist if dist is not None else util.dist_context()
    space = _space_of(model, params)
    check_finite_weights(model)
    names = space.names
    engine = _Engine(model, objective, space, estimator, int(mc_samples), int(seed), int(chunk_size), per_example, int(exact_limit))
    device = util.model_device(model)
    acc_dtype = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
    acc = {n: torch.zeros(p.shape, dtype=acc_dtype, device=device) for n, p in space.params.items()}
    units: list[tuple[int, int, Tensor | None]] = []  # (examples read after this unit, informative count, row)
    n_seen = n_empty = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=max_examples, unit="ex", desc=f"fisher[{estimator}]", disable=not progress or not ctx.is_main)
    start = time.perf_counter()
    try:
        # torch.func transforms ignore an outer no_grad; it stops plain autograd recording through
        # the parameters that are not scored.
        with util.deterministic_eval(model), torch.no_grad():
            for b_idx, batch in enumerate(util.batches_of(data)):
                if max_examples is not None and n_seen >= max_examples:
                    break
                raw_n = _raw_size(batch) if ctx.active and estimator != "batch" else None
                if raw_n is not None:  # prepare only this rank's examples
                    size = raw_n if max_examples is None else min(raw_n, max_examples - n_seen)
                    local = [i for i in range(size) if (n_seen + i) % ctx.world_size == ctx.rank]
                    prepared = objective.prepare(_slice_raw(batch, local), model) if local else None
                else:
                    prepared = objective.prepare(batch, model)
                    size = _batch_size(prepared, objective)
                    take = size if max_examples is None else min(size, max_examples - n_seen)
                    if take < size:
                        prepared, size = _select(prepared, torch.arange(take), size), take
                    local = list(range(size))
                    if estimator != "batch" and ctx.active:
                        local = [i for i in local if (n_seen + i) % ctx.world_size == ctx.rank]
                        prepared = _select(prepared, torch.tensor(local), size)
                if b_idx == 0 and prepared is not None:  # the loss at θ₀, once (one forward pass)
                    s0, n0 = objective.loss_sum(model, prepared)
                    check_finite_loss(float(s0) / max(int(n0), 1), "the loss on the first batch")
                counts = objective.term_counts(prepared).cpu() if prepared is not None else torch.zeros(0, dtype=torch.long)
                informative = counts > 0
                n_empty += int((~informative).sum())
                if estimator == "batch":
                    n_b = int(informative.sum())
                    row = None
                    if b_idx % ctx.world_size == ctx.rank and n_b > 0 and prepared is not None:
                        sq = engine.batch_grad_sq(prepared)
                        row = torch.stack([sq[n].sum().to(acc_dtype) for n in names])
                        for n in names:
                            acc[n].add_(sq[n].to(acc_dtype), alpha=1.0 / n_b)
                        row = row / n_b
                    units.append((n_seen + size, n_b if b_idx % ctx.world_size == ctx.rank else 0, row))
                else:
                    _accumulate_examples(engine, prepared, size, n_seen, local, informative, acc, units, names, acc_dtype)
                n_seen += size
                bar.update(size)
    finally:
        bar.close()
    n_units_rows, weights, n_empty = _all_reduce(acc, units, names, ctx, acc_dtype, n_empty)
    n_informative = sum(weights)
    if n_informative == 0:
        raise ValueError(
            f"no example with a labelled term among the {n_seen} examples read (all labels -100 or no data); "
            "the Fisher needs at least one labelled example: check the masking or pass more data."
        )
    dtype = util.model_dtype(model)
    scores = {n: (acc[n] / n_informative).to(dtype) for n in names}
    conv: Convergence | None = None
    if convergence is not False:
        checkpoints = default_checkpoints(n_seen) if convergence is True else list(convergence)
        numels = [space.params[n].numel() for n in names]
        ends = [u[0] for u in units]
        conv = convergence_from_rows(names, numels, ends, weights, n_units_rows, checkpoints)
    meta = {
        "estimator": estimator,
        "biased": estimator == "batch",
        "n_examples": n_informative,
        "n_examples_read": n_seen,
        "n_examples_empty": n_empty,
        "n_gradients": engine.n_grads,
        "mc_samples": int(mc_samples) if estimator == "mc" else None,
        "seed": int(seed),
        "chunk_size": int(chunk_size),
        "per_example": "batched" if estimator == "batch" else engine.mode if engine.mode != "auto" else "vmap",
        "hf_4d_mask": bool(engine.use_4d),
        "weighting": "N counts examples with ≥1 labelled term; sᵢ sums the example's loss terms",
        "objective": objective.describe(),
        "world_size": ctx.world_size,
        "seconds": time.perf_counter() - start,
        "model_fingerprint": util.model_fingerprint(model),
        "model_class": type(model).__name__,
        "aliases": {n: space.aliases.get(n, []) for n in names},
        "versions": util.versions(),
    }
    return FisherDiagonal(scores=scores, meta=meta, convergence=conv, space=space)


def _accumulate_examples(engine: _Engine, prepared: dict[str, Any] | None, size: int, offset: int, local: list[int],
                         informative: Tensor, acc: dict[str, Tensor], units: list, names: list[str],
                         acc_dtype: torch.dtype) -> None:
    """Squared per-example gradients of the informative examples in ``prepared``, whose rows are
    the examples ``local`` (indices in the batch of ``size``) of this rank."""
    rows: dict[int, Tensor] = {}
    todo = [j for j in range(len(local)) if bool(informative[j])]
    n_rows = len(local)
    for c0 in range(0, len(todo), engine.chunk_size):
        part_rows = todo[c0 : c0 + engine.chunk_size]
        assert prepared is not None
        chunk = _select(prepared, torch.tensor(part_rows), n_rows)
        sq = engine.squared_grads(chunk, len(part_rows), [offset + local[j] for j in part_rows])
        part = torch.stack([sq[n].reshape(len(part_rows), -1).sum(1).to(acc_dtype) for n in names], dim=1)
        for n in names:
            acc[n].add_(sq[n].sum(0).to(acc_dtype))
        for k, j in enumerate(part_rows):
            rows[local[j]] = part[k]
    for i in range(size):
        units.append((offset + i + 1, 1 if i in rows else 0, rows.get(i)))


def _all_reduce(acc: dict[str, Tensor], units: list, names: list[str], ctx: util.DistContext,
                acc_dtype: torch.dtype, n_empty: int) -> tuple[Tensor, list[int], int]:
    """Sum ``acc`` across ranks in place; return the summed per-unit rows ``[U, T]``, the per-unit
    counted examples and the number of examples without a labelled term."""
    device = next(iter(acc.values())).device
    rows = torch.zeros(len(units), len(names), dtype=acc_dtype, device=device)
    for u, (_, _, row) in enumerate(units):
        if row is not None:
            rows[u] = row
    if ctx.active:
        import torch.distributed as tdist

        extra = torch.tensor([u[1] for u in units] + [n_empty], dtype=acc_dtype, device=device)
        flat = torch.cat([acc[n].reshape(-1) for n in names] + [rows.reshape(-1), extra])
        tdist.all_reduce(flat)
        o = 0
        for n in names:
            k = acc[n].numel()
            acc[n].copy_(flat[o : o + k].view_as(acc[n]))
            o += k
        rows = flat[o : o + rows.numel()].view_as(rows)
        counts = [round(float(x)) for x in flat[o + rows.numel() :]]
        return rows.cpu(), counts[:-1], counts[-1]
    return rows.cpu(), [u[1] for u in units], n_empty
