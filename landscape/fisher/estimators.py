"""Diagonal Fisher information: every estimator choice explicit, exact where it claims to be.

For examples i = 1..N with per-example loss sums sᵢ(θ) over nᵢ loss terms (``objective.loss_terms``:
for an MLM, the sequence's cross-entropy *summed* over its nᵢ masked tokens; for a ``Criterion``,
the example's loss, nᵢ = 1), the example loss ℓᵢ is chosen by ``example_loss``:

* ``"sum"`` (default)  ℓᵢ = sᵢ, the summed token loss: (∇ℓᵢ)² weights an MLM sequence by about nᵢ²;
* ``"mean"``           ℓᵢ = sᵢ/nᵢ, the mean token loss: weight 1 per example. With ``empirical`` this
  is the paper's estimator (Sharma et al., 2024: MLM loss, batch size 1, eval mode).

The two agree whenever every nᵢ = 1 (a ``Criterion``). With predictive distributions
p(y | xᵢ, θ) = softmax(logits) at each labelled position:

* ``empirical``  F = (1/N) Σᵢ (∇ℓᵢ)², with the true labels. Exact per-example gradients.
* ``mc``         F = (1/N) Σᵢ (1/K) Σₖ (∇ℓᵢ(ŷᵏ))², labels ŷᵏ sampled from the model itself at every
  labelled position (K = ``mc_samples``). Unbiased for the true Fisher.
* ``exact``      F = (1/N) Σᵢ wᵢ Σ_t Σ_c p_tc (J_tᵀ(p_t − e_c))², the expectation over labels in closed
  form (cross terms between positions vanish because E[p − e_y] = 0; wᵢ = 1, or 1/nᵢ² for
  ``"mean"``). Costs C·P gradients per example (C classes, P positions), so it is refused above
  ``exact_limit``.
* ``batch``      F = (1/N) Σ_b (Σ_{i∈b} ∇ℓᵢ)² / n_b over the data's mini-batches b (n_b examples with
  a labelled term). Cheap and **biased**: it equals ``empirical`` plus the cross terms
  (1/N) Σ_b (1/n_b) Σ_{i≠j∈b} ∇ℓᵢ∇ℓⱼ minus (1/N) Σ_b (1 − 1/n_b) Σ_{i∈b} (∇ℓᵢ)²; with one
  example per batch it is ``empirical``.

Counting: N counts the examples with at least one labelled term. An example whose labels are all
-100 has ℓᵢ ≡ 0, contributes zero and is *not* counted in N (it carries no information about the
loss); ``meta["n_examples_empty"]`` reports how many there were. ``max_examples`` caps the
examples *read* (empty ones included).

Per-example gradients come from ``torch.func`` (``vmap`` over ``grad``/``vjp`` of
``functional_call``) in chunks of ``chunk_size`` examples; a model that ``vmap`` cannot run falls
back to a per-example loop, with a logged note. Hugging Face models get their 2-D padding mask
expanded to the equivalent 4-D mask first (checked against the 2-D result), because the 2-D path
inspects the mask's values. Evaluation runs in eval mode on the math attention backend; the
caller's train/eval flags are restored and the weights are never written.

``params=`` takes names/globs, a :class:`~landscape.params.ParamSpace` or a
:class:`~landscape.params.ParamMask`. A mask scores only the tensors it touches and zeroes the
scores of their unselected elements (``meta["mask"]`` says so), so ``F.scores`` equals the full
Fisher restricted to the mask, elementwise.

Under ``torchrun`` (``distributed=None`` or ``True``) examples are sharded by index (whole batches
round-robin when the data has at least 4 batches per rank, else example g to rank g mod world;
``batch``: batch b to rank b mod world) and the sums are all-reduced, so the
result equals the single-process one to floating-point tolerance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from landscape import util
from landscape.fisher.convergence import Convergence, convergence_from_rows, default_checkpoints
from landscape.fisher.per_example import SquaredGradients
from landscape.fisher.result import FisherDiagonal
from landscape.objectives import Objective, Prepared, select_rows
from landscape.params import ParamMask, ParamSpace, Selection, select
from landscape.util.checks import check_finite_loss, check_finite_weights
from landscape.util.results import plain

__all__ = ["diagonal", "ESTIMATORS", "Estimator", "PerExample", "ExampleLoss", "EXAMPLE_LOSSES"]

#: Under ``torchrun``, per-example estimators deal whole batches to ranks when the data has at least
#: this many batches per rank (else rows, for balance).
WHOLE_BATCHES_PER_RANK = 4

log = logging.getLogger("landscape.fisher")
Estimator = Literal["empirical", "mc", "exact", "batch"]
PerExample = Literal["auto", "vmap", "loop"]
#: The per-example loss whose gradients are squared: the summed or the mean token loss.
ExampleLoss = Literal["sum", "mean"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)
PER_EXAMPLE: tuple[str, ...] = get_args(PerExample)
EXAMPLE_LOSSES: tuple[str, ...] = get_args(ExampleLoss)


@dataclass
class _Tally:
    """What one pass accumulates: Σ squares per tensor, and one unit per example (per batch for
    ``batch``): (examples read after it, examples it counts, its per-tensor row ``[T]`` or None)."""

    acc: dict[str, Tensor]
    units: list[tuple[int, int, Tensor | None]] = field(default_factory=list)
    n_seen: int = 0
    n_empty: int = 0

    @property
    def names(self) -> list[str]:
        return list(self.acc)


def diagonal(  # noqa: PLR0913 - the documented public settings of one estimate, keyword-only
    model: nn.Module,
    objective: Objective,
    data: Iterable[Any],
    *,
    estimator: Estimator = "empirical",
    max_examples: int | None = None,
    mc_samples: int = 1,
    seed: int = 0,
    chunk_size: int = 16,
    params: Selection = None,
    distributed: bool | None = None,
    progress: bool = True,
    convergence: bool | Sequence[int] = True,
    per_example: PerExample = "auto",
    example_loss: ExampleLoss = "sum",
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
        chunk_size: examples per ``vmap`` call (memory: about chunk_size × #params floats); for ``"exact"``,
            (position, class) pairs per call, refused above :data:`~landscape.fisher.per_example.EXACT_LIMIT`.
        params: names/globs, a ``ParamSpace`` or a ``ParamMask`` (scores zero outside the mask,
            only the tensors it touches); ``None``: all trainable.
        distributed: shard examples across ``torchrun`` ranks and all-reduce (``None``: when
            launched by ``torchrun``; ``False``: every rank computes alone).
        progress: show a tqdm bar (rank 0 only).
        convergence: record the convergence curves (``True``: geometric checkpoints 1, 2, 4, ..., N;
            or a list of example counts); ``False`` to skip.
        per_example: ``"auto"`` (vmap, loop fallback), ``"vmap"`` or ``"loop"``.
        example_loss: ``"sum"`` (each example's summed token loss sᵢ) or ``"mean"`` (sᵢ/nᵢ, the paper's).

    Returns:
        :class:`FisherDiagonal` with ``scores[name]`` of the parameter's shape (tied tensors once).

    Raises:
        ValueError: unknown estimator or example loss, ``max_examples < 1``, no labelled example,
            an ``"exact"`` output space above the limit, mc/exact without categorical logits.
    """
    settings = {"estimator": estimator, "max_examples": max_examples, "mc_samples": int(mc_samples), "seed": int(seed),
                "chunk_size": int(chunk_size), "per_example": per_example, "example_loss": example_loss}
    space, mask = _check_inputs(model, objective, params, settings)
    ctx = util.dist_context() if distributed in (None, True) else util.DistContext()
    engine = SquaredGradients(model, objective, space, estimator, int(mc_samples), int(seed), int(chunk_size),
                              per_example, example_loss)
    start = time.perf_counter()
    tally = _accumulate(engine, data, max_examples, ctx, progress)
    rows, weights = _all_reduce(tally, ctx)
    conv = None
    if convergence is not False and sum(weights) > 0:
        conv = _convergence(tally, space, weights, rows,
                            default_checkpoints(tally.n_seen) if convergence is True else list(convergence))
    return _result(engine, tally, sum(weights), ctx.world_size, mask, settings, conv, time.perf_counter() - start)


