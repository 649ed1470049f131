"""The flagship analysis end to end on a tiny BERT, with every promised file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analyses.common import Target
from analyses.fisher_sharpness import FisherSharpnessConfig, run
from conftest import make_mlm_batches, make_tiny_bert, mlm_objective

pytestmark = pytest.mark.slow


def _target():
    model = make_tiny_bert(hidden=16, layers=1).eval()
    data = make_mlm_batches(n_batches=3, batch_size=4, seq_len=12)
    return Target(model, None, mlm_objective(0.3), data, "tiny-bert", "mlm")


def _config(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), fisher_examples=6, eval_examples=4, fractions=(0.1, 0.5),
                granularities=("element", "tensor"), seeds=(0, 1), points_1d=7, grid_2d=3, avg_samples=2,
                worst_steps=2, trace_matvecs=3, progress=False)
    base.update(kw)
    return FisherSharpnessConfig(**base)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_runs_end_to_end_and_writes_every_file(tmp_path):
    target = _target()
    before = _state(target.model)
    target.model.train()
    res = run(_config(tmp_path), target)
    out = tmp_path / "run"
    assert all(torch.equal(before[k], v) for k, v in target.model.state_dict().items())
    assert target.model.training
    doc = json.loads((out / "result.json").read_text())
    # documented fields
    assert set(doc) >= {"config", "masks", "verdicts", "fisher", "meta", "out"}
    assert len(doc["masks"]) == 2 * 2 * 3
    for key, entry in doc["masks"].items():
        assert set(entry["metrics"]) >= {"curvature", "basin_width", "avg_sharpness", "worst_sharpness", "top_eigenvalue", "trace"}
        assert entry["metrics"]["curvature"]["n"] == 2
        assert len(entry["per_seed"]) == 2
    # matched sizes across which
    for gran in ("element", "tensor"):
        for frac in ("0.1", "0.5"):
            sizes = {doc["masks"][f"{w}-{gran}-{frac}"]["n_tensors" if gran == "tensor" else "count"] for w in ("top", "random", "bottom")}
            assert len(sizes) == 1
    assert set(doc["verdicts"]) == {"element@0.1", "element@0.5", "tensor@0.1", "tensor@0.5"}
    assert all("summary" in v for v in doc["verdicts"].values())
    assert (out / "fisher.safetensors").exists() and (out / "fisher.json").exists()
    assert len(list((out / "arrays").glob("*_1d.npz"))) == 24 and len(list((out / "arrays").glob("*_2d.npz"))) == 24
    report = (out / "report.md").read_text()
    assert "## Verdict" in report and "element@0.1" in report
    import matplotlib.image as mpimg

    pngs = sorted((out / "figures").glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"fisher", "convergence", "metrics", "curves_element-0.1", "surfaces_tensor-0.5"} <= names
    for p in pngs:
        img = mpimg.imread(p)
        assert img.shape[0] > 200 and img.shape[1] > 300 and np.ptp(img) > 0
        assert f"figures/{p.name}" in report
    assert res.meta["timings"]["total_s"] > 0


def test_resume_reuses_finished_masks(tmp_path, monkeypatch):
    target = _target()
    cfg = _config(tmp_path, fractions=(0.5,), granularities=("tensor",))
    first = run(cfg, target)
    import analyses.fisher_sharpness.study as fs

    calls = []
    monkeypatch.setattr(fs, "_seed_metrics", lambda *a, **k: calls.append(1) or {})
    second = run(_config(tmp_path, fractions=(0.5,), granularities=("tensor",), resume=True), target)
    assert calls == []
    assert second.masks == json.loads(json.dumps(first.masks))


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fractions"):
        _config(tmp_path, fractions=(0.0,))
    with pytest.raises(ValueError, match="granularities"):
        _config(tmp_path, granularities=("row",))
    with pytest.raises(ValueError, match="held-out examples"):
        run(_config(tmp_path, fisher_examples=100), _target())
