"""When to measure during training: every N steps, or whenever the overhead budget in gradients allows.

Overhead budget. Costs are counted in gradients of the probe loss (:mod:`landscape.training.cost`).
A training step counts ``step_gradients`` of them (for a ``Trainer``: training examples per step /
probe examples, so a probe batch as large as a training batch makes one step one gradient). After
t steps the training has cost G(t) = t · ``step_gradients``; with C the summed cost of the
measurements so far and c_max the most the next one can cost
(:meth:`~landscape.training.tracker.CurvatureTracker.max_cost`), the automatic schedule measures at
step t when

    C + c_max ≤ budget · G(t)          (budget = 0.10 by default).

So the overhead C / G stays at or under the budget at every step, the first measurement included:
it comes at t₁ = ⌈c_max / (budget · step_gradients)⌉, not at step 0, and later ones follow about
every t₁ steps (sooner when warm-started measurements cost less than c_max). The rule uses step
counts only, no clock, so every ``torchrun`` rank takes the same decision and a resumed run
continues the same schedule (C then includes the rows already in the file).
"""

from __future__ import annotations

import math

__all__ = ["Schedule", "first_step"]


def first_step(max_cost: float, step_gradients: float, budget: float = 0.10) -> int:
    """The first step t with ``max_cost`` ≤ budget · t · ``step_gradients``: t₁ = ⌈c / (budget·g)⌉."""
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget is a fraction of the training gradients in (0, 1], got {budget}.")
    if max_cost < 0 or step_gradients <= 0:
        raise ValueError(f"need max_cost ≥ 0 and step_gradients > 0, got {max_cost} and {step_gradients}.")
    return max(1, math.ceil(max_cost / (budget * step_gradients) - 1e-9))


class Schedule:
    """Which training steps get a measurement.

    Args:
        every: measure at step 0 and every ``every`` steps (fixed: the overhead is recorded, not
            bounded), or ``None``: the automatic rule of the module docstring.
        budget: the automatic schedule's ceiling on measurement gradients / training gradients.
        step_gradients: one training step in gradients of the probe loss (> 0).

    Feed it :meth:`record_measurement` with each measurement's cost in gradients; ask :meth:`due`
    with the next measurement's most cost. The class only does arithmetic, so it is tested as such.
    """

    def __init__(self, every: int | None = None, budget: float = 0.10, step_gradients: float = 1.0) -> None:
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive number of steps or None (automatic), got {every!r}.")
        first_step(0.0, step_gradients, budget)  # validates both
        self.every, self.budget, self.step_gradients = every, float(budget), float(step_gradients)
        self.last_step: int | None = None
        self.measured_gradients = 0.0

    def training_gradients(self, step: int) -> float:
        """G(t) = t · ``step_gradients``: the training done by step t, in gradients of the probe loss."""
        return step * self.step_gradients

    def record_measurement(self, step: int, cost_gradients: float | None) -> None:
        """A measurement at ``step`` cost ``cost_gradients`` (``None``: unknown, e.g. a row without a cost)."""
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        self.measured_gradients += float(cost_gradients or 0.0)

    def due(self, step: int, max_cost: float) -> bool:
        """Whether ``step`` gets a measurement that may cost up to ``max_cost`` gradients."""
        if self.last_step is not None and step <= self.last_step:
            return False
        if self.every is not None:
            return self.last_step is None or step - self.last_step >= self.every
        return self.measured_gradients + max_cost <= self.budget * self.training_gradients(step) + 1e-9

    def overhead(self, step: int) -> float:
        """Measurement gradients / training gradients at ``step`` (``nan`` at step 0)."""
        g = self.training_gradients(step)
        return self.measured_gradients / g if g > 0 else float("nan")