def _result(engine: SquaredGradients, tally: _Tally, n_informative: int, world_size: int, mask: ParamMask | None,
            settings: dict[str, Any], conv: Convergence | None, seconds: float) -> FisherDiagonal:
    """Scores F = Σ/N in the model's dtype (zero outside a mask) with their nested ``meta``."""
    if n_informative == 0:
        raise ValueError(
            f"no example with a labelled term among the {tally.n_seen} examples read (all labels -100 or no data); "
            "the Fisher needs at least one labelled example: check the masking or pass more data."
        )
    model, space = engine.model, engine.space
    scores = {n: (tally.acc[n] / n_informative).to(util.model_dtype(model)) for n in tally.names}
    meta = util.result_meta(
        model, settings, **_counts(engine, tally, n_informative), objective=engine.objective.describe(),
        world_size=world_size, seconds=seconds, model_fingerprint=util.model_fingerprint(model),
        aliases={n: space.aliases.get(n, []) for n in tally.names})
    if mask is not None:
        scores = mask.apply(scores)
        meta["mask"] = {"granularity": mask.granularity, "n_selected": mask.count(), **plain(mask.meta)}
    return FisherDiagonal(scores=scores, meta=meta, convergence=conv, space=space)


def _check_inputs(model: nn.Module, objective: Objective, params: Selection,
                  settings: dict[str, Any]) -> tuple[ParamSpace, ParamMask | None]:
    """Refuse bad settings and non-finite weights; the scored space (a mask's touched tensors) and mask."""
    estimator, max_examples = settings["estimator"], settings["max_examples"]
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}.")
    if max_examples is not None and int(max_examples) < 1:
        raise ValueError(f"max_examples must be at least 1 (got {max_examples}): a Fisher estimate needs examples.")
    for key in ("mc_samples", "chunk_size"):
        if settings[key] < 1:
            raise ValueError(f"{key} must be at least 1, got {settings[key]}.")
    if settings["example_loss"] not in EXAMPLE_LOSSES:
        raise ValueError(f"example_loss must be 'sum' (summed token loss) or 'mean' (mean token loss, the paper's), "
                         f"got {settings['example_loss']!r}.")
    if settings["per_example"] not in PER_EXAMPLE:
        raise ValueError(f"per_example must be one of {PER_EXAMPLE}, got {settings['per_example']!r}.")
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a landscape Objective (e.g. objectives.Criterion(loss_fn)), "
                        f"got {type(objective).__name__}.")
    space, mask = select(model, params)
    if mask is not None:
        space = ParamSpace.from_names(model, mask.names)
    check_finite_weights(model)
    return space, mask


