"""Sharpness metrics against closed forms on quadratics; fits on arrays and reference surfaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import reference_file
from landscape import util, sharpness
from landscape.params import ParamMask, ParamSpace
from landscape.scans.runner import Curve, Surface
from references import Quadratic, quadratic_data, quadratic_objective, spd

OBJ, DATA = quadratic_objective(), quadratic_data()


def test_curvature_fit_recovers_second_derivative_1d_and_2d():
    a = np.linspace(-1, 1, 21)
    v = 2.0 + 0.3 * a + 0.5 * 4.0 * a**2 + 5.0 * a**4  # quartic term: only a small window is quadratic
    fit = sharpness.curvature_at_origin(a, v, window=0.1)
    assert fit.curvature == pytest.approx(4.0 + 10 * 0.1**2, rel=1e-9) and fit.n_points == 3  # 3-point fit: κ + 10h² and fit.window == 0.1
    wide = sharpness.curvature_at_origin(Curve(a, {"loss": v}, np.ones(21, bool)), window=1.0)
    assert abs(wide.curvature - 4.0) > abs(fit.curvature - 4.0)
    xs, ys = np.linspace(-1, 1, 7), np.linspace(-0.5, 0.5, 5)
    gx, gy = np.meshgrid(xs, ys)
    K = np.array([[3.0, 0.5], [0.5, 1.0]])
    z = 1.0 + 0.5 * (K[0, 0] * gx**2 + 2 * K[0, 1] * gx * gy + K[1, 1] * gy**2)
    surf = Surface(xs, ys, {"loss": z}, np.ones_like(z, bool))
    fit2 = sharpness.curvature_at_origin(surf, window=2.0)
    np.testing.assert_allclose(fit2.hessian, K, atol=1e-10)
    assert fit2.curvature == pytest.approx(np.linalg.eigvalsh(K)[-1])
    with pytest.raises(ValueError, match="widen"):
        sharpness.curvature_at_origin(a, v, window=0.01)


def test_basin_width_interpolates_crossings_and_flags_open_sides():
    a = np.linspace(-2, 2, 41)
    v = a**2  # {a² ≤ 1}: width 2, crossings at ±1
    w = sharpness.basin_width(a, v, threshold=1.0)
    assert w.width == pytest.approx(2.0, abs=1e-12) and w.crossed_left and w.crossed_right
    w = sharpness.basin_width(a, v, delta=0.5)
    assert w.width == pytest.approx(2 * np.sqrt(0.5), abs=0.02)
    open_right = sharpness.basin_width(a, np.minimum(v, 1.0) * (a < 0) + 0.0 * (a >= 0), threshold=0.5)
    assert open_right.width == np.inf and open_right.crossed_left and not open_right.crossed_right
    high = sharpness.basin_width(a, v + 5, threshold=1.0)
    assert np.isnan(high.width) and not high.below_threshold
    with pytest.raises(ValueError, match="exactly one"):
        sharpness.basin_width(a, v)


def test_reference_surface_metrics_run():

    surf = Surface.from_h5(reference_file())
    fit = sharpness.curvature_at_origin(surf)
    assert np.isfinite(fit.curvature) and fit.n_points >= 6
    w = sharpness.basin_width(surf, delta=1.0)
    assert w.width > 0


def _model(adaptive_center=False):
    A = spd(6, 0, eigs=[5, 2, 1, 1, 0.5, 0.2])
    c = torch.tensor([1.0, -2, 3, 0.5, 1, -1], dtype=torch.float64) if adaptive_center else torch.zeros(6, dtype=torch.float64)
    return Quadratic(A, c, c.clone()), A, c


def test_average_sharpness_matches_half_rho_squared_trace():
    model, A, c = _model(adaptive_center=True)
    before = util.weights_fingerprint(model)
    res = sharpness.average_sharpness(model, OBJ, DATA, rho=0.1, num_samples=400, progress=False)
    exact = 0.5 * 0.01 * float(torch.trace(A))
    assert abs(res.value - exact) < 4 * res.stderr and res.stderr < 0.15 * exact
    ada = sharpness.average_sharpness(model, OBJ, DATA, rho=0.1, num_samples=400, adaptive=True, progress=False)
    exact_ada = 0.5 * 0.01 * float((torch.diag(A) * c**2).sum())
    assert abs(ada.value - exact_ada) < 4 * ada.stderr
    assert res.meta["settings"]["n_samples"] == 400 and res.meta["settings"]["seeds"] == [0, 399] and util.weights_fingerprint(model) == before


def test_worst_case_sharpness_reaches_the_top_eigenvalue_bound():
    model, A, c = _model()
    res = sharpness.worst_case_sharpness(model, OBJ, DATA, rho=0.1, steps=30, adaptive=False, progress=False)
    bound = 0.5 * 0.01 * 5.0
    assert res.value <= bound * (1 + 1e-9) and res.value == pytest.approx(bound, rel=1e-3)
    model, A, c = _model(adaptive_center=True)
    ada = sharpness.worst_case_sharpness(model, OBJ, DATA, rho=0.1, steps=40, adaptive=True, progress=False)
    S = torch.diag(c.abs())
    bound = 0.5 * 0.01 * float(torch.linalg.eigvalsh(S @ A @ S)[-1])
    assert ada.value <= bound * (1 + 1e-9) and ada.value == pytest.approx(bound, rel=1e-3)
    assert ada.meta["settings"]["steps"] == 40 and ada.meta["settings"]["step_size"] == 0.1 and torch.equal(model.w.detach(), c.double())


def test_keskar_sharpness_on_a_diagonal_quadratic_hits_the_box_corner():
    d = torch.tensor([3.0, 1, 0.5, 2, 1, 1], dtype=torch.float64)
    c = torch.tensor([1.0, -2, 3, 0.5, 1, -1], dtype=torch.float64)
    model = Quadratic(torch.diag(d), c, c.clone())
    res = sharpness.keskar_sharpness(model, OBJ, DATA, eps=0.01, steps=10, progress=False)
    b = 0.01 * (c.abs() + 1)
    exact = 100 * float(0.5 * (d * b**2).sum()) / (1 + 0.0)
    assert res.value == pytest.approx(exact, rel=1e-9)
    start = Quadratic(torch.diag(d), c, c + 1.0)  # L(θ) = ½Σdᵢ: normalized by 1 + L(θ)
    res2 = sharpness.keskar_sharpness(start, OBJ, DATA, eps=0.01, steps=10, progress=False)
    l0 = 0.5 * float(d.sum())
    b2 = 0.01 * ((c + 1).abs() + 1)  # the box scales with |θ|, here θ = c + 1
    raw = 0.5 * float((d * ((1 + b2) ** 2 - 1)).sum())  # every coordinate grows away from the centre
    assert res2.loss0 == pytest.approx(l0) and res2.value == pytest.approx(100 * raw / (1 + l0), rel=1e-9)


def test_masked_sharpness_moves_only_the_mask():
    d = torch.tensor([3.0, 1, 0.5, 2, 1, 1], dtype=torch.float64)
    model = Quadratic(torch.diag(d), torch.zeros(6), torch.zeros(6))
    space = ParamSpace(model)
    sel = torch.tensor([True, False, False, True, False, False])
    mask = ParamMask(space, {"w": sel})
    res = sharpness.keskar_sharpness(model, OBJ, DATA, eps=0.1, steps=10, params=mask, progress=False)
    assert res.value == pytest.approx(100 * 0.5 * float((d[sel] * 0.01).sum()), rel=1e-9)
    assert res.meta["mask"]["count"] == 2
    wc = sharpness.worst_case_sharpness(model, OBJ, DATA, rho=0.1, steps=30, adaptive=False, params=mask, progress=False)
    assert wc.value == pytest.approx(0.5 * 0.01 * 3.0, rel=1e-3)
    with pytest.raises(ValueError, match="rho"):
        sharpness.average_sharpness(model, OBJ, DATA, rho=0.0)


def test_an_even_number_of_points_still_measures_from_the_origin():
    """Defect: analyses took α = 0 to be at index n//2, which for an even count is a neighbour."""
    from landscape.scans import coefficients

    a = coefficients(-1.0, 1.0, 4)
    assert a.tolist() == sorted(a.tolist()) and 0.0 in a and a.size == 5
    assert coefficients(-1.0, 1.0, 5).tolist() == np.linspace(-1, 1, 5).tolist()
    with pytest.raises(ValueError, match="no point at α = 0"):
        sharpness.origin_index(np.linspace(-1, 1, 4))
    v = 3.0 + a**2
    assert sharpness.loss_rise_at_edge(a, v) == pytest.approx(1.0)  # max(L(±1)) − L(0)
    assert sharpness.loss_rise_at_edge(np.linspace(-1, 1, 5), 3.0 + np.linspace(-1, 1, 5) ** 2) == pytest.approx(1.0)
