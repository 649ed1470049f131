"""Curvature operators of the data loss: the Hessian and the empirical Fisher.

Weighting. The data is prepared once (``objective.prepare_data``: MLM masks fixed) and the loss is
L(θ) = Σᵢ sᵢ(θ) / N with N = Σᵢ nᵢ (see :mod:`landscape.objectives`: sᵢ is example i's summed loss,
nᵢ its number of loss terms, so N counts examples for ``Criterion`` and labelled tokens for HF
objectives). Then

* Hessian:          H·v = Σ_b ∇²(Σ_{i∈b} sᵢ)·v / N;
* empirical Fisher: F·v = (1/N) Σᵢ gᵢ (gᵢᵀv), gᵢ = ∇sᵢ (per *sequence* for language models).
  With the same N, F is on the Hessian's scale (for per-token cross-entropy, E[gᵢgᵢᵀ] sums the
  per-token Fisher terms of sequence i), so the two spectra can be compared directly.

Restriction. ``params`` may be a :class:`~landscape.params.ParamSpace` (a block of H) or a
:class:`~landscape.params.ParamMask` (P·H·P on the selected coordinates). Vectors are
``dict[str, Tensor]`` over the selected tensors (full tensor shapes; unselected entries are
ignored on input and zero on output); ``dim`` counts selected coordinates.

Every matvec runs in eval mode on the math attention backend (fused SDPA kernels have no double
backward), keeps no graph between calls and never writes to the weights or their ``.grad``.

The algorithms (:func:`top_eigenvalues`, :func:`trace`, :func:`spectral_density`) live in
:mod:`landscape.curvature.algorithms` and are re-exported here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import vectors
from landscape.objectives import Objective, Prepared
from landscape.params import ParamSpace, Selection, select
from landscape.util import batch_moments, batches_of, deterministic_eval, log, log_once, versions
from landscape.vectors import Vector
from landscape.util.checks import check_finite_weights

__all__ = ["HessianOperator", "EmpiricalFisherOperator", "MODES"]

MODES = ("double_backward", "forward_over_reverse")


class _DataOperator:
    """Shared plumbing: parameter selection, prepared data, vector conversions, checks."""

    kind = "operator"

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], *,
                 params: Selection = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a landscape Objective (e.g. objectives.Criterion(loss_fn)), "
                            f"got {type(objective).__name__}.")
        self.model, self.objective, self.data = model, objective, data
        self.space, self.mask = select(model, params)  # raises on a model without trainable parameters
        check_finite_weights(model)
        self.names = self.mask.names if self.mask is not None else self.space.names
        self.dim = self.mask.count() if self.mask is not None else self.space.dim
        self.params = {n: self.space.params[n] for n in self.names}
        first = next(iter(self.params.values()))
        self.dtype, self.device = first.dtype, first.device
        raw = list(batches_of(data))  # refuses one-shot iterators and empty data
        self._raw_fingerprint = sum((batch_moments(b) for b in raw), np.zeros(3))
        self.prepared: list[Prepared] = [objective.prepare(b, model) for b in raw]
        del raw
        self.n_terms = int(sum(int(objective.term_counts(p).sum()) for p in self.prepared))
        self.n_examples = int(sum(int(objective.term_counts(p).numel()) for p in self.prepared))
        if self.n_terms == 0:
            raise ValueError("data holds no loss term (every label is -100); the curvature of an empty loss is 0.")
        self.loss = objective.evaluate(model, self.prepared, prepared=True)
        if not torch.isfinite(torch.tensor(self.loss)):
            raise ValueError(f"the loss is {self.loss} at the current weights; curvature is undefined. Check the "
                             "weights and inputs for NaN/inf (or a too-large learning rate in the checkpoint).")
        self.n_matvecs = 0

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
    def _batch_product(self, prepared: Prepared, v: Vector) -> Vector:  # pragma: no cover - abstract
        raise NotImplementedError

    def matvec(self, v: Vector) -> Vector:
        """The operator applied to ``v`` (dict vector over the selected tensors)."""
        self.check_vector(v)
        v = self.project({n: v[n].to(dtype=self.dtype, device=self.device) for n in self.names})
        out = self.zeros()
        keys = list(out)
        with deterministic_eval(self.model), torch.enable_grad():
            for p in self.prepared:
                hv = self._batch_product(p, v)
                torch._foreach_add_([out[k] for k in keys], [hv[k] for k in keys])
        out = self.project(vectors.scale(out, 1.0 / self.n_terms))
        self.n_matvecs += 1
        if not all(bool(torch.isfinite(t).all()) for t in out.values()):
            raise ValueError(f"{self.kind}-vector product is not finite (NaN/inf); the loss is finite, so check "
                             "for overflow (use float32/float64 instead of float16) or inf in the input vector.")
        return out

    def _primals(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in self.params.items()}

    def _loss_sums(self, prepared: Prepared):
        def fn(pdict: dict[str, Tensor]) -> Tensor:
            s, _ = self.objective.loss_terms(self.objective.forward(self.model, prepared, pdict), prepared)
            return s
        return fn

    def check_determinism(self, seed: int = 12345, rtol: float = 1e-5) -> float:
        """Apply the operator twice to one vector on the first batch and compare; check the data too.

        Catches a forward pass that is random even in eval mode (functional dropout with
        ``training=True``, noise layers) and data whose *content* changes between passes (random
        subsets, augmentation). Reordering alone (``shuffle=True``) is harmless, because the data is
        prepared once and L is a sum over examples. Returns the relative difference.
        """
        again = sum((batch_moments(b) for b in batches_of(self.data)), np.zeros(3))
        if not np.allclose(again, self._raw_fingerprint, rtol=1e-9, atol=1e-9):
            raise ValueError("the data yields different batches on a second pass (a random sampler or random "
                             "augmentation); the loss must be a function of the weights only. Pass a fixed list of "
                             "batches or a DataLoader with a deterministic sampler and no augmentation.")
        v = self.randn(seed)
        first = self.prepared[:1]
        with deterministic_eval(self.model), torch.enable_grad():
            a = self._batch_product(first[0], v)
            b = self._batch_product(first[0], v)
        diff = float(vectors.norm(vectors.add(a, b, -1.0)) / vectors.norm(a).clamp_min(1e-30))
        if not diff <= rtol:
            raise ValueError(
                f"two {self.kind}-vector products of the same vector differ (relative difference {diff:.2e}): the "
                "loss is not a deterministic function of the weights even in eval mode. Look for dropout called "
                "with training=True, random noise in forward(), or a stochastic objective; fix it or pass "
                "check_determinism=False at your own risk."
            )
        return diff

    def describe(self) -> dict[str, Any]:
        return {"operator": self.kind, "dim": self.dim, "n_tensors": len(self.names), "n_examples": self.n_examples,
                "n_terms": self.n_terms, "loss": self.loss, "objective": self.objective.describe(),
                "restricted": "mask" if self.mask is not None else ("space" if self.dim < self._full_dim() else None),
                "n_matvecs": self.n_matvecs, "versions": versions()}

    def _full_dim(self) -> int:
        return sum(p.numel() for p in ParamSpace(self.model).params.values())


class HessianOperator(_DataOperator):
    """H·v for the data loss L = Σsᵢ/Σnᵢ, restricted to ``params``.

    Args:
        model: any ``nn.Module`` (a Hugging Face model works through its objective).
        objective: how a batch becomes per-example loss sums (``MaskedLM``, ``HFLoss``, ``Criterion``).
        data: a re-iterable of raw batches; prepared once.
        params: ``ParamSpace`` / ``ParamMask`` / None (all trainable parameters, tied ones once).
        mode: ``"double_backward"`` (∇(∇L·v) with ``create_graph``), ``"forward_over_reverse"``
            (``torch.func.jvp`` of ``torch.func.grad`` with ``functional_call``) or ``"auto"``: time
            both on the first batch (two products each) and keep the faster; a mode that fails is
            skipped. ``mode_timings`` records the measurement.
        check_determinism: run :meth:`check_determinism` once at construction (one batch, 2 products).
        reuse_graph: opt-in speed for few batches: keep each batch's first-backward graph (as PyHessian
            does) so a matvec is one backward through it, about 2-4x cheaper, at the price of memory
            that holds every batch's graph until :meth:`release_graph`. Forces double backward.
            Default False: no graph survives a matvec and memory stays flat.
    """

    kind = "Hessian"

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], *,
                 params: Selection = None, mode: str = "auto", check_determinism: bool = True,
                 reuse_graph: bool = False) -> None:
        if mode not in ("auto", *MODES):
            raise ValueError(f"mode must be 'auto', 'double_backward' or 'forward_over_reverse', got {mode!r}.")
        if reuse_graph and mode == "forward_over_reverse":
            raise ValueError("reuse_graph=True needs mode='double_backward' (or 'auto').")
        super().__init__(model, objective, data, params=params)
        self.mode_timings: dict[str, float] = {}
        self.reuse_graph = False
        self._graphs: dict[int, tuple[Tensor, ...]] = {}
        if reuse_graph:
            mode = "double_backward"
        self.mode = self._pick_mode() if mode == "auto" else mode
        if check_determinism:
            self.check_determinism()
        self.reuse_graph = bool(reuse_graph)

    def release_graph(self) -> None:
        """Free the first-backward graphs kept by ``reuse_graph=True``."""
        self._graphs.clear()

    def _pick_mode(self) -> str:
        v = self.randn(0)
        with deterministic_eval(self.model), torch.enable_grad():
            for mode in MODES:
                try:
                    times = []
                    for _ in range(2):
                        t0 = time.perf_counter()
                        self._product(mode, self.prepared[0], v)
                        times.append(time.perf_counter() - t0)
                    self.mode_timings[mode] = min(times)
                except (RuntimeError, NotImplementedError) as exc:
                    log.info("landscape: HVP mode %s unavailable here (%s)", mode, str(exc).splitlines()[0])
        if not self.mode_timings:
            raise RuntimeError("neither double backward nor forward-over-reverse works for this model.")
        best = min(self.mode_timings, key=self.mode_timings.get)
        log_once(f"landscape: Hessian-vector products use {best} (measured {self.mode_timings}).", logging.INFO)
        return best

    def _batch_product(self, prepared: Prepared, v: Vector) -> Vector:
        return self._product(self.mode, prepared, v)

    def _product(self, mode: str, prepared: Prepared, v: Vector) -> Vector:
        """∇²(Σ_{i∈b} sᵢ)·v for one prepared batch (unscaled)."""
        if mode == "forward_over_reverse":
            loss = self._loss_sums(prepared)
            with torch.no_grad():  # no ordinary graph on the live weights; func transforms ignore it
                _, hv = torch.func.jvp(torch.func.grad(lambda p: loss(p).sum()), (self._primals(),), (v,))
            return hv
        params = list(self.params.values())
        grads = self._graphs.get(id(prepared)) if self.reuse_graph else None
        if grads is None:
            s, _ = self.objective.loss_sum(self.model, prepared)
            grads = torch.autograd.grad(s, params, create_graph=True, allow_unused=True, materialize_grads=True)
            if self.reuse_graph:
                self._graphs[id(prepared)] = grads
        gv = sum((g * v[n]).sum() for g, n in zip(grads, self.names))
        if not gv.requires_grad:  # the loss is linear in the selected parameters
            return self.zeros()
        hv = torch.autograd.grad(gv, params, allow_unused=True, materialize_grads=True, retain_graph=self.reuse_graph)
        return {n: h.detach() for n, h in zip(self.names, hv)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.mode, "mode_timings": self.mode_timings,
                "reuse_graph": self.reuse_graph}


class EmpiricalFisherOperator(_DataOperator):
    """F·v = (1/N) Σᵢ gᵢ (gᵢᵀv) with gᵢ = ∇sᵢ and N = Σᵢ nᵢ (see the module docstring).

    Per batch, J·v (``[B]``, one entry gᵢᵀv per example) comes from one ``torch.func.jvp`` of the
    per-example losses, and Jᵀ(Jv) from one ``vjp``: no per-example gradient is stored. F is
    positive semi-definite with rank ≤ number of examples. Same arguments as
    :class:`HessianOperator`; same algorithms apply.
    """

    kind = "Fisher"

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], *,
                 params: Selection = None, check_determinism: bool = True) -> None:
        super().__init__(model, objective, data, params=params)
        self.mode = "jvp+vjp"
        if check_determinism:
            self.check_determinism()

    def _batch_product(self, prepared: Prepared, v: Vector) -> Vector:
        fn = self._loss_sums(prepared)
        primals = self._primals()
        with torch.no_grad():
            _, jv = torch.func.jvp(fn, (primals,), (v,))
            _, vjp_fn = torch.func.vjp(fn, primals)
            (fv,) = vjp_fn(jv)
        return fv
