"""Directional curvature from per-example loss sums, so every number can be bootstrapped over examples.

* :func:`second_difference`: (f(+h) + f(−h) − 2f(0)) / h², elementwise;
* :func:`directional_curvature`: dᵀHd of the data loss by a central second difference, two forward
  passes through one :class:`landscape.evaluator.Evaluator`;
* :func:`fd_curvature_error`: that estimate's relative error against the exact dᵀ(Hd) from one
  Hessian-vector product, to validate the step h on the model being studied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor, nn

from landscape import vectors
from landscape.curvature.hessian_operator import HessianOperator, Mode
from landscape.evaluator import Evaluator
from landscape.objectives import Objective
from landscape.params import ParamSpace
from landscape.scans.points import ExampleLosses
from landscape.util.meta import result_meta
from landscape.util.results import JsonResult

__all__ = ["DirectionalCurvature", "second_difference", "directional_curvature", "fd_curvature_error"]


def second_difference(plus: Any, minus: Any, center: Any, step: float) -> np.ndarray:
    """(f(+h) + f(−h) − 2f(0)) / h², elementwise: the central estimate of f''(0).

    Truncation error h²·f''''(0)/12; rounding error about 4ε|f|/h² (ε the float precision of f).
    """
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}.")
    f_plus, f_minus, f_0 = (np.asarray(x, np.float64) for x in (plus, minus, center))
    return (f_plus + f_minus - 2.0 * f_0) / step**2


@dataclass
class DirectionalCurvature(JsonResult):
    """dᵀHd from two forward passes, L(θ₀ ± h·d), and L(θ₀).

    ``value`` = (L(θ₀+hd) + L(θ₀−hd) − 2L(θ₀)) / h² ≈ dᵀ∇²L d (nats per unit coefficient²);
    ``per_example`` ``[n]``: cᵢ = (sᵢ⁺ + sᵢ⁻ − 2sᵢ⁰)/h² per example, so ``value`` = Σcᵢ / Σnᵢ and a
    bootstrap over examples resamples (cᵢ, nᵢ) pairs; ``counts`` ``[n]``: nᵢ; ``norm``: ‖d‖;
    ``per_unit_norm`` = value / ‖d‖² (the Rayleigh quotient dᵀHd / dᵀd)."""

    value: float
    per_example: np.ndarray
    counts: np.ndarray
    step: float
    norm: float
    per_unit_norm: float
    meta: dict[str, Any] = field(default_factory=dict)


def directional_curvature(model: nn.Module, objective: Objective, data: Iterable[Any], direction: Mapping[str, Tensor],
                          *, step: float = 0.01, evaluator: Evaluator | None = None,
                          origin: np.ndarray | None = None) -> DirectionalCurvature:
    """dᵀHd of the data loss L = Σsᵢ/Σnᵢ along ``direction`` by a central second difference.

    Costs two forward passes over the data (three without ``origin``), against one Hessian-vector
    product (about 3–4 gradients) for the exact dᵀ(Hd). ``step`` h is in units of d: for a
    filter-normalized d (‖d‖ ≈ ‖θ‖) h = 0.01 moves each filter by 1 % of its norm, small against the
    scale over which L bends and large enough that float32 rounding stays below 1e-3 relative on
    a pool of ~100 sequences.

    Args:
        evaluator: an :class:`~landscape.scans.points.ExampleLosses` (or any
            :class:`~landscape.evaluator.Evaluator`) on the same model, objective and data, reused to
            avoid preparing the data again (``data`` is then ignored).
        origin: per-example sums at θ₀ ``[n]``, if already evaluated.
    """
    ev = evaluator if evaluator is not None else ExampleLosses(model, objective, data)
    s0 = ev.origin() if origin is None else np.asarray(origin, np.float64)
    plus, minus = ev.at([direction], [[step], [-step]])
    c = second_difference(plus, minus, s0, step)
    value = float(c.sum() / ev.counts.sum())
    norm = float(vectors.norm({k: v.double() for k, v in direction.items()}))
    meta = result_meta(model, {"step": float(step), "estimator": "central second difference"},
                       n_forward=2 if origin is not None else 3, n_examples=ev.n_examples,
                       n_terms=int(ev.counts.sum()), objective=objective.describe(),
                       direction=dict(getattr(direction, "meta", {}) or {}))
    per_norm = value / norm**2 if norm > 0 else float("nan")
    return DirectionalCurvature(value, c, ev.counts.copy(), float(step), norm, per_norm, meta)


def fd_curvature_error(model: nn.Module, objective: Objective, data: Iterable[Any], direction: Mapping[str, Tensor],
                       h: float, *, evaluator: Evaluator | None = None, mode: Mode = "double_backward") -> float:
    """Relative error |c_h − c| / |c| of the second-difference dᵀHd at step ``h`` (c_h, from
    :func:`directional_curvature`) against the exact c = dᵀ(Hd) from one Hessian-vector product.

    Costs two forward passes and one HVP (about 3–4 gradients) on ``data``. Truncation makes the
    error grow as h² (h²·L⁗/12 against L″), float32 rounding as 1/h² (about 4ε|L|/(h²|c|)): sweep
    h on the model being studied, and keep one inside the flat part. Weights and train/eval mode
    are restored; ``direction`` may cover any subset of the parameters (its names are the HVP's space).

    Args:
        h: the step, in units of ``direction`` (as ``directional_curvature``'s ``step``).
        evaluator: an :class:`~landscape.evaluator.Evaluator` on the same model, objective and data
            to reuse for the two forward passes.
        mode: the exact HVP's mode (see :class:`~landscape.curvature.HessianOperator`).

    Returns:
        the relative error (0.0 when both are exactly 0; ``inf`` when only c is).
    """
    approx = directional_curvature(model, objective, data, direction, step=h, evaluator=evaluator).value
    space = ParamSpace.from_names(model, list(direction))
    op = HessianOperator(model, objective, data, params=space, mode=mode, reuse_graph=False)
    v = {n: direction[n].to(p.dtype) for n, p in op.params.items()}
    hv = op.matvec(v)
    exact = float(vectors.dot({n: v[n].double() for n in hv}, {n: t.double() for n, t in hv.items()}))
    if exact == 0.0:
        return 0.0 if approx == 0.0 else float("inf")
    return abs(approx - exact) / abs(exact)
