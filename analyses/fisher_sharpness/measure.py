"""What the study measures for one mask: forward-pass numbers per direction seed and sequence.

For each direction seed j and evaluation sequence i (all on the same pool, from per-sequence loss
sums sᵢ, :class:`landscape.scans.points.ExampleLosses`):

* ``curv[j, i]`` = (sᵢ(+h) + sᵢ(−h) − 2sᵢ(0)) / h²: so Σᵢ curv / Σᵢ nᵢ is the directional
  curvature dⱼᵀHdⱼ of the pooled loss (two forward passes per direction);
* ``rise[j, i]`` = ½(sᵢ(+a) + sᵢ(−a)) − sᵢ(0) at the fixed step a: the two-sided loss rise (never
  censored), for the first ``curve_seeds`` seeds, whose 1D curves are also kept;
* a basin width per curve seed: where the loss first reaches L(θ₀) + δ on each side, extending
  the line beyond the scanned range by doubling, censored (a lower bound) if it never does.

Mask-level secondaries: the trace of the Hessian restricted to the mask by Hutchinson with
Rademacher probes (:func:`landscape.curvature.trace` on the masked Hessian operator, standard
error over probes), and the restricted top eigenvalue by Lanczos with its convergence flag
(Hessian-vector products: they cost 3–4 gradients each).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from landscape import curvature, sharpness, vectors
from landscape.params import ParamMask
from landscape.scans.points import ExampleLosses


def curve_alphas(range_1d: float, points: int, step: float) -> np.ndarray:
    """The 1D scan coefficients: ``points`` on [−R, R] with 0, plus ±step if missing."""
    from landscape.scans import coefficients

    a = coefficients(-range_1d, range_1d, points)
    extra = [x for x in (-step, step) if not np.isclose(a, x).any()]
    return np.sort(np.concatenate([a, extra])) if extra else a


def per_seed(ev: ExampleLosses, s0: np.ndarray, make_direction: Callable[[int], Any], seeds: list[int], *,
             fd_step: float, curve_seeds: int, alphas: np.ndarray, rise_step: float, basin_delta: float,
             basin_max_alpha: float) -> dict[str, Any]:
    """Directional curvature for every seed; curves, loss rise and basin width for the first ``curve_seeds``."""
    curv, norms, rise, curves, widths = [], [], [], [], []
    i0 = int(np.flatnonzero(alphas == 0.0)[0])
    for k, seed in enumerate(seeds):
        d = make_direction(seed)
        norms.append(float(vectors.norm({n: t.double() for n, t in d.items()})))
        plus, minus = ev.at([d], [[fd_step], [-fd_step]])
        curv.append(sharpness.second_difference(plus, minus, s0, fd_step))
        if k >= curve_seeds:
            continue
        nonzero = alphas[alphas != 0.0]
        sums = np.insert(ev.at([d], nonzero[:, None]), i0, s0, axis=0)  # [n_alphas, N]
        loss = ev.pooled(sums)
        curves.append(loss)
        ip = int(np.flatnonzero(np.isclose(alphas, rise_step))[0])
        im = int(np.flatnonzero(np.isclose(alphas, -rise_step))[0])
        rise.append(0.5 * (sums[ip] + sums[im]) - s0)
        w = sharpness.basin_width_bracketed(lambda a, d=d: float(ev.pooled(ev.at([d], [[a]])[0])),
                                            threshold=float(loss[i0]) + basin_delta, alphas=alphas, values=loss,
                                            max_alpha=basin_max_alpha, refine=2)
        widths.append({"width": w.width, "lower_bound": w.lower_bound, "censored": w.censored, "left": w.left,
                       "right": w.right, "extra_evaluations": w.n_evaluations})
    return {"seeds": list(seeds), "norms": norms, "curv": np.stack(curv).tolist(),
            "rise": np.stack(rise).tolist() if rise else [], "curves": np.stack(curves).tolist() if curves else [],
            "widths": widths}


def masked_trace(model: Any, objective: Any, data: list, mask: ParamMask, *, probes: int, seed: int) -> dict[str, Any]:
    """Hutchinson trace of the Hessian restricted to ``mask``, tr(P·H·P) ≈ mean over Rademacher probes z of zᵀHz.

    :func:`landscape.curvature.trace` (``method="hutchinson"``, ``probes`` Hessian-vector products
    on ``data``) with the probes of a :class:`~landscape.curvature.HessianOperator` on ``mask``.
    ``stderr``: the sample SD over probes / √probes (Hutchinson's variance; the data are fixed).
    """
    op = curvature.HessianOperator(model, objective, data, params=mask, mode="double_backward", check_determinism=False)
    res = curvature.trace(op, num_matvecs=probes, method="hutchinson", seed=seed, progress=False)
    return {"value": res.estimate, "stderr": res.stderr if probes > 1 else None, "probes": list(res.samples),
            "n_matvecs": res.n_matvecs, "estimator": "Hutchinson, Rademacher probes, Hessian-vector products"}


def masked_top_eigenvalue(model: Any, objective: Any, data: list, mask: ParamMask, *, max_iter: int, tol: float,
                          seed: int) -> dict[str, Any]:
    """Top eigenvalue of P·H·P (Lanczos, ``max_iter`` Hessian-vector products at most)."""
    op = curvature.HessianOperator(model, objective, data, params=mask, mode="double_backward", check_determinism=False)
    with warnings.catch_warnings():  # a capped run is recorded as not converged, not shouted
        warnings.simplefilter("ignore")
        res = curvature.top_eigenvalues(op, k=1, tol=tol, seed=seed, max_iter=max_iter, progress=False)
    return {"value": float(res.values[0]), "converged": bool(getattr(res, "converged", True)),
            "n_matvecs": int(res.n_matvecs), "tol": tol, "max_iter": max_iter}
