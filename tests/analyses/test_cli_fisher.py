"""``landscape fisher`` on a checkpoint directory the test saves (tiny BERT + word-level tokenizer)."""

from __future__ import annotations

import csv
import json

import pytest
from saved_models import WORDS

from analyses.cli import main
from landscape import fisher
from landscape.models.checkpoints import load_checkpoint


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(" ".join(WORDS[i : i + 12]) for i in range(0, 24, 2)))
    return path


def test_fisher_command_writes_scores_tables_and_convergence(checkpoint, texts, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    argv = ["fisher", str(checkpoint), "--texts", str(texts), "--examples", "12", "--batch-size", "4",
            "--max-length", "16", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "rank correlation >= 0.95" in printed and "fisher.safetensors" in printed
    model = load_checkpoint(checkpoint).model
    F = fisher.FisherDiagonal.load(out / "fisher", model=model)
    assert F.meta["estimator"] == "empirical" and F.meta["n_examples_read"] == 12
    assert "cls.predictions.decoder.weight" not in F.scores
    rows = list(csv.DictReader(open(out / "fisher_per_tensor.csv")))
    assert len(rows) == len(F.scores) and rows[0]["rank"] == "1"
    assert float(rows[0]["mean"]) >= float(rows[-1]["mean"])
    layers = [r["group"] for r in csv.DictReader(open(out / "fisher_per_layer.csv"))]
    assert layers == ["embeddings", "layer.0", "layer.1", "head"]
    conv = json.loads((out / "fisher_convergence.json").read_text())
    assert conv["n"][-1] == 12 and len(conv["spearman"]) == len(conv["n"]) == len(conv["rel_change"])
    assert "examples_to_reach_0.95" in conv


def test_fisher_command_bad_input(checkpoint, texts, tmp_path, capsys):  # noqa: F811
    base = ["fisher", str(checkpoint), "--texts", str(texts), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*base, "--examples", "0"]) == 2
    assert "--examples must be at least 1" in capsys.readouterr().err
    assert main([*base, "--examples", "4", "--estimator", "mc", "--mc-samples", "0"]) == 2
    assert "mc_samples must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--estimator", "kfac"])
