"""The measurement schedule: fixed intervals and the overhead budget in gradients (arithmetic, no clock)."""

from __future__ import annotations

import pytest

from landscape.training import Schedule, first_step


def test_first_step_charges_the_first_measurement():
    assert first_step(60.0, 1.0, 0.10) == 600  # 60 gradients fit in 10% of 600 one-gradient steps
    assert first_step(60.0, 4.0, 0.10) == 150
    assert first_step(61.0, 1.0, 0.10) == 610 and first_step(0.0, 1.0) == 1
    with pytest.raises(ValueError, match="budget"):
        first_step(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="step_gradients"):
        first_step(1.0, 0.0)


def test_automatic_schedule_keeps_overhead_under_budget_at_every_step():
    sched = Schedule(budget=0.1, step_gradients=2.0)
    measured = []
    for step in range(0, 2001):
        cost = 50.0 if not measured else 30.0  # a cold first measurement, warm ones after
        if sched.due(step, max_cost=50.0):
            sched.record_measurement(step, cost)
            measured.append(step)
        assert step == 0 or sched.overhead(step) <= 0.1 + 1e-12
    # t₁ = 50 / (0.1·2) = 250; then (50 + 50) / 0.2 = 500; then (50 + 30 + 50) / 0.2 = 650, every 150 after
    assert measured[:5] == [250, 500, 650, 800, 950]
    assert sched.overhead(2000) > 0.07  # the budget is used, not wasted


def test_fixed_schedule_and_resumed_costs():
    sched = Schedule(every=5)
    assert sched.due(0, 1e9)
    sched.record_measurement(0, 1.0)
    assert [s for s in range(1, 16) if sched.due(s, 1e9) and not sched.record_measurement(s, 1.0)] == [5, 10, 15]
    with pytest.raises(ValueError, match="every"):
        Schedule(every=0)
    resumed = Schedule(budget=0.1)
    resumed.record_measurement(100, 10.0)  # rows read back from a file: their cost counts
    assert not resumed.due(100, 10.0) and not resumed.due(199, 10.0) and resumed.due(200, 10.0)
    resumed.record_measurement(300, None)  # a row without a cost: the step counts
    assert resumed.last_step == 300 and not resumed.due(300, 1.0)
