"""Sharpness metrics over any parameter selection.

From scans (numbers in, numbers out; they also take arrays, e.g. the reference HDF5 surfaces):

* :func:`curvature_at_origin`: second derivative at α = 0 of a quadratic least-squares fit
  L(α) ≈ c₀ + c₁α + ½κα² to the points with |α| ≤ window (for a surface, the 2×2 Hessian of
  L(x, y) ≈ c₀ + gᵀz + ½zᵀKz in the plane);
* :func:`basin_width`: distance between the crossings of a loss threshold left and right of the
  minimum, linearly interpolated.

From the model (each evaluates the data loss L on data prepared once, in eval mode, and restores
the weights bit for bit):

* :func:`average_sharpness`: E_δ[L(θ+δ)] − L(θ), δ = ρ·z (or ρ·|θ|⊙z, adaptive), z ~ N(0, I) on the
  selected coordinates; Monte Carlo mean with its standard error (unbiased);
* :func:`worst_case_sharpness`: max_{‖δ/s‖₂ ≤ ρ} L(θ+δ) − L(θ) with s = |θ| (adaptive, Andriushchenko
  et al. 2023) or 1, by normalized projected gradient ascent (a lower bound on the true maximum);
* :func:`keskar_sharpness`: Keskar et al. (2017)'s ε-sharpness
  100·max_{δ ∈ C_ε}(L(θ+δ) − L(θ))/(1 + L(θ)), C_ε = {|δᵢ| ≤ ε(|θᵢ| + 1)}, by projected sign-gradient
  ascent in the box (Keskar et al. used L-BFGS-B; also a lower bound).

From per-example loss sums (so every number can be bootstrapped over the evaluation examples):

* :func:`directional_curvature`: dᵀHd by a central second difference, two forward passes;
* :func:`basin_width_bracketed`: a basin width searched beyond the scanned range, censored
  (a lower bound) rather than NaN when the loss never crosses.

This module is over 400 lines on purpose: it is the one home of every sharpness definition, so
their conventions (θ₀ + δ from a saved copy, exact restore, what is censored) stay in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import util, vectors
from landscape.objectives import Objective
from landscape.params import Selection, select
from landscape.perturb import Perturbation
from landscape.scans.results import Curve, Surface
from landscape.util.checks import check_finite_loss, check_finite_weights
from landscape.util.results import JsonResult

__all__ = ["CurvatureFit", "BasinWidth", "SharpnessResult", "curvature_at_origin", "basin_width",
           "average_sharpness", "worst_case_sharpness", "keskar_sharpness", "origin_index", "loss_rise_at_edge"]


# ----------------------------------------------------------------------------- from scans


@dataclass
class CurvatureFit(JsonResult):
    """Quadratic fit at the origin. ``curvature``: κ = L''(0) (1D) or the largest eigenvalue of K
    (2D); ``hessian``: K ``[2, 2]`` (2D only); ``coefficients``: (c₀, c₁, κ) or (c₀, gx, gy, Kxx, Kxy, Kyy)."""

    curvature: float
    coefficients: np.ndarray
    window: float
    n_points: int
    rms_residual: float
    hessian: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _curve_arrays(curve: Curve | np.ndarray, values: np.ndarray | None, metric: str) -> tuple[np.ndarray, np.ndarray, dict]:
    if isinstance(curve, Curve):
        return curve.alphas, curve.values[metric], dict(curve.meta)
    if values is None:
        raise TypeError("give a Curve, or alphas and values arrays.")
    a, v = np.asarray(curve, float).reshape(-1), np.asarray(values, float).reshape(-1)
    if a.shape != v.shape:
        raise ValueError(f"alphas {a.shape} and values {v.shape} differ in length.")
    return a, v, {}


def origin_index(alphas: np.ndarray) -> int:
    """The index of α = 0 in a scan's coordinates.

    Raises:
        ValueError: if 0 is not a grid point (e.g. an even number of points on [-R, R]); build
            the coordinates with :func:`landscape.scans.coefficients`, which always includes 0.
    """
    a = np.asarray(alphas, float).reshape(-1)
    hits = np.flatnonzero(a == 0.0)
    if hits.size == 0:
        raise ValueError(f"the scan has no point at α = 0 (its {a.size} coefficients run {a.min():g}…{a.max():g}); "
                         "use landscape.scans.coefficients(lo, hi, n), which includes the origin.")
    return int(hits[0])


def loss_rise_at_edge(curve: Curve | np.ndarray, values: np.ndarray | None = None, metric: str = "loss") -> float:
    """max(L(α_first), L(α_last)) − L(0): how far the loss climbs from the origin to the range's ends."""
    a, v, _ = _curve_arrays(curve, values, metric)
    return float(np.nanmax(v[[0, -1]]) - v[origin_index(a)])


