"""The base class of the curvature operators of a data loss (Hessian, empirical Fisher, user-defined).

Weighting. The data is prepared once (MLM masks fixed) and the loss is L(θ) = Σᵢ sᵢ(θ) / N with
N = Σᵢ nᵢ (see :mod:`landscape.objectives`: sᵢ is example i's summed loss, nᵢ its number of loss
terms, so N counts examples for ``Criterion`` and labelled tokens for HF objectives). Then

* Hessian:          H·v = Σ_b ∇²(Σ_{i∈b} sᵢ)·v / N;
* empirical Fisher: F·v = (1/N) Σᵢ gᵢ (gᵢᵀv), gᵢ = ∇sᵢ (per *sequence* for language models).
  With the same N, F is on the Hessian's scale, so the two spectra can be compared directly.

Restriction. ``params`` may be names/globs or a :class:`~landscape.params.ParamSpace` (a block of
the operator) or a :class:`~landscape.params.ParamMask` (P·A·P on the selected coordinates).
Vectors are ``dict[str, Tensor]`` over the selected tensors (full tensor shapes; unselected entries
are ignored on input and zero on output); ``dim`` counts selected coordinates.

Every product runs in eval mode on the math attention backend (fused SDPA kernels have no double
backward) and never writes to the weights or their ``.grad``. ``matmat`` applies the operator to k
vectors at once (:mod:`landscape.curvature.products`).

Distributed. Under ``torchrun`` (``distributed=None`` or ``True``) each rank keeps the examples
g ≡ rank (mod world) of every batch, and each product is all-reduced, so every rank holds the same
operator as a single process and the algorithms run unchanged on every rank (same seeds, same
collectives). The counts N and the loss are all-reduced at construction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import util, vectors
from landscape.curvature import products
from landscape.curvature.base import OperatorBase
from landscape.evaluator import Evaluator
from landscape.objectives import Objective, Prepared
from landscape.params import ParamSpace, Selection
from landscape.util import batch_moments, batches_of, deterministic_eval
from landscape.vectors import Vector

__all__ = ["DataOperator", "gradient_module"]


def gradient_module(model: nn.Module, compile: bool) -> nn.Module:
    """``model``, or ``torch.compile(model)`` for the first-order gradients of compiled products
    (the compiled module shares the parameters, so perturbing them needs no recompilation)."""
    if not compile:
        return model
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]  # an OptimizedModule is an nn.Module
    return compiled


class DataOperator(OperatorBase):
    """Base class of the operators of a data loss: parameter selection, prepared data, vectors, checks.

    A subclass sets ``kind`` (a name for messages) and implements :meth:`_batch_product`: the
    *unscaled* product ∇²-like(Σ_{i∈b} sᵢ)·v of one prepared batch; the base sums it over batches
    (all-reduced under ``torchrun``), divides by N and counts it. Overriding :meth:`_batch_matmat`
    (k vectors stacked on a leading axis) makes :meth:`matmat` share work across vectors.

    Args:
        model: any ``nn.Module``; its current weights are θ.
        objective: how a batch becomes per-example loss sums (``MaskedLM``, ``HFLoss``, ``Criterion``).
        data: a re-iterable of raw batches, prepared and checked once by the evaluator
            (:class:`landscape.evaluator.Evaluator`, kept as ``self.evaluator``).
        params: names/globs, a ``ParamSpace`` (a block of the operator) or a ``ParamMask`` (P·A·P).
        distributed: ``None``/``True``: shard the examples across ``torchrun`` ranks; ``False``: never.
        memory_budget: bytes for batched products (default: a quarter of the free device memory).
    """

    kind = "operator"

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], *,
                 params: Selection = None, distributed: bool | None = None, memory_budget: int | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        self.ctx = util.dist_context() if distributed in (None, True) else util.DistContext()
        shard = (self.ctx.rank, self.ctx.world_size) if self.ctx.active else None
        # the one place that checks the objective, selects params, prepares the data and checks it
        self.evaluator = Evaluator(model, objective, data, params=params, shard=shard)
        self._raw_fingerprint = sum((batch_moments(b) for b in batches_of(data)), np.zeros(3))
        self.model, self.objective, self.data = model, objective, data
        self.space, self.mask = self.evaluator.space, self.evaluator.mask
        self.names = self.mask.names if self.mask is not None else self.space.names
        self.dim = self.mask.count() if self.mask is not None else self.space.dim
        self.params = {n: self.space.params[n] for n in self.names}
        first = next(iter(self.params.values()))
        self.dtype, self.device = first.dtype, first.device
        self.prepared: list[Prepared] = self.evaluator.prepared
        self.n_terms, self.n_examples = self.evaluator.n_terms, self.evaluator.n_examples
        self._batch_sums = self._forward_sums(self.prepared)  # one forward per batch, float64 sums
        total = torch.tensor([sum(self._batch_sums)], dtype=torch.float64)
        if self.ctx.active:
            products.all_reduce_([total])
        self.loss = float(total[0]) / self.n_terms
        if not np.isfinite(self.loss):
            raise ValueError(f"the loss is {self.loss} at the current weights; curvature is undefined. Check the "
                             "weights and inputs for NaN/inf (or a too-large learning rate in the checkpoint).")
        self.memory_budget = int(memory_budget) if memory_budget is not None else \
            int(0.25 * products.available_memory(self.device))
        self.param_bytes = sum(p.numel() * p.element_size() for p in self.params.values())
        self.graph_bytes: int | None = None  # bytes autograd saves for the largest local batch
        self.n_matvecs, self.n_matmats, self.last_block = 0, 0, 0

    @torch.no_grad()
    def _forward_sums(self, batches: Sequence[Prepared]) -> list[float]:
        with deterministic_eval(self.model):
            return [float(self.objective.loss_sum(self.model, p)[0].double()) for p in batches]

    # ---- vectors
    def zeros(self) -> Vector:
        return {n: torch.zeros_like(p, memory_format=torch.contiguous_format) for n, p in self.params.items()}

    def randn(self, seed: int) -> Vector:
        return self.project(vectors.randn_like(self.params, seed))

    def rademacher(self, seed: int) -> Vector:
        return self.project(vectors.rademacher_like(self.params, seed))

    def project(self, v: Vector) -> Vector:
        """P·v: unselected coordinates set to zero (identity for a ParamSpace)."""
        return v if self.mask is None else self.mask.apply(v)

    def to_flat(self, v: Vector) -> Tensor:
        """The selected coordinates of ``v`` as a 1-D tensor ``[dim]`` (key order, then row-major)."""
        if self.mask is None:
            return vectors.to_flat({n: v[n] for n in self.names})
        return torch.cat([v[n][self.mask.masks[n].to(v[n].device)] for n in self.names])

    def from_flat(self, x: Tensor) -> Vector:
        """Inverse of :meth:`to_flat`: a vector with zeros on unselected coordinates."""
        x = torch.as_tensor(x)
        if x.ndim != 1 or x.numel() != self.dim:
            raise ValueError(f"flat vector has shape {tuple(x.shape)}, expected ({self.dim},).")
        x = x.to(dtype=self.dtype, device=self.device)
        if self.mask is None:
            return vectors.from_flat(x, self.params)
        out, offset = self.zeros(), 0
        for n in self.names:
            m = self.mask.masks[n].to(self.device)
            k = int(m.sum())
            out[n][m] = x[offset : offset + k]
            offset += k
        return out

    def check_vector(self, v: Any) -> None:
        if not isinstance(v, dict):
            raise TypeError(f"vectors are dict[str, Tensor] over {self.names[:3]}...; got {type(v).__name__}. "
                            "Use op.from_flat(x) to convert a flat tensor.")
        vectors.check_like(v, self.params, "vector")

    # ---- the product
    def _eval_context(self) -> contextlib.AbstractContextManager[Any]:
        """The setting of every product: eval mode and the math attention backend (override to change)."""
        return deterministic_eval(self.model)

    def _batch_product(self, prepared: Prepared, v: Vector) -> Vector:
        """The unscaled product of one prepared batch's summed loss with ``v``; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement _batch_product(prepared, v), the unscaled "
                                  "product of one prepared batch (see DataOperator).")

    def _summed_over_batches(self, product: Any, arg: Any, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """``out`` += Σ over the prepared batches of ``product(batch, arg)`` (all-reduced under torchrun)."""
        keys = list(out)
        with self._eval_context(), torch.enable_grad():
            for p in self.prepared:
                part = product(p, arg)
                torch._foreach_add_([out[k] for k in keys], [part[k] for k in keys])
        if self.ctx.active:
            products.all_reduce_([out[k] for k in keys])
        return out

    def matvec(self, v: Vector) -> Vector:
        """The operator applied to ``v`` (dict vector over the selected tensors)."""
        self.check_vector(v)
        v = self.project({n: v[n].to(dtype=self.dtype, device=self.device) for n in self.names})
        out = self._summed_over_batches(self._batch_product, v, self.zeros())
        out = self.project(vectors.scale(out, 1.0 / self.n_terms))
        self.n_matvecs += 1
        self._check_finite([out])
        return out

    def matmat(self, vs: Sequence[Vector]) -> list[Vector]:
        """The operator applied to k vectors at once (a list of dict vectors in, a list out).

        Shares the forward and first backward across the k products (see
        :mod:`landscape.curvature.products`); counts k matvecs. :meth:`block_size` says how many
        vectors fit the memory budget; the caller splits larger sets.
        """
        vs = list(vs)
        if not vs:
            raise ValueError("matmat needs at least one vector.")
        for v in vs:
            self.check_vector(v)
        k = len(vs)
        V = products.stack([self.project({n: v[n].to(dtype=self.dtype, device=self.device) for n in self.names})
                            for v in vs], self.names)
        out = {n: torch.zeros((k, *p.shape), dtype=self.dtype, device=self.device) for n, p in self.params.items()}
        out = self._summed_over_batches(self._batch_matmat, V, out)
        res = [self.project(vectors.scale(v, 1.0 / self.n_terms)) for v in products.unstack(out, k)]
        self.n_matvecs += k
        self.n_matmats += 1
        self.last_block = k
        self._check_finite(res)
        return res

    def _batch_matmat(self, prepared: Prepared, V: dict[str, Tensor]) -> dict[str, Tensor]:
        k = next(iter(V.values())).shape[0]
        return products.stack([self._batch_product(prepared, v) for v in products.unstack(V, k)], self.names)

    def block_size(self, max_k: int = 16) -> int:
        """How many vectors one :meth:`matmat` may take within ``memory_budget`` (at most ``max_k``)."""
        if self.graph_bytes is None:
            self.graph_bytes = self._measure_graph_bytes()
        held = getattr(self, "kept_graph_bytes", 0)
        return products.block_size(max(self.memory_budget - held, 0), self.graph_bytes, self.param_bytes, max_k)

    def _measure_graph_bytes(self, keep: bool = False) -> int:
        """Bytes autograd saves for the forward and create-graph backward of the largest local batch;
        ``keep``: hold that graph in ``self._measured_graph`` (batch id, gradients) for reuse."""
        if not self.prepared:
            return 0
        sizes = [self.objective.count(p)[0] for p in self.prepared]
        p = self.prepared[int(np.argmax(sizes))]
        with deterministic_eval(self.model), torch.enable_grad(), products.SavedBytes() as saved:
            s, _ = self.objective.loss_sum(self.model, p)
            grads = torch.autograd.grad(s, list(self.params.values()), create_graph=True, allow_unused=True,
                                        materialize_grads=True)
        if keep:
            self._measured_graph = (id(p), grads)
        return saved.bytes

    def _check_finite(self, vs: Sequence[Vector]) -> None:
        if not all(bool(torch.isfinite(t).all()) for v in vs for t in v.values()):
            raise ValueError(f"{self.kind}-vector product is not finite (NaN/inf); the loss is finite, so check "
                             "for overflow (use float32/float64 instead of float16) or inf in the input vector.")

    def _primals(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in self.params.items()}

    def _loss_sums(self, prepared: Prepared) -> Callable[[dict[str, Tensor]], Tensor]:
        def fn(pdict: dict[str, Tensor]) -> Tensor:
            s, _ = self.objective.loss_terms(self.objective.forward(self.model, prepared, pdict), prepared)
            return s
        return fn

    def check_determinism(self, seed: int = 12345, rtol: float = 1e-5, *, full: bool = False) -> float:
        """Check that the loss is a deterministic function of the weights; returns the relative difference.

        Cheap (default): the first batch's loss is evaluated again (one forward) and compared with
        the one from construction. ``full=True``: the operator is applied twice to one vector on
        the first batch (two products), which also catches randomness that only the backward sees.
        Both also re-read the data: its *content* must not change between passes (random subsets,
        augmentation); reordering alone (``shuffle=True``) is harmless, because the data is prepared
        once and L is a sum over examples.
        """
        again = sum((batch_moments(b) for b in batches_of(self.data)), np.zeros(3))
        if not np.allclose(again, self._raw_fingerprint, rtol=1e-9, atol=1e-9):
            raise ValueError("the data yields different batches on a second pass (a random sampler or random "
                             "augmentation); the loss must be a function of the weights only. Pass a fixed list of "
                             "batches or a DataLoader with a deterministic sampler and no augmentation.")
        if not self.prepared:  # a rank without data under torchrun
            return 0.0
        if not full:
            loss_again = float(self._forward_sums(self.prepared[:1])[0])
            diff = abs(loss_again - self._batch_sums[0]) / max(abs(self._batch_sums[0]), 1e-30)
            if not diff <= rtol:
                raise ValueError(
                    f"two evaluations of the loss at the same weights differ (relative difference {diff:.2e}): the "
                    "loss is not a deterministic function of the weights even in eval mode. Look for dropout called "
                    "with training=True, random noise in forward(), or a stochastic objective; fix it or pass "
                    "check_determinism=False at your own risk.")
            return diff
        v = self.randn(seed)
        first = self.prepared[:1]
        with self._eval_context(), torch.enable_grad():
            a = self._batch_product(first[0], v)
            b = self._batch_product(first[0], v)
        diff_hvp = float(vectors.norm(vectors.add(a, b, -1.0)) / vectors.norm(a).clamp_min(1e-30))
        if not diff_hvp <= rtol:
            raise ValueError(
                f"two {self.kind}-vector products of the same vector differ (relative difference {diff_hvp:.2e}): the "
                "loss is not a deterministic function of the weights even in eval mode. Look for dropout called "
                "with training=True, random noise in forward(), or a stochastic objective; fix it or pass "
                "check_determinism=False at your own risk."
            )
        return diff_hvp

    def describe(self) -> dict[str, Any]:
        return {"operator": self.kind, "dim": self.dim, "n_tensors": len(self.names), "n_examples": self.n_examples,
                "n_terms": self.n_terms, "loss": self.loss, "objective": self.objective.describe(),
                "restricted": "mask" if self.mask is not None else ("space" if self.dim < self._full_dim() else None),
                "n_matvecs": self.n_matvecs, "n_matmats": self.n_matmats, "last_block": self.last_block,
                "world_size": self.ctx.world_size, "memory_budget": self.memory_budget, "param_bytes": self.param_bytes,
                "graph_bytes": self.graph_bytes}

    def _full_dim(self) -> int:
        return sum(p.numel() for p in ParamSpace(self.model).params.values())
