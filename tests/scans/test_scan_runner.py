"""Scans: analytic surfaces, grid orientation, exact restore, resume, files, metrics, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import reference_file, make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective
from landscape import objectives, util, scans
from landscape.scans import directions
from landscape.scans.runner import Curve, Surface
from references import Quadratic, quadratic_data, quadratic_objective, spd

N = 5


def _quad_setup(seed=0):
    A = spd(N, seed)
    c = torch.linspace(-1, 1, N, dtype=torch.float64)
    start = c + 0.3
    model = Quadratic(A, c, start)
    g = torch.Generator().manual_seed(seed + 1)
    d1 = {"w": torch.randn(N, generator=g, dtype=torch.float64)}
    d2 = {"w": torch.randn(N, generator=g, dtype=torch.float64)}
    return model, A, c, start, d1, d2


def _analytic(A, c, start, d1, d2, x, y):
    e = start + x * d1["w"] + y * d2["w"] - c
    return float(0.5 * e @ A @ e)


class Counting(objectives.Criterion):
    """Counts forward passes and raises on the ``fail_at``-th one."""

    def __init__(self, fail_at=None):
        super().__init__(nn.L1Loss())
        self.calls, self.fail_at = 0, fail_at

    def forward(self, model, prepared, params=None):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return super().forward(model, prepared, params)


def test_quadratic_surface_on_a_non_square_grid_matches_the_closed_form():
    model, A, c, start, d1, d2 = _quad_setup()
    xs, ys = np.array([-1.0, 0.0, 2.0]), np.array([-0.5, -0.25, 0.0, 0.5, 1.5])
    surf = scans.scan_2d(model, quadratic_objective(), quadratic_data(), d1, d2, xs, ys, progress=False)
    assert surf.values["loss"].shape == (5, 3) and surf.done.all()
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            assert surf.values["loss"][iy, ix] == pytest.approx(_analytic(A, c, start, d1, d2, x, y), rel=1e-12)
    gx, gy = np.meshgrid(xs, ys)
    assert np.array_equal(surf.points()[:, 0], gx.ravel()) and np.array_equal(surf.points()[:, 1], gy.ravel())
    curve = scans.scan_1d(model, quadratic_objective(), quadratic_data(), d1, ys, progress=False)
    assert np.allclose(curve.values["loss"], [_analytic(A, c, start, d1, d2, a, 0.0) for a in ys], rtol=1e-12)
    assert torch.equal(model.w.detach(), start)


def test_batched_points_equal_one_at_a_time():
    model, _, _, _, d1, d2 = _quad_setup()
    xs, ys = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    one = scans.scan_2d(model, quadratic_objective(), quadratic_data(), d1, d2, xs, ys, progress=False)
    many = scans.scan_2d(model, quadratic_objective(), quadratic_data(), d1, d2, xs, ys, progress=False, batch_points=5)
    np.testing.assert_allclose(many.values["loss"], one.values["loss"], rtol=1e-13)
    mlp, data = make_mlp(), make_classification_data()
    obj = objectives.Criterion(nn.CrossEntropyLoss())
    e1, e2 = directions.random(mlp, seed=0), directions.random(mlp, seed=1)
    a = scans.scan_2d(mlp, obj, data, e1, e2, xs, ys, metrics=("loss", "accuracy"), progress=False)
    b = scans.scan_2d(mlp, obj, data, e1, e2, xs, ys, metrics=("loss", "accuracy"), progress=False, batch_points=4)
    np.testing.assert_allclose(b.values["loss"], a.values["loss"], rtol=1e-12)
    np.testing.assert_array_equal(b.values["accuracy"], a.values["accuracy"])


def test_mlm_scan_at_origin_is_the_objective_loss_and_accuracy_is_right():
    model, data, obj = make_tiny_bert(), make_mlm_batches(), mlm_objective()
    before = util.weights_fingerprint(model)
    d = directions.random(model, seed=0)
    curve = scans.scan_1d(model, obj, data, d, [-0.5, 0.0, 0.5], metrics=("loss", "accuracy"), progress=False)
    assert curve.values["loss"][1] == pytest.approx(obj.evaluate(model, data), rel=1e-6)
    assert model.training and util.weights_fingerprint(model) == before
    prepared = obj.prepare_data(model, data)
    correct = total = 0
    with util.deterministic_eval(model), torch.no_grad():
        for p in prepared:
            logits, targets = obj.logits_and_targets(obj.forward(model, p), p)
            keep = targets != -100
            correct += int((logits.argmax(-1)[keep] == targets[keep]).sum())
            total += int(keep.sum())
    assert curve.values["accuracy"][1] == pytest.approx(correct / total)
    meta = curve.meta
    assert meta["directions"][0]["normalization"] == "filter" and meta["identity"]["objective"]["name"] == "masked_lm"
    assert meta["versions"]["torch"] == torch.__version__ and meta["timing"]["points_computed"] == 3


def test_model_bit_identical_after_a_scan_that_raised_midway(tmp_path):
    model, data = make_tiny_bert(), make_mlm_batches()
    model.bert.encoder.layer[0].train(False)  # a mixed train/eval state must survive
    flags = [m.training for m in model.modules()]
    before = util.weights_fingerprint(model)
    obj = mlm_objective()
    calls = {"n": 0}
    original = obj.forward

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("boom")
        return original(*a, **k)

    obj.forward = failing
    d = directions.random(model, seed=0)
    with pytest.raises(RuntimeError, match="boom"):
        scans.scan_1d(model, obj, data, d, np.linspace(-1, 1, 6), path=tmp_path / "c.npz", progress=False)
    assert util.weights_fingerprint(model) == before
    assert [m.training for m in model.modules()] == flags
    partial = Curve.load(tmp_path / "c.npz")  # finished points kept (2 batches per point: 3 done)
    assert partial.n_done == 3 and partial.done[:3].all()


def test_resume_recomputes_no_finished_point_and_equals_the_uninterrupted_scan(tmp_path):
    model, *_rest, d1, d2 = _quad_setup()
    data = quadratic_data(n_batches=1)
    xs, ys = np.linspace(-1, 1, 4), np.linspace(-2, 2, 3)
    full = scans.scan_2d(model, Counting(), data, d1, d2, xs, ys, progress=False)
    crashing = Counting(fail_at=6)
    with pytest.raises(RuntimeError, match="simulated"):
        scans.scan_2d(model, crashing, data, d1, d2, xs, ys, path=tmp_path / "s.npz", progress=False, save_every=1e9)
    saved = Surface.load(tmp_path / "s.npz")
    assert saved.n_done == 5
    again = Counting()
    resumed = scans.scan_2d(model, again, data, d1, d2, xs, ys, path=tmp_path / "s.npz", resume=True, progress=False)
    assert again.calls == 12 - 5 and resumed.meta["n_evaluated_here"] == 7
    np.testing.assert_array_equal(resumed.values["loss"], full.values["loss"])
    assert resumed.done.all() and Surface.load(tmp_path / "s.npz").done.all()
    nothing = Counting()
    scans.scan_2d(model, nothing, data, d1, d2, xs, ys, path=tmp_path / "s.npz", resume=True, progress=False)
    assert nothing.calls == 0
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_refuses_a_mismatched_file(tmp_path):
    model, *_rest, d1, d2 = _quad_setup()
    data = quadratic_data()
    xs = np.linspace(-1, 1, 3)
    path = tmp_path / "s.npz"
    scans.scan_2d(model, quadratic_objective(), data, d1, d2, xs, xs, path=path, progress=False)
    with pytest.raises(ValueError, match="different grid"):
        scans.scan_2d(model, quadratic_objective(), data, d1, d2, xs, np.linspace(-1, 1, 4), path=path, resume=True)
    with pytest.raises(ValueError, match="different directions"):
        scans.scan_2d(model, quadratic_objective(), data, d2, d1, xs, xs, path=path, resume=True)
    other, *_ = _quad_setup(seed=3)
    with pytest.raises(ValueError, match="different model"):
        scans.scan_2d(other, quadratic_objective(), data, d1, d2, xs, xs, path=path, resume=True)
    with pytest.raises(ValueError, match="different data"):
        scans.scan_2d(model, quadratic_objective(), quadratic_data(3), d1, d2, xs, xs, path=path, resume=True)
    with pytest.raises(ValueError, match="holds a surface"):
        scans.scan_1d(model, quadratic_objective(), data, d1, xs, path=path, resume=True)


def test_nonfinite_losses_are_recorded_and_do_not_stop_the_scan():
    model, *_rest, d1, _ = _quad_setup()
    obj = objectives.Criterion(lambda out, t: torch.where(out > 2.0, torch.full_like(out, float("inf")), out).sum())
    alphas = np.linspace(-3, 3, 7)
    curve = scans.scan_1d(model, obj, quadratic_data(), d1, alphas, progress=False)
    assert curve.done.all() and curve.nonfinite.any() and not curve.nonfinite.all()
    assert np.isnan(curve.values["loss"][curve.nonfinite]).all()
    assert np.isfinite(curve.values["loss"][~curve.nonfinite]).all()
    assert curve.meta["nonfinite_points"] == int(curve.nonfinite.sum())


def test_save_load_and_h5_round_trip(tmp_path):
    model, *_rest, d1, d2 = _quad_setup()
    xs, ys = np.linspace(-1, 1, 3), np.linspace(-2, 2, 5)
    surf = scans.scan_2d(model, quadratic_objective(), quadratic_data(), d1, d2, xs, ys, progress=False)
    surf.save(tmp_path / "plain")  # the exact name is kept
    back = Surface.load(tmp_path / "plain")
    assert np.array_equal(back.values["loss"], surf.values["loss"]) and back.meta == surf.meta
    pytest.importorskip("h5py")
    surf.to_h5(tmp_path / "s.h5")
    h5 = Surface.from_h5(tmp_path / "s.h5")
    assert np.array_equal(h5.xs, xs) and np.array_equal(h5.ys, ys)
    np.testing.assert_array_equal(h5.values["loss"], surf.values["loss"])
    curve = Curve(xs, {"loss": np.array([1.0, np.nan, 3.0])}, np.array([True, False, True]))
    curve.to_h5(tmp_path / "c.h5")
    c2 = Curve.from_h5(tmp_path / "c.h5")
    assert c2.done.tolist() == [True, False, True] and c2.values["loss"][2] == 3.0


def test_reference_guided_dropout_surfaces_read_in_meshgrid_order():
    import json

    path = reference_file()
    import h5py

    surf = Surface.from_h5(path)
    with h5py.File(path) as f:
        flat = np.asarray(f["train_loss"][()]).ravel()
    assert surf.values["loss"].shape == (16, 16)
    for k in (0, 1, 17, 255):  # value k sits at (x[k % 16], y[k // 16])
        assert surf.values["loss"][k // 16, k % 16] == flat[k]
    json.dumps(surf.meta)


def test_bad_inputs():
    model, *_rest, d1, d2 = _quad_setup()
    obj, data = quadratic_objective(), quadratic_data()
    with pytest.raises(ValueError, match="empty"):
        scans.scan_1d(model, obj, data, d1, [])
    with pytest.raises(ValueError, match="NaN or infinite"):
        scans.scan_2d(model, obj, data, d1, d2, [0.0, np.inf], [0.0])
    with pytest.raises(ValueError, match="zero everywhere"):
        scans.scan_1d(model, obj, data, {"w": torch.zeros(N, dtype=torch.float64)}, [0.0, 1.0])
    with pytest.raises(ValueError, match="different model"):
        scans.scan_1d(make_mlp(), objectives.Criterion(), make_classification_data(), directions.random(make_mlp(hidden=7)), [0.0])
    with pytest.raises(ValueError, match="shape"):
        scans.scan_1d(model, obj, data, {"w": torch.ones(N + 1, dtype=torch.float64)}, [0.0])
    with pytest.raises(TypeError, match="one-shot iterator"):
        scans.scan_1d(model, obj, iter(data), d1, [0.0, 1.0])
    with pytest.raises(ValueError, match="empty"):
        scans.scan_1d(model, obj, [], d1, [0.0, 1.0])
    with pytest.raises(ValueError, match="metrics"):
        scans.scan_1d(model, obj, data, d1, [0.0], metrics=("accuracy",))
    assert torch.equal(model.w.detach(), _quad_setup()[3])


def test_auto_batch_points_calibrates_on_real_points_and_matches_one_at_a_time():
    mlp, data = make_mlp(), make_classification_data()
    obj = objectives.Criterion(nn.CrossEntropyLoss())
    e1, e2 = directions.random(mlp, seed=0), directions.random(mlp, seed=1)
    before = util.weights_fingerprint(mlp)
    xs = np.linspace(-1, 1, 9)
    one = scans.scan_2d(mlp, obj, data, e1, e2, xs, xs, progress=False, batch_points=1)
    auto = scans.scan_2d(mlp, obj, data, e1, e2, xs, xs, progress=False)  # 81 points: calibrates
    calib = auto.meta["batch_calibration"]
    assert calib["calibrated"] and auto.meta["batch_points"] == calib["picked"] in (1, calib["k_tried"])
    assert auto.meta["timing"]["points_computed"] == 81 and auto.done.all()
    np.testing.assert_allclose(auto.values["loss"], one.values["loss"], rtol=1e-12)
    small = scans.scan_1d(mlp, obj, data, e1, np.linspace(-1, 1, 5), progress=False)
    assert small.meta["batch_points"] == 1 and not small.meta["batch_calibration"]["calibrated"]
    assert util.weights_fingerprint(mlp) == before
    with pytest.raises(ValueError, match="batch_points must be"):
        scans.scan_1d(mlp, obj, data, e1, [0.0, 1.0], progress=False, batch_points="fast")
