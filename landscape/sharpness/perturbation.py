"""Sharpness by perturbing the model: average, worst-case and Keskar's ε-sharpness.

Each evaluates the data loss L through one :class:`landscape.evaluator.Evaluator` (data prepared
once, eval mode, θ₀ + δ from the saved θ₀, weights restored bit for bit):

* :func:`average_sharpness`: E_δ[L(θ+δ)] − L(θ), δ = ρ·z (or ρ·|θ|⊙z, adaptive), z ~ N(0, I) on the
  selected coordinates; Monte Carlo mean with its standard error (unbiased);
* :func:`worst_case_sharpness`: max_{‖δ/s‖₂ ≤ ρ} L(θ+δ) − L(θ) with s = |θ| (adaptive, Andriushchenko
  et al. 2023) or 1, by normalized projected gradient ascent (a lower bound on the true maximum);
* :func:`keskar_sharpness`: Keskar et al. (2017)'s ε-sharpness
  100·max_{δ ∈ C_ε}(L(θ+δ) − L(θ))/(1 + L(θ)), C_ε = {|δᵢ| ≤ ε(|θᵢ| + 1)}, by projected sign-gradient
  ascent in the box (Keskar et al. used L-BFGS-B; also a lower bound).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import vectors
from landscape.evaluator import Evaluator
from landscape.objectives import Objective
from landscape.params import Selection
from landscape.util.checks import check_finite_loss
from landscape.util.meta import result_meta
from landscape.util.results import JsonResult

__all__ = ["SharpnessResult", "average_sharpness", "worst_case_sharpness", "keskar_sharpness"]

Step = Callable[[list[Tensor], list[Tensor]], list[Tensor]]
Project = Callable[[list[Tensor]], list[Tensor]]


@dataclass
class SharpnessResult(JsonResult):
    """``value``: the sharpness; ``stderr`` (average-case only); ``loss0``: L(θ); ``losses``: the
    perturbed losses per sample or per ascent step; ``meta``: ``result_meta`` layout (model,
    settings: ρ/ε, steps, step size, seeds, samples; versions) plus ``kind``, ``n_params``,
    ``mask``, ``objective``, ``n_terms``, ``n_examples``."""

    value: float
    loss0: float
    losses: np.ndarray
    stderr: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class _Perturber:
    """An :class:`Evaluator` on the selected tensors, plus the mask applied to deltas and gradients."""

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], params: Selection) -> None:
        self.ev = Evaluator(model, objective, data, params=params)
        mask = self.ev.mask
        self.theta0 = self.ev.theta0
        self.mask = None if mask is None or mask.granularity == "tensor" else \
            [mask.masks[n].to(t.device) for n, t in zip(self.ev.names, self.theta0)]
        self.info = {"n_params": int(sum(t.numel() for t in self.theta0)) if mask is None else mask.count(),
                     "mask": None if mask is None else {"granularity": mask.granularity, "count": mask.count(),
                                                        "fraction": mask.fraction},
                     "objective": objective.describe(), "n_terms": self.ev.n_terms, "n_examples": self.ev.n_examples}

    def masked(self, ts: list[Tensor]) -> list[Tensor]:
        """T ⊙ m on the selected coordinates (identity without an element mask)."""
        return ts if self.mask is None else [t * m for t, m in zip(ts, self.mask)]

    def randn(self, seed: int) -> list[Tensor]:
        return self.masked(list(vectors.randn_like(dict(zip(self.ev.names, self.theta0)), seed).values()))

    def loss_at(self, delta: list[Tensor] | None, grad: bool = False) -> tuple[float, list[Tensor] | None]:
        """(L(θ₀ + δ), masked ∇L or None)."""
        self.ev.set_delta(delta)
        value, g = self.ev.loss(grad)
        return value, (self.masked(g) if g is not None else None)

    def meta(self, kind: str, settings: dict[str, Any]) -> dict[str, Any]:
        return result_meta(self.ev.model, settings, kind=kind, **self.info)


def _norm(ts: list[Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(ts))))


def average_sharpness(model: nn.Module, objective: Objective, data: Iterable[Any], *, rho: float, num_samples: int = 16,
                      adaptive: bool = False, params: Selection = None, seed: int = 0,
                      progress: bool = True) -> SharpnessResult:
    """E[L(θ+δ)] − L(θ) with δ = ρ·z (or ρ·|θ|⊙z if ``adaptive``), z ~ N(0, I) on the selected
    coordinates; sample s uses seed ``seed + s``. For a quadratic L with Hessian A the expectation is
    ½ρ²·tr(A) (adaptive: ½ρ²·Σᵢ Aᵢᵢθᵢ²)."""
    if not rho > 0 or num_samples < 1:
        raise ValueError(f"need rho > 0 and num_samples ≥ 1, got rho={rho}, num_samples={num_samples}.")
    from tqdm.auto import tqdm

    pert = _Perturber(model, objective, data, params)
    with pert.ev.evaluating():
        l0 = pert.loss_at(None)[0]
        check_finite_loss(l0)
        scale = [t.abs() * rho for t in pert.theta0] if adaptive else None
        losses = []
        for s in tqdm(range(num_samples), desc="average sharpness", disable=not progress, leave=False):
            z = pert.randn(seed + s)
            delta = list(torch._foreach_mul(z, scale) if scale is not None else torch._foreach_mul(z, float(rho)))
            losses.append(pert.loss_at(delta)[0])
    arr = np.array(losses)
    stderr = float(arr.std(ddof=1) / np.sqrt(num_samples)) if num_samples > 1 else float("nan")
    settings = {"rho": rho, "adaptive": adaptive, "n_samples": num_samples, "seeds": [seed, seed + num_samples - 1],
                "distribution": "gaussian"}
    return SharpnessResult(float(arr.mean() - l0), l0, arr, stderr, pert.meta("average", settings))


def _ascent(pert: _Perturber, scale: list[Tensor] | None, project: Project, init: list[Tensor], steps: int,
            step: Step, kind: str, progress: bool) -> tuple[float, np.ndarray, float]:
    """Projected ascent on u with δ = s⊙u; returns (L(θ), losses per iterate ``[steps + 1]``, best loss)."""
    from tqdm.auto import tqdm

    with pert.ev.evaluating():
        l0 = pert.loss_at(None)[0]
        check_finite_loss(l0)
        u = project(init)
        losses = []
        for _ in tqdm(range(steps + 1), desc=f"{kind} sharpness", disable=not progress, leave=False):
            value, g = pert.loss_at(list(torch._foreach_mul(u, scale)) if scale is not None else u, grad=True)
            assert g is not None  # loss_at(grad=True) returns the gradient
            losses.append(value)
            if len(losses) == steps + 1:
                break
            u = project(step(u, list(torch._foreach_mul(g, scale)) if scale is not None else g))
    arr = np.array(losses)
    finite = arr[np.isfinite(arr)]
    return l0, arr, float(finite.max()) if finite.size else float("nan")


def worst_case_sharpness(model: nn.Module, objective: Objective, data: Iterable[Any], *, rho: float, steps: int = 20,
                         step_size: float | None = None, adaptive: bool = True, params: Selection = None,
                         seed: int = 0, progress: bool = True) -> SharpnessResult:
    """max_{‖u‖₂ ≤ ρ} L(θ + s⊙u) − L(θ), s = |θ| if ``adaptive`` else 1 (Andriushchenko et al., 2023).

    Normalized projected gradient ascent: u ← Π_ρ(u + η·∇ᵤL/‖∇ᵤL‖), η = ``step_size`` (default ρ),
    from a random point on the sphere ‖u‖ = ρ (seed ``seed``). The value is the best iterate (a lower
    bound). For a quadratic at its minimum it tends to ½ρ²·λ_max(SAS)."""
    if not rho > 0 or steps < 1:
        raise ValueError(f"need rho > 0 and steps ≥ 1, got rho={rho}, steps={steps}.")
    eta = float(rho if step_size is None else step_size)
    pert = _Perturber(model, objective, data, params)
    scale = [t.abs() for t in pert.theta0] if adaptive else None

    def project(u: list[Tensor]) -> list[Tensor]:
        n = _norm(u)
        return u if n <= rho else list(torch._foreach_mul(u, rho / n))

    def step(u: list[Tensor], g: list[Tensor]) -> list[Tensor]:
        n = _norm(g)
        return u if n == 0 else list(torch._foreach_add(u, g, alpha=eta / n))

    z = pert.randn(seed)
    init = list(torch._foreach_mul(z, rho / _norm(z)))
    l0, losses, best = _ascent(pert, scale, project, init, steps, step, "worst-case", progress)
    settings = {"rho": rho, "adaptive": adaptive, "steps": steps, "step_size": eta, "seed": seed,
                "init": "random point on the rho-sphere"}
    return SharpnessResult(best - l0, l0, losses, None, pert.meta("worst_case", settings) | {"n_gradients": steps + 1})


def keskar_sharpness(model: nn.Module, objective: Objective, data: Iterable[Any], *, eps: float = 1e-3, steps: int = 20,
                     step_size: float = 0.25, params: Selection = None, seed: int = 0,
                     progress: bool = True) -> SharpnessResult:
    """Keskar et al.'s ε-sharpness: 100·(max_{δ∈C_ε} L(θ+δ) − L(θ)) / (1 + L(θ)),
    C_ε = {|δᵢ| ≤ ε(|θᵢ|+1)} on the selected coordinates (the full space, no random subspace).

    Projected sign-gradient ascent in box units u = δ/b, b = ε(|θ|+1): u ← clip(u + η·sign(∇ᵤL), −1, 1),
    η = ``step_size``, from u ~ U(−1, 1) (seed ``seed``). ``losses`` holds L per iterate."""
    if not eps > 0 or steps < 1:
        raise ValueError(f"need eps > 0 and steps ≥ 1, got eps={eps}, steps={steps}.")
    pert = _Perturber(model, objective, data, params)
    bound = [(t.abs() + 1) * eps for t in pert.theta0]

    def project(u: list[Tensor]) -> list[Tensor]:
        return pert.masked([t.clamp(-1.0, 1.0) for t in u])

    def step(u: list[Tensor], g: list[Tensor]) -> list[Tensor]:
        return list(torch._foreach_add(u, [t.sign() for t in g], alpha=float(step_size)))

    gen = torch.Generator().manual_seed(int(seed))
    init = [(torch.rand(t.shape, generator=gen, dtype=torch.float64) * 2 - 1).to(t) for t in pert.theta0]
    l0, losses, best = _ascent(pert, bound, project, init, steps, step, "keskar", progress)
    settings = {"eps": eps, "steps": steps, "step_size": step_size, "seed": seed, "init": "uniform in the box"}
    meta = pert.meta("keskar", settings) | {"raw_max_increase": best - l0, "n_gradients": steps + 1}
    return SharpnessResult(100.0 * (best - l0) / (1.0 + l0), l0, losses, None, meta)
