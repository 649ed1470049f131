"""``transformers.Trainer`` integration: measure curvature within an overhead budget, or every N steps.

Usage::

    tracker = CurvatureTracker(model, objectives.MaskedLM(seed=0), probe_batches, path="run/curvature.jsonl")
    trainer = Trainer(model=model, args=args, train_dataset=train)
    CurvatureCallback(tracker).attach(trainer)   # every=None: measurements ≤ 10% of the training gradients
    trainer.train()

Where the values go. Each measurement is one JSONL row (:class:`~landscape.training.log.MeasurementLog`)
and one ``Trainer.log`` call with the scalars under ``curvature/…`` keys, so ``state.log_history``
gets an entry ``{"curvature/top_eigenvalue": …, "step": …}`` and every reporting integration
(TensorBoard, W&B, …) receives it through ``on_log``, as it does the training loss. ``attach``
gives the callback that ``Trainer``; a callback passed as ``Trainer(callbacks=[cb])`` has no
trainer to log through, so it appends the entry to ``state.log_history`` only (and warns once).

When. With ``every=None`` (default) the budget rule of :mod:`landscape.training.schedule`: a
measurement at step t when the measurements' gradients plus the next one's most cost stay within
``budget`` (10%) of the training gradients t · ``step_gradients``, the first one included (so it
comes after t₁ = ⌈c_max / (budget · step_gradients)⌉ steps, not at step 0); ``step_gradients``
defaults to the training examples per optimizer step (per-device batch × accumulation × world size)
over the probe examples. With ``every=N``: at the start and every N steps, overhead not bounded.
Optionally one at the end of training (``at_end``, outside the budget). Steps already in the file
(a resumed run) are skipped and their costs count. Each row and log entry carries
``cost_gradients``, ``training_gradients`` and the running ``overhead``.
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback

from landscape.training.schedule import Schedule, first_step
from landscape.training.tracker import CurvatureTracker

__all__ = ["CurvatureCallback", "LOGGED"]

LOGGED = ("loss", "top_eigenvalue", "hessian_trace", "fisher_trace", "loss_rise", "cost_gradients",
          "training_gradients", "overhead")


class CurvatureCallback(TrainerCallback):
    """A ``TrainerCallback`` that runs ``tracker.measure(step, lr=η)`` on a :class:`Schedule`.

    Args:
        tracker: the :class:`CurvatureTracker` (its model must be the Trainer's model).
        every: measure every ``every`` optimizer steps; ``None``: automatic, overhead ≤ ``budget``.
        budget: the automatic schedule's ceiling on measurement gradients / training gradients (0.10).
        step_gradients: one optimizer step in gradients of the probe loss (default: training
            examples per step / probe examples; set it when their sequence lengths differ).
        at_end: also measure at the last step (one measurement outside the budget).
    """

    def __init__(self, tracker: CurvatureTracker, *, every: int | None = None, budget: float = 0.10,
                 step_gradients: float | None = None, at_end: bool = False) -> None:
        if not isinstance(tracker, CurvatureTracker):
            raise TypeError(f"tracker must be a landscape.training.CurvatureTracker, got {type(tracker).__name__}.")
        self.tracker, self.at_end, self.step_gradients = tracker, at_end, step_gradients
        self.schedule = Schedule(every, budget, step_gradients or 1.0)
        self.trainer: Any = None
        self._warned = False

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
        every, budget = self.schedule.every, self.schedule.budget
        self.schedule = Schedule(every, budget, self.step_gradients or self.default_step_gradients(args))
        for row in self.tracker.rows:  # a resumed file: its steps count as measured, its costs as spent
            self.schedule.record_measurement(int(row["step"]), row.get("cost_gradients"))
        self._warn_if_none_fits(int(getattr(state, "max_steps", 0) or 0))
        if self._due(state.global_step):
            self._measure(state, kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._due(state.global_step):
            should_log = control.should_log  # trainer.log's on_log clears it: keep the training loss's log due
            self._measure(state, kwargs)
            control.should_log = should_log

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.at_end:
            self._measure(state, kwargs)

    # ---- helpers
    def default_step_gradients(self, args: Any) -> float:
        """Training examples per optimizer step (all ranks) / probe examples: a step in probe gradients."""
        per_step = (int(args.per_device_train_batch_size) * int(getattr(args, "gradient_accumulation_steps", 1) or 1)
                    * int(getattr(args, "world_size", 1) or 1))
        return per_step / max(self.tracker.n_probe_examples, 1)

    def _warn_if_none_fits(self, total: int) -> None:
        """Say once when the automatic schedule fits no measurement in this run's ``total`` steps."""
        if self.schedule.every is not None or total <= 0:
            return
        c_max = self.tracker.max_cost().gradients
        t1 = first_step(c_max, self.schedule.step_gradients, self.schedule.budget)
        if self.schedule.last_step is None and t1 > total:
            warnings.warn(f"one curvature measurement may cost {c_max:.0f} gradients of the probe loss, and a "
                          f"training step {self.schedule.step_gradients:.3g} of them, so a "
                          f"{100 * self.schedule.budget:.0f}% budget fits the first measurement only after {t1} "
                          f"steps, beyond this run's {total}; pass every=N, a smaller probe batch, fewer "
                          "trace_matvecs/eig_matvecs, or a larger budget.", stacklevel=2)

    def _due(self, step: int) -> bool:
        """The schedule's answer (step counts only: every ``torchrun`` rank agrees without a collective)."""
        return self.schedule.due(int(step), self.tracker.max_cost().gradients)

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
            return
        row = self.tracker.measure(step, lr=self.learning_rate(kwargs), epoch=state.epoch,
                                   training_gradients=self.schedule.training_gradients(step))
        self.schedule.record_measurement(step, row["cost_gradients"])
        logs = {f"curvature/{k}": float(row[k]) for k in LOGGED if row.get(k) is not None}
        if self.trainer is not None:
            self.trainer.log(logs)
            return
        if not self._warned:
            warnings.warn("CurvatureCallback without a trainer: values go to state.log_history only; use "
                          "CurvatureCallback(tracker).attach(trainer) so TensorBoard and other loggers get them.",
                          stacklevel=2)
            self._warned = True
        state.log_history.append({**logs, "step": step})