def _counts(engine: SquaredGradients, tally: _Tally, n_informative: int) -> dict[str, Any]:
    """The counts and choices the pass made, for ``meta``."""
    estimator = engine.estimator
    return {"estimator": estimator, "biased": estimator == "batch", "n_examples": n_informative,
            "n_examples_read": tally.n_seen, "n_examples_empty": tally.n_empty, "n_gradients": engine.n_grads,
            "mc_samples": engine.mc_samples if estimator == "mc" else None,
            "per_example": "batched" if estimator == "batch" else engine.mode if engine.mode != "auto" else "vmap",
            "hf_4d_mask": bool(engine.use_4d),
            "example_loss": engine.example_loss, "weighting": _WEIGHTING[engine.example_loss]}


_WEIGHTING = {
    "sum": "N counts examples with ≥1 labelled term; ℓᵢ = sᵢ sums the example's loss terms (weight nᵢ²)",
    "mean": "N counts examples with ≥1 labelled term; ℓᵢ = sᵢ/nᵢ, the mean of its loss terms (weight 1)",
}


def _convergence(tally: _Tally, space: ParamSpace, weights: list[int], rows: Tensor,
                 checkpoints: list[int]) -> Convergence:
    numels = [space.params[n].numel() for n in tally.names]
    ends = [u[0] for u in tally.units]
    return convergence_from_rows(tally.names, numels, ends, weights, rows, checkpoints)


