"""Sequential seeds to a power target (stubbed trainer), disjoint Fisher halves, and the README gallery."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from dropout_helpers import make_model, study_files, token_batches

from analyses.guided_dropout import GuidedDropoutConfig, gallery, grid, run, stats
from analyses.guided_dropout.stability import disjoint_halves, split_half_stability

ROOT = Path(__file__).resolve().parents[2]
ARMS3 = ("guided", "uniform", "permuted")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return study_files(tmp_path_factory.mktemp("power"))


def accuracy(arm: str, seed: int, size: int, sd: float) -> float:
    """A fixed synthetic accuracy per (arm, seed, size): no true difference, paired noise of SD ``sd``."""
    base = 0.6 + 0.05 * random.Random(f"base {seed} {size}").gauss(0, 1)
    return base + sd * random.Random(f"{arm} {seed} {size}").gauss(0, 1)


def stub(sd: float):
    def train_run(model, init, arm, train, val, test, spec, seed, fisher_weight=None):
        return {"epochs": [], "best_epoch": spec.epochs, "test_acc": accuracy(arm.name, seed, len(train), sd),
                "test_loss": 0.0, "seconds": 0.0}
    return train_run


def expected_seeds(first: int, target: float, cap: int, sd: float, sizes=(8, 12)) -> int:
    """Replays the stopping rule on the synthetic accuracies: the first seed count whose MDEs meet the target."""
    n = first
    while n < cap:
        runs = [{"task": "train", "size": s, "seed": k, "arm": a, "test_acc": accuracy(a, k, s, sd)}
                for s in sizes for k in range(n) for a in ARMS3]
        if stats.power_status(stats.summarize(runs), target / 100)["met"]:
            return n
        n += 1
    return cap


def config(files: Path, out: Path, **kw) -> GuidedDropoutConfig:
    kw = {"sizes": (8, 12), "seeds": (0, 1, 2), "arms": ARMS3, "epochs": 1, "min_steps": 1, "batch_size": 4,
          "fisher_examples": 6, "fisher_batch_size": 3, "max_length": 16, "progress": False,
          "workers": 2, **kw}  # 2 units per seed keep 2 workers busy: one seed per step, on any machine
    return GuidedDropoutConfig(checkpoint=str(files / "ckpt"), out=str(out), data=str(files / "train.csv"),
                               test_data=str(files / "test.csv"), fisher_texts=str(files / "heldout.txt"), **kw)


def test_sequential_seeds_stop_when_both_primary_mdes_meet_the_target(files, tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "train_run", stub(0.01))
    want = expected_seeds(3, 2.5, 30, 0.01)
    assert 3 < want < 30  # the test means something: seeds were added, and the target was reachable
    res = run(config(files, tmp_path / "seq", target_mde=2.5, max_seeds=30))
    assert res.config["seeds_used"] == list(range(want)) and res.power["met"]
    assert res.power["outcome"] == "target met" and res.power["n_seeds"] == want
    assert all(m <= 0.025 for m in res.power["mde"].values())
    lines = (tmp_path / "seq" / "runs.jsonl").read_text().splitlines()
    assert len(lines) == want * 2 * len(ARMS3)  # every added seed kept for a resume
    again = run(config(files, tmp_path / "seq", target_mde=2.5, max_seeds=30))
    assert again.meta["runs_this_call"] == 0 and again.config["seeds_used"] == list(range(want))
    report = (tmp_path / "seq" / "report.md").read_text()
    assert f"Power: with {want} seeds" in report and "target met" in report


def test_sequential_seeds_stop_at_the_cap_and_say_so(files, tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "train_run", stub(0.05))
    res = run(config(files, tmp_path / "cap", target_mde=0.5, max_seeds=5))
    assert res.config["seeds_used"] == [0, 1, 2, 3, 4] and not res.power["met"]
    assert res.power["outcome"] == "cap of 5 seeds reached before the target"
    assert "cap of 5 seeds reached" in (tmp_path / "cap" / "report.md").read_text()


def test_more_workers_than_units_per_seed_add_several_seeds_per_step(files, tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "train_run", stub(0.05))
    res = run(config(files, tmp_path / "step", target_mde=0.5, max_seeds=6, workers=4))
    assert res.power["seeds_per_step"] == 2 and res.config["seeds_used"] == [0, 1, 2, 3, 4, 5]
    assert res.power["outcome"] == "cap of 6 seeds reached before the target"
    res = run(config(files, tmp_path / "step1", target_mde=0.5, max_seeds=4, workers=4))
    assert res.config["seeds_used"] == [0, 1, 2, 3]  # the cap cuts a step short


def test_fisher_halves_are_disjoint_and_their_ranks_compared():
    batches = token_batches(4, batch=3, seq=12)
    first, second, index = disjoint_halves(batches)
    assert index == [[0, 2], [1, 3]] and not set(index[0]) & set(index[1])
    assert [b["input_ids"].data_ptr() for b in first + second] == [batches[i]["input_ids"].data_ptr() for i in (0, 2, 1, 3)]
    one, two, rows = disjoint_halves(batches[:1])
    assert rows == [[0, 2], [1]] and one[0]["input_ids"].shape[0] == 2 and two[0]["input_ids"].shape[0] == 1
    from landscape import objectives

    model = make_model("bert").eval()
    obj = objectives.MaskedLM(mask_prob=0.3, seed=0, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4])
    h = split_half_stability(model, obj, batches)
    assert h["halves"] == [[0, 2], [1, 3]] and all(1 <= n <= 6 for n in h["n_examples"]) and h["split"] == "batches"
    assert h["scores"][0] != h["scores"][1] and -1 <= h["spearman"] <= 1
    assert h["pairs"] == h["n_sites"] * (h["n_sites"] - 1) // 2 and 0 <= h["flipped_pairs"] <= h["pairs"]
    same = split_half_stability(model, obj, [batches[0], batches[0]])  # identical halves: no noise at all
    assert same["spearman"] == pytest.approx(1.0) and same["flipped_pairs"] == 0 and same["rates_changed"] == 0


def test_gallery_publishes_a_reduced_run_into_the_readme(files, tmp_path):
    out = tmp_path / "reduced"
    run(config(files, out, seeds=(0, 1)))
    repo = tmp_path / "repo"
    (repo / "figures" / "gallery").mkdir(parents=True)
    (repo / "figures" / "gallery" / "guided_dropout_stale.png").write_bytes(b"old")
    (repo / "README.md").write_text(f"intro\n{gallery.GALLERY.start}\n- old\n{gallery.GALLERY.end}\noutro\n")
    gallery.GALLERY.publish(out, repo)
    readme = (repo / "README.md").read_text()
    report = (repo / "figures" / "gallery" / "guided_dropout_report.md").read_text()
    lines = gallery.GALLERY.answers_in_readme(readme)
    assert lines == gallery.GALLERY.answers_from_report(report) and len(lines) == 3  # two primary answers and the power line
    assert lines[0].startswith("- **train**: Does placement by Fisher beat") and lines[-1].startswith("Power: with 2")
    assert readme.startswith("intro\n") and readme.endswith("outro\n")
    assert not (repo / "figures" / "gallery" / "guided_dropout_stale.png").exists()
    assert "](guided_dropout_metric_vs_size.png)" in report
    with pytest.raises(ValueError, match="no '## Answers' section"):
        gallery.GALLERY.answers_from_report("# an old report\n\n## Verdict\n")


def test_readme_answers_agree_with_the_committed_report():
    readme = (ROOT / "README.md").read_text()
    lines = gallery.GALLERY.answers_in_readme(readme)
    report = (ROOT / "figures" / "gallery" / "guided_dropout_report.md").read_text()
    if "## Answers" not in report:  # the committed gallery predates issue 18's report; the README says so
        assert any("reduced run" in line for line in lines), "README's guided-dropout block must say it is provisional"
        return
    assert lines == gallery.GALLERY.answers_from_report(report), (
        "README's guided-dropout answers differ from figures/gallery/guided_dropout_report.md; regenerate with: "
        "python -m analyses.guided_dropout.gallery runs/guided-dropout")
    doc = json.dumps(lines)
    assert "detected" in doc or "no effect larger than" in doc or "inconclusive at this power" in doc


def test_full_is_the_powered_run():
    import argparse

    from analyses.cli.analyze import add_arguments, studies
    from analyses.cli.config_flags import config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    study = studies()["guided-dropout"]
    for argv, target in ((["--full"], 2.0), (["--full", "--target-mde", "1.5"], 1.5), ([], None)):
        args = parser.parse_args(["guided-dropout", *argv])
        study.adjust(args)
        cfg = config_from_args(study.config, args)
        assert cfg.target_mde == target and cfg.recipe == "paper"
        assert cfg.tasks == (("topic", "same_module") if argv else ("topic",)) and cfg.sizes == (64, 256)


def test_the_report_states_the_default_models_loss_and_build_time(tmp_path):
    from analyses.guided_dropout.report import _model_line
    from analyses.guided_dropout.study import _checkpoint_facts

    assert _checkpoint_facts(tmp_path) == {} and _model_line({}) == []
    (tmp_path / "metadata.json").write_text(json.dumps({"heldout_loss": 4.5, "heldout_unigram_xent": 6.1,
                                                        "build_seconds": 200.0, "cache_key": "k",
                                                        "config": {"dropout": 0.1}}))
    line = _model_line(_checkpoint_facts(tmp_path))[0]
    assert "4.500 nats (1.60 nats below the unigram baseline)" in line and "dropout 0.1" in line and "200 s" in line
