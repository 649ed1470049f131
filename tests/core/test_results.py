"""One result protocol: every result has to_dict(); file-like results save(path) and load(path)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_classification_data, make_mlp
from landscape import curvature, fisher, objectives, scans, sharpness
from landscape.scans import directions
from landscape.curvature import MatrixOperator


def _json_roundtrip(obj):
    return json.loads(json.dumps(obj.to_dict()))


def test_curvature_results_round_trip_through_files(tmp_path):
    A = torch.diag(torch.tensor([5.0, 3.0, 1.0, 0.5], dtype=torch.float64))
    op = MatrixOperator(A)
    eig = curvature.top_eigenvalues(op, k=2, tol=1e-8)
    tr = curvature.trace(op, num_matvecs=6, seed=1)
    dens = curvature.spectral_density(op, num_runs=2, lanczos_steps=3, num_grid=50)
    for res in (eig, tr, dens):
        back = type(res).load(res.save(tmp_path / f"{type(res).__name__}.json"))
        assert _json_roundtrip(back) == _json_roundtrip(res)
    assert np.allclose(type(eig).load(tmp_path / "EigenResult.json").values, [5.0, 3.0])
    assert isinstance(type(dens).load(tmp_path / "DensityResult.json").grid, np.ndarray)
    with pytest.raises(ValueError, match="not a TraceResult file"):
        type(tr).load(tmp_path / "EigenResult.json")


def test_scan_sharpness_direction_and_fisher_results(tmp_path):
    model, data = make_mlp(), make_classification_data()
    obj = objectives.Criterion(nn.CrossEntropyLoss())
    d = directions.random(model, seed=0)
    back = directions.Direction.load(d.save(tmp_path / "d.safetensors"), model=model)
    assert back.fingerprint() == d.fingerprint() and back.meta == json.loads(json.dumps(d.meta))
    with pytest.raises(ValueError, match="different model|not match|does not fit|shape"):
        directions.Direction.load(tmp_path / "d.safetensors", model=make_mlp(hidden=7))
    curve = scans.scan_1d(model, obj, data, d, scans.coefficients(-1, 1, 5), progress=False)
    assert _json_roundtrip(curve)["kind"] == "curve" and len(curve.to_dict()["alphas"]) == 5
    fit, width = sharpness.curvature_at_origin(curve), sharpness.basin_width(curve, delta=1e-3)
    avg = sharpness.average_sharpness(model, obj, data, rho=1e-2, num_samples=2, progress=False)
    for res in (fit, width, avg):
        assert type(res).from_dict(_json_roundtrip(res)).to_dict() == _json_roundtrip(res)
    F = fisher.diagonal(model, obj, data, progress=False)
    assert set(F.to_dict()) >= {"meta", "names", "per_tensor_mean", "per_layer_mean", "convergence"}
    assert fisher.FisherDiagonal.load(F.save(tmp_path / "F"), model=model).to_dict() == _json_roundtrip(F)
