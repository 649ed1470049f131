"""``landscape scan`` on a checkpoint directory the test saves (tiny BERT + word-level tokenizer)."""

from __future__ import annotations

import json

import numpy as np

from analyses.cli import main
from saved_models import WORDS
from landscape.scans.runner import Surface

def test_scan_command_writes_a_resumable_surface(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(" ".join(WORDS[i : i + 10]) for i in range(0, 30, 5)))
    argv = ["scan", str(checkpoint), "--texts", str(texts), "--dims", "2", "--grid", "3", "4", "--range", "-1", "1", "--examples", "6",
            "--batch-size", "3", "--max-length", "24", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    surf = Surface.load(out / "scan_2d.npz")
    assert surf.values["loss"].shape == (4, 3) and surf.done.all() and "accuracy" in surf.values
    assert np.isfinite(surf.values["loss"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grid"] == [4, 3] and summary["directions"][0]["normalization"] == "filter"
    if (out / "surface.h5").exists():
        np.testing.assert_array_equal(Surface.from_h5(out / "surface.h5").values["loss"], surf.values["loss"])
    assert main([*argv, "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["timing"]["points_computed"] == 0
    np.testing.assert_array_equal(Surface.load(out / "scan_2d.npz").values["loss"], surf.values["loss"])
    assert main([*argv[:-3], "--range", "-2", "2", "--out", str(out), "--no-progress", "--resume"]) == 2
    assert "different grid" in capsys.readouterr().err


def test_scan_command_rejects_bad_grids(checkpoint, tmp_path, capsys):
    assert main(["scan", str(checkpoint), "--grid", "0", "--out", str(tmp_path)]) == 2
    assert "--grid" in capsys.readouterr().err
    assert main(["scan", str(checkpoint), "--grid", "3"]) == 2
    assert "--out" in capsys.readouterr().err
