"""The measurement schedule: fixed and automatic intervals, from given times (no clock)."""

from __future__ import annotations

import pytest

from landscape.training import Schedule, auto_interval


def test_auto_interval_keeps_overhead_under_budget():
    assert auto_interval(2.0, 1.0, 0.10) == 20
    assert auto_interval(2.1, 1.0, 0.10) == 21
    assert auto_interval(0.01, 1.0, 0.10) == 1
    for m, s in [(3.3, 0.7), (0.5, 0.01), (10.0, 2.5)]:
        n = auto_interval(m, s, 0.1)
        assert m / (n * s) <= 0.1 + 1e-12 and (n == 1 or m / ((n - 1) * s) > 0.1)
    with pytest.raises(ValueError, match="budget"):
        auto_interval(1.0, 1.0, 0.0)


def test_auto_interval_charges_the_first_measurement_to_the_run():
    n = auto_interval(1.0, 1.0, 0.10, total_steps=100)  # room 0.1 − 0.01 per step → N = ⌈1/0.09⌉
    assert n == 12 and (100 // n + 1) * 1.0 / 100 <= 0.10  # measurements at 0, 12, …, 96: 9% of training
    assert auto_interval(20.0, 1.0, 0.10, total_steps=100) == 101  # step 0 alone spends the budget: no more
    sched = Schedule(budget=0.1, total_steps=100)
    sched.record_measurement(0, 20.0)
    sched.record_step(1.0)
    assert not any(sched.due(s) for s in range(1, 101))


def test_fixed_schedule():
    sched = Schedule(every=5)
    assert sched.due(0)
    sched.record_measurement(0, 1.0)
    assert [s for s in range(1, 16) if sched.due(s) and not sched.record_measurement(s, 1.0)] == [5, 10, 15]
    with pytest.raises(ValueError, match="every"):
        Schedule(every=0)


def test_automatic_schedule_from_times():
    sched = Schedule(budget=0.1)
    assert sched.due(0)
    sched.record_measurement(0, 3.0)  # m = 3 s
    assert sched.interval is None and not sched.due(1)  # no step time yet
    sched.record_step(1.0)
    sched.record_step(2.0)  # mean s = 1.5 → N = ⌈3 / 0.15⌉ = 20
    assert sched.interval == 20 and not sched.due(19) and sched.due(20)
    sched.record_measurement(20, 6.0)  # slower measurement → longer interval
    assert sched.interval == 40 and sched.overhead() == pytest.approx(9.0 / 3.0)
    sched.record_measurement(60, None)  # resumed from a file: the step counts, the time is unknown
    assert sched.last_step == 60 and sched.interval == 40
