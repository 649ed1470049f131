"""Scans with ``compile=True``: compiled and eager values agree, the fallback warns once, bad input."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_classification_data, make_mlp
from landscape import objectives, scans
from landscape.scans import directions

CE = objectives.Criterion(nn.CrossEntropyLoss())


def _setup():
    model = make_mlp(dtype=torch.float32)
    data = make_classification_data(dtype=torch.float32)
    d1 = directions.random(model, seed=1)
    d2 = directions.random(model, seed=2)
    return model, data, d1, d2


def _compile_unavailable() -> str | None:
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile (dynamo) is not supported on this Python/platform"
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        return "torch.compile needs a C compiler (gcc/cc) for its CPU backend; none found"
    return None


@pytest.mark.slow
def test_compiled_scan_equals_the_eager_scan():
    reason = _compile_unavailable()
    if reason:
        pytest.skip(reason)
    model, data, d1, d2 = _setup()
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    xs = ys = np.linspace(-1.0, 1.0, 4)
    eager = scans.scan_2d(model, CE, data, d1, d2, xs, ys, progress=False, batch_points=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback here
        compiled = scans.scan_2d(model, CE, data, d1, d2, xs, ys, progress=False, compile=True)
    assert compiled.meta["compile"] == "compiled" and eager.meta["compile"] == "off"
    assert compiled.meta["settings"]["compile"] is True
    np.testing.assert_allclose(compiled.values["loss"], eager.values["loss"], rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.training and all(m.training for m in model.modules())


class _Broken(nn.Module):
    """What a failing torch.compile returns: a module whose call raises (as a missing compiler does)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        raise RuntimeError("InductorError: no working C compiler\nsecond line")


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    model, data, d1, _ = _setup()
    alphas = np.linspace(-1.0, 1.0, 5)
    eager = scans.scan_1d(model, CE, data, d1, alphas, progress=False)
    monkeypatch.setattr(torch, "compile", lambda m, **_: _Broken(m))
    with pytest.warns(RuntimeWarning, match="fell back to the eager forward") as caught:
        curve = scans.scan_1d(model, CE, data, d1, alphas, progress=False, compile=True)
    assert len([w for w in caught if "fell back" in str(w.message)]) == 1
    assert curve.meta["compile"].startswith("fallback: RuntimeError: InductorError: no working C compiler")
    assert "second line" not in curve.meta["compile"]
    np.testing.assert_array_equal(curve.values["loss"], eager.values["loss"])


def test_compile_with_batched_points_is_refused():
    model, data, d1, _ = _setup()
    with pytest.raises(ValueError, match="compile=True evaluates one point per call"):
        scans.scan_1d(model, CE, data, d1, [0.0, 1.0], progress=False, compile=True, batch_points=4)
    with pytest.raises(ValueError, match="batch_points must be 1 or 'auto'"):
        scans.ScanSettings(compile=True, batch_points=2)
