"""When to measure during training: every N steps, with N fixed or chosen from measured times.

Overhead budget. With a measurement costing m seconds and a training step s seconds, measuring
every N steps spends the fraction m / (N·s) of training time on curvature, plus m / (T·s) for the
measurement at step 0 when the run has T steps. The automatic schedule keeps the sum at or under
``budget`` (default 10%) by taking

    N = max(1, ⌈m / (budget·s − m/T)⌉)        (T unknown: drop the m/T term),

re-evaluated after every measurement from the latest m and the mean s of the steps seen so far.
When even the step-0 measurement exceeds the budget (budget·s ≤ m/T), N = T + 1: none more.
The class only does arithmetic on the times it is given, so it is tested without a clock.
"""

from __future__ import annotations

import math

__all__ = ["Schedule", "auto_interval"]


def auto_interval(measure_seconds: float, step_seconds: float, budget: float = 0.10,
                  total_steps: int | None = None) -> int:
    """The smallest N ≥ 1 with m/(N·s) + m/(T·s) ≤ ``budget`` (T = ``total_steps``; unknown: no m/T term)."""
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget is a fraction of training time in (0, 1], got {budget}.")
    if measure_seconds < 0 or step_seconds <= 0:
        raise ValueError(f"need measure_seconds ≥ 0 and step_seconds > 0, got {measure_seconds} and {step_seconds}.")
    room = budget * step_seconds - (measure_seconds / total_steps if total_steps else 0.0)
    if room <= 0:
        return int(total_steps or 0) + 1
    return max(1, math.ceil(measure_seconds / room - 1e-9))


class Schedule:
    """Which training steps get a measurement.

    Args:
        every: measure every ``every`` steps (fixed), or ``None``: choose N with :func:`auto_interval`
            from the last measurement's seconds and the mean step seconds.
        budget: the automatic schedule's ceiling on measurement time / training time.
        total_steps: the run's length T, when known (the Trainer's ``max_steps``).

    Feed it :meth:`record_step` (seconds of one training step, measurement excluded) and
    :meth:`record_measurement`; ask :meth:`due`. Until a step time is known the automatic schedule
    is not due (the first measurement, at the start of training, supplies m).
    """

    def __init__(self, every: int | None = None, budget: float = 0.10, total_steps: int | None = None) -> None:
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive number of steps or None (automatic), got {every!r}.")
        auto_interval(0.0, 1.0, budget)  # validates the budget
        self.every, self.budget, self.total_steps = every, float(budget), total_steps
        self.last_step: int | None = None
        self.measure_seconds: float | None = None
        self.step_seconds_total, self.steps_timed = 0.0, 0
        self.measured_seconds_total = 0.0

    @property
    def interval(self) -> int | None:
        """Steps between measurements: ``every``, or the automatic N (``None`` until both times are known)."""
        if self.every is not None:
            return self.every
        if self.measure_seconds is None or self.steps_timed == 0:
            return None
        return auto_interval(self.measure_seconds, self.step_seconds_total / self.steps_timed, self.budget,
                             self.total_steps)

    def record_step(self, seconds: float) -> None:
        """One training step took ``seconds`` (measurement time excluded)."""
        self.step_seconds_total += max(float(seconds), 0.0)
        self.steps_timed += 1

    def record_measurement(self, step: int, seconds: float | None) -> None:
        """A measurement at ``step`` took ``seconds`` (``None``: read back from a file, time unknown)."""
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        if seconds is not None:
            self.measure_seconds = float(seconds)
            self.measured_seconds_total += float(seconds)

    def due(self, step: int) -> bool:
        """Whether ``step`` gets a measurement: ``step − last ≥ interval`` (the first one always)."""
        if self.last_step is None:
            return True
        n = self.interval
        return n is not None and step - self.last_step >= n

    def overhead(self) -> float:
        """Measurement seconds / training-step seconds so far (``nan`` before any step)."""
        return self.measured_seconds_total / self.step_seconds_total if self.step_seconds_total > 0 else float("nan")
