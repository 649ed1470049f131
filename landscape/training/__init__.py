"""Curvature during training: λ_max, Hessian and Fisher traces and a loss rise on a fixed probe batch.

- ``tracker``: :class:`CurvatureTracker` (``.measure(step, lr=...)``), the plain-loop API; what a
  measurement holds and what it costs.
- ``callback``: :class:`CurvatureCallback`, the ``transformers.Trainer`` callback on top of it.
- ``schedule``: :class:`Schedule` and :func:`auto_interval`, measuring every N steps with the
  overhead kept under a budget.
- ``log``: :class:`MeasurementLog` and :func:`read_measurements`, the resumable JSONL file.
"""

from landscape.training.callback import LOGGED, CurvatureCallback
from landscape.training.log import MeasurementLog, read_measurements
from landscape.training.schedule import Schedule, auto_interval
from landscape.training.tracker import QUANTITIES, CurvatureTracker, Quantity

__all__ = ["CurvatureTracker", "CurvatureCallback", "Schedule", "auto_interval", "MeasurementLog",
           "read_measurements", "QUANTITIES", "Quantity", "LOGGED"]
