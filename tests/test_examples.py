"""The examples run: the notebook (small settings, real kernel) and both scripts on saved checkpoints."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.models.default_model import cached_path
from saved_models import png_size, save_tiny_checkpoint, tiny_texts, write_texts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny pretrained BERT and the same model after a few SGD steps on the MLM loss of the held-out
    texts (same masks, eval mode: plain gradient descent on the loss the comparison evaluates)."""
    from analyses.common import load_target

    root = tmp_path_factory.mktemp("ckpts")
    pre, tok = save_tiny_checkpoint(root / "pretrained")
    target = load_target(str(root / "pretrained"), examples=8, batch_size=4, texts=tiny_texts(12))
    model = target.model
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(4):
        for p in target.objective.prepare_data(model, target.data):
            opt.zero_grad()
            s, n = target.objective.loss_sum(model, p)
            (s / n).backward()
            opt.step()
    model.eval()
    save_tiny_checkpoint(root / "finetuned", model=model)
    return root / "pretrained", root / "finetuned", write_texts(root / "texts.txt")


@pytest.mark.slow
def test_notebook_runs_with_small_settings(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(EXAMPLES / "explore_landscape.ipynb", as_version=4)
    nbformat.validate(nb)
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 5
    monkeypatch.setenv("LANDSCAPE_EXAMPLE_SMALL", "1")
    monkeypatch.delenv("LANDSCAPE_EXAMPLE_DEFAULT", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "small=True" in text and "λ_max" in text and "curvature at 0" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # Fisher, surface, curve figures displayed


@pytest.mark.slow
def test_audit_checkpoint_script(checkpoints, tmp_path):
    pre, _, texts = checkpoints
    out = tmp_path / "audit"
    proc = _run_script("audit_checkpoint.py", str(pre), "--out", str(out), "--texts", str(texts), "--small",
                       "--no-progress", cwd=tmp_path)
    assert "layer.1" in proc.stdout and "report.html" in proc.stdout
    d = json.loads((out / "result.json").read_text())
    assert list(d["blocks"]) == ["embeddings", "layer.0", "layer.1", "head"]
    assert (out / "report.html").stat().st_size > 10_000


def test_audit_checkpoint_script_refuses_a_non_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "audit_checkpoint.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no config.json" in proc.stderr


@pytest.mark.slow
def test_compare_checkpoints_script(checkpoints, tmp_path):
    from analyses.common import load_target
    from landscape.scans.results import Curve

    pre, fine, texts = checkpoints
    out = tmp_path / "compare"
    proc = _run_script("compare_checkpoints.py", str(pre), str(fine), "--out", str(out), "--texts", str(texts),
                       "--points", "9", "--examples", "8", "--no-progress", cwd=tmp_path)
    assert "barrier" in proc.stdout
    curve = Curve.load(out / "interpolation.npz")
    np.testing.assert_allclose(curve.alphas, np.linspace(-0.5, 1.5, 9))
    assert np.isfinite(curve.values["loss"]).all()
    assert png_size(out / "interpolation.png") == (900, 600)
    summary = json.loads((out / "summary.json").read_text())
    # α = 0 and α = 1 are the two checkpoints themselves, evaluated independently here
    text_list = [t for t in texts.read_text().splitlines() if t]
    for path, key in ((pre, "loss_pretrained"), (fine, "loss_finetuned")):
        t = load_target(str(path), examples=8, texts=text_list)
        assert summary[key] == pytest.approx(t.objective.evaluate(t.model, t.data), rel=1e-5)
    assert summary["loss_finetuned"] < summary["loss_pretrained"]  # descent on this very loss
    assert summary["distance"] > 0


@pytest.mark.slow
def test_guided_dropout_trainer_script(tmp_path):
    """The documented workflow: Fisher → guided rates → apply → transformers.Trainer.train()."""
    from saved_models import WORDS, save_word_checkpoint

    from landscape import dropout

    ckpt = save_word_checkpoint(tmp_path / "ckpt")
    rng = random.Random(0)
    texts = tmp_path / "texts.txt"  # in the checkpoint's vocabulary, so the [UNK] check passes
    texts.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(40)))
    out = tmp_path / "trainer"
    proc = _run_script("guided_dropout_trainer.py", str(ckpt), "--texts", str(texts), "--examples", "32", "--epochs", "1",
                       "--test-examples", "64", "--out", str(out), cwd=tmp_path)
    assert "eval_accuracy" in proc.stdout and "p = 0.1000" in proc.stdout  # the lowest-Fisher site gets p_max
    rates = dropout.DropoutRates.load(out / "rates.json")
    assert max(rates.rates.values()) == pytest.approx(0.1) and min(rates.rates.values()) == pytest.approx(0.0)


@pytest.mark.slow
@pytest.mark.skipif(cached_path() is None, reason="the default model is not built in this cache")
def test_track_curvature_training_script(tmp_path):
    """Fine-tuning the default model with the curvature callback writes the JSONL rows and the figure."""
    from landscape.training import read_measurements

    out = tmp_path / "track"
    proc = _run_script("track_curvature_training.py", "--small", "--out", str(out), cwd=tmp_path)
    rows = read_measurements(out / "curvature.jsonl")
    assert [r["step"] for r in rows] == [0, 4] and "% of the training gradients" in proc.stdout
    assert all(r["top_eigenvalue"] > 0 and 1 < r["cost_gradients"] <= 70 for r in rows)
    assert png_size(out / "curvature.png")[0] > 100
