"""Per-example gradients for the Fisher estimators: the engine that runs ``torch.func.vmap`` over
``grad``/``vjp`` of ``functional_call`` in chunks, its per-example loop fallback, and the 4-D
attention-mask rewrite that lets ``vmap`` run Hugging Face models (checked against the 2-D mask).

:func:`landscape.fisher.estimators.diagonal` drives it; see that module for the estimators' maths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vjp, vmap

from landscape import util
from landscape.objectives import IGNORE_INDEX, Objective, select_rows
from landscape.params import ParamSpace

log = logging.getLogger("landscape.fisher")
#: Largest C×P (classes × labelled positions) the ``exact`` estimator accepts per example.
EXACT_LIMIT = 4096


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


class SquaredGradients:
    """Per-example squared gradients of one Fisher estimator, vmapped in chunks or looped.

    ``squared_grads(chunk)`` returns ``{name: [B, *shape]}`` (empirical: (∇ℓᵢ)²; mc: the mean over
    K label draws; exact: the closed-form expectation); ``batch_grad_sq`` the batch estimator's
    (∇Σᵢℓᵢ)². The example loss ℓᵢ is ``example_loss``: ``"sum"``, sᵢ (the summed token loss), or
    ``"mean"``, sᵢ/nᵢ (the mean token loss). nᵢ does not depend on θ, so ∇(sᵢ/nᵢ) = ∇sᵢ/nᵢ and the
    per-example contributions are those of the sum times 1/nᵢ². ``n_grads`` counts the gradients
    taken, ``use_4d`` whether the 4-D mask is used.
    """

    def __init__(self, model: nn.Module, objective: Objective, space: ParamSpace, estimator: str,  # noqa: PLR0913
                 mc_samples: int, seed: int, chunk_size: int, per_example: str, example_loss: str = "sum") -> None:
        self.model, self.objective, self.space = model, objective, space
        self.estimator, self.mc_samples, self.seed = estimator, mc_samples, seed
        self.chunk_size, self.mode, self.example_loss = chunk_size, per_example, example_loss
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

        logits, vjp_fn, targets = vjp(fn, prm, has_aux=True)  # type: ignore[misc]  # has_aux: three values
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
            ex1 = select_rows(chunk, torch.tensor([i]), size)
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
            if n_pos * n_cls > EXACT_LIMIT:
                raise ValueError(
                    f"estimator='exact' needs C×P = {n_cls}×{n_pos} = {n_cls * n_pos} gradients per example "
                    f"(C classes, P positions), above exact_limit={EXACT_LIMIT}; use estimator='mc' "
                    "with mc_samples=... for large output spaces, or raise landscape.fisher.per_example.EXACT_LIMIT."
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
        size = self.objective.count(prepared)[0]
        am = prepared.get("attention_mask")
        lengths = am.ne(0).sum(-1) if isinstance(am, Tensor) and am.ndim == 2 else torch.zeros(size)
        idx = torch.argsort(lengths.cpu(), descending=True, stable=True)[: min(4, size)]
        prepared = select_rows(prepared, idx, size)
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
                ref_t = _output_logits_or_loss(self.objective, ref, prepared)
                got_t = _output_logits_or_loss(self.objective, got, alt)
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
        """Per-example contributions ``[size, *shape]`` (already squared and summed over draws; for
        ``example_loss="mean"`` divided by nᵢ², every example in ``chunk`` having nᵢ ≥ 1)."""
        sq = self._squared_sums(chunk, size, global_idx)
        if self.example_loss == "sum":
            return sq
        w = self.objective.term_counts(chunk).to(next(iter(sq.values())).device).double().clamp_min(1).pow(-2)
        return {n: t * w.to(t.dtype).view(-1, *([1] * (t.ndim - 1))) for n, t in sq.items()}

    def _squared_sums(self, chunk: dict[str, Any], size: int, global_idx: Sequence[int]) -> dict[str, Tensor]:
        """Per-example contributions of the summed token loss sᵢ, vmapped (loop fallback)."""
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
        """(∇ Σ_{i∈b} ℓᵢ)² for one prepared batch (ℓᵢ = sᵢ, or sᵢ/nᵢ for ``example_loss="mean"``)."""
        def total(prm: dict[str, Tensor]) -> Tensor:
            model = _FunctionalModel(self.model, prm)
            if self.example_loss == "sum":
                return self.objective.loss_sum(model, prepared)[0]
            s, n = self.objective.loss_terms(self.objective.forward(model, prepared), prepared)
            return (s / n.clamp_min(1)).sum()

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
        inner: nn.Module = object.__getattribute__(self, "_inner")
        prm: dict[str, Tensor] = object.__getattribute__(self, "_prm")
        return torch.func.functional_call(inner, prm, args, kwargs, tie_weights=True, strict=False)


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
