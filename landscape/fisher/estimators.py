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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vjp, vmap

from landscape import util
from landscape.fisher.convergence import Convergence, convergence_from_rows, default_checkpoints
from landscape.fisher.result import FisherDiagonal
from landscape.objectives import IGNORE_INDEX, Objective
from landscape.params import ParamSpace, Selection, select
from landscape.util.checks import check_finite_loss, check_finite_weights

__all__ = ["diagonal", "ESTIMATORS", "hf_4d_attention_mask"]

log = logging.getLogger("landscape.fisher")
ESTIMATORS = ("empirical", "mc", "exact", "batch")
PER_EXAMPLE = ("auto", "vmap", "loop")


def _batch_size(prepared: dict[str, Any], objective: Objective) -> int:
    return int(objective.term_counts(prepared).numel())


def _select(prepared: dict[str, Any], idx: Tensor, size: int) -> dict[str, Any]:
    """Rows ``idx`` of every batched tensor (first dim == ``size``); other entries pass through."""
    out = {}
    for k, v in prepared.items():
        out[k] = v.index_select(0, idx.to(v.device)) if isinstance(v, Tensor) and v.ndim and v.shape[0] == size else v
    return out


def _raw_size(batch: Any) -> int | None:
    """Examples in a raw batch whose tensors all share the first dimension (dict, tuple, tensor)."""
    values = list(batch.values()) if isinstance(batch, dict) else list(batch) if isinstance(batch, (tuple, list)) else [batch]
    sizes = {int(v.shape[0]) for v in values if isinstance(v, Tensor) and v.ndim}
    return sizes.pop() if len(sizes) == 1 and all(isinstance(v, Tensor) for v in values) else None


