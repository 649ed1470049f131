"""Curvature of a training model on a fixed probe batch: the plain-loop API the Trainer callback uses.

What one measurement holds (all on the same held-out probe data, in eval mode, MLM masks fixed):

* ``loss``: the probe loss L(θ) = Σsᵢ/Σnᵢ, from a timed gradient;
* ``top_eigenvalue``: λ_max of the Hessian ∇²L by Lanczos (:func:`landscape.curvature.top_eigenvalues`)
  to ``eig_tol``, at most ``eig_matvecs`` products, warm-started from the previous measurement's
  eigenvector (``v0``), which usually converges in a few products; ``eig_matvecs_used`` counts them;
* ``hessian_trace`` ± ``hessian_trace_stderr``: tr(∇²L) by Hutch++ with ``trace_matvecs`` products,
  the same Rademacher probes every time (fixed seed), so step-to-step noise is shared. The same
  Hessian operator (and its kept first-backward graph) serves λ_max and the trace;
* ``fisher_trace``: tr(F) of the empirical Fisher F = (1/N)Σᵢ gᵢgᵢᵀ (gᵢ = ∇sᵢ, N = Σnᵢ as in
  :class:`~landscape.curvature.EmpiricalFisherOperator`), exact on the probe data:
  tr F = Σᵢ‖gᵢ‖²/N from one sweep of per-example gradients (:func:`landscape.fisher.diagonal`);
* ``loss_rise``: ½(L(θ + r·d) + L(θ − r·d)) − L(θ) along a filter-normalized direction d
  (:func:`landscape.scans.directions.random`, one seed: the same Gaussian draw every time, rescaled
  to the current filter norms), with ``loss_curve`` = L at ``alphas`` (default −r, 0, r).

Cost. Each row records ``cost_gradients``, the passes it ran counted in gradients of the probe loss
(:mod:`landscape.training.cost`: an HVP 4, a forward 1/3, a per-example sweep 2), with the counts
under ``cost``. With the defaults (Lanczos ≤ 10 products, 6 Hutch++ products, 3 scan points) that
is at most :meth:`CurvatureTracker.max_cost` ≈ 70 gradients, and about 40 once the eigenvector is
warm. ``training_gradients`` passed to :meth:`~CurvatureTracker.measure` adds the running overhead
``overhead`` = Σ ``cost_gradients`` / ``training_gradients``. ``seconds``, ``gradient_seconds`` and
their ratio ``timed_cost_gradients`` check the counted cost against the clock.

Nothing leaks into training: the weights, buffers and every module's train flag are restored bit for
bit (:func:`landscape.perturb.preserved`), no ``.grad`` is written, the optimizer is never touched,
and the global RNG state is forked, so a run with tracking takes the same steps as one without.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal, cast, get_args

import numpy as np
import torch
from torch import nn

from landscape import curvature, fisher, perturb, util
from landscape.objectives import Objective
from landscape.params import Selection, select
from landscape.scans import directions, scan_1d
from landscape.training.cost import Cost
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
        trace_matvecs: Hutch++ products for the Hessian trace (rounded down to a multiple of 3).
        eig_tol: Lanczos tolerance for λ_max (relative a-posteriori bound).
        eig_matvecs: at most this many Lanczos products per measurement (the Krylov dimension);
            ``top_eigenvalue_converged`` says whether ``eig_tol`` was met within them.
        alphas: the loss-rise scan's coefficients: sorted, symmetric (α₀ = −α₋₁ = −r), holding 0.
        seed: seed of the trace probes, the Lanczos cold start and the direction.
        distributed: ``None``/``True``: shard the probe data across ``torchrun`` ranks (every rank
            must call :meth:`measure` at the same steps; rank 0 writes the file); ``False``: never.
        progress: show progress bars inside each measurement.

    Attributes:
        hvp_mode: the Hessian-vector product mode (default ``"double_backward"``, with the first-backward
            graph kept across a measurement's products when it fits); ``"auto"`` times both modes at
            the first measurement (products outside the counted cost).
        rows: the measurements so far (resumed ones included).
    """

    def __init__(  # noqa: PLR0913 - the documented settings of a tracker, keyword-only
                 self, model: nn.Module, objective: Objective, probe_data: Iterable[Any], *,
                 path: str | os.PathLike | None = None, quantities: Sequence[Quantity] = QUANTITIES,
                 params: Selection = None, trace_matvecs: int = 6, eig_tol: float = 1e-2,
                 eig_matvecs: int = 10, alphas: Sequence[float] = (-0.25, 0.0, 0.25), seed: int = 0,
                 distributed: bool | None = None, progress: bool = False) -> None:
        unknown = [q for q in quantities if q not in QUANTITIES]
        if unknown or not quantities:
            raise ValueError(f"quantities must be a non-empty subset of {QUANTITIES}, got {list(quantities)}.")
        if trace_matvecs < 3:
            raise ValueError(f"Hutch++ needs trace_matvecs ≥ 3, got {trace_matvecs}.")
        if eig_matvecs < 2:
            raise ValueError(f"Lanczos needs eig_matvecs ≥ 2, got {eig_matvecs}.")
        self.alphas = _check_alphas(alphas)
        self.model, self.objective, self.probe_data = model, objective, probe_data
        self.space, self.mask = select(model, params)
        self.params, self.quantities, self.seed = params, tuple(quantities), int(seed)
        self.trace_matvecs = 3 * (int(trace_matvecs) // 3)
        self.eig_tol, self.eig_matvecs = float(eig_tol), int(eig_matvecs)
        self.distributed, self.progress = distributed, progress
        self.prepared = objective.prepare_data(model, probe_data)
        self.hvp_mode: curvature.ModeChoice = "double_backward"
        self._v0: Vector | None = None
        self._n_terms = sum(objective.count(p)[1] for p in self.prepared)
        settings = {"quantities": list(self.quantities), "trace_matvecs": self.trace_matvecs, "eig_tol": self.eig_tol,
                    "eig_matvecs": self.eig_matvecs,
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

    @property
    def n_probe_examples(self) -> int:
        """Examples in the probe data (all ranks together)."""
        return int(self.log.meta["settings"]["n_probe_examples"])

    def max_cost(self) -> Cost:
        """The most passes one measurement runs (every Lanczos product used); its ``.gradients`` is
        what a schedule must have room for before measuring."""
        cost = Cost(gradients_run=1)
        hessian = [q for q in ("top_eigenvalue", "hessian_trace") if q in self.quantities]
        if hessian:
            cost.gradients_run += 1  # the kept first-backward graph
            cost.forwards += 1  # the operator's determinism check
            cost.hvps += (self.eig_matvecs * ("top_eigenvalue" in hessian)
                          + self.trace_matvecs * ("hessian_trace" in hessian))
        cost.per_example_sweeps += "fisher_trace" in self.quantities
        cost.forwards += (self.alphas.size + 1) * ("loss_rise" in self.quantities)
        return cost

    def measure(self, step: int, *, lr: float | None = None, training_gradients: float | None = None,
                **extra: Any) -> dict[str, Any]:
        """Measure at training step ``step`` and append the row; a step already measured is not redone.

        ``lr``: the learning rate η in use (recorded; the figure draws 2/η). ``training_gradients``:
        the training done so far in gradients of the probe loss (a schedule's count), which adds
        ``overhead`` = Σ ``cost_gradients`` / ``training_gradients`` to the row. ``extra``: other
        JSON values to record (e.g. ``epoch``). Returns the row.
        """
        done = self.log.get(int(step))
        if done is not None:
            return done
        devices = [util.model_device(self.model)] if util.model_device(self.model).type == "cuda" else []
        cost, t0 = Cost(), time.perf_counter()
        with perturb.preserved(self.model), torch.random.fork_rng(devices=devices):
            loss, grad_s = self._timed_gradient()
            cost.gradients_run += 1
            row: dict[str, Any] = {"step": int(step), "lr": None if lr is None else float(lr), "loss": loss}
            row.update(self._hessian_quantities(cost))
            if "fisher_trace" in self.quantities:
                row.update(self._fisher_trace(cost))
            if "loss_rise" in self.quantities:
                row.update(self._loss_rise(cost))
        self._synchronize()
        seconds = time.perf_counter() - t0
        row.update(self._cost_fields(cost, seconds, grad_s, training_gradients), time=time.time(), **extra)
        self.log.append(row)
        return row

    def _cost_fields(self, cost: Cost, seconds: float, grad_s: float, training: float | None) -> dict[str, Any]:
        """The row's cost: counted (``cost_gradients``, ``cost``), timed, and the running overhead."""
        total = cost.gradients + sum(float(r.get("cost_gradients") or 0.0) for r in self.rows)
        out: dict[str, Any] = {"cost_gradients": cost.gradients, "cost": cost.as_dict(),
                               "total_cost_gradients": total, "seconds": seconds, "gradient_seconds": grad_s,
                               "timed_cost_gradients": seconds / max(grad_s, 1e-12)}
        if training is not None:
            out.update(training_gradients=float(training), overhead=total / training if training > 0 else None)
        return out

    # ---- the quantities
    def _synchronize(self) -> None:
        if util.model_device(self.model).type == "cuda":
            torch.cuda.synchronize()

    def _timed_gradient(self) -> tuple[float, float]:
        """(probe loss, seconds of one gradient ∇L on the probe data); no ``.grad`` is written."""
        tensors = [self.space.params[n] for n in self.space.names]
        with util.deterministic_eval(self.model):
            self._synchronize()
            t0 = time.perf_counter()
            s_tot, n_tot = 0.0, 0
            for p in self.prepared:
                s, n = self.objective.loss_sum(self.model, p)
                torch.autograd.grad(s, tensors, allow_unused=True)
                s_tot += float(s.detach().double())
                n_tot += int(n)
            self._synchronize()
        return s_tot / max(n_tot, 1), time.perf_counter() - t0

    def _hessian_quantities(self, cost: Cost) -> dict[str, Any]:
        """λ_max and the Hutch++ trace from one Hessian operator (one determinism check, one kept graph)."""
        want = [q for q in ("top_eigenvalue", "hessian_trace") if q in self.quantities]
        if not want:
            return {}
        op = curvature.HessianOperator(self.model, self.objective, self.probe_data, params=self.params,
                                       mode=self.hvp_mode, distributed=self.distributed)
        self.hvp_mode = cast(curvature.ModeChoice, op.mode)  # "auto": timed once, then kept
        cost.forwards += 1
        cost.gradients_run += bool(op.reuse_graph)
        out: dict[str, Any] = {}
        try:
            if "top_eigenvalue" in want:
                out.update(self._top_eigenvalue(op))
            if "hessian_trace" in want:
                res = curvature.trace(op, num_matvecs=self.trace_matvecs, method="hutch++", seed=self.seed,
                                      progress=self.progress)
                out.update(hessian_trace=float(res.estimate), hessian_trace_stderr=float(res.stderr),
                           hessian_trace_matvecs=int(res.n_matvecs))
        finally:
            op.release_graph()
        cost.hvps += op.n_matvecs
        return out

    def _top_eigenvalue(self, op: curvature.HessianOperator) -> dict[str, Any]:
        res = curvature.top_eigenvalues(op, k=1, tol=self.eig_tol, seed=self.seed, v0=self._v0,
                                        max_iter=self.eig_matvecs, progress=self.progress)
        warm = self._v0 is not None
        self._v0 = {n: t.detach().clone() for n, t in res.vectors[0].items()}
        return {"top_eigenvalue": float(res.values[0]), "top_eigenvalue_converged": bool(res.converged),
                "eig_matvecs_used": int(res.n_matvecs), "eig_warm_start": warm}

    def _fisher_trace(self, cost: Cost) -> dict[str, Any]:
        """Tr F = Σᵢ‖gᵢ‖²/Σnᵢ from the empirical diagonal Fisher (Σᵢgᵢ²/N_examples) of the probe data."""
        res = fisher.diagonal(self.model, self.objective, self.probe_data, estimator="empirical",
                              params=self.params, distributed=self.distributed, progress=False, convergence=False)
        cost.per_example_sweeps += 1
        total = sum(float(s.double().sum()) for s in res.scores.values())
        return {"fisher_trace": total * int(res.meta["n_examples"]) / max(self._n_terms, 1)}

    def _loss_rise(self, cost: Cost) -> dict[str, Any]:
        d = directions.random(self.model, seed=self.seed, normalization="filter", one_dim="zero", params=self.params)
        curve = scan_1d(self.model, self.objective, self.probe_data, d, self.alphas, progress=self.progress,
                        batch_points=1, distributed=self.distributed)
        cost.forwards += self.alphas.size + 1  # the points and the evaluator's determinism check
        values = np.asarray(curve.values["loss"], dtype=np.float64)
        at_zero = values[int(np.flatnonzero(self.alphas == 0.0)[0])]
        return {"loss_rise": float(0.5 * (values[0] + values[-1]) - at_zero),
                "loss_rise_radius": float(self.alphas[-1]), "loss_curve": values.tolist(),
                "direction_norm": float(d.norm())}
