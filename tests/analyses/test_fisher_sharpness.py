"""The flagship analysis end to end on a family of two tiny BERTs: both arms, every cell, every promised
file, the gallery, resume safety, bad input, and a user's checkpoint with --texts from the command line."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from analyses.common import Target
from analyses.fisher_sharpness import FisherSharpnessConfig, run
from analyses.fisher_sharpness.arms import stratified_random
from conftest import make_mlm_batches, make_tiny_bert, mlm_objective

pytestmark = pytest.mark.slow

GROUPS = [i // 2 for i in range(24)]  # two consecutive rows per document


def _target(seed: int = 0):
    model = make_tiny_bert(seed, hidden=16, layers=1).eval()
    data = make_mlm_batches(n_batches=6, batch_size=4, seq_len=12)
    return Target(model, None, mlm_objective(0.3), data, f"tiny-bert-{seed}", "mlm")


def _config(path, **kw):
    base = dict(out=str(path / "run"), fisher_samples=2, fisher_examples=4, mask_draws=2, eval_examples=10,
                batch_size=4, fractions=(0.05, 0.1), fraction=0.1, seeds=(0, 1), curve_seeds=1, points_1d=5, grid_2d=3,
                surface_examples=4, trace_matvecs=2, eig_iters=2, eig_examples=4, n_boot=200, basin_max_alpha=4.0,
                reference="none", progress=False)
    base.update(kw)
    return FisherSharpnessConfig(**base)


@pytest.fixture(scope="module")
def family_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("fs")
    targets = [_target(0), _target(1)]
    before = [{k: v.clone() for k, v in t.model.state_dict().items()} for t in targets]
    targets[0].model.train()
    res = run(_config(path), targets, groups=GROUPS)
    return path, targets, before, res


def test_every_cell_and_file_of_a_two_model_family(family_run):
    path, targets, before, res = family_run
    out = path / "run"
    for t, b in zip(targets, before):
        assert all(torch.equal(b[k], v) for k, v in t.model.state_dict().items())
    assert targets[0].model.training and not targets[1].model.training
    doc = json.loads((out / "result.json").read_text())
    assert set(doc) >= {"config", "arm_p", "arm_e", "verdict", "variance", "pool", "fisher", "models", "fisher_loss",
                        "checks", "meta"}
    assert len(list((out / "parts").glob("cell-*"))) == 2 * 2 * 2 and doc["pool"]["n_documents"] == 5
    # the primary endpoint under both constructions, Holm over the two; the sweep; descriptive rows
    primary = doc["arm_e"]["primary"]
    assert set(primary) == {"filter", "isotropic"}
    for e in primary.values():
        assert e["scale"] == "difference" and e["outcome"] in ("sharper", "flatter", "unclear")
        assert e["p_holm"] >= e["p"] and e["interval"][0] <= e["estimate"] <= e["interval"][1]
        assert e["estimate"] == pytest.approx(e["top"] - e["control"])
        levels = e["components"]["levels"]
        assert {lv: r["units"] for lv, r in levels.items()} == {"model": 2, "fisher": 2, "draw": 2, "seed": 2,
                                                                 "document": 5}
        assert sum(r["share"] for r in levels.values()) == pytest.approx(1.0)
    assert {(r["fraction"], r["construction"]) for r in doc["arm_e"]["sweep"]} == {
        (f, c) for f in (0.05, 0.1) for c in ("filter", "isotropic")}
    assert set(doc["arm_e"]["descriptive"]) == {"random", "bottom"}
    assert [m["model"] for m in doc["models"]] == [0, 1] and all("filter" in m for m in doc["models"])
    # equal norms: every arm E direction of a seed, filter or isotropic, has the full direction's norm
    masks = doc["arm_e"]["masks"]
    norms = np.array([m["norms"] for m in masks.values()])
    np.testing.assert_allclose(norms, norms[:1].repeat(len(norms), 0), rtol=1e-5)
    assert 0.0 <= doc["fisher_loss"]["jaccard"] <= 1.0 and doc["fisher_loss"]["other"] == "sum"
    assert set(doc["checks"]) == {f"E-0.1-{w}-filter" for w in ("top", "stratified", "random", "bottom")}
    assert doc["arm_p"]["per_norm2"]["ratio"] == pytest.approx(
        doc["arm_p"]["endpoints"]["top_vs_bottom"]["ratio"] * doc["arm_p"]["per_norm2"]["factor"])
    report = (out / "report.md").read_text()
    head = report.split("## Setup")[0]
    assert "## The two answers" in head and "Arm P" in head and "Arm E, primary" in head and "95% CI" in head
    for line in res.verdict["arm_p"] + res.verdict["arm_e"]:
        assert f"- {line}" in head
    for section in ("## Variance components", "## Results per model", "Mask-size sweep", "Descriptive rows",
                    "Jaccard", "## Check of the finite-difference"):
        assert section in report
    import matplotlib.image as mpimg

    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"fisher", "surfaces_arm_p", "curves_arm_p", "curves_arm_e_0.1", "endpoints", "sweep"} <= names
    for p in (out / "figures").glob("*.png"):
        img = mpimg.imread(p)
        assert img.shape[0] > 200 and np.ptp(img) > 0 and f"figures/{p.name}" in report


def test_the_gallery_publishes_a_run_folder(family_run, tmp_path):
    from analyses.fisher_sharpness.gallery import GALLERY

    path, _, _, res = family_run
    repo = tmp_path / "repo"
    (repo / "figures" / "gallery").mkdir(parents=True)
    (repo / "README.md").write_text(f"intro\n{GALLERY.start}\n- old\n{GALLERY.end}\n")
    GALLERY.publish(path / "run", repo)
    assert GALLERY.answers_in_readme((repo / "README.md").read_text()) == [
        f"- {line}" for line in res.verdict["arm_p"] + res.verdict["arm_e"]]
    assert (repo / "figures" / "gallery" / "fisher_sharpness_sweep.png").is_file()


def test_resume_reuses_every_cell_and_refuses_other_settings(family_run, tmp_path, monkeypatch):
    path, targets, _, first = family_run
    shutil.copytree(path / "run", tmp_path / "run")
    import analyses.fisher_sharpness.measure as measure

    calls = []
    monkeypatch.setattr(measure, "per_seed", lambda *a, **k: calls.append(1) or {})
    second = run(_config(tmp_path, resume=True), targets, groups=GROUPS)
    assert calls == []
    assert json.dumps(second.arm_e["primary"]) == json.dumps(first.arm_e["primary"])
    for changed, named in ((dict(seeds=(0, 2)), "seeds=[0, 1] (now [0, 2])"), (dict(mask_draws=1), "mask_draws"),
                           (dict(fisher_loss="sum"), "fisher_loss")):
        with pytest.raises(ValueError, match="other settings") as err:
            run(_config(tmp_path, resume=True, **changed), targets, groups=GROUPS)
        assert named in str(err.value)
    assert calls == []


def test_stratified_random_keeps_per_tensor_counts_and_moves_elements():
    from analyses.fisher_sharpness.arms import matrix_space
    from landscape import fisher
    from landscape.params import ParamSpace

    target = _target()
    F = fisher.diagonal(target.model, target.objective, target.data[:1], params=ParamSpace(target.model), progress=False)
    top = F.restrict(matrix_space(target.model)).mask(0.2, which="top")
    strat = stratified_random(top, seed=3)
    assert {n: int(m.sum()) for n, m in strat.masks.items()} == {n: int(m.sum()) for n, m in top.masks.items()}
    assert any(not torch.equal(strat.masks[n], top.masks[n]) for n in top.masks)
    assert not all(torch.equal(stratified_random(top, 4).masks[n], strat.masks[n]) for n in top.masks)


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fractions"):
        _config(tmp_path, fractions=(0.7,))
    with pytest.raises(ValueError, match="--fraction 0.2 is not among"):
        _config(tmp_path, fraction=0.2)
    with pytest.raises(ValueError, match="seeds"):
        _config(tmp_path, seeds=(0,))
    with pytest.raises(ValueError, match="--fisher-loss"):
        _config(tmp_path, fisher_loss="max")
    with pytest.raises(ValueError, match="held-out examples"):
        run(_config(tmp_path, fisher_examples=100), _target())
    with pytest.raises(FileNotFoundError, match="reference"):
        run(_config(tmp_path, reference=str(tmp_path)), _target())
    with pytest.raises(ValueError, match="--models 2 needs the default model family"):
        run(_config(tmp_path, models=2, checkpoint=str(tmp_path)))


def test_a_saved_checkpoint_with_texts_from_the_command_line(tmp_path, capsys):
    """A tiny BERT saved to disk, --texts (each line a document), the estimate printed before any cell."""
    from analyses import cli
    from saved_models import save_tiny_checkpoint, write_texts

    save_tiny_checkpoint(tmp_path / "ckpt")
    texts = write_texts(tmp_path / "t.txt", n=14)
    argv = ["analyze", "fisher-sharpness", str(tmp_path / "ckpt"), "--texts", str(texts), "--out", str(tmp_path / "o"),
            "--fisher-samples", "1", "--examples", "4", "--eval-examples", "8", "--mask-draws", "1", "--seeds", "2",
            "--fractions", "0.1", "--curve-seeds", "1", "--points", "3", "--grid", "3", "--surface-examples", "4",
            "--trace-matvecs", "2", "--eig-iters", "1", "--eig-examples", "4", "--bootstrap", "100",
            "--reference", "none", "--no-progress", "--batch-size", "4"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.index("estimated time") < printed.index("wrote")
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    assert doc["meta"]["documents"].startswith("each line of --texts") and doc["pool"]["n_documents"] == 8
    assert doc["models"][0]["model"] == 0 and math.isfinite(doc["arm_e"]["primary"]["isotropic"]["estimate"])


def test_the_budget_lowers_settings_in_order_and_says_so(tmp_path):
    from analyses.fisher_sharpness.estimate import fit_budget, study_units

    cfg = _config(tmp_path, seeds=(0, 1, 2, 3), curve_seeds=3, grid_2d=21, eval_examples=512, budget=1.0,
                  fractions=(0.01, 0.03, 0.1, 0.25))
    fitted, lowered, before, after = fit_budget(cfg, sequence_s=0.01)
    assert before == pytest.approx(study_units(cfg, 512) * 0.01 * 512)
    assert lowered[:3] == ["--seeds 2", "--curve-seeds 1", "--grid 7"] and after <= 60 < before
    assert fitted.seeds == (0, 1) and fitted.grid_2d <= 7 and fitted.eval_examples < 512
    same, none, b2, a2 = fit_budget(_config(tmp_path, budget=0.0), sequence_s=10.0)
    assert none == [] and b2 == a2
    assert fit_budget(cfg, sequence_s=1e-6)[1] == []  # fits already: nothing lowered


def test_the_budget_follows_the_model_not_the_machine_load(tmp_path, monkeypatch):
    from torch import nn

    from analyses.fisher_sharpness import estimate

    model = nn.Linear(100, 10)  # 1010 parameters
    data = [{"input_ids": torch.zeros(2, 8, dtype=torch.long), "attention_mask": torch.tensor([[1] * 8, [1] * 4 + [0] * 4])}]
    assert estimate.reference_sequence_s(model, data) == pytest.approx(estimate.REFERENCE_S_PER_PARAM_TOKEN * 1010 * 6)
    cfg = _config(tmp_path, seeds=(0, 1, 2, 3), eval_examples=512, budget=1e-9)
    target = type("T", (), {"model": model, "objective": None})()
    picked = []
    for machine_s in (1e-6, 100.0):  # a fast idle machine and a loaded one pick the same settings
        monkeypatch.setattr(estimate, "time_gradient", lambda *a, s=machine_s: s)
        picked.append(estimate.announce_study(cfg, target, data))
    assert picked[0] == picked[1] and picked[0].seeds == (0, 1)


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
    assert ref["top"]["curvature"] < ref["bottom"]["curvature"] < ref["all"]["curvature"]
    assert ref["top"]["max"] < ref["bottom"]["max"]
    for r in ref.values():
        rises = [r["loss_rise"][k] for k in ("0.25", "0.5", "1")]
        assert rises == sorted(rises) and 2.0 < r["min"] < 2.3


def test_models_n_loads_default_seeds_and_clusters_rows_by_docstring(tmp_path, monkeypatch):
    """--models 2 on the default recipe (shrunk): seeds 0 and 1 differ, share the held-out split, and the
    pool's documents are the docstrings each row came from (fewer documents than rows)."""
    import dataclasses

    from analyses.fisher_sharpness import family
    from landscape.models import default_model as dmm

    tiny = dmm.DefaultModelConfig(vocab_size=400, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                  max_seq_len=32, steps=2, batch_size=16, warmup_steps=1, max_docstrings=200,
                                  heldout_fraction=0.2)
    real = dmm.load_default
    built = []

    def load(config=None, cache_dir=None, rebuild=False, progress=True):
        built.append(config.seed)
        return real(dataclasses.replace(tiny, seed=config.seed), cache_dir=tmp_path / "cache", progress=False)

    monkeypatch.setattr(dmm, "load_default", load)
    cfg = _config(tmp_path, checkpoint="default", models=2, fisher_samples=2, fisher_examples=4, eval_examples=12)
    members = family.load_family(cfg)
    assert built == [0, 1] and [m.index for m in members] == [0, 1]
    a, b = (m.target.model.state_dict()["bert.embeddings.word_embeddings.weight"] for m in members)
    assert not torch.equal(a, b)
    assert torch.equal(members[0].eval[0]["input_ids"], members[1].eval[0]["input_ids"])  # the same held-out split
    g = members[0].groups
    assert g.size == 12 and 1 <= np.unique(g).size < 12 and members[0].documents.startswith("the docstring")
    assert (np.diff(g) >= 0).all()  # consecutive rows of one document share its label