def _whole_batches(data: Iterable[Any], max_examples: int | None, ctx: util.DistContext) -> bool:
    """Deal whole batches to ranks (batch b to rank b mod world) rather than rows: each rank then makes
    half the per-example calls of full size, not all of them at half size (a fixed cost per call).
    Only with a sized ``data`` of at least 4 batches per rank and no ``max_examples`` cut (balance)."""
    size = len(data) if ctx.active and max_examples is None and hasattr(data, "__len__") else 0  # type: ignore[arg-type]
    return size >= WHOLE_BATCHES_PER_RANK * ctx.world_size


def _shards(objective: Objective, model: nn.Module, data: Iterable[Any], max_examples: int | None,
            ctx: util.DistContext, by_example: bool) -> Iterable[tuple[Prepared | None, int, list[int]]]:
    """Prepare each batch, cut at ``max_examples``: (this rank's rows or None, examples read, their indices).

    Under ``torchrun`` with ``by_example``, whole batches go round-robin to the ranks when there are
    enough (:func:`_whole_batches`), else example g goes to rank g mod world; a raw batch of tensors
    is sliced before ``prepare`` so each rank prepares only its own examples.
    """
    n_seen, whole = 0, by_example and _whole_batches(data, max_examples, ctx)
    for b_idx, batch in enumerate(util.batches_of(data)):
        if max_examples is not None and n_seen >= max_examples:
            return

        def owned(i: int) -> bool:
            return (b_idx if whole else n_seen + i) % ctx.world_size == ctx.rank

        raw_n = util.raw_batch_size(batch) if ctx.active and by_example else None
        if raw_n is not None:
            size = raw_n if max_examples is None else min(raw_n, max_examples - n_seen)
            local = [i for i in range(size) if owned(i)]
            yield (objective.prepare(util.raw_batch_rows(batch, local), model) if local else None), size, local
        elif whole and b_idx % ctx.world_size != ctx.rank:  # another rank's batch: not prepared here
            yield None, objective.count(objective.prepare(batch, model))[0], []
        else:
            prepared = objective.prepare(batch, model)
            size = objective.count(prepared)[0]
            take = size if max_examples is None else min(size, max_examples - n_seen)
            if take < size:
                prepared, size = select_rows(prepared, torch.arange(take), size), take
            local = list(range(size))
            if by_example and ctx.active and not whole:
                local = [i for i in local if owned(i)]
                prepared = select_rows(prepared, torch.tensor(local), size)
            yield prepared, size, local
        n_seen += size


def _accumulate(engine: SquaredGradients, data: Iterable[Any], max_examples: int | None,
                ctx: util.DistContext, progress: bool) -> _Tally:
    """One pass over ``data``: Σ per-example squares (or the batch estimator's) into a :class:`_Tally`."""
    from tqdm.auto import tqdm

    model, objective, estimator = engine.model, engine.objective, engine.estimator
    device = util.model_device(model)
    acc_dtype = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
    tally = _Tally({n: torch.zeros(p.shape, dtype=acc_dtype, device=device) for n, p in engine.space.params.items()})
    bar = tqdm(total=max_examples, unit="ex", desc=f"fisher[{estimator}]", disable=not progress or not ctx.is_main)
    # torch.func transforms ignore an outer no_grad; it stops plain autograd recording through the
    # parameters that are not scored.
    with bar, util.deterministic_eval(model), torch.no_grad():
        shards = _shards(objective, model, data, max_examples, ctx, by_example=estimator != "batch")
        checked = False
        for b_idx, (prepared, size, local) in enumerate(shards):
            if not checked and prepared is not None:  # the loss at θ₀, once (one forward pass)
                s0, n0 = objective.loss_sum(model, prepared)
                check_finite_loss(float(s0) / max(int(n0), 1), "the loss on the first batch")
                checked = True
            if estimator == "batch" and b_idx % ctx.world_size != ctx.rank:
                prepared = None  # another rank's batch
            counts = objective.term_counts(prepared).cpu() if prepared is not None else torch.zeros(0, dtype=torch.long)
            tally.n_empty += int((counts == 0).sum())
            if estimator == "batch":
                _add_batch(engine, prepared, counts, size, tally)
            else:
                _add_examples(engine, prepared, size, local, counts > 0, tally)
            tally.n_seen += size
            bar.update(size)
    return tally