def _default_window(dist: np.ndarray, need: int) -> float:
    """The smallest radius holding ``need`` finite points (all of them if fewer)."""
    d = np.sort(dist)
    return float(d[min(need, d.size) - 1])


def curvature_at_origin(curve: Curve | Surface | np.ndarray, values: np.ndarray | None = None, window: float | None = None,
                        metric: str = "loss", ys: np.ndarray | None = None) -> CurvatureFit:
    """Fit a quadratic to the points within ``window`` of the origin and return its curvature.

    Args:
        curve: a :class:`Curve` or :class:`Surface`, or the coordinates (``alphas``; for a surface
            ``xs`` with ``ys=`` and ``values [ny, nx]``).
        window: radius (max |α|, or Euclidean in the plane) of the fitted points; default the
            smallest radius holding 5 finite points (1D) or 9 (2D).
    """
    if isinstance(curve, Surface) or ys is not None:
        return _curvature_2d(curve, values, window, metric, ys)
    a, v, meta = _curve_arrays(curve, values, metric)
    ok = np.isfinite(v)
    if ok.sum() < 3:
        raise ValueError(f"a quadratic fit needs at least 3 finite points, got {int(ok.sum())}.")
    a, v = a[ok], v[ok]
    window = _default_window(np.abs(a), 5) if window is None else float(window)
    sel = np.abs(a) <= window * (1 + 1e-9)  # grid coordinates carry rounding
    if sel.sum() < 3:
        raise ValueError(f"only {int(sel.sum())} points lie within window={window}; widen it (need 3).")
    c2, c1, c0 = np.polyfit(a[sel], v[sel], 2)
    resid = v[sel] - np.polyval([c2, c1, c0], a[sel])
    return CurvatureFit(float(2 * c2), np.array([c0, c1, 2 * c2]), window, int(sel.sum()),
                        float(np.sqrt(np.mean(resid**2))), meta={"metric": metric, "scan": _scan_meta(meta)})


def _scan_meta(meta: dict) -> dict:
    return {k: meta[k] for k in ("directions", "identity") if k in meta}


def _curvature_2d(surface: Any, values: Any, window: float | None, metric: str, ys: Any) -> CurvatureFit:
    if isinstance(surface, Surface):
        xs, ys, z, meta = surface.xs, surface.ys, surface.values[metric], dict(surface.meta)
    else:
        xs, z, meta = np.asarray(surface, float), np.asarray(values, float), {}
        ys = np.asarray(ys, float)
    gx, gy = np.meshgrid(xs, ys)
    if z.shape != gx.shape:
        raise ValueError(f"values have shape {z.shape}, the grid needs [ny, nx] = {gx.shape}.")
    ok = np.isfinite(z)
    x, y, v = gx[ok], gy[ok], z[ok]
    r = np.hypot(x, y)
    window = _default_window(r, 9) if window is None else float(window)
    sel = r <= window * (1 + 1e-9)
    if sel.sum() < 6:
        raise ValueError(f"only {int(sel.sum())} points lie within window={window}; a 2D quadratic needs 6.")
    x, y, v = x[sel], y[sel], v[sel]
    design = np.stack([np.ones_like(x), x, y, 0.5 * x**2, x * y, 0.5 * y**2], 1)
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    k = np.array([[coef[3], coef[4]], [coef[4], coef[5]]])
    resid = v - design @ coef
    return CurvatureFit(float(np.linalg.eigvalsh(k)[-1]), coef, window, int(sel.sum()), float(np.sqrt(np.mean(resid**2))),
                        hessian=k, meta={"metric": metric, "scan": _scan_meta(meta)})


