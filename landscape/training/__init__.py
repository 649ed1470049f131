"""Curvature during training: λ_max, Hessian and Fisher traces and a loss rise on a fixed probe batch.

- ``tracker``: :class:`CurvatureTracker` (``.measure(step, lr=...)``), the plain-loop API; what a
  measurement holds and what it costs.
- ``callback``: :class:`CurvatureCallback`, the ``transformers.Trainer`` callback on top of it.
- ``schedule``: :class:`Schedule` and :func:`first_step`, measuring every N steps or whenever the
  overhead in gradients stays under a budget (10%).
- ``cost``: :class:`Cost`, a measurement's passes counted in gradients of the probe loss.
- ``log``: :class:`MeasurementLog` and :func:`read_measurements`, the resumable JSONL file.
"""

from landscape.training.callback import LOGGED, CurvatureCallback
from landscape.training.cost import Cost
from landscape.training.log import MeasurementLog, read_measurements
from landscape.training.schedule import Schedule, first_step
from landscape.training.tracker import QUANTITIES, CurvatureTracker, Quantity

__all__ = ["CurvatureTracker", "CurvatureCallback", "Schedule", "first_step", "Cost", "MeasurementLog",
           "read_measurements", "QUANTITIES", "Quantity", "LOGGED"]
