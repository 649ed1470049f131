"""The flagship analysis end to end on a tiny BERT: both arms, every promised file, resume safety."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from analyses.common import Target
from analyses.fisher_sharpness import FisherSharpnessConfig, run
from analyses.fisher_sharpness.arms import stratified_random
from conftest import make_mlm_batches, make_tiny_bert, mlm_objective

pytestmark = pytest.mark.slow


def _target():
    model = make_tiny_bert(hidden=16, layers=1).eval()
    data = make_mlm_batches(n_batches=4, batch_size=4, seq_len=12)
    return Target(model, None, mlm_objective(0.3), data, "tiny-bert", "mlm")


def _config(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), fisher_examples=6, eval_examples=10, batch_size=4, fractions=(0.1,),
                seeds=(0, 1, 2), curve_seeds=2, points_1d=5, grid_2d=3, surface_examples=4, trace_matvecs=2, eig_iters=2,
                eig_examples=4, n_boot=200, n_blocks=2, basin_max_alpha=4.0, reference="none", progress=False)
    base.update(kw)
    return FisherSharpnessConfig(**base)


def test_runs_both_arms_end_to_end_and_writes_every_file(tmp_path):
    target = _target()
    before = {k: v.clone() for k, v in target.model.state_dict().items()}
    target.model.train()
    res = run(_config(tmp_path), target)
    out = tmp_path / "run"
    assert all(torch.equal(before[k], v) for k, v in target.model.state_dict().items())
    assert target.model.training
    doc = json.loads((out / "result.json").read_text())
    assert set(doc) >= {"config", "arm_p", "arm_e", "verdict", "variance", "pool", "fisher", "meta"}
    # arm P: the halves partition every tensor; the top half's moved count is what its matrices hold
    halves = doc["arm_p"]["halves"]
    n_tensors = len(doc["fisher"]["per_tensor"])
    assert halves["top"]["n_tensors"] + halves["bottom"]["n_tensors"] == n_tensors == halves["all"]["n_tensors"]
    assert halves["top"]["n_params_moved"] + halves["bottom"]["n_params_moved"] == halves["all"]["n_params_moved"]
    for h in ("top", "bottom", "all"):
        if "skipped" not in halves[h]:
            c = halves[h]["curvature"]
            assert c["interval"][0] <= c["estimate"] <= c["interval"][1]
            assert halves[h]["curvature_per_norm2"]["estimate"] == pytest.approx(
                np.mean([x / n**2 for x, n in zip(halves[h]["variance"]["seed_values"], halves[h]["norms"])]), rel=1e-9)
            assert (out / halves[h]["surface"]["path"]).is_file()
    # arm E: matched sizes, equal norms, stratified per-tensor counts, an endpoint per control
    masks = doc["arm_e"]["masks"]
    assert {m["count"] for m in masks.values()} == {masks["E-0.1-top"]["count"]}
    norms = np.array([m["norms"] for m in masks.values()])
    np.testing.assert_allclose(norms, norms[:1].repeat(len(norms), 0), rtol=1e-5)
    assert set(doc["arm_e"]["endpoints"]["0.1"]) == {"stratified", "random", "bottom"}
    for e in doc["arm_e"]["endpoints"]["0.1"].values():
        assert e["outcome"] in ("sharper", "flatter", "unclear") and len(e["interval"]) == 2
    assert not doc["arm_e"]["tensor_masks"]["kept"] and "dropped" in doc["arm_e"]["tensor_masks"]["reason"]
    # the report opens with the two answers, with intervals
    report = (out / "report.md").read_text()
    head = report.split("## Setup")[0]
    assert "## The two answers" in head and "Arm P" in head and "Arm E" in head and "95% CI" in head
    for line in res.verdict["arm_p"] + res.verdict["arm_e"]:
        assert f"- {line}" in head
    import matplotlib.image as mpimg

    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"fisher", "surfaces_arm_p", "curves_arm_p", "curves_arm_e_0.1", "endpoints"} <= names
    for p in (out / "figures").glob("*.png"):
        img = mpimg.imread(p)
        assert img.shape[0] > 200 and np.ptp(img) > 0 and f"figures/{p.name}" in report


def test_stratified_random_keeps_per_tensor_counts_and_moves_elements():
    from landscape import fisher
    from landscape.params import ParamSpace

    target = _target()
    F = fisher.diagonal(target.model, target.objective, target.data[:1], params=ParamSpace(target.model), progress=False)
    from analyses.fisher_sharpness.arms import matrix_space

    Fm = F.restrict(matrix_space(target.model))
    top = Fm.mask(0.2, which="top")
    strat = stratified_random(top, seed=3)
    assert {n: int(m.sum()) for n, m in strat.masks.items()} == {n: int(m.sum()) for n, m in top.masks.items()}
    assert any(not torch.equal(strat.masks[n], top.masks[n]) for n in top.masks)
    assert not all(torch.equal(stratified_random(top, 4).masks[n], strat.masks[n]) for n in top.masks)


def test_resume_reuses_matching_parts_and_refuses_other_settings(tmp_path, monkeypatch):
    target = _target()
    first = run(_config(tmp_path), target)
    import analyses.fisher_sharpness.measure as measure

    calls = []
    monkeypatch.setattr(measure, "per_seed", lambda *a, **k: calls.append(1) or {})
    second = run(_config(tmp_path, resume=True), target)
    assert calls == []
    assert json.loads(json.dumps(second.arm_e["endpoints"])) == json.loads(json.dumps(first.arm_e["endpoints"]))
    for changed, named in ((dict(seeds=(0, 1, 3)), "seeds=[0, 1, 2] (now [0, 1, 3])"), (dict(fisher_examples=5), "fisher_examples"),
                           (dict(trace_matvecs=3), "trace_matvecs=2 (now 3)")):
        with pytest.raises(ValueError, match="other settings") as err:
            run(_config(tmp_path, resume=True, **changed), target)
        assert named in str(err.value)  # the message names what differs
    assert calls == []


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fractions"):
        _config(tmp_path, fractions=(0.7,))
    with pytest.raises(ValueError, match="seeds"):
        _config(tmp_path, seeds=(0,))
    with pytest.raises(ValueError, match="held-out examples"):
        run(_config(tmp_path, fisher_examples=100), _target())
    with pytest.raises(FileNotFoundError, match="reference"):
        run(_config(tmp_path, reference=str(tmp_path)), _target())


def test_log_ratio_is_finite_when_curvatures_are_positive(tmp_path):
    res = run(_config(tmp_path, fractions=(0.5,)), _target())
    for e in res.arm_e["endpoints"]["0.5"].values():
        assert math.isfinite(e["estimate"])


def test_reference_auto_skips_without_h5py_and_explicit_folder_needs_it(monkeypatch, tmp_path):
    import importlib.util

    from analyses.fisher_sharpness import study
    from conftest import REFERENCE_DIR

    if not (REFERENCE_DIR / "surf_res256_bert.h5").is_file():
        pytest.skip("the paper's surfaces are not available here")
    monkeypatch.setenv("LANDSCAPE_REFERENCE", str(REFERENCE_DIR))
    assert study._find_reference("auto") == (REFERENCE_DIR, None)
    assert study._find_reference("none")[0] is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "h5py" else real(name, *a))
    folder, why = study._find_reference("auto")
    assert folder is None and "h5py" in why
    with pytest.raises(ValueError, match="h5py"):
        study._find_reference(str(REFERENCE_DIR))


def test_reference_surfaces_summarized_like_ours():
    from analyses.fisher_sharpness.reference import reference_summaries, surface_summary
    from conftest import REFERENCE_DIR

    xs = np.linspace(-1.5, 1.5, 13)
    gx, gy = np.meshgrid(xs, xs)
    s = surface_summary(xs, xs, 2.0 + 0.5 * (3.0 * gx**2 + 1.0 * gy**2))
    assert s["curvature"] == pytest.approx(3.0) and s["min"] == pytest.approx(2.0)
    assert s["loss_rise"]["0.5"] == pytest.approx(0.5 * 0.25 * (3.0 + 1.0) / 2)  # mean over (±r, 0), (0, ±r)
    if not (REFERENCE_DIR / "surf_res256_bert.h5").is_file():
        pytest.skip("the paper's surfaces are not available here")
    ref = reference_summaries(REFERENCE_DIR)["surfaces"]
    assert set(ref) == {"all", "top", "bottom"}
    # the paper's picture: the top-Fisher half is the flattest near the origin and overall
    assert ref["top"]["curvature"] < ref["bottom"]["curvature"] < ref["all"]["curvature"]
    assert ref["top"]["max"] < ref["bottom"]["max"]
    for r in ref.values():
        rises = [r["loss_rise"][k] for k in ("0.25", "0.5", "1")]
        assert rises == sorted(rises) and 2.0 < r["min"] < 2.3
