"""The one prepared-data evaluator: losses at θ₀ + Σⱼ cⱼdⱼ on data prepared once.

Every pass that moves the weights and evaluates the loss (scan points, sharpness samples and
ascent steps, per-example loss sums) goes through :class:`Evaluator`. It

* prepares the data once (``objective.prepare_data``: MLM masks fixed) and checks it once
  (:data:`landscape.objectives.base.NO_LOSS_TERM`);
* counts the examples one way (``Objective.count``) and keeps each example's term count nᵢ;
* sets every point from the saved θ₀ (:class:`landscape.perturb.Perturbation`), never by stepping,
  and restores the weights bit for bit on leaving :meth:`Evaluator.evaluating` (also after a raise);
* evaluates in eval mode on the math attention backend (``util.deterministic_eval``).

Quantities, for per-example loss sums sᵢ(θ) and term counts nᵢ (``landscape.objectives``):

* the pooled loss L(θ) = Σᵢsᵢ / Σᵢnᵢ, and the accuracy over the same N = Σᵢnᵢ terms;
* the per-example sums ``[k, n_examples]`` (float64) at k points, one forward pass per point, or
  through ``torch.func.vmap`` over the k stacked points (:meth:`Evaluator.metrics_batched`);
* L and ∇L on the selected tensors (:meth:`Evaluator.loss`), for the sharpness ascent.

Sharding. ``shard=(rank, world)`` keeps the examples g ≡ rank (mod world) of the whole data
(counted across batches, via ``objectives.select_rows``); ``counts`` are then this rank's and
``n_terms``/``n_examples`` the totals over every rank (all-reduced when ``torch.distributed`` is
initialized), so the no-loss-term check is global. Sums, :meth:`~Evaluator.metrics` and
:meth:`~Evaluator.pooled` stay this rank's (divided by its own Σnᵢ); :meth:`~Evaluator.loss` divides
this rank's Σsᵢ by the global N, so summing it over ranks gives L.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from landscape import util
from landscape.objectives import NO_LOSS_TERM, Objective, Prepared, select_rows
from landscape.params import Selection, select
from landscape.perturb import Perturbation
from landscape.util.checks import check_finite_weights

__all__ = ["Evaluator", "Metric"]

Metric = Literal["loss", "accuracy"]



def _shard(objective: Objective, prepared: list[Prepared], rank: int, world: int) -> list[Prepared]:
    """The examples g ≡ rank (mod world), numbered across the batches in order."""
    out, offset = [], 0
    for p in prepared:
        size = objective.count(p)[0]
        rows = [i for i in range(size) if (offset + i) % world == rank]
        offset += size
        if rows:
            out.append(select_rows(p, rows, size))
    return out


class Evaluator:
    """Data prepared once, and the loss at θ₀ + Σⱼ cⱼdⱼ on it.

    Args:
        model: the model; its current weights are θ₀.
        objective: the loss (its ``prepare`` fixes any randomness, e.g. MLM masks).
        data: a re-iterable of raw batches (prepared once, here).
        params: the tensors that may move (names/globs, a ``ParamSpace`` or a ``ParamMask``;
            default every trainable parameter); directions and deltas live on these.
        shard: ``(rank, world)``: keep only this rank's examples (see the module docstring).

    Attributes:
        prepared: the prepared batches (this rank's rows when sharded).
        counts: ``[n_examples]`` term counts nᵢ (float64, this rank's).
        n_examples, n_terms: totals (over every rank when sharded).
        names, theta0: the movable tensors' canonical names and saved values.
        n_forward: forward passes over the whole data so far (k for k points).
    """

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], *, params: Selection = None,
                 shard: tuple[int, int] | None = None) -> None:
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a landscape Objective (e.g. objectives.Criterion(loss_fn)), "
                            f"got {type(objective).__name__}.")
        self.space, self.mask = select(model, params)
        check_finite_weights(model)
        self.model, self.objective = model, objective
        prepared = objective.prepare_data(model, data)
        self.prepared = prepared if shard is None or shard[1] <= 1 else _shard(objective, prepared, *shard)
        per_batch = [objective.term_counts(p).detach().cpu().double().reshape(-1) for p in self.prepared]
        self.counts: np.ndarray = torch.cat(per_batch).numpy() if per_batch else np.zeros(0)
        totals = torch.tensor([float(self.counts.size), float(self.counts.sum())], dtype=torch.float64)
        if shard is not None and shard[1] > 1 and torch.distributed.is_available() \
                and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        self.n_examples, self.n_terms = int(round(float(totals[0]))), int(round(float(totals[1])))
        if self.n_terms == 0:
            raise ValueError(NO_LOSS_TERM)
        self.names = self.mask.names if self.mask is not None else self.space.names
        self.perturbation = Perturbation({n: self.space.params[n] for n in self.names})
        self.tensors, self.theta0 = self.perturbation.tensors, self.perturbation.theta0
        self.n_forward = 0

    # ---- moving the weights
    @contextlib.contextmanager
    def evaluating(self) -> Iterator[Evaluator]:
        """Eval mode and math attention inside; on exit θ₀ comes back bit for bit and every module's
        train flag is as it was, however the block ended."""
        with self.perturbation, util.deterministic_eval(self.model):
            yield self

    def set(self, coeffs: Sequence[float], directions: Sequence[Mapping[str, Tensor]]) -> None:
        """θ ← θ₀ + Σⱼ cⱼdⱼ (from θ₀, never stepped); dⱼ over (a subset of) :attr:`names`."""
        if len(coeffs) != len(directions):
            raise ValueError(f"{len(coeffs)} coefficients for {len(directions)} directions.")
        self._check_names(directions)
        self.perturbation.set_terms([(float(c), d) for c, d in zip(coeffs, directions)])

    def _check_names(self, directions: Sequence[Mapping[str, Tensor]]) -> None:
        outside = sorted({n for d in directions for n in d} - set(self.names))
        if outside:
            raise ValueError(f"a direction moves tensors outside this evaluator's params= selection: {outside[:3]}; "
                             "build the direction on the same params=, or widen params=.")

    def set_delta(self, delta: Sequence[Tensor] | Mapping[str, Tensor] | None) -> None:
        """θ ← θ₀ + δ (``None``: θ₀); a list δ is aligned with :attr:`names`."""
        self.perturbation.set_delta(delta)

    def restore(self) -> None:
        """θ ← θ₀, bit for bit."""
        self.perturbation.restore()

    # ---- evaluating at the current weights
    @torch.no_grad()
    def _forward_stats(self, params: Mapping[str, Tensor] | None, accuracy: bool) -> tuple[Tensor, Tensor]:
        """(per-example sums ``[n_examples]`` float64, number of correct predictions) on the device."""
        obj, sums = self.objective, []
        correct = torch.zeros((), dtype=torch.float64, device=util.model_device(self.model))
        for p in self.prepared:
            out = obj.forward(self.model, p, params)
            sums.append(obj.loss_terms(out, p)[0].double().reshape(-1))
            if accuracy:
                correct += _correct(obj, out, p)
        self.n_forward += 1
        return torch.cat(sums), correct

    def sums(self) -> np.ndarray:
        """Per-example loss sums sᵢ ``[n_examples]`` (float64) at the current weights."""
        return self._forward_stats(None, False)[0].cpu().numpy()

    def metrics(self, metrics: Sequence[Metric] = ("loss",)) -> dict[str, float]:
        """The pooled loss L = Σsᵢ/Σnᵢ (and the accuracy over the N labelled terms) at the current weights."""
        s, correct = self._forward_stats(None, "accuracy" in metrics)
        stats = torch.stack([s.sum(), correct]).cpu().tolist()
        return self._pool(stats[0], stats[1], metrics)

    def _pool(self, s: float, correct: float, metrics: Sequence[Metric]) -> dict[str, float]:
        n = float(self.counts.sum())
        out = {"loss": s / n if n > 0 else float("nan")}
        if "accuracy" in metrics:
            out["accuracy"] = correct / n if n > 0 else float("nan")
        return out

    def pooled(self, sums: np.ndarray) -> np.ndarray:
        """L = Σᵢsᵢ / Σᵢnᵢ for each row of ``sums [..., n_examples]``."""
        return np.asarray(sums, dtype=np.float64).sum(-1) / self.counts.sum()

    def loss(self, grad: bool = False) -> tuple[float, list[Tensor] | None]:
        """(L, ∇L on :attr:`names` or None) at the current weights; ∇ of Σsᵢ/N batch by batch."""
        self.n_forward += 1
        total = 0.0
        grads: list[Tensor] = [torch.zeros_like(t) for t in self.theta0] if grad else []
        with torch.set_grad_enabled(grad):
            for p in self.prepared:
                s, _ = self.objective.loss_sum(self.model, p)
                if grad:
                    gs = torch.autograd.grad(s / self.n_terms, self.tensors, allow_unused=True)
                    torch._foreach_add_(grads, [torch.zeros_like(t) if g is None else g
                                                for g, t in zip(gs, self.theta0)])
                total += float(s.detach().double())
        return total / self.n_terms, (grads if grad else None)

    # ---- several points
    def at(self, directions: Sequence[Mapping[str, Tensor]], coeffs: Any) -> np.ndarray:
        """``sums [k, n_examples]`` at θ₀ + Σⱼ coeffs[p, j]·directions[j] for each of the k points,
        one forward pass each (weights and mode restored afterwards).

        ``coeffs``: ``[k, len(directions)]`` (a 1-D array means one direction); ``directions`` may be
        empty when every point is θ₀ (``coeffs`` of shape ``[k, 0]``).
        """
        c = _check_coeffs(coeffs, len(directions))
        rows = []
        with self.evaluating():
            for point in c:
                self.set([float(x) for x in point], directions)
                rows.append(self.sums())
        return np.stack(rows) if rows else np.zeros((0, self.counts.size))

    def origin(self) -> np.ndarray:
        """``sums [n_examples]`` at θ₀ itself."""
        with self.evaluating():
            self.restore()
            return self.sums()

    def sums_batched(self, directions: Sequence[Mapping[str, Tensor]], coeffs: Any,
                     accuracy: bool = False) -> tuple[Tensor, Tensor]:
        """(sums ``[k, n_examples]`` float64, correct ``[k]``) at k points at once: θ₀ + Σⱼ cⱼdⱼ stacked
        ``[k, ...]`` through ``vmap`` of ``functional_call`` (agrees with :meth:`at` to rounding).
        Only the tensors some direction names are stacked; call inside :meth:`evaluating`."""
        c_np = _check_coeffs(coeffs, len(directions))
        self._check_names(directions)
        dev = util.model_device(self.model)
        c = torch.as_tensor(c_np, dtype=self.theta0[0].dtype, device=dev)
        self.restore()
        stacked: dict[str, Tensor] = {}
        for name, t0 in zip(self.names, self.theta0):
            moving = [(j, d[name]) for j, d in enumerate(directions) if name in d]
            if moving:
                t = t0.unsqueeze(0).expand(len(c), *t0.shape)
                for j, d in moving:
                    t = t + c[:, j].view(-1, *([1] * d.ndim)) * d
                stacked[name] = t
        obj = self.objective

        def one(params: dict[str, Tensor], batch: Prepared) -> tuple[Tensor, Tensor]:
            out = obj.forward(self.model, batch, params)
            s = obj.loss_terms(out, batch)[0].double().reshape(-1)
            return s, (_correct(obj, out, batch) if accuracy else torch.zeros((), dtype=torch.float64, device=s.device))

        sums, correct = [], torch.zeros(len(c), dtype=torch.float64, device=dev)
        with torch.no_grad():
            for batch in self.prepared:
                s_b, a_b = torch.func.vmap(one, in_dims=(0, None))(stacked, batch)
                sums.append(s_b)
                correct += a_b
        self.n_forward += len(c)
        return torch.cat(sums, 1), correct

    def metrics_batched(self, directions: Sequence[Mapping[str, Tensor]], coeffs: Any,
                        metrics: Sequence[Metric] = ("loss",)) -> list[dict[str, float]]:
        """:meth:`metrics` at k points through :meth:`sums_batched` (call inside :meth:`evaluating`)."""
        sums, correct = self.sums_batched(directions, coeffs, "accuracy" in metrics)
        rows = torch.stack([sums.sum(1), correct], 1).cpu().tolist()
        return [self._pool(s, a, metrics) for s, a in rows]


def _correct(objective: Objective, output: Any, prepared: Prepared) -> Tensor:
    """Number of labelled terms whose argmax prediction is the target (float64 scalar)."""
    logits, targets = objective.logits_and_targets(output, prepared)
    return ((logits.argmax(-1) == targets) & (targets != -100)).sum().double()


def _check_coeffs(coeffs: Any, n_dirs: int) -> np.ndarray:
    """``coeffs`` as a finite float64 array ``[k, n_dirs]``."""
    c = np.asarray(coeffs, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None] if n_dirs == 1 else c[None, :]
    if c.ndim != 2 or c.shape[1] != n_dirs:
        raise ValueError(f"coeffs must have shape [k, {n_dirs}], got {c.shape}.")
    if not np.isfinite(c).all():
        raise ValueError("coeffs hold NaN or infinite values.")
    return c
