"""Sharpness from scans: numbers in, numbers out (they also take arrays, e.g. the reference HDF5 surfaces).

* :func:`curvature_at_origin`: second derivative at α = 0 of a quadratic least-squares fit
  L(α) ≈ c₀ + c₁α + ½κα² to the points with |α| ≤ window (for a surface, the 2×2 Hessian of
  L(x, y) ≈ c₀ + gᵀz + ½zᵀKz in the plane);
* :func:`basin_width`: distance between the crossings of a loss threshold left and right of the
  minimum, linearly interpolated;
* :func:`loss_rise_at_edge`: max(L(α_first), L(α_last)) − L(0);
* :func:`basin_width_bracketed`: a basin width searched beyond the scanned range through a
  callable α → L(θ₀ + αd), censored (a lower bound) rather than NaN when the loss never crosses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landscape.scans.results import Curve, Surface
from landscape.util.results import JsonResult

__all__ = ["CurvatureFit", "BasinWidth", "BracketedWidth", "curvature_at_origin", "basin_width",
           "basin_width_bracketed", "origin_index", "loss_rise_at_edge"]


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


def _curve_arrays(curve: Curve | np.ndarray, values: np.ndarray | None,
                  metric: str) -> tuple[np.ndarray, np.ndarray, dict]:
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


def curvature_at_origin(curve: Curve | Surface | np.ndarray, values: np.ndarray | None = None,
                        window: float | None = None, metric: str = "loss",
                        ys: np.ndarray | None = None) -> CurvatureFit:
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
    rms = float(np.sqrt(np.mean(resid**2)))
    return CurvatureFit(float(np.linalg.eigvalsh(k)[-1]), coef, window, int(sel.sum()), rms,
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
        nan = float("nan")
        return BasinWidth(nan, nan, nan, t, float(a[i]), float(v[i]), False, False, False, meta)
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


class _LineSearch:
    """Memoized L(α) along one line, with the bracketing walk and the bisection of a crossing."""

    def __init__(self, loss_at: Callable[..., float], known: dict[float, float], threshold: float,
                 max_alpha: float, growth: float, refine: int) -> None:
        self.loss_at, self.known, self.threshold = loss_at, known, threshold
        self.max_alpha, self.growth, self.refine = max_alpha, growth, refine
        self.n_evaluations = 0

    def f(self, x: float) -> float:
        """L(x), evaluated once; non-finite reads as +inf (above any threshold)."""
        if x not in self.known:
            self.known[x] = float(self.loss_at(x))
            self.n_evaluations += 1
        val = self.known[x]
        return val if np.isfinite(val) else float("inf")

    def side(self, sign: float) -> tuple[float, bool]:
        """(crossing or farthest α reached, crossed?) on the side ``sign`` of the origin."""
        inside = 0.0
        for x in sorted((x for x in self.known if sign * x > 0), key=abs):
            if self.f(x) >= self.threshold:
                return self.bisect(inside, x)
            inside = x
        x = inside if inside != 0.0 else sign * min(1.0, self.max_alpha)
        while abs(x) <= self.max_alpha * (1 + 1e-12):
            if self.f(x) >= self.threshold:
                return self.bisect(inside, x)
            inside, x = x, x * self.growth
        return inside, False

    def bisect(self, lo: float, hi: float) -> tuple[float, bool]:
        """Narrow the bracket [lo, hi] ``refine`` times, then interpolate the crossing linearly."""
        for _ in range(self.refine):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if self.f(mid) >= self.threshold else (mid, hi)
        flo, fhi = self.f(lo), self.f(hi)
        if not np.isfinite(fhi) or fhi == flo:
            return hi, True
        return lo + (self.threshold - flo) * (hi - lo) / (fhi - flo), True


def basin_width_bracketed(loss_at: Callable[..., float], *, threshold: float, alphas: Any = (), values: Any = (),
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
    line = _LineSearch(loss_at, dict(zip(a.tolist(), v.tolist())), float(threshold), max_alpha, growth, refine)
    if not line.f(0.0) < threshold:
        raise ValueError(f"the loss at the origin ({line.f(0.0):.4g}) is not below the threshold {threshold:.4g}.")
    right, cr = line.side(1.0)
    left, cl = line.side(-1.0)
    bound = right - left
    return BracketedWidth(bound if (cl and cr) else float("inf"), bound, left, right, cl, cr, float(threshold),
                          line.n_evaluations, {"max_alpha": max_alpha, "growth": growth, "refine": refine})
