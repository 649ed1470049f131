"""What a user types wrong, or asks for that cannot be met, is said in one line or in the output
(issue 13, items 4-6, 9, 14, 17 and 18)."""

from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch

import architectures as A
from analyses.cli import build_parser, main
from saved_models import write_texts


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    path = A.save_arch("bert", root / "bert")[1]
    return path, write_texts(root / "texts.txt", n=12)


def _error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if "it/s]" not in ln]  # third-party progress bars
    assert len(lines) == 1 and lines[0].startswith("landscape: error: "), err
    return err


def test_too_many_examples_is_said_and_recorded(bert, tmp_path, capsys):
    """Defect (item 4): --examples 100000 silently used the 12 examples there were."""
    ck, texts = bert
    assert main(["fisher", str(ck), "--texts", str(texts), "--examples", "100000", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "--examples 100000 lowered to 12" in capsys.readouterr().out
    meta = json.loads((tmp_path / "fisher.json").read_text())["meta"]["target"]
    assert meta["examples_requested"] == 100000 and meta["examples_used"] == 12
    assert any("lowered to 12" in n for n in meta["notes"])


def test_a_one_point_grid_is_refused(bert, tmp_path, capsys):
    """Defect (item 5): --grid 1 evaluated the single point (-1, -1), not the origin."""
    ck, texts = bert
    assert "at least 2 points" in _error(capsys, ["scan", str(ck), "--texts", str(texts), "--grid", "1", "--out", str(tmp_path)])
    assert "at least 2 points" in _error(capsys, ["scan", str(ck), "--grid", "5", "1", "--out", str(tmp_path)])


def test_out_that_is_a_file_is_refused_before_computing(bert, tmp_path, capsys, monkeypatch):
    """Defect (item 14): fisher computed the whole estimate, then failed on --out with a traceback."""
    import analyses.common

    def never(*a, **k):
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(analyses.common, "load_target", never)
    (tmp_path / "file").write_text("x")
    for cmd in ("fisher", "scan", "hessian", "audit"):
        assert "existing file" in _error(capsys, [cmd, str(bert[0]), "--out", str(tmp_path / "file")])
    assert "is a file" in _error(capsys, ["fisher", str(bert[0]), "--out", str(tmp_path / "file" / "sub")])
    assert not (tmp_path / "o").exists()


def test_unwritable_out_is_refused(bert, tmp_path, capsys, monkeypatch):
    """Item 14: an --out that cannot be written is refused up front (PermissionError, exit 2)."""
    import tempfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", denied)
    assert "not writable" in _error(capsys, ["fisher", str(bert[0]), "--out", str(tmp_path / "o")])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(bert, tmp_path, capsys):
    """Defect (item 14): --device cuda on a CPU-only machine gave a torch traceback."""
    assert "CUDA is not available" in _error(capsys, ["fisher", str(bert[0]), "--device", "cuda", "--out", str(tmp_path)])
    assert "not a torch device" in _error(capsys, ["scan", str(bert[0]), "--device", "gpu0", "--out", str(tmp_path)])


def test_truncated_npz_on_resume_and_in_plot(bert, tmp_path, capsys):
    """Defect (item 14): a truncated .npz gave a zipfile traceback on --resume and in plot."""
    ck, texts = bert
    argv = ["scan", str(ck), "--texts", str(texts), "--dims", "1", "--grid", "3", "--examples", "4", "--out", str(tmp_path),
            "--no-progress"]
    assert main(argv) == 0
    f = tmp_path / "scan_1d.npz"
    f.write_bytes(f.read_bytes()[:200])
    capsys.readouterr()
    assert "damaged or truncated" in _error(capsys, [*argv, "--resume"])
    assert "damaged or truncated" in _error(capsys, ["plot", str(f)])


def test_help_states_numeric_minimums():
    """Defect (item 17): --help did not say the minimums of --points, --grid and friends."""
    parser = build_parser()
    sub = {a.dest: a for a in parser._subparsers._group_actions}["command"].choices
    wanted = {"scan": ["--grid", "--examples", "--batch-size", "--max-length"],
              "audit": ["--points", "--seeds", "--eig-iters", "--trace-matvecs", "--eval-examples"],
              "hessian": ["--trace-matvecs", "--top-k", "--density-runs", "--lanczos-steps"],
              "fisher": ["--mc-samples", "--chunk-size", "--examples"]}
    for cmd, flags in wanted.items():
        actions = {o: a for a in sub[cmd]._actions for o in a.option_strings}
        for flag in flags:
            assert "≥" in (actions[flag].help or ""), f"{cmd} {flag}: {actions[flag].help}"


def test_too_few_trace_matvecs_say_no_error_estimate(bert, capsys):
    """Defect (item 18): --trace-matvecs 3 printed '± nan' and numpy RuntimeWarnings."""
    ck, texts = bert
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["hessian", str(ck), "--texts", str(texts), "--examples", "4", "--top-k", "0", "--trace",
                     "--trace-matvecs", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no error estimate" in out and "nan" not in out
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


AUDIT = ["--eval-examples", "2", "--points", "5", "--eig-iters", "2", "--trace-matvecs", "3", "--no-block-curvature",
         "--no-progress", "--max-length", "16"]


def test_audit_resume_refuses_parts_made_with_other_settings(bert, tmp_path, capsys):
    """Defect (item 6): --resume after changing --examples or --seeds reused the old parts and
    labelled them with the new settings."""
    ck, texts = bert
    base = ["audit", str(ck), "--texts", str(texts), "--out", str(tmp_path), *AUDIT]
    assert main([*base, "--examples", "2"]) == 0
    before = json.loads((tmp_path / "parts" / "overall.json").read_text())
    for changed in (["--examples", "3"], ["--examples", "2", "--seeds", "2"]):
        err = _error(capsys, [*base, *changed, "--resume"])
        assert "other settings" in err and ("fisher_examples" in err or "seeds" in err)
    assert json.loads((tmp_path / "parts" / "overall.json").read_text()) == before
    assert main([*base, "--examples", "2", "--resume"]) == 0  # same settings: resumes


def test_classifier_end_to_end_with_labelled_csv_and_jsonl(tmp_path, capsys):
    """Defect (item 9): the CLI refused classifiers as "no MLM head" and HFLoss gave a scalar."""
    _, ck = A.save_arch("bert-cls", tmp_path / "cls")
    rows = A.labelled_rows(8)
    with open(tmp_path / "t.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows))
    (tmp_path / "plain.txt").write_text("\n".join(t for t, _ in rows))
    for name in ("t.csv", "t.jsonl"):
        out = tmp_path / f"f-{name}"
        assert main(["fisher", str(ck), "--texts", str(tmp_path / name), "--out", str(out), "--no-progress"]) == 0
        meta = json.loads((out / "fisher.json").read_text())["meta"]
        assert meta["objective"]["name"] == "hf_loss" and meta["n_examples"] == 8
    assert "sequence classifier" in _error(capsys, ["fisher", str(ck), "--texts", str(tmp_path / "plain.txt"),
                                                    "--out", str(tmp_path / "o")])
    assert main(["audit", str(ck), "--texts", str(tmp_path / "t.csv"), "--examples", "2", "--out", str(tmp_path / "a"),
                 *AUDIT]) == 0
    res = json.loads((tmp_path / "a" / "result.json").read_text())
    assert res["meta"]["task"] == "cls" and "classifier" in res["blocks"]["head"]["tensors"][-1]
