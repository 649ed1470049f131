"""The Hessian operator H·v (double backward or forward-over-reverse), with batched products,
graph reuse within a memory budget and an auto mode that measures both modes.

Weighting, restriction, vectors and the distributed sharding are those of
:class:`~landscape.curvature.data_operator.DataOperator` (the shared base class).
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Iterable
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

from landscape import util
from landscape.curvature import products
from landscape.curvature.data_operator import DataOperator, gradient_module
from landscape.curvature.finite_difference import default_step, fd_product
from landscape.objectives import Objective, Prepared
from landscape.params import Selection
from landscape.util import deterministic_eval, log, log_once
from landscape.vectors import Vector

__all__ = ["HessianOperator", "MODES", "Mode", "ModeChoice"]

#: How a Hessian-vector product is computed (``"auto"`` picks one of these by timing both).
Mode = Literal["double_backward", "forward_over_reverse"]
MODES: tuple[Mode, ...] = get_args(Mode)
#: What ``HessianOperator(mode=...)`` accepts: the exact modes, ``"auto"`` (the faster exact one) or
#: ``"finite_difference"`` (central differences of two gradients, :mod:`~landscape.curvature.finite_difference`).
ModeChoice = Literal["auto", "double_backward", "forward_over_reverse", "finite_difference"]

#: The auto mode's pick per (model, selection, data shapes, device, threads): measured once per process.
_MODE_CACHE: dict[tuple, dict[str, Any]] = {}


class HessianOperator(DataOperator):
    """H·v for the data loss L = Σsᵢ/Σnᵢ, restricted to ``params``.

    Args:
        model: any ``nn.Module`` (a Hugging Face model works through its objective).
        objective: how a batch becomes per-example loss sums (``MaskedLM``, ``HFLoss``, ``Criterion``).
        data: a re-iterable of raw batches; prepared once.
        params: names/globs, a ``ParamSpace``, a ``ParamMask`` or None (all trainable parameters, tied ones once).
        mode: ``"double_backward"`` (∇(∇L·v) with ``create_graph``), ``"forward_over_reverse"``
            (``torch.func.jvp`` of ``torch.func.grad`` with ``functional_call``) or ``"auto"``: after
            one warm-up, time 3 products of each mode on the first batch and keep the lower median; a
            mode that fails is skipped. The pick is cached per process for the same model, selection,
            data shapes, device and thread count. ``mode_choice`` records timings, pick and cache use.
            ``"finite_difference"``: (∇L(θ₀+εv) − ∇L(θ₀−εv))/2ε from two ordinary gradients (no second
            graph, fused attention kept, works under ``compile``); never picked by ``"auto"``.
        fd_step: finite-difference step norm h = ‖εv‖ (default from the dtype: float32 0.004, 0.036
            with Richardson; see :func:`~landscape.curvature.finite_difference.default_step`).
        richardson: finite differences with one Richardson step (four gradients, O(ε⁴)); each
            product's estimated relative error is kept in ``fd_errors`` (``describe()``: last, max).
        compile: ``torch.compile`` the model for the gradients (``mode="finite_difference"`` only:
            AOT autograd has no double backward).
        check_determinism: ``True`` (default): evaluate the first batch's loss twice (one extra
            forward); ``"full"``: two products of one vector (two HVPs); ``False``: no check.
        reuse_graph: keep each batch's first-backward graph (as PyHessian does), so a product is one
            backward through it, about 2-4x cheaper, at the price of memory held until
            :meth:`release_graph`. Forces double backward. ``"auto"`` (default): build the first
            batch's graph, measure the bytes autograd saves for it, and keep the graphs if their
            estimate for all batches fits ``memory_budget``; else no graph survives a product and
            memory stays flat. ``graph_bytes`` / ``kept_graph_bytes`` report the cost.
        memory_budget: bytes the operator may hold for graphs and batched products (default: a
            quarter of the free memory of the device at construction).
        distributed: ``None``/``True``: shard the examples across ``torchrun`` ranks and all-reduce
            each product; ``False``: never.
    """

    kind = "Hessian"

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], *,
                 params: Selection = None, mode: ModeChoice = "auto",
                 check_determinism: bool | Literal["full"] = True, reuse_graph: bool | Literal["auto"] = "auto",
                 memory_budget: int | None = None, distributed: bool | None = None, fd_step: float | None = None,
                 richardson: bool = False, compile: bool = False) -> None:
        if mode not in get_args(ModeChoice):
            raise ValueError(f"mode must be one of {get_args(ModeChoice)}, got {mode!r}.")
        if compile and mode != "finite_difference":
            raise ValueError("compile=True needs mode='finite_difference': torch.compile (AOT autograd) has no double "
                             "backward, so exact Hessian products cannot be compiled.")
        if fd_step is not None and not (np.isfinite(fd_step) and fd_step > 0):
            raise ValueError(f"fd_step must be a positive finite step norm ‖εv‖, got {fd_step!r}.")
        if mode == "finite_difference":
            reuse_graph = False
        if reuse_graph not in (True, False, "auto"):
            raise ValueError(f"reuse_graph must be True, False or 'auto', got {reuse_graph!r}.")
        if check_determinism not in (True, False, "full"):
            raise ValueError(f"check_determinism must be True, False or 'full', got {check_determinism!r}.")
        if reuse_graph is True and mode == "forward_over_reverse":
            raise ValueError("reuse_graph=True needs mode='double_backward' (or 'auto').")
        super().__init__(model, objective, data, params=params, distributed=distributed, memory_budget=memory_budget)
        self.mode_timings: dict[str, float] = {}
        self.mode_choice: dict[str, Any] = {"requested": mode}
        self.richardson, self.compile = bool(richardson), bool(compile)
        self.fd_step = float(fd_step) if fd_step is not None else default_step(self.dtype, self.richardson)
        self.fd_errors: list[float] = []
        self.mode: str = mode  # the evaluation context depends on it before the pick
        self._gradient_module = gradient_module(model, self.compile)
        self.reuse_graph = False
        self.kept_graph_bytes = 0
        self._graphs: dict[int, tuple[Tensor, ...]] = {}
        self._graph_versions: tuple[int, ...] | None = None
        if check_determinism is True:  # cheap: one extra forward
            self.check_determinism()
        if reuse_graph == "auto" and mode not in ("forward_over_reverse", "finite_difference"):
            reuse_graph = self._graphs_fit()
        if reuse_graph is True:
            mode = "double_backward"
        self.mode = self._pick_mode() if mode == "auto" else mode
        self.mode_choice["picked"] = self.mode
        if check_determinism == "full":  # two products, each with its own forward
            self.check_determinism(full=True)
        self.reuse_graph = reuse_graph is True

    def release_graph(self) -> None:
        """Free the first-backward graphs kept by ``reuse_graph``."""
        self._graphs.clear()
        self.kept_graph_bytes = 0

    def _graphs_fit(self) -> bool:
        """Build the largest local batch's graph, measure it, and say whether all batches' graphs fit."""
        sizes = [self.objective.count(p)[0] for p in self.prepared]
        self.graph_bytes = self._measure_graph_bytes(keep=True)
        estimate = torch.tensor([float(self.graph_bytes) * len(sizes)], dtype=torch.float64)
        if self.ctx.active:  # every rank takes the same decision (by the largest estimate)
            import torch.distributed as dist

            dist.all_reduce(estimate, op=dist.ReduceOp.MAX)
        self.mode_choice["graph_bytes_estimate"] = int(estimate)
        fits = float(estimate) <= self.memory_budget
        measured = self.__dict__.pop("_measured_graph", None)
        if fits and measured is not None:  # the measured graph is the first one kept: not wasted
            self._graphs[measured[0]] = measured[1]
            self._graph_versions = tuple(p._version for p in self.params.values())
            self.kept_graph_bytes = self.graph_bytes
        log.info("landscape: first-backward graphs ~%.1f MiB for %d batch(es), budget %.1f MiB: %s",
                 float(estimate) / 2**20, len(sizes), self.memory_budget / 2**20,
                 "kept across products" if fits else "rebuilt per product")
        return fits

    def _pick_mode(self) -> str:
        first = self.prepared[0] if self.prepared else None
        shapes = tuple(tuple(v.shape) for v in (first or {}).values() if isinstance(v, Tensor))
        key = (type(self.model).__name__, self.dim, hash(tuple(self.names)), shapes, str(self.dtype), str(self.device),
               torch.get_num_threads(), self.ctx.world_size)
        cached = _MODE_CACHE.get(key)
        if cached is not None:
            self.mode_timings = dict(cached["median_s"])
            self.mode_choice.update(cached, cached_pick=True)
            return cached["picked"]
        runs: dict[str, list[float]] = {}
        if first is not None:
            v = self.randn(0)
            with deterministic_eval(self.model), torch.enable_grad():
                for mode in MODES:
                    try:
                        self._product(mode, first, v)  # warm-up
                        times = []
                        for _ in range(3):
                            t0 = time.perf_counter()
                            self._product(mode, first, v)
                            times.append(time.perf_counter() - t0)
                        runs[mode] = times
                    except (RuntimeError, NotImplementedError) as exc:
                        log.info("landscape: HVP mode %s unavailable here (%s)", mode, str(exc).splitlines()[0])
        med = torch.tensor([statistics.median(runs[m]) if m in runs else float("inf") for m in MODES],
                           dtype=torch.float64)
        if self.ctx.active:  # every rank takes the same decision (by the slowest rank)
            import torch.distributed as dist

            dist.all_reduce(med, op=dist.ReduceOp.MAX)
        self.mode_timings = {m: float(t) for m, t in zip(MODES, med) if np.isfinite(float(t))}
        if not self.mode_timings:
            raise RuntimeError("neither double backward nor forward-over-reverse works for this model.")
        best = min(self.mode_timings, key=lambda m: self.mode_timings[m])
        log_once(f"landscape: Hessian-vector products use {best} (median of 3: {self.mode_timings}).", logging.INFO)
        _MODE_CACHE[key] = {"picked": best, "median_s": dict(self.mode_timings), "runs_s": runs, "n_runs": 3}
        self.mode_choice.update(_MODE_CACHE[key], cached_pick=False)
        return best

    def _batch_product(self, prepared: Prepared, v: Vector) -> Vector:
        return self._product(self.mode, prepared, v)

    def _eval_context(self) -> contextlib.AbstractContextManager[Any]:
        """Finite differences keep the model's own attention kernels (no math backend forced)."""
        return util.eval_mode(self.model) if self.mode == "finite_difference" else super()._eval_context()

    def _fd_product(self, prepared: Prepared, v: Vector) -> Vector:
        """Central difference of the batch's gradient around θ₀ (see :func:`fd_product`)."""
        def gradient() -> Vector:
            s, _ = self.objective.loss_sum(self._gradient_module, prepared)
            gs = torch.autograd.grad(s, list(self.params.values()), allow_unused=True, materialize_grads=True)
            return dict(zip(self.names, gs))

        hv, err = fd_product(gradient, self.params, v, self.fd_step, self.richardson)
        self.fd_errors.append(err)
        return hv

    def _first_backward(self, prepared: Prepared) -> tuple[Tensor, ...]:
        """∇(Σ_{i∈b} sᵢ) with ``create_graph``; kept per batch under ``reuse_graph`` (rebuilt if the
        weights were changed in place since)."""
        params = list(self.params.values())
        if self.reuse_graph:
            versions_now = tuple(p._version for p in params)
            if versions_now != self._graph_versions:
                self.release_graph()
                self._graph_versions = versions_now
            grads = self._graphs.get(id(prepared))
            if grads is not None:
                return grads
        s, _ = self.objective.loss_sum(self.model, prepared)
        if self.reuse_graph and not self._graphs:
            with products.SavedBytes() as saved:
                grads = torch.autograd.grad(s, params, create_graph=True, allow_unused=True, materialize_grads=True)
            self.graph_bytes = self.graph_bytes or saved.bytes
        else:
            grads = torch.autograd.grad(s, params, create_graph=True, allow_unused=True, materialize_grads=True)
        if self.reuse_graph:
            self._graphs[id(prepared)] = grads
            self.kept_graph_bytes = (self.graph_bytes or 0) * len(self._graphs)
        return grads

    def _product(self, mode: str, prepared: Prepared, v: Vector) -> Vector:
        """∇²(Σ_{i∈b} sᵢ)·v for one prepared batch (unscaled)."""
        if mode == "finite_difference":
            return self._fd_product(prepared, v)
        if mode == "forward_over_reverse":
            loss = self._loss_sums(prepared)
            with torch.no_grad():  # no ordinary graph on the live weights; func transforms ignore it
                _, hv = torch.func.jvp(torch.func.grad(lambda p: loss(p).sum()), (self._primals(),), (v,))  # type: ignore[misc]  # torch.func's stubs type the returns loosely
            return hv
        params = list(self.params.values())
        grads = self._first_backward(prepared)
        gv: Tensor = sum((g * v[n]).sum() for g, n in zip(grads, self.names))  # type: ignore[assignment]  # ≥ 1 term
        if not gv.requires_grad:  # the loss is linear in the selected parameters
            return self.zeros()
        hv = torch.autograd.grad(gv, params, allow_unused=True, materialize_grads=True, retain_graph=self.reuse_graph)
        return {n: h.detach() for n, h in zip(self.names, hv)}

    def _batch_matmat(self, prepared: Prepared, V: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.mode == "finite_difference":  # k central differences, one gradient's memory each
            return super()._batch_matmat(prepared, V)
        try:
            if self.mode == "forward_over_reverse":
                return products.forward_over_reverse_matmat(self._loss_sums(prepared), self._primals(), V)
            grads = self._first_backward(prepared)
            return products.double_backward_matmat(grads, list(self.params.values()), self.names, V, self.reuse_graph)
        except (RuntimeError, NotImplementedError) as exc:  # an op without a batching rule: one product at a time
            log_once(f"landscape: batched {self.mode} products unavailable ({str(exc).splitlines()[0][:120]}); "
                     "computing them one at a time.", logging.WARNING)
            return super()._batch_matmat(prepared, V)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.mode, "mode_timings": self.mode_timings,
                "mode_choice": self.mode_choice, "reuse_graph": self.reuse_graph,
                "kept_graph_bytes": self.kept_graph_bytes, "compile": self.compile,
                **({"fd_step": self.fd_step, "richardson": self.richardson, "fd_error_last": _last(self.fd_errors),
                    "fd_error_max": max(self.fd_errors, default=float("nan"))} if self.mode == "finite_difference"
                   else {})}


def _last(xs: list[float]) -> float:
    return xs[-1] if xs else float("nan")
