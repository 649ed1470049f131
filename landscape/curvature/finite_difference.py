"""Finite-difference Hessian-vector products: two (or four) ordinary gradients, no second graph.

For a unit step h = ‖εv‖ along v (ε = h / ‖v‖) and g(θ) = ∇L(θ):

* central difference:  D(ε) = (g(θ₀ + εv) − g(θ₀ − εv)) / 2ε = H·v + O(ε²);
* Richardson:          R = (4·D(ε/2) − D(ε)) / 3 = H·v + O(ε⁴)  (four gradients).

Only first-order autograd runs, so the product works with fused attention kernels (no math
backend is forced), under ``torch.compile`` and with sharded parameters; memory is about one
gradient's (θ₀ is saved once per product, the two gradients are summed in place).

Every point is set from the saved θ₀ through :class:`landscape.perturb.Perturbation` (never by
stepping), and θ₀ comes back bit for bit after the product, also when it raised halfway.

Step sizes. Round-off in a difference of gradients (and in θ₀ + εv itself) grows as u/h and
truncation as h² (h⁴ with Richardson), u the unit round-off of the dtype; the truncation constant
is largest along the sharpest directions, which the eigensolvers seek. The defaults are h = u^(1/3)
(float32: 0.004) and h = u^(1/5) with Richardson (float32: 0.036).

Error budget on the default model (2-layer BERT, 0.7M parameters, float32, 16 held-out sequences,
against a float64 double-backward product; ``tests/curvature/test_curvature_fd_ggn.py``):

* the float32 gradient itself is off by ‖g₃₂ − g₆₄‖ ≈ 3.4e-6·‖g‖ (≈ 57u: summation over tokens and
  layers), which puts a floor of √2·‖g₃₂ − g₆₄‖·‖v‖ / (2h·‖Hv‖) ≈ 3.1e-5 / h under any central
  difference; the measured errors sit on it (h = 0.004: 7.3e-3 measured, 7.8e-3 predicted);
* rounding θ₀ + εv to float32 adds ≈ 1.6e-6 / h (10× below), the storage of the two gradients
  ≈ u (nothing), and the loss reduction nothing (the gradient of a sum is exact); the eager
  attention kernel instead of SDPA changes nothing;
* truncation, measured in float64, is 5.6e-3·h² (plain) along a random v, and ~300× larger along
  the top eigenvector, whose mass sits on a few tensors.

So along a random v plain differences reach 2.6e-4 at best (h = 0.1) and Richardson 8e-5 (h = 1);
along the top eigenvector plain reaches 1.5e-4 (h = 0.001) and Richardson 1.05e-4 (h = 0.003). No
step meets 1e-4 (plain) or 3e-5 (Richardson) in float32 here, and no single step serves both kinds
of direction. Choose ``fd_step`` for the directions that matter, and check against an exact mode on a
small batch; in float64 the same differences are good to 1e-7 (plain, h = 0.004) and 1e-11
(Richardson).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from landscape import vectors
from landscape.perturb import Perturbation
from landscape.vectors import Vector

__all__ = ["default_step", "central_difference", "fd_product"]


def default_step(dtype: torch.dtype, richardson: bool) -> float:
    """The default step norm h = ‖εv‖: u^(1/3) (plain) or u^(1/5) (Richardson), u the unit round-off."""
    u = float(torch.finfo(dtype).eps) / 2
    return u ** (1 / 3) if not richardson else u ** (1 / 5)


def central_difference(gradient: Callable[[], Vector], pert: Perturbation, v: Vector, eps: float) -> Vector:
    """(g(θ₀ + εv) − g(θ₀ − εv)) / 2ε, with ``gradient()`` evaluated at the weights ``pert`` sets."""
    pert.set_terms([(eps, v)])
    plus = gradient()
    pert.set_terms([(-eps, v)])
    minus = gradient()
    pert.restore()
    return {n: (plus[n] - minus[n]) / (2 * eps) for n in plus}


def fd_product(gradient: Callable[[], Vector], tensors: Mapping[str, Tensor], v: Vector, step: float,
               richardson: bool) -> tuple[Vector, float]:
    """(H·v, estimated relative error) by central differences of ``gradient`` at θ₀ ± εv.

    Args:
        gradient: the gradient dict over ``tensors``' names at the current weights.
        tensors: the live tensors v moves (θ₀ is saved here and restored bit for bit on exit).
        v: the direction (dict vector over those names).
        step: the step norm h = ‖εv‖.
        richardson: four gradients, (4·D(ε/2) − D(ε))/3; else two, D(ε).

    Returns:
        The product and its error estimate ‖D(ε) − D(ε/2)‖/(3‖·‖) (Richardson: the plain
        estimate's error, an upper bound for R's) or ``nan`` (plain: no second step taken).
    """
    norm = float(vectors.norm(v))
    if norm == 0.0:
        return {n: torch.zeros_like(t) for n, t in v.items()}, 0.0
    eps = step / norm
    with Perturbation({n: tensors[n] for n in v}) as pert:
        coarse = central_difference(gradient, pert, v, eps)
        if not richardson:
            return coarse, float("nan")
        fine = central_difference(gradient, pert, v, eps / 2)
    out = {n: (4 * fine[n] - coarse[n]) / 3 for n in fine}
    diff = float(vectors.norm(vectors.add(out, coarse, -1.0)))
    return out, diff / max(float(vectors.norm(out)), 1e-30)
