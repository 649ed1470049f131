"""Curvature of a training model on a fixed probe batch: the plain-loop API the Trainer callback uses.

What one measurement holds (all on the same held-out probe data, in eval mode, MLM masks fixed):

* ``loss``: the probe loss L(θ) = Σsᵢ/Σnᵢ, from the timed gradient below;
* ``top_eigenvalue``: λ_max of the Hessian ∇²L by Lanczos (:func:`landscape.curvature.top_eigenvalues`),
  warm-started from the previous measurement's eigenvector (``v0``), which usually converges in a
  fraction of the cold-start products; ``eig_matvecs`` counts them;
* ``hessian_trace`` ± ``hessian_trace_stderr``: tr(∇²L) by Hutch++ with ``trace_matvecs`` products,
  the same Rademacher probes every time (fixed seed), so step-to-step noise is shared;
* ``fisher_trace`` ± stderr: tr(F) of the empirical Fisher F = (1/N)Σᵢ gᵢgᵢᵀ, Hutch++ as above;
* ``loss_rise``: ½(L(θ + r·d) + L(θ − r·d)) − L(θ) along a filter-normalized direction d
  (:func:`landscape.scans.directions.random`, one seed: the same Gaussian draw every time, rescaled
  to the current filter norms), with ``loss_curve`` = L at ``alphas`` (2·points + 1 values on [−r, r]).

Cost. Each product is roughly 2–4 gradients (see DESIGN.md), so a measurement costs about
3·(eig products + 2·trace_matvecs) gradients, plus one forward per scan point and two timed
gradients. Every row records ``seconds``, ``gradient_seconds`` (one gradient of the probe loss,
the faster of two timed in the same measurement) and their ratio ``cost_gradients``, the overhead
in gradients.

Nothing leaks into training: the weights, buffers and every module's train flag are restored bit for
bit (:func:`landscape.perturb.preserved`), no ``.grad`` is written, the optimizer is never touched,
and the global RNG state is forked, so a run with tracking takes the same steps as one without.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from landscape import curvature, perturb, util
from landscape.objectives import Objective
from landscape.params import Selection, select
from landscape.scans import directions, scan_1d
from landscape.training.log import MeasurementLog
from landscape.util.meta import result_meta
from landscape.vectors import Vector

__all__ = ["CurvatureTracker", "Quantity", "QUANTITIES"]

Quantity = Literal["top_eigenvalue", "hessian_trace", "fisher_trace", "loss_rise"]
QUANTITIES: tuple[Quantity, ...] = get_args(Quantity)


def _describe_params(params: Selection) -> Any:
    """A JSON stand-in for a parameter selection (names/globs as given, else the selection's class)."""
    if params is None or isinstance(params, str):
        return params
    return list(params) if isinstance(params, (list, tuple)) else type(params).__name__


def _check_alphas(alphas: Sequence[float]) -> np.ndarray:
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim != 1 or a.size < 3 or not np.all(np.diff(a) > 0) or 0.0 not in a or a[0] != -a[-1]:
        raise ValueError(f"alphas must be increasing, hold 0 and end at ±r, e.g. (-0.25, 0, 0.25); got "
                         f"{list(alphas)}.")
    return a


class CurvatureTracker:
    """Measures curvature on fixed probe data at the steps you ask for; rows go to a JSONL file.

    Args:
        model: the model being trained (measured in place; restored exactly after each measurement).
        objective: the probe loss (``objectives.MaskedLM(seed=0)``, ``HFLoss()``, ``Criterion(fn)``).
        probe_data: a re-iterable of raw batches, fixed for the whole run (held-out data).
        path: the ``.jsonl`` file (``None``: in memory only). Reopening it resumes: measured steps are
            returned from the file, not recomputed.
        quantities: which of :data:`QUANTITIES` to measure (default all).
        params: parameter selection for every quantity (names/globs, ``ParamSpace``, ``ParamMask``).
        trace_matvecs: Hutch++ products per trace (rounded down to a multiple of 3).
        eig_tol: Lanczos tolerance for λ_max (relative a-posteriori bound; Krylov cap as in
            :func:`~landscape.curvature.top_eigenvalues`).
        alphas: the loss-rise scan's coefficients: sorted, symmetric (α₀ = −α₋₁ = −r), holding 0.
        seed: seed of the trace probes, the Lanczos cold start and the direction.
        distributed: ``None``/``True``: shard the probe data across ``torchrun`` ranks (every rank
            must call :meth:`measure` at the same steps; rank 0 writes the file); ``False``: never.
        progress: show progress bars inside each measurement.

    Attributes:
        hvp_mode: the Hessian-vector product mode; ``"auto"`` times both modes at the first
            measurement and keeps the faster; set it (``"double_backward"``) to skip that timing.
        rows: the measurements so far (resumed ones included).
    """

    def __init__(self, model: nn.Module, objective: Objective, probe_data: Iterable[Any], *,
                 path: str | os.PathLike | None = None, quantities: Sequence[Quantity] = QUANTITIES,
                 params: Selection = None, trace_matvecs: int = 30, eig_tol: float = 1e-3,
                 alphas: Sequence[float] = (-0.25, -0.125, 0.0, 0.125, 0.25), seed: int = 0,
                 distributed: bool | None = None, progress: bool = False) -> None:
        unknown = [q for q in quantities if q not in QUANTITIES]
        if unknown or not quantities:
            raise ValueError(f"quantities must be a non-empty subset of {QUANTITIES}, got {list(quantities)}.")
        if trace_matvecs < 3:
            raise ValueError(f"Hutch++ needs trace_matvecs ≥ 3, got {trace_matvecs}.")
        self.alphas = _check_alphas(alphas)
        self.model, self.objective, self.probe_data = model, objective, probe_data
        self.space, self.mask = select(model, params)
        self.params, self.quantities, self.seed = params, tuple(quantities), int(seed)
        self.trace_matvecs, self.eig_tol = int(trace_matvecs), float(eig_tol)
        self.distributed, self.progress = distributed, progress
        self.prepared = objective.prepare_data(model, probe_data)
        self.hvp_mode: curvature.ModeChoice = "auto"
        self._v0: Vector | None = None
        settings = {"quantities": list(self.quantities), "trace_matvecs": self.trace_matvecs, "eig_tol": self.eig_tol,
                    "alphas": self.alphas.tolist(), "seed": self.seed,
                    "params": _describe_params(params),
                    "objective": objective.describe(), "n_probe_examples":
                    sum(objective.count(p)[0] for p in self.prepared)}
        self.ctx = util.dist_context() if distributed in (None, True) else util.DistContext()
        self.log = MeasurementLog(path, result_meta(model, settings, what="curvature during training"),
                                  write=self.ctx.is_main)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every measurement so far (resumed ones included), in the order taken."""
        return self.log.rows

    def measure(self, step: int, *, lr: float | None = None, **extra: Any) -> dict[str, Any]:
        """Measure at training step ``step`` and append the row; a step already measured is not redone.

        ``lr``: the learning rate η in use (recorded; the figure draws 2/η). ``extra``: other JSON
        values to record (e.g. ``epoch``). Returns the row.
        """
        done = self.log.get(int(step))
        if done is not None:
            return done
        devices = [util.model_device(self.model)] if util.model_device(self.model).type == "cuda" else []
        t0 = time.perf_counter()
        with perturb.preserved(self.model), torch.random.fork_rng(devices=devices):
            loss, grad_s = self._timed_gradient()
            row: dict[str, Any] = {"step": int(step), "lr": None if lr is None else float(lr), "loss": loss}
            if "top_eigenvalue" in self.quantities:
                row.update(self._top_eigenvalue())
            if "hessian_trace" in self.quantities:
                row.update(self._trace("hessian_trace"))
            if "fisher_trace" in self.quantities:
                row.update(self._trace("fisher_trace"))
            if "loss_rise" in self.quantities:
                row.update(self._loss_rise())
        self._synchronize()
        seconds = time.perf_counter() - t0
        row.update(seconds=seconds, gradient_seconds=grad_s, cost_gradients=seconds / max(grad_s, 1e-12),
                   time=time.time(), **extra)
        self.log.append(row)
        return row

    # ---- the quantities
    def _synchronize(self) -> None:
        if util.model_device(self.model).type == "cuda":
            torch.cuda.synchronize()

    def _timed_gradient(self, repeats: int = 2) -> tuple[float, float]:
        """(probe loss, seconds of one gradient ∇L on the probe data: the fastest of ``repeats``,
        so a first-call warm-up or a busy moment does not deflate ``cost_gradients``); no ``.grad``."""
        tensors = [self.space.params[n] for n in self.space.names]
        best = float("inf")
        with util.deterministic_eval(self.model):
            for _ in range(repeats):
                self._synchronize()
                t0 = time.perf_counter()
                s_tot, n_tot = 0.0, 0
                for p in self.prepared:
                    s, n = self.objective.loss_sum(self.model, p)
                    torch.autograd.grad(s, tensors, allow_unused=True)
                    s_tot += float(s.detach().double())
                    n_tot += int(n)
                self._synchronize()
                best = min(best, time.perf_counter() - t0)
        return s_tot / max(n_tot, 1), best

    def _operator(self, kind: str) -> Any:
        if kind == "fisher_trace":
            return curvature.EmpiricalFisherOperator(self.model, self.objective, self.probe_data, params=self.params,
                                                     check_determinism=False, distributed=self.distributed)
        op = curvature.HessianOperator(self.model, self.objective, self.probe_data, params=self.params,
                                       mode=self.hvp_mode, check_determinism=self.hvp_mode == "auto",
                                       distributed=self.distributed)
        self.hvp_mode = op.mode  # type: ignore[assignment]  # timed once, then kept (an exact mode)
        return op

    def _top_eigenvalue(self) -> dict[str, Any]:
        op = self._operator("hessian")
        try:
            res = curvature.top_eigenvalues(op, k=1, tol=self.eig_tol, seed=self.seed, v0=self._v0,
                                            progress=self.progress)
        finally:
            op.release_graph()
        warm = self._v0 is not None
        self._v0 = {n: t.detach().clone() for n, t in res.vectors[0].items()}
        return {"top_eigenvalue": float(res.values[0]), "top_eigenvalue_converged": bool(res.converged),
                "eig_matvecs": int(res.n_matvecs), "eig_warm_start": warm}

    def _trace(self, key: str) -> dict[str, Any]:
        op = self._operator(key)
        try:
            res = curvature.trace(op, num_matvecs=self.trace_matvecs, method="hutch++", seed=self.seed,
                                  progress=self.progress)
        finally:
            if hasattr(op, "release_graph"):
                op.release_graph()
        return {key: float(res.estimate), f"{key}_stderr": float(res.stderr), f"{key}_matvecs": int(res.n_matvecs)}

    def _loss_rise(self) -> dict[str, Any]:
        d = directions.random(self.model, seed=self.seed, normalization="filter", one_dim="zero", params=self.params)
        curve = scan_1d(self.model, self.objective, self.probe_data, d, self.alphas, progress=self.progress,
                        batch_points=1, distributed=self.distributed)
        values = np.asarray(curve.values["loss"], dtype=np.float64)
        at_zero = values[int(np.flatnonzero(self.alphas == 0.0)[0])]
        return {"loss_rise": float(0.5 * (values[0] + values[-1]) - at_zero),
                "loss_rise_radius": float(self.alphas[-1]), "loss_curve": values.tolist(),
                "direction_norm": float(d.norm())}
