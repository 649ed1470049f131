"""What a curvature measurement costs, counted in gradients of the probe loss.

The unit is one gradient ∇L of the probe loss over the whole probe data (one forward and one
backward pass). A measurement counts the passes it runs and weighs them by :data:`WEIGHTS`:

* a gradient: 1;
* a forward pass alone: 1/3 (a backward pass costs about two forwards);
* a Hessian-vector product: 4 (double backward and forward-over-reverse measured 3–4 gradients on
  CPU, see DESIGN.md; with a kept first-backward graph a product costs less, so 4 is an upper end);
* one sweep of per-example gradients over the probe data (``torch.func.vmap``, for the Fisher
  trace): 2 (the same arithmetic as a gradient, plus writing one gradient per example).

The counts are exact and the weights fixed, so a cost in gradients does not move with the
machine's load, and a schedule built on it (:class:`~landscape.training.schedule.Schedule`) gives
the same steps on every run and every ``torchrun`` rank. Each row also records the timed ratio
``seconds / gradient_seconds`` (``timed_cost_gradients``) to check the weights against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import MappingProxyType

__all__ = ["WEIGHTS", "Cost"]

#: Gradients per pass of each kind (see the module docstring).
WEIGHTS = MappingProxyType({"gradients": 1.0, "forwards": 1.0 / 3.0, "hvps": 4.0, "per_example_sweeps": 2.0})


@dataclass
class Cost:
    """Passes run by one measurement, by kind; :attr:`gradients` is their weighted sum.

    Attributes:
        gradients_run: plain gradients ∇L over the probe data (the probe loss and its timing).
        forwards: forward passes alone (determinism checks, loss-rise scan points).
        hvps: Hessian-vector products (Lanczos and Hutch++; a kept graph's first build counts as one).
        per_example_sweeps: sweeps of per-example gradients over the probe data.
    """

    gradients_run: int = 0
    forwards: int = 0
    hvps: int = 0
    per_example_sweeps: int = 0

    @property
    def gradients(self) -> float:
        """Σ passes × :data:`WEIGHTS`: the cost in gradients of the probe loss."""
        return (self.gradients_run * WEIGHTS["gradients"] + self.forwards * WEIGHTS["forwards"]
                + self.hvps * WEIGHTS["hvps"] + self.per_example_sweeps * WEIGHTS["per_example_sweeps"])

    def as_dict(self) -> dict[str, int]:
        """The counts, for a JSON row."""
        return asdict(self)