@dataclass
class BasinWidth(JsonResult):
    """Width of the sublevel set {L ≤ threshold} around the minimum of a 1D curve.

    ``width`` = right − left; ``inf`` when a side is not crossed inside the scanned range (then
    ``crossed_left``/``crossed_right`` say which), ``nan`` with ``below_threshold=False`` when even
    the minimum lies above the threshold."""

    width: float
    left: float
    right: float
    threshold: float
    minimum_at: float
    minimum: float
    crossed_left: bool
    crossed_right: bool
    below_threshold: bool = True
    meta: dict[str, Any] = field(default_factory=dict)


def _crossing(a0: float, v0: float, a1: float, v1: float, t: float) -> float:
    return a0 + (t - v0) * (a1 - a0) / (v1 - v0) if v1 != v0 else a1


def basin_width(curve: Curve | np.ndarray, values: np.ndarray | None = None, threshold: float | None = None,
                delta: float | None = None, metric: str = "loss") -> BasinWidth:
    """Distance between the threshold crossings left and right of the curve's minimum.

    Give ``threshold`` (absolute) or ``delta`` (threshold = min + delta). Non-finite points count
    as above any threshold. A :class:`Surface` gives the width along its x line through y = 0;
    for another line pass its arrays (``surface.xs``, ``surface.values[metric][iy]``).
    """
    if isinstance(curve, Surface):
        iy = int(np.argmin(np.abs(curve.ys)))
        a, v, meta = curve.xs, curve.values[metric][iy], {"line": f"y={curve.ys[iy]}"}
    else:
        a, v, meta = _curve_arrays(curve, values, metric)
        meta = {"scan": _scan_meta(meta)}  # type: ignore[dict-item]
    order = np.argsort(a)
    a, v = a[order], np.where(np.isfinite(v[order]), v[order], np.inf)
    if not np.isfinite(v).any():
        raise ValueError("the curve has no finite value.")
    if (threshold is None) == (delta is None):
        raise ValueError("give exactly one of threshold= (absolute loss) or delta= (above the minimum).")
    i = int(np.argmin(v))
    t = float(v[i] + delta) if threshold is None else float(threshold)
    if v[i] > t:
        return BasinWidth(float("nan"), float("nan"), float("nan"), t, float(a[i]), float(v[i]), False, False, False, meta)
    left, right, cl, cr = float(a[0]), float(a[-1]), False, False
    for j in range(i, 0, -1):
        if v[j - 1] > t:
            left, cl = (_crossing(a[j], v[j], a[j - 1], v[j - 1], t) if np.isfinite(v[j - 1]) else float(a[j])), True
            break
    for j in range(i, len(a) - 1):
        if v[j + 1] > t:
            right, cr = (_crossing(a[j], v[j], a[j + 1], v[j + 1], t) if np.isfinite(v[j + 1]) else float(a[j])), True
            break
    width = right - left if cl and cr else float("inf")
    return BasinWidth(width, left, right, t, float(a[i]), float(v[i]), cl, cr, True, meta)


# ----------------------------------------------------------------------------- from the model


