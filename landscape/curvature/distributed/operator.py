"""The Hessian of a data loss on a model sharded with FSDP2, applied by finite differences of gradients.

Layout. Under ``torchrun`` the model's parameters are DTensors sharded on dim 0
(:func:`shard_model`, i.e. ``torch.distributed.fsdp.fully_shard``). A vector is a dict of the
*local* shards (``p.to_local()`` shapes), and its flat form (:meth:`ShardedHessianOperator.to_flat`)
is their concatenation ``[local_dim]`` with local_dim ≈ dim / world_size. ``dim`` is the global
count. Its :meth:`~ShardedHessianOperator.allsum` all-reduces partial sums, so the stock algorithms
(:func:`landscape.curvature.top_eigenvalues` with ``"lanczos"`` or ``"power"``,
:func:`~landscape.curvature.trace`, :func:`~landscape.curvature.spectral_density`) take every
inner product and norm over all shards.

Product. With the loss L(θ) = Σᵢ sᵢ(θ) / N (N all-reduced; each rank keeps the examples
g ≡ rank (mod world) of every batch, as :class:`~landscape.curvature.data_operator.DataOperator`, or
whole batches round-robin when there are at least 4 per rank):

    H·v ≈ (∇L(θ + εv) − ∇L(θ − εv)) / 2ε,   ε = step / ‖v‖,

two gradients per product (FSDP all-gathers the perturbed shards and reduce-scatters the
gradients), error O(step²) from truncation plus O(u·‖∇L‖/step) from rounding. ``step`` defaults to
1e-4 in float64 and 0.03 in float32 (see DESIGN.md's finite-difference facts). The weights are
restored bit for bit from a saved copy of the local shards after every product, and ``.grad`` is
restored too.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from landscape.curvature.base import OperatorBase
from landscape.objectives import Objective, Prepared, select_rows
from landscape.util import batches_of, deterministic_eval
from landscape.util.distributed import DistContext, dist_context
from landscape.util.meta import result_meta
from landscape.vectors import Vector

__all__ = ["ShardedHessianOperator", "shard_model", "local_shard"]


def shard_model(model: nn.Module, modules: Sequence[nn.Module] | None = None) -> nn.Module:
    """Shard ``model`` in place with FSDP2 (``fully_shard``): each of ``modules`` (default: every
    submodule that owns parameters directly, except those holding a tied parameter) is one all-gather
    unit, then the root (which takes the rest). Needs an
    initialised process group (:func:`landscape.util.distributed.dist_context`). Returns ``model``."""
    from torch.distributed.fsdp import fully_shard

    dist_context()
    if modules is None:  # tied parameters (BERT's decoder = word embeddings) stay with the root
        owners: dict[int, int] = {}
        for m in model.modules():
            for p in m.parameters(recurse=False):
                owners[id(p)] = owners.get(id(p), 0) + 1
        modules = [m for m in model.modules() if m is not model and any(True for _ in m.parameters(recurse=False))
                   and all(owners[id(p)] == 1 for p in m.parameters(recurse=False))]
    for m in modules:
        fully_shard(m)
    fully_shard(model, reshard_after_forward=True)  # the root too, so a forward alone leaves it sharded
    return model


def local_shard(p: Tensor) -> Tensor:
    """The local tensor of a DTensor parameter (a view that FSDP2 all-gathers from), else ``p`` itself."""
    to_local = getattr(p, "to_local", None)
    return to_local() if callable(to_local) else p


def _chunk(full: Tensor, local: Tensor, ctx: DistContext, sharded: bool) -> Tensor:
    """This rank's dim-0 chunk of a full tensor (FSDP2's ``torch.chunk`` layout)."""
    if not sharded:
        return full
    parts = torch.chunk(full, ctx.world_size, dim=0)
    out = parts[ctx.rank] if ctx.rank < len(parts) else full[0:0]
    if out.shape != local.shape:
        raise ValueError(f"a parameter's local shard has shape {tuple(local.shape)}, but its dim-0 chunk has "
                         f"{tuple(out.shape)}: shard the model with shard_model(model) (Shard(0) placements).")
    return out


class ShardedHessianOperator(OperatorBase):
    """The Hessian of a data loss on an FSDP2-sharded model, with sharded vectors (module docstring).

    Args:
        model: a model sharded with :func:`shard_model` (or a plain model in a single process).
        objective: how a batch becomes per-example loss sums.
        data: a re-iterable of raw batches, prepared once; each rank keeps its examples.
        params: names or globs of the parameters (default: every trainable parameter).
        step: the finite-difference step ‖εv‖ (default 1e-4 in float64, 0.03 otherwise).
    """

    kind = "sharded-hessian"

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], *,
                 params: Sequence[str] | None = None, step: float | None = None) -> None:
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a landscape Objective, got {type(objective).__name__}.")
        self.model, self.objective, self.ctx = model, objective, dist_context()
        self._prepare(data)  # may run forwards (MaskedLM's head check); FSDP's root then stays unsharded
        reshard = getattr(model, "reshard", None)
        if callable(reshard):
            reshard()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if params is not None:
            named = [(n, p) for n, p in named if any(fnmatch.fnmatchcase(n, g) for g in params)]
        if not named:
            raise ValueError(f"no trainable parameter matches params={params!r}.")
        self.names = [n for n, _ in named]
        self.params = dict(named)
        self.sharded = {n: callable(getattr(p, "to_local", None)) for n, p in named}
        if self.ctx.active and not all(self.sharded.values()):
            raise ValueError("under torchrun the model must be sharded: call shard_model(model) (FSDP2 fully_shard) "
                             "before building the operator, or use curvature.HessianOperator for a replicated model.")
        self.local = {n: local_shard(p) for n, p in named}
        first = next(iter(self.local.values()))
        self.dtype, self.device = first.dtype, first.device
        self.dim = sum(p.numel() for p in self.params.values())
        self.local_dim = sum(t.numel() for t in self.local.values())
        self.step = float(step) if step is not None else (1e-4 if self.dtype == torch.float64 else 0.03)
        self.n_matvecs, self.max_vector_numel = 0, 0

    # ---- data
    def _prepare(self, data: Iterable[Any]) -> None:
        """This rank's batches (b ≡ rank mod world, with ≥ 4 batches per rank) or rows of every batch,
        prepared once; pads with zero-weight batches so every rank
        runs the same number of forward/backward passes (FSDP's collectives must match)."""
        mine: list[Prepared] = []
        offset, w = 0, self.ctx.world_size
        raw = list(batches_of(data))
        whole = w > 1 and len(raw) >= 4 * w  # enough batches: deal them whole (half the calls, not half-size calls)
        for b_idx, b in enumerate(raw):
            if whole:
                if b_idx % w == self.ctx.rank:
                    mine.append(self.objective.prepare(b, self.model))
                continue
            p: Prepared | None = self.objective.prepare(b, self.model)
            assert p is not None
            size = self.objective.count(p)[0]
            rows = [i for i in range(size) if (offset + i) % w == self.ctx.rank]
            offset += size
            if rows:
                mine.append(select_rows(p, rows, size) if w > 1 else p)
        counts = [self.objective.count(p) for p in mine]
        totals = torch.tensor([len(mine), -len(mine), sum(c[1] for c in counts), sum(c[0] for c in counts)],
                              dtype=torch.float64)
        most = self._all_reduce(totals[:2].clone(), dist.ReduceOp.MAX) if self.ctx.active else totals[:2]
        total = self._all_reduce(totals[2:].clone()) if self.ctx.active else totals[2:]
        if -int(most[1]) == 0:
            raise ValueError(f"rank {self.ctx.rank} has no example: give at least {w} examples (one per rank).")
        self.n_terms, self.n_examples = int(round(float(total[0]))), int(round(float(total[1])))
        if self.n_terms == 0:
            raise ValueError("data holds no loss term (every label is -100); the curvature of an empty loss is 0.")
        self.schedule = [(p, 1.0) for p in mine] + [(mine[0], 0.0)] * (int(most[0]) - len(mine))

    @staticmethod
    def _all_reduce(t: Tensor, op: Any = None) -> Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op)
        return t

    # ---- vectors (local shards)
    def _track(self, vs: Iterable[Tensor]) -> None:
        for t in vs:
            self.max_vector_numel = max(self.max_vector_numel, t.numel())

    def zeros(self) -> Vector:
        return {n: torch.zeros_like(t, memory_format=torch.contiguous_format) for n, t in self.local.items()}

    def _draw(self, seed: int, kind: str) -> Vector:
        """The single-process draw (:func:`landscape.vectors.randn_like` order), one tensor at a time,
        keeping this rank's chunk: the same numbers as ``HessianOperator.randn(seed)``'s shards."""
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        out: Vector = {}
        for n, p in self.params.items():
            if kind == "randn":
                full = torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                full = (torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(torch.float64)
            part = _chunk(full, self.local[n], self.ctx, self.sharded[n])
            out[n] = part.to(dtype=self.dtype, device=self.device).contiguous()
        return out

    def randn(self, seed: int) -> Vector:
        return self._draw(seed, "randn")

    def rademacher(self, seed: int) -> Vector:
        return self._draw(seed, "rademacher")

    def to_flat(self, v: Vector) -> Tensor:
        """The local shards of ``v`` as one 1-D tensor ``[local_dim]`` (name order, then row-major)."""
        x = torch.cat([v[n].reshape(-1) for n in self.names])
        self._track([x])
        return x

    def from_flat(self, x: Tensor) -> Vector:
        """Inverse of :meth:`to_flat`."""
        if x.ndim != 1 or x.numel() != self.local_dim:
            raise ValueError(f"a sharded flat vector has shape ({self.local_dim},) on rank {self.ctx.rank} "
                             f"(this rank's slice of dim={self.dim}), got {tuple(x.shape)}.")
        out, offset = {}, 0
        for n in self.names:
            t = self.local[n]
            out[n] = x[offset : offset + t.numel()].view(t.shape).to(dtype=self.dtype, device=self.device)
            offset += t.numel()
        self._track([x])
        return out

    def allsum(self, t: Tensor) -> Tensor:
        """The sum over ranks of this rank's partial sums ``t`` (a new tensor, ``t``'s shape and dtype):
        the vector-space hook of :mod:`landscape.curvature.base` that makes the stock algorithms
        all-reduce their inner products and norms."""
        out = t.detach().clone().contiguous()
        return self._all_reduce(out) if self.ctx.active else out

    # ---- the product
    def _gradient(self) -> list[Tensor]:
        """Local shards of ∇(Σᵢ sᵢ) summed over all ranks' examples; ``.grad`` is restored."""
        plist = [self.params[n] for n in self.names]
        saved = [p.grad for p in plist]
        for p in plist:
            p.grad = None
        try:
            with deterministic_eval(self.model), torch.enable_grad():
                for prepared, weight in self.schedule:
                    (self.objective.loss_sum(self.model, prepared)[0] * weight).backward()
            # FSDP2 averages gradients over ranks; the loss is a sum over all ranks' examples
            scale = float(self.ctx.world_size) if any(self.sharded.values()) else 1.0
            return [torch.zeros_like(self.local[n]) if p.grad is None else local_shard(p.grad).detach() * scale
                    for n, p in zip(self.names, plist)]
        finally:
            for p, g in zip(plist, saved):
                p.grad = g

    def matvec(self, v: Vector) -> Vector:
        """H·v by central differences of two gradients, on local shards (weights restored bit for bit)."""
        vs = [v[n].to(dtype=self.dtype, device=self.device) for n in self.names]
        self._track(vs)
        local_sq = sum((t.double() ** 2).sum() for t in vs)
        size = float(self.allsum(torch.as_tensor(local_sq, dtype=torch.float64).reshape(1))[0]) ** 0.5
        self.n_matvecs += 1
        if size == 0.0:
            return self.zeros()
        eps = self.step / size
        shards = [self.local[n] for n in self.names]
        theta0 = [t.detach().clone() for t in shards]
        grads = []
        try:
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for t, t0, d in zip(shards, theta0, vs):
                        t.copy_(t0 + (sign * eps) * d)
                grads.append(self._gradient())
        finally:
            with torch.no_grad():
                for t, t0 in zip(shards, theta0):
                    t.copy_(t0)
        out = {n: (gp - gm) / (2.0 * eps * self.n_terms) for n, gp, gm in zip(self.names, *grads)}
        if not all(bool(torch.isfinite(t).all()) for t in out.values()):
            raise ValueError("the finite-difference Hessian-vector product is not finite; check the weights and "
                             "inputs for NaN/inf, or lower step=.")
        return out

    def describe(self) -> dict[str, Any]:
        return {"operator": self.kind, "dim": self.dim, "local_dim": self.local_dim, "n_tensors": len(self.names),
                "n_examples": self.n_examples, "n_terms": self.n_terms, "step": self.step,
                "world_size": self.ctx.world_size, "n_matvecs": self.n_matvecs,
                "max_vector_numel": self.max_vector_numel}

    def meta(self, settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """A result's ``meta``: :func:`result_meta` without the weights fingerprint (the weights are sharded)."""
        out = result_meta(None, settings, operator=self.describe(), **extra)
        out["model"] = {"class": type(self.model).__name__, "sharded": any(self.sharded.values())}
        return out