def _slice_raw(batch: Any, rows: list[int]) -> Any:
    idx = torch.tensor(rows)
    if isinstance(batch, dict):
        return {k: v.index_select(0, idx.to(v.device)) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(v.index_select(0, idx.to(v.device)) for v in batch)
    return batch.index_select(0, idx.to(batch.device))


def _in_dims(chunk: dict[str, Any], size: int) -> dict[str, int | None]:
    return {k: 0 if isinstance(v, Tensor) and v.ndim and v.shape[0] == size else None for k, v in chunk.items()}


def _unsqueeze(ex: dict[str, Any], dims: dict[str, int | None]) -> dict[str, Any]:
    return {k: v.unsqueeze(0) if dims[k] == 0 else v for k, v in ex.items()}


def hf_4d_attention_mask(model: nn.Module, prepared: dict[str, Any], causal: bool) -> dict[str, Any] | None:
    """``prepared`` with a 2-D padding mask ``[B, T]`` replaced by the 4-D mask ``[B, 1, T, T]``
    that Hugging Face builds from it (bool for SDPA, additive for eager), or ``None`` if not
    applicable. Hugging Face passes 4-D masks through untouched, which ``vmap`` can run."""
    am = prepared.get("attention_mask")
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if config is None or not isinstance(am, Tensor) or am.ndim != 2 or impl not in (None, "sdpa", "eager"):
        return None
    t = am.shape[1]
    keep = (am != 0)[:, None, None, :].expand(-1, 1, t, t)
    if causal:
        keep = keep & torch.ones(t, t, dtype=torch.bool, device=am.device).tril()
    if impl == "eager":
        dtype = util.model_dtype(model)
        keep = torch.zeros(keep.shape, dtype=dtype, device=am.device).masked_fill(~keep, torch.finfo(dtype).min)
    return {**prepared, "attention_mask": keep.contiguous()}


class _Engine:
    """Per-example squared gradients of one estimator, vmapped in chunks or looped."""

    def __init__(self, model: nn.Module, objective: Objective, space: ParamSpace, estimator: str,
                 mc_samples: int, seed: int, chunk_size: int, per_example: str, exact_limit: int) -> None:
        self.model, self.objective, self.space = model, objective, space
        self.estimator, self.mc_samples, self.seed = estimator, mc_samples, seed
        self.chunk_size, self.mode, self.exact_limit = chunk_size, per_example, exact_limit
        self.values = {n: p.detach() for n, p in space.params.items()}
        self.use_4d: bool | None = None  # decided on the first batch
        self.n_grads = 0

    # -- per-example functions; ``ex1`` has a leading batch dimension of 1
    def _loss1(self, prm: dict[str, Tensor], ex1: dict[str, Any]) -> Tensor:
        s, _ = self.objective.loss_terms(self.objective.forward(self.model, ex1, params=prm), ex1)
        return s[0]

    def _logits_vjp(self, prm: dict[str, Tensor], ex1: dict[str, Any]) -> tuple[Tensor, Callable, Tensor]:
        def fn(p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            out = self.objective.forward(self.model, ex1, params=p)
            logits, targets = self.objective.logits_and_targets(out, ex1)
            return logits, targets

        logits, vjp_fn, targets = vjp(fn, prm, has_aux=True)
        return logits, vjp_fn, targets

    def _sum_sq_vjps(self, vjp_fn: Callable, cots: Tensor, vectorise: bool) -> dict[str, Tensor]:
        """Σ_k (vjp(cots[k]))² over the leading dimension of ``cots``."""
        if vectorise:
            (g,) = vmap(vjp_fn)(cots)
            return {n: (t * t).sum(0) for n, t in g.items()}
        acc: dict[str, Tensor] | None = None
        for k in range(cots.shape[0]):
            (g,) = vjp_fn(cots[k])
            acc = {n: t * t for n, t in g.items()} if acc is None else {n: acc[n] + g[n] * g[n] for n in acc}
        assert acc is not None
        return acc

    def _mc1(self, prm: dict[str, Tensor], ex1: dict[str, Any], ys: Tensor, vectorise: bool) -> dict[str, Tensor]:
        """(1/K) Σ_k (∇ Σ_t CE(logits_t, ŷᵏ_t))² for sampled labels ``ys`` [K, P] (-100 = no term)."""
        logits, vjp_fn, _ = self._logits_vjp(prm, ex1)
        prob = torch.softmax(logits.detach(), dim=-1)  # [1, P, C]
        onehot = F.one_hot(ys.clamp_min(0), prob.shape[-1]).to(prob.dtype)  # [K, P, C]
        cots = (prob - onehot) * (ys != IGNORE_INDEX).to(prob.dtype)[..., None]
        sq = self._sum_sq_vjps(vjp_fn, cots.unsqueeze(1), vectorise)
        return {n: t / ys.shape[0] for n, t in sq.items()}

    def _exact1(self, prm: dict[str, Tensor], ex1: dict[str, Any], vectorise: bool) -> dict[str, Tensor]:
        """Σ_t Σ_c p_tc (J_tᵀ(p_t − e_c))², in blocks of ``chunk_size`` (t, c) pairs."""
        logits, vjp_fn, targets = self._logits_vjp(prm, ex1)
        prob = torch.softmax(logits.detach(), dim=-1)[0]  # [P, C]
        valid = (targets[0] != IGNORE_INDEX).to(prob.dtype)  # [P]
        n_pos, n_cls = prob.shape
        acc: dict[str, Tensor] | None = None
        for j0 in range(0, n_pos * n_cls, self.chunk_size):
            j = torch.arange(j0, min(j0 + self.chunk_size, n_pos * n_cls), device=prob.device)
            t, c = j // n_cls, j % n_cls
            w = prob[t, c].sqrt() * valid[t]  # [k]
            pos = F.one_hot(t, n_pos).to(prob.dtype)[:, :, None]  # [k, P, 1]
            cls = F.one_hot(c, n_cls).to(prob.dtype)[:, None, :]  # [k, 1, C]
            cots = pos * w[:, None, None] * (prob[None] - cls)
            part = self._sum_sq_vjps(vjp_fn, cots.unsqueeze(1), vectorise)
            acc = part if acc is None else {n: acc[n] + part[n] for n in acc}
        assert acc is not None
        return acc

    def _one(self, ex1: dict[str, Any], ys: Tensor | None, vectorise: bool) -> dict[str, Tensor]:
        if self.estimator == "empirical":
            g = grad(self._loss1)(self.values, ex1)
            return {n: t * t for n, t in g.items()}
        if self.estimator == "mc":
            assert ys is not None
            return self._mc1(self.values, ex1, ys, vectorise)
        return self._exact1(self.values, ex1, vectorise)

    # -- chunks
    def _chunk_vmap(self, chunk: dict[str, Any], size: int, ys: Tensor | None) -> dict[str, Tensor]:
        dims = _in_dims(chunk, size)

        def per(ex: dict[str, Any], y: Tensor | None) -> dict[str, Tensor]:
            return self._one(_unsqueeze(ex, dims), y, True)

        return vmap(per, in_dims=(dims, 0 if ys is not None else None))(chunk, ys)

    def _chunk_loop(self, chunk: dict[str, Any], size: int, ys: Tensor | None) -> dict[str, Tensor]:
        rows = []
        for i in range(size):
            ex1 = _select(chunk, torch.tensor([i]), size)
            rows.append(self._one(ex1, None if ys is None else ys[i], False))
        return {n: torch.stack([r[n] for r in rows]) for n in rows[0]}

    def sample_labels(self, chunk: dict[str, Any], global_idx: Sequence[int]) -> Tensor | None:
        """Labels ``[B, K, P]`` sampled from the model (mc), or ``None``; also enforces the exact limit.

        Example g uses a generator seeded by (seed, g), so sharding does not change the draws.
        """
        if self.estimator not in ("mc", "exact"):
            return None
        with torch.no_grad():
            try:
                logits, targets = self.objective.logits_and_targets(self.objective.forward(self.model, chunk), chunk)
            except NotImplementedError as exc:
                raise ValueError(
                    f"estimator={self.estimator!r} samples labels from the model's categorical predictions, "
                    f"but {type(self.objective).__name__} has none ({exc}); use estimator='empirical'."
                ) from None
        n_pos, n_cls = logits.shape[1], logits.shape[2]
        if self.estimator == "exact":
            if n_pos * n_cls > self.exact_limit:
                raise ValueError(
                    f"estimator='exact' needs C×P = {n_cls}×{n_pos} = {n_cls * n_pos} gradients per example "
                    f"(C classes, P positions), above exact_limit={self.exact_limit}; use estimator='mc' "
                    "with mc_samples=... for large output spaces, or raise exact_limit."
                )
            return None
        prob = torch.softmax(logits.detach().double(), dim=-1).cpu()
        ys = torch.full((len(global_idx), self.mc_samples, n_pos), IGNORE_INDEX, dtype=torch.long)
        for i, g_idx in enumerate(global_idx):
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(g_idx)) % (2**63 - 1))
            draw = torch.multinomial(prob[i], self.mc_samples, replacement=True, generator=gen)  # [P, K]
            ys[i] = torch.where(targets[i].cpu()[None, :] != IGNORE_INDEX, draw.T, IGNORE_INDEX)
        return ys.to(logits.device)

    def _causal(self, prepared: dict[str, Any]) -> bool:
        shifts = getattr(self.objective, "shifts", None)
        shifted = shifts(prepared) if shifts is not None else bool(getattr(self.objective, "shift_labels", False))
        return shifted or bool(getattr(getattr(self.model, "config", None), "is_decoder", False))

    def _decide_4d(self, prepared: dict[str, Any]) -> None:
        """Use the 4-D mask only if the model's outputs with it match the 2-D ones on the longest
        few examples, to float32 rounding: logits must agree to ``1e-5`` of their scale (float64
        models: ``1e-10``). A model that applies its own mask semantics on top of the padding mask
        (ModernBERT's sliding-window layers drop them given a 4-D mask) fails and keeps the 2-D
        mask; the per-example losses alone (2 examples at 1e-4) let that through before."""
        self.use_4d = False
        size = _batch_size(prepared, self.objective)
        am = prepared.get("attention_mask")
        lengths = am.ne(0).sum(-1) if isinstance(am, Tensor) and am.ndim == 2 else torch.zeros(size)
        idx = torch.argsort(lengths.cpu(), descending=True, stable=True)[: min(4, size)]
        prepared = _select(prepared, idx, size)
        alt = hf_4d_attention_mask(self.model, prepared, self._causal(prepared))
        if alt is None:
            return
        with torch.no_grad():
            ref = self.objective.forward(self.model, prepared)
            try:
                got = self.objective.forward(self.model, alt)
            except Exception:  # noqa: BLE001 - model refuses 4-D masks: keep the 2-D one
                return
            try:
                ref_t, got_t = _output_logits_or_loss(self.objective, ref, prepared), _output_logits_or_loss(self.objective, got, alt)
            except Exception:  # noqa: BLE001 - nothing comparable: keep the 2-D mask
                return
        if ref_t.shape != got_t.shape:
            return
        tol = 1e-10 if ref_t.dtype == torch.float64 else 1e-5
        keep = _valid_positions(prepared, ref_t)
        ref_t, got_t = ref_t.double()[keep], got_t.double()[keep]
        if ref_t.numel() == 0:
            return
        diff = float((got_t - ref_t).abs().max())
        self.use_4d = bool(torch.isfinite(got_t).all()) and diff <= tol * max(float(ref_t.abs().max()), 1.0)

    def squared_grads(self, chunk: dict[str, Any], size: int, global_idx: Sequence[int]) -> dict[str, Tensor]:
        """Per-example contributions ``[size, *shape]`` (already squared and summed over draws)."""
        if self.use_4d is None:
            self._decide_4d(chunk)
        ys = self.sample_labels(chunk, global_idx)
        self.n_grads += size * (self.mc_samples if self.estimator == "mc" else 1)
        if self.mode in ("auto", "vmap"):
            vchunk = (hf_4d_attention_mask(self.model, chunk, self._causal(chunk)) if self.use_4d else None) or chunk
            try:
                return self._chunk_vmap(vchunk, size, ys)
            except (RuntimeError, NotImplementedError, TypeError, AssertionError) as exc:
                if self.mode == "vmap":
                    raise
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                util.log_once(
                    f"landscape.fisher: torch.func.vmap cannot run {type(self.model).__name__} ({first}); "
                    "computing per-example gradients in a loop instead (slower).", logging.WARNING)
                self.mode = "loop"
        return self._chunk_loop(chunk, size, ys)

    def batch_grad_sq(self, prepared: dict[str, Any]) -> dict[str, Tensor]:
        """(∇ Σ_{i∈b} sᵢ)² for one prepared batch."""
        def total(prm: dict[str, Tensor]) -> Tensor:
            return self.objective.loss_sum(_FunctionalModel(self.model, prm), prepared)[0]

        g = grad(total)(self.values)
        self.n_grads += 1
        return {n: t * t for n, t in g.items()}