@dataclass
class SharpnessResult(JsonResult):
    """``value``: the sharpness; ``stderr`` (average-case only); ``loss0``: L(θ); ``losses``: the
    perturbed losses per sample or per ascent step; ``meta``: ρ/ε, steps, step size, seeds,
    sample counts, mask, objective, versions."""

    value: float
    loss0: float
    losses: np.ndarray
    stderr: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class _Perturber:
    """θ₀ + δ on the selected tensors, data loss and gradient, exact restore."""

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], params: Selection) -> None:
        self.space, mask = select(model, params)
        check_finite_weights(model)
        self.names = mask.names if mask is not None else self.space.names
        self.model, self.objective = model, objective
        self.prepared = objective.prepare_data(model, data)
        self.n_terms = sum(int(objective.term_counts(p).sum()) for p in self.prepared)
        if self.n_terms == 0:
            raise ValueError("data holds no loss term (every label is -100 / no example).")
        self.perturbation = Perturbation({n: self.space.params[n] for n in self.names})
        self.params, self.theta0 = self.perturbation.tensors, self.perturbation.theta0
        self.mask = None if mask is None or mask.granularity == "tensor" else [mask.masks[n].to(p.device) for n, p in zip(self.names, self.params)]
        self.n_evaluations = 0
        self.meta = {"n_params": int(sum(p.numel() for p in self.params)) if mask is None else mask.count(),
                     "mask": None if mask is None else {"granularity": mask.granularity, "count": mask.count(), "fraction": mask.fraction},
                     "objective": objective.describe(), "n_terms": self.n_terms, "versions": util.versions()}

    def masked(self, ts: list[Tensor]) -> list[Tensor]:
        if self.mask is None:
            return ts
        return [t * m for t, m in zip(ts, self.mask)]

    def randn(self, seed: int) -> list[Tensor]:
        return self.masked(list(vectors.randn_like(dict(zip(self.names, self.theta0)), seed).values()))

    def set(self, delta: list[Tensor] | None) -> None:
        """θ ← θ₀ + δ on the selected tensors."""
        self.perturbation.set_delta(delta)

    def loss(self, grad: bool = False) -> tuple[float, list[Tensor] | None]:
        self.n_evaluations += 1
        total = 0.0
        grads: list[Tensor] = [torch.zeros_like(t) for t in self.theta0] if grad else []
        with torch.set_grad_enabled(grad):
            for p in self.prepared:
                s, _ = self.objective.loss_sum(self.model, p)
                if grad:
                    gs = torch.autograd.grad(s / self.n_terms, self.params, allow_unused=True)
                    torch._foreach_add_(grads, [g if g is not None else torch.zeros_like(t) for g, t in zip(gs, self.theta0)])
                total += float(s.detach().double())
        return total / self.n_terms, (self.masked(grads) if grad else None)


def _run_perturber(pert: _Perturber, body) -> Any:
    with pert.perturbation, util.deterministic_eval(pert.model):
        return body()


def average_sharpness(model: nn.Module, objective: Objective, data: Iterable[Any], *, rho: float, num_samples: int = 16,
                      adaptive: bool = False, params: Selection = None, seed: int = 0,
                      progress: bool = True) -> SharpnessResult:
    """E[L(θ+δ)] − L(θ) with δ = ρ·z (or ρ·|θ|⊙z if ``adaptive``), z ~ N(0, I) on the selected
    coordinates; sample s uses seed ``seed + s``. For a quadratic L with Hessian A the expectation is
    ½ρ²·tr(A) (adaptive: ½ρ²·Σᵢ Aᵢᵢθᵢ²)."""
    if not rho > 0 or num_samples < 1:
        raise ValueError(f"need rho > 0 and num_samples ≥ 1, got rho={rho}, num_samples={num_samples}.")
    pert = _Perturber(model, objective, data, params)
    from tqdm.auto import tqdm

    def body() -> SharpnessResult:
        pert.set(None)
        l0, _ = pert.loss()
        check_finite_loss(l0)
        scale = [t.abs() * rho for t in pert.theta0] if adaptive else None
        losses = []
        for s in tqdm(range(num_samples), desc="average sharpness", disable=not progress, leave=False):
            z = pert.randn(seed + s)
            delta = list(torch._foreach_mul(z, scale) if scale is not None else torch._foreach_mul(z, float(rho)))
            pert.set(delta)
            losses.append(pert.loss()[0])
        arr = np.array(losses)
        stderr = float(arr.std(ddof=1) / np.sqrt(num_samples)) if num_samples > 1 else float("nan")
        meta = {"kind": "average", "rho": rho, "adaptive": adaptive, "n_samples": num_samples, "seeds": [seed, seed + num_samples - 1],
                "distribution": "gaussian", **pert.meta}
        return SharpnessResult(float(arr.mean() - l0), l0, arr, stderr, meta)

    return _run_perturber(pert, body)


