"""``transformers.Trainer`` integration: measure curvature every N optimizer steps.

Usage::

    tracker = CurvatureTracker(model, objectives.MaskedLM(seed=0), probe_batches, path="run/curvature.jsonl")
    trainer = Trainer(model=model, args=args, train_dataset=train)
    CurvatureCallback(tracker).attach(trainer)   # every=None: N chosen to keep overhead ≤ 10%
    trainer.train()

Where the values go. Each measurement is one JSONL row (:class:`~landscape.training.log.MeasurementLog`)
and one ``Trainer.log`` call with the scalars under ``curvature/…`` keys, so ``state.log_history``
gets an entry ``{"curvature/top_eigenvalue": …, "step": …}`` and every reporting integration
(TensorBoard, W&B, …) receives it through ``on_log``, as it does the training loss. ``attach``
gives the callback that ``Trainer``; a callback passed as ``Trainer(callbacks=[cb])`` has no
trainer to log through, so it appends the entry to ``state.log_history`` only (and warns once).

When. A measurement at the start of training (step 0, or the resumed step), then every ``every``
steps, or with ``every=None`` every N = ⌈m / (budget·s)⌉ steps from the last measurement's
seconds m and the mean step seconds s, with the step-0 measurement charged to the run's
``max_steps`` (:class:`~landscape.training.schedule.Schedule`), and optionally one at the end of
training (``at_end``, outside the budget). Steps already in the file (a resumed run) are skipped.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from transformers import TrainerCallback

from landscape import util
from landscape.training.schedule import Schedule
from landscape.training.tracker import CurvatureTracker

__all__ = ["CurvatureCallback", "LOGGED"]

LOGGED = ("loss", "top_eigenvalue", "hessian_trace", "fisher_trace", "loss_rise", "cost_gradients")


class CurvatureCallback(TrainerCallback):
    """A ``TrainerCallback`` that runs ``tracker.measure(step, lr=η)`` on a :class:`Schedule`.

    Args:
        tracker: the :class:`CurvatureTracker` (its model must be the Trainer's model).
        every: measure every ``every`` optimizer steps; ``None``: automatic, overhead ≤ ``budget``.
        budget: the automatic schedule's ceiling on measurement time / training time (0.10).
        at_end: also measure at the last step (one measurement outside the budget).
    """

    def __init__(self, tracker: CurvatureTracker, *, every: int | None = None, budget: float = 0.10,
                 at_end: bool = False) -> None:
        if not isinstance(tracker, CurvatureTracker):
            raise TypeError(f"tracker must be a landscape.training.CurvatureTracker, got {type(tracker).__name__}.")
        self.tracker, self.at_end = tracker, at_end
        self.schedule = Schedule(every, budget)
        self.trainer: Any = None
        self._step_start: float | None = None
        self._warned = self._warned_budget = False

    def attach(self, trainer: Any) -> CurvatureCallback:
        """Register with ``trainer`` (``add_callback``) and log through ``trainer.log``; returns self."""
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    # ---- Trainer events
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        if model is not None and model is not self.tracker.model:
            raise ValueError("the CurvatureTracker measures another model than the Trainer trains; build the "
                             "tracker on the same model object you pass to Trainer(model=...).")
        if getattr(state, "max_steps", 0) and state.max_steps > 0:
            self.schedule.total_steps = int(state.max_steps)
        for row in self.tracker.rows:  # a resumed file: its steps count as measured
            self.schedule.record_measurement(int(row["step"]), None)
        if self.tracker.rows:
            self.schedule.measure_seconds = float(self.tracker.rows[-1].get("seconds", 0.0)) or None
        self._measure(state, kwargs)
        self._step_start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._step_start is not None:
            self.schedule.record_step(time.perf_counter() - self._step_start)
        if self._due(state.global_step):
            should_log = control.should_log  # trainer.log's on_log clears it: keep the training loss's log due
            self._measure(state, kwargs)
            control.should_log = should_log
        self._warn_if_budget_spent(state.global_step)
        self._step_start = time.perf_counter()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.at_end:
            self._measure(state, kwargs)

    # ---- helpers
    def _warn_if_budget_spent(self, step: int) -> None:
        """Say once when the automatic schedule can fit no further measurement in this run."""
        n, total = self.schedule.interval, self.schedule.total_steps
        if self._warned_budget or self.schedule.every is not None or n is None or total is None:
            return
        if (self.schedule.last_step or 0) + n > total:
            self._warned_budget = True
            warnings.warn(f"one curvature measurement takes {self.schedule.measure_seconds:.1f} s, so a "
                          f"{100 * self.schedule.budget:.0f}% budget fits no further one in this run's {total} "
                          "steps; pass every=N, a smaller probe batch, fewer trace_matvecs, or a larger budget.",
                          stacklevel=2)

    def _due(self, step: int) -> bool:
        """The schedule's answer; under ``torchrun`` with the automatic schedule, rank timings differ,
        so the ranks agree by an all-reduce (measure if any rank is due): a measurement is collective."""
        due = self.schedule.due(step)
        if self.schedule.every is None and self.tracker.ctx.active:
            import torch
            import torch.distributed as dist

            flag = torch.tensor([float(due)], device=util.model_device(self.tracker.model))
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            due = bool(flag.item() > 0)
        return due

    @staticmethod
    def learning_rate(kwargs: dict[str, Any]) -> float | None:
        """η of the next step: the scheduler's last lr, else the optimizer's first parameter group."""
        sched, opt = kwargs.get("lr_scheduler"), kwargs.get("optimizer")
        if sched is not None and hasattr(sched, "get_last_lr"):
            return float(sched.get_last_lr()[0])
        if opt is not None and getattr(opt, "param_groups", None):
            return float(opt.param_groups[0]["lr"])
        return None

    def _measure(self, state: Any, kwargs: dict[str, Any]) -> None:
        step = int(state.global_step)
        if step in self.tracker.log.steps:
            self.schedule.record_measurement(step, None)
            return
        row = self.tracker.measure(step, lr=self.learning_rate(kwargs), epoch=state.epoch)
        self.schedule.record_measurement(step, row["seconds"])
        logs = {f"curvature/{k}": float(row[k]) for k in LOGGED if row.get(k) is not None}
        if self.schedule.steps_timed:
            logs["curvature/overhead"] = self.schedule.overhead()
        if self.trainer is not None:
            self.trainer.log(logs)
            return
        if not self._warned:
            warnings.warn("CurvatureCallback without a trainer: values go to state.log_history only; use "
                          "CurvatureCallback(tracker).attach(trainer) so TensorBoard and other loggers get them.",
                          stacklevel=2)
            self._warned = True
        state.log_history.append({**logs, "step": step})