class _FunctionalModel(nn.Module):
    """Calls ``model`` with substituted parameters (for objectives that call ``model(...)``)."""

    def __init__(self, model: nn.Module, prm: dict[str, Tensor]) -> None:
        super().__init__()
        object.__setattr__(self, "_inner", model)
        object.__setattr__(self, "_prm", prm)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self._inner, self._prm, args, kwargs, tie_weights=True, strict=False)


def _output_logits_or_loss(objective: Objective, output: Any, prepared: dict[str, Any]) -> Tensor:
    """The model's logits ``[B, T, C]`` (or ``[B, 1, C]``), else the per-example losses ``[B]``."""
    try:
        return objective.logits_and_targets(output, prepared)[0]
    except NotImplementedError:
        return objective.loss_terms(output, prepared)[0]


def _valid_positions(prepared: dict[str, Any], t: Tensor) -> Tensor:
    """Bool ``t.shape[:2]`` selecting non-padding positions when ``t`` is per token, else all."""
    am = prepared.get("attention_mask")
    if t.ndim >= 3 and isinstance(am, Tensor) and am.ndim == 2 and am.shape[1] >= t.shape[1]:
        return am[:, : t.shape[1]].ne(0).to(t.device)
    return torch.ones(t.shape[: min(t.ndim, 2)] if t.ndim > 1 else t.shape, dtype=torch.bool, device=t.device)


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
                    if b_idx % ctx.world_size == ctx.rank and n_b > 0:
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
        checkpoints = default_checkpoints(n_seen) if convergence is True else list(convergence)  # type: ignore[arg-type]
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