def _ascent(pert: _Perturber, scale: list[Tensor] | None, project, init: list[Tensor], steps: int, step, kind: str,
            progress: bool) -> tuple[float, np.ndarray, float]:
    """Projected ascent on u with δ = s⊙u; returns (L(θ), losses per iterate, best loss)."""
    from tqdm.auto import tqdm

    pert.set(None)
    l0, _ = pert.loss()
    check_finite_loss(l0)
    u = project(init)
    losses = []
    for _ in tqdm(range(steps + 1), desc=f"{kind} sharpness", disable=not progress, leave=False):
        pert.set(list(torch._foreach_mul(u, scale)) if scale is not None else u)
        value, g = pert.loss(grad=True)
        assert g is not None  # loss(grad=True) returns the gradient
        losses.append(value)
        if len(losses) == steps + 1:
            break
        gu = list(torch._foreach_mul(g, scale)) if scale is not None else g
        u = project(step(u, gu))
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
        n = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(u))))
        return u if n <= rho else list(torch._foreach_mul(u, rho / n))

    def step(u: list[Tensor], g: list[Tensor]) -> list[Tensor]:
        n = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(g))))
        return u if n == 0 else list(torch._foreach_add(u, g, alpha=eta / n))

    def body() -> SharpnessResult:
        z = pert.randn(seed)
        zn = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(z))))
        l0, losses, best = _ascent(pert, scale, project, list(torch._foreach_mul(z, rho / zn)), steps, step, "worst-case", progress)
        meta = {"kind": "worst_case", "rho": rho, "adaptive": adaptive, "steps": steps, "step_size": eta, "seed": seed,
                "init": "random point on the rho-sphere", "n_gradients": steps + 1, **pert.meta}
        return SharpnessResult(best - l0, l0, losses, None, meta)

    return _run_perturber(pert, body)


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

    def body() -> SharpnessResult:
        g = torch.Generator().manual_seed(int(seed))
        init = [(torch.rand(t.shape, generator=g, dtype=torch.float64) * 2 - 1).to(t) for t in pert.theta0]
        l0, losses, best = _ascent(pert, bound, project, init, steps, step, "keskar", progress)
        meta = {"kind": "keskar", "eps": eps, "steps": steps, "step_size": step_size, "seed": seed,
                "raw_max_increase": best - l0, "init": "uniform in the box", "n_gradients": steps + 1, **pert.meta}
        return SharpnessResult(100.0 * (best - l0) / (1.0 + l0), l0, losses, None, meta)

    return _run_perturber(pert, body)


# ----------------------------------------------------------------------------- with per-example losses
#
# The two functions below work from per-example loss sums (landscape.scans.points.ExampleLosses),
# so every number they give can be bootstrapped over the evaluation examples.

__all__ += ["DirectionalCurvature", "second_difference", "directional_curvature", "BracketedWidth",
            "basin_width_bracketed"]


def second_difference(plus: Any, minus: Any, center: Any, step: float) -> np.ndarray:
    """(f(+h) + f(−h) − 2f(0)) / h², elementwise: the central estimate of f''(0).

    Truncation error h²·f''''(0)/12; rounding error about 4ε|f|/h² (ε the float precision of f).
    """
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}.")
    return (np.asarray(plus, np.float64) + np.asarray(minus, np.float64) - 2.0 * np.asarray(center, np.float64)) / step**2


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


def directional_curvature(model: nn.Module, objective: Objective, data: Iterable[Any], direction: Any, *,
                          step: float = 0.01, evaluator: Any = None,
                          origin: np.ndarray | None = None) -> DirectionalCurvature:
    """dᵀHd of the data loss L = Σsᵢ/Σnᵢ along ``direction`` by a central second difference.

    Costs two forward passes over the data (three without ``origin``), against one Hessian-vector
    product (about 3–4 gradients) for the exact dᵀ(Hd). ``step`` h is in units of d: for a
    filter-normalized d (‖d‖ ≈ ‖θ‖) h = 0.01 moves each filter by 1 % of its norm, small against the
    scale over which L bends and large enough that float32 rounding stays below 1e-3 relative on
    a pool of ~100 sequences.

    Args:
        evaluator: a :class:`landscape.scans.points.ExampleLosses` on the same model, objective and
            data, reused to avoid preparing the data again (``data`` is then ignored).
        origin: per-example sums at θ₀ ``[n]``, if already evaluated.
    """
    from landscape.scans.points import ExampleLosses

    ev = evaluator if evaluator is not None else ExampleLosses(model, objective, data)
    s0 = ev.origin() if origin is None else np.asarray(origin, np.float64)
    plus, minus = ev.at([direction], [[step], [-step]])
    c = second_difference(plus, minus, s0, step)
    value = float(c.sum() / ev.counts.sum())
    norm = float(vectors.norm({k: v.double() for k, v in direction.items()}))
    meta = {"estimator": "central second difference", "n_forward": 2 if origin is not None else 3,
            "n_examples": ev.n_examples, "n_terms": int(ev.counts.sum()), "objective": objective.describe()}
    return DirectionalCurvature(value, c, ev.counts.copy(), float(step), norm, value / norm**2 if norm > 0 else float("nan"), meta)


