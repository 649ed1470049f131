"""Per-example loss sums at chosen points θ₀ + Σⱼ cⱼdⱼ, with directions checked like a scan's.

A scan (:mod:`landscape.scans.runner`) keeps only the pooled loss L = Σᵢsᵢ / Σᵢnᵢ at each point.
Statistics over the evaluation data (a bootstrap over sequences, the spread over disjoint blocks
of sequences) need each example's loss sum sᵢ and term count nᵢ separately. :class:`ExampleLosses`
is the :class:`landscape.evaluator.Evaluator` over every trainable parameter whose :meth:`at`
first validates each direction (:func:`landscape.scans.direction.check_direction`: this model,
shapes, finite, nonzero; tied aliases resolved). One point costs one forward pass over the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from landscape.evaluator import Evaluator
from landscape.scans.direction import check_direction

__all__ = ["ExampleLosses"]


class ExampleLosses(Evaluator):
    """Per-example loss sums sᵢ(θ₀ + Σⱼ cⱼdⱼ) ``[k, n_examples]`` (float64) on data prepared once.

    Args:
        model: the model; its current weights are θ₀.
        objective: the loss (its ``prepare`` fixes any randomness, e.g. MLM masks).
        data: a re-iterable of raw batches.

    Attributes:
        counts: ``[n_examples]`` loss-term counts nᵢ (labelled tokens per sequence for an MLM).
        n_forward: forward passes over the whole data made so far (one per point).
    """

    def at(self, directions: Sequence[Mapping[str, Tensor]], coeffs: Any) -> np.ndarray:
        """``sums [k, n_examples]`` at θ₀ + Σⱼ coeffs[p, j]·directions[j] for each of the k points.

        ``coeffs``: ``[k, len(directions)]`` (a 1-D array means one direction). ``directions`` may be
        empty when every point is θ₀ (``coeffs`` of shape ``[k, 0]``).
        """
        dirs = [check_direction(d, self.space, f"direction {j + 1}") for j, d in enumerate(directions)]
        return super().at(dirs, coeffs)
