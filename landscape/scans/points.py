"""Per-example loss sums at chosen points θ₀ + Σⱼ cⱼdⱼ.

A scan (:mod:`landscape.scans.runner`) keeps only the pooled loss L = Σᵢsᵢ / Σᵢnᵢ at each point.
Statistics over the evaluation data (a bootstrap over sequences, the spread over disjoint blocks
of sequences) need each example's loss sum sᵢ and term count nᵢ separately. :class:`ExampleLosses`
prepares the data once (fixed MLM masks), then evaluates ``sums [k, n_examples]`` (float64) at any
``k`` points, in eval mode on the math attention backend, setting every point from the saved θ₀
(:class:`landscape.perturb.Perturbation`) and restoring the weights bit for bit afterwards.

One point costs one forward pass over the data; nothing is differentiated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import util
from landscape.objectives import Objective
from landscape.params import ParamSpace
from landscape.perturb import Perturbation
from landscape.scans.directions import check_direction

__all__ = ["ExampleLosses"]


class ExampleLosses:
    """Evaluates per-example loss sums sᵢ(θ₀ + Σⱼ cⱼdⱼ) on data prepared once.

    Args:
        model: the model; its current weights are θ₀.
        objective: the loss (its ``prepare`` fixes any randomness, e.g. MLM masks).
        data: a re-iterable of raw batches.

    Attributes:
        counts: ``[n_examples]`` loss-term counts nᵢ (labelled tokens per sequence for an MLM).
        n_forward: forward passes over the whole data made so far (one per point).
    """

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any]) -> None:
        self.model, self.objective = model, objective
        self.prepared = objective.prepare_data(model, data)
        counts = [objective.term_counts(p).detach().cpu().double().reshape(-1) for p in self.prepared]
        self.counts = torch.cat(counts).numpy() if counts else np.zeros(0)
        if self.counts.sum() <= 0:
            raise ValueError("data holds no loss term (every label is -100 / no example); give data with labels.")
        self.space = ParamSpace(model)
        self.n_forward = 0

    @property
    def n_examples(self) -> int:
        return int(self.counts.size)

    def pooled(self, sums: np.ndarray) -> np.ndarray:
        """L = Σᵢsᵢ / Σᵢnᵢ for each row of ``sums [..., n_examples]``."""
        return np.asarray(sums, dtype=np.float64).sum(-1) / self.counts.sum()

    @torch.no_grad()
    def _sums_here(self) -> np.ndarray:
        out = []
        for p in self.prepared:
            s, _ = self.objective.loss_terms(self.objective.forward(self.model, p), p)
            out.append(s.detach().double().reshape(-1))
        self.n_forward += 1
        return torch.cat(out).cpu().numpy()

    def at(self, directions: Sequence[Mapping[str, Tensor]], coeffs: Any) -> np.ndarray:
        """``sums [k, n_examples]`` at θ₀ + Σⱼ coeffs[p, j]·directions[j] for each of the k points.

        ``coeffs``: ``[k, len(directions)]`` (a 1-D array means one direction). ``directions`` may be
        empty when every point is θ₀ (``coeffs`` of shape ``[k, 0]``).
        """
        c = np.asarray(coeffs, dtype=np.float64)
        if c.ndim == 1:
            c = c[:, None] if len(directions) == 1 else c[None, :]
        if c.ndim != 2 or c.shape[1] != len(directions):
            raise ValueError(f"coeffs must have shape [k, {len(directions)}], got {c.shape}.")
        if not np.isfinite(c).all():
            raise ValueError("coeffs hold NaN or infinite values.")
        dirs = [check_direction(d, self.space, f"direction {j + 1}") for j, d in enumerate(directions)]
        names = [n for n in self.space.names if any(n in d for d in dirs)]
        pert = Perturbation({n: self.space.params[n] for n in names}, [{n: d[n] for n in names if n in d} for d in dirs])
        rows = []
        with pert, util.deterministic_eval(self.model):
            for point in c:
                pert.set([float(x) for x in point])
                rows.append(self._sums_here())
        return np.stack(rows) if rows else np.zeros((0, self.n_examples))

    def origin(self) -> np.ndarray:
        """``sums [n_examples]`` at θ₀ itself."""
        with util.deterministic_eval(self.model):
            return self._sums_here()
