"""``landscape analyze fisher-sharpness``: its flags reach the config, and bad input is one line, exit 2."""

from __future__ import annotations

import dataclasses

import pytest

from analyses import cli


def test_flags_reach_the_config(monkeypatch, tmp_path, capsys):
    from analyses.cli.analyze import studies

    seen = {}

    def fake_run(cfg):
        seen["cfg"] = cfg
        raise ValueError("stop here")

    study = studies()["fisher-sharpness"]
    monkeypatch.setitem(studies(), "fisher-sharpness", dataclasses.replace(study, run=fake_run))
    texts = tmp_path / "t.txt"
    texts.write_text("one text\nanother\n")
    argv = ["analyze", "fisher-sharpness", "--out", str(tmp_path / "o"), "--texts", str(texts), "--seeds", "4", "--seed", "3",
            "--eval-examples", "200", "--grid", "5", "--range", "1", "--reference", "none", "--batch-size", "16"]
    assert cli.main(argv) == 2
    cfg = seen["cfg"]
    assert cfg.texts == str(texts) and cfg.seeds == (3, 4, 5, 6) and cfg.eval_examples == 200 and cfg.grid_2d == 5
    assert cfg.range_1d == cfg.range_2d == 1.0 and cfg.reference == "none"
    assert cfg.batch_size == 16
    assert capsys.readouterr().err.strip() == "landscape: error: stop here"


@pytest.mark.parametrize("extra, message", [
    (["--texts", "/nonexistent/texts.txt"], "--texts"),
    (["--reference", "/nonexistent/ref"], "--reference"),
    (["--seeds", "1"], "--seeds"),
    (["--fractions", "0.9"], "fractions"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, extra, message):
    assert cli.main(["analyze", "fisher-sharpness", "--out", str(tmp_path / "o"), "--reference", "none", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("landscape: error:") and message in err and "\n" not in err