def _add_batch(engine: SquaredGradients, prepared: Prepared | None, counts: Tensor, size: int, tally: _Tally) -> None:
    """The batch estimator's (Σᵢ∇sᵢ)²/n_b for one batch (``prepared`` None: another rank's batch)."""
    n_b = int((counts > 0).sum()) if prepared is not None else 0
    row = None
    if n_b > 0 and prepared is not None:
        sq = engine.batch_grad_sq(prepared)
        dtype = next(iter(tally.acc.values())).dtype
        row = torch.stack([sq[n].sum().to(dtype) for n in tally.names]) / n_b
        for n in tally.names:
            tally.acc[n].add_(sq[n].to(dtype), alpha=1.0 / n_b)
    tally.units.append((tally.n_seen + size, n_b, row))


def _add_examples(engine: SquaredGradients, prepared: Prepared | None, size: int, local: list[int],
                  informative: Tensor, tally: _Tally) -> None:
    """Squared per-example gradients of the informative examples in ``prepared``, whose rows are
    the examples ``local`` (indices in the batch of ``size``) of this rank."""
    rows: dict[int, Tensor] = {}
    todo = [j for j in range(len(local)) if bool(informative[j])]
    names, offset = tally.names, tally.n_seen
    dtype = next(iter(tally.acc.values())).dtype
    for c0 in range(0, len(todo), engine.chunk_size):
        part_rows = todo[c0 : c0 + engine.chunk_size]
        assert prepared is not None
        chunk = select_rows(prepared, torch.tensor(part_rows), len(local))
        sq = engine.squared_grads(chunk, len(part_rows), [offset + local[j] for j in part_rows])
        part = torch.stack([sq[n].reshape(len(part_rows), -1).sum(1).to(dtype) for n in names], dim=1)
        for n in names:
            tally.acc[n].add_(sq[n].sum(0).to(dtype))
        for k, j in enumerate(part_rows):
            rows[local[j]] = part[k]
    for i in range(size):
        tally.units.append((offset + i + 1, 1 if i in rows else 0, rows.get(i)))


def _all_reduce(tally: _Tally, ctx: util.DistContext) -> tuple[Tensor, list[int]]:
    """Sum the tally across ranks in place (``acc``, ``n_empty``); return the summed per-unit rows
    ``[U, T]`` (on the CPU) and the per-unit counted examples."""
    names, acc = tally.names, tally.acc
    first = next(iter(acc.values()))
    rows = torch.zeros(len(tally.units), len(names), dtype=first.dtype, device=first.device)
    for u, (_, _, row) in enumerate(tally.units):
        if row is not None:
            rows[u] = row
    weights = [u[1] for u in tally.units]
    if not ctx.active:
        return rows.cpu(), weights
    import torch.distributed as tdist

    extra = torch.tensor([*weights, tally.n_empty], dtype=first.dtype, device=first.device)
    flat = torch.cat([acc[n].reshape(-1) for n in names] + [rows.reshape(-1), extra])
    tdist.all_reduce(flat)
    o = 0
    for n in names:
        k = acc[n].numel()
        acc[n].copy_(flat[o : o + k].view_as(acc[n]))
        o += k
    rows = flat[o : o + rows.numel()].view_as(rows)
    counts = [round(float(x)) for x in flat[o + rows.numel() :]]
    tally.n_empty = counts[-1]
    return rows.cpu(), counts[:-1]