@dataclass
class BracketedWidth(JsonResult):
    """Basin width along a line, searched outward from the origin until the loss crosses ``threshold``.

    ``right`` / ``left``: the crossing coefficients (α > 0 and α < 0), or the farthest α evaluated
    when that side never crossed (``crossed_right`` / ``crossed_left`` False). ``width`` = right −
    left when both crossed, else ``inf``; ``lower_bound`` = right − left always, so a censored
    width reads "> lower_bound". ``n_evaluations``: losses computed beyond the given points."""

    width: float
    lower_bound: float
    left: float
    right: float
    crossed_left: bool
    crossed_right: bool
    threshold: float
    n_evaluations: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def censored(self) -> bool:
        return not (self.crossed_left and self.crossed_right)


def basin_width_bracketed(loss_at: Any, *, threshold: float, alphas: Any = (), values: Any = (),
                          max_alpha: float = 16.0, growth: float = 2.0, refine: int = 3) -> BracketedWidth:
    """Width of {α : L(α) < threshold} around α = 0, with the censoring made explicit.

    On each side, the known points (``alphas``, ``values``: e.g. a scanned curve) are walked outward
    from 0; the first one at or above ``threshold`` brackets the crossing. If none does, the line
    is extended geometrically (α ← growth·α, one ``loss_at(α)`` each) up to ``max_alpha``. A bracket
    is narrowed by ``refine`` bisection steps and the crossing interpolated linearly inside it.
    A side that never crosses is *censored*: its reach is a lower bound, never dropped or averaged.

    Args:
        loss_at: callable α -> L(θ₀ + αd) (float).
        threshold: the loss level, e.g. L(θ₀) + 1 nat; L(0) must lie below it.
    """
    a = np.asarray(alphas, np.float64).reshape(-1)
    v = np.asarray(values, np.float64).reshape(-1)
    if a.shape != v.shape:
        raise ValueError(f"alphas {a.shape} and values {v.shape} differ in length.")
    if not growth > 1 or not max_alpha > 0:
        raise ValueError(f"need growth > 1 and max_alpha > 0, got growth={growth}, max_alpha={max_alpha}.")
    known = dict(zip(a.tolist(), v.tolist()))
    n_eval = 0

    def f(x: float) -> float:
        nonlocal n_eval
        if x not in known:
            known[x] = float(loss_at(x))
            n_eval += 1
        val = known[x]
        return val if np.isfinite(val) else float("inf")

    if not f(0.0) < threshold:
        raise ValueError(f"the loss at the origin ({f(0.0):.4g}) is not below the threshold {threshold:.4g}.")

    def side(sign: float) -> tuple[float, bool]:
        pts = sorted((x for x in known if sign * x > 0), key=abs)
        inside = 0.0
        for x in pts:
            if f(x) >= threshold:
                return _refine(inside, x)
            inside = x
        x = inside if inside != 0.0 else sign * min(1.0, max_alpha)
        while abs(x) <= max_alpha * (1 + 1e-12):
            if f(x) >= threshold:
                return _refine(inside, x)
            inside, x = x, x * growth
        return inside, False

    def _refine(lo: float, hi: float) -> tuple[float, bool]:
        for _ in range(refine):
            mid = 0.5 * (lo + hi)
            if f(mid) >= threshold:
                hi = mid
            else:
                lo = mid
        flo, fhi = f(lo), f(hi)
        if not np.isfinite(fhi) or fhi == flo:
            return hi, True
        return lo + (threshold - flo) * (hi - lo) / (fhi - flo), True

    right, cr = side(1.0)
    left, cl = side(-1.0)
    bound = right - left
    return BracketedWidth(bound if (cl and cr) else float("inf"), bound, left, right, cl, cr, float(threshold), n_eval,
                          {"max_alpha": max_alpha, "growth": growth, "refine": refine})
