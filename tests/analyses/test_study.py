"""The analysis skeleton (analyses.study): generated flags, one resume mechanism, registration, the
audit alias, and the reference-surface lookup."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import architectures as A
from analyses import reference
from analyses.cli import build_parser, main
from analyses.cli.analyze import studies
from analyses.cli.config_flags import add_config_arguments, config_from_args
from analyses.study import Resume, result_settings, setting
from saved_models import write_texts

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Cfg:
    out: str = setting("runs/x", "output folder", affects="nothing")
    lr: float = setting(0.5, "step size of the thing")
    sizes: tuple[int, ...] = setting((4, 8), "grid sizes", affects="grid")
    mode: str = setting("a", "which mode", choices=("a", "b"))
    progress: bool = setting(True, "show progress bars", affects="nothing")


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _command(*names: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in names:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def test_flags_come_from_the_config_fields():
    p = argparse.ArgumentParser()
    add_config_arguments(p, Cfg)
    flags = _flags(p)
    assert flags["--lr"].default == 0.5 and flags["--lr"].help == "step size of the thing (default: 0.5)"
    assert flags["--sizes"].nargs == "+" and flags["--sizes"].default == [4, 8]
    assert flags["--mode"].choices == ["a", "b"] and "--no-progress" in flags and "--progress" not in flags
    cfg = config_from_args(Cfg, p.parse_args(["--lr", "0.25", "--sizes", "3", "--no-progress"]))
    assert cfg == Cfg(lr=0.25, sizes=(3,), progress=False)
    assert result_settings(cfg) == {"lr": 0.25, "mode": "a"}  # out, progress (nothing) and sizes (grid) left out


def test_every_analysis_flag_is_named_once_across_commands():
    for name in ("fisher-sharpness", "audit"):
        flags = _flags(_command("analyze", name))
        assert "--eig-iters" in flags and "--trace-matvecs" in flags, name
        assert "--eig-iter" not in flags and "--trace-probes" not in flags, name
    assert set(_flags(_command("audit"))) == set(_flags(_command("analyze", "audit")))
    fs = _flags(_command("analyze", "fisher-sharpness"))
    assert fs["--eval-examples"].default == 64 and "evaluation pool" in fs["--eval-examples"].help


def test_resume_refuses_other_settings_naming_every_field(tmp_path):
    Resume(tmp_path, {"lr": 0.5, "mode": "a", "n": 3}, resume=False).put("p1", {"x": 1})
    assert Resume(tmp_path, {"lr": 0.5, "mode": "a", "n": 3}, resume=True).get("p1") == {"x": 1}
    with pytest.raises(ValueError, match="other settings") as err:
        Resume(tmp_path, {"lr": 0.1, "mode": "b", "n": 3}, resume=True)
    assert "lr=0.5 (now 0.1)" in str(err.value) and "mode='a' (now 'b')" in str(err.value) and "n=" not in str(err.value)
    assert Resume(tmp_path, {"lr": 0.1}, resume=False).get("p1") is None  # a fresh run starts over


def test_guided_dropout_resume_refuses_before_any_computing(tmp_path):
    from analyses.guided_dropout import GuidedDropoutConfig, run

    first = GuidedDropoutConfig(out=str(tmp_path), lr=1e-3, epochs=8)
    Resume(tmp_path, first.resume_settings(), resume=False)
    with pytest.raises(ValueError, match="other settings") as err:
        run(GuidedDropoutConfig(out=str(tmp_path), lr=2e-3, epochs=9, sizes=(8,)))  # sizes: a grid field, allowed
    assert "lr=0.001 (now 0.002)" in str(err.value) and "epochs=8 (now 9)" in str(err.value)
    assert "sizes" not in str(err.value)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return A.save_arch("bert", root / "bert")[1], write_texts(root / "texts.txt", n=12)


TINY_AUDIT = ["--examples", "2", "--eval-examples", "2", "--points", "5", "--eig-iters", "2", "--trace-matvecs", "3",
              "--no-block-curvature", "--no-progress", "--max-length", "16"]


def test_analyze_audit_and_audit_give_the_same_result(bert, tmp_path):
    ck, texts = bert
    for argv, out in ((["audit"], "a"), (["analyze", "audit"], "b")):
        assert main([*argv, str(ck), "--texts", str(texts), "--out", str(tmp_path / out), *TINY_AUDIT]) == 0
    a, b = (json.loads((tmp_path / o / "result.json").read_text()) for o in "ab")
    assert a["config"] == {**b["config"], "out": a["config"]["out"]}
    assert a["overall"] == b["overall"] and a["blocks"] == b["blocks"]


def test_a_registered_toy_analysis_gets_its_command(bert, tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("extending_analysis", ROOT / "examples" / "extending_analysis.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert "toy" in studies()
    ck, texts = bert
    flags = _flags(_command("analyze", "toy"))
    assert flags["--examples"].default == 16 and "held-out sequences" in flags["--examples"].help
    assert main(["analyze", "toy", str(ck), "--texts", str(texts), "--examples", "6", "--out", str(tmp_path / "toy")]) == 0
    assert "loss at θ₀" in capsys.readouterr().out
    res = module.ToyResult.load(tmp_path / "toy")
    # independent float64 reference: Σ token cross-entropies / Σ tokens over the same masked sequences
    from analyses.common import load_target, read_texts

    target = load_target(str(ck), examples=6, seed=0, texts=read_texts(texts))
    model, obj = target.model.double().eval(), target.objective
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in target.data:
            p = obj.prepare(batch, model)
            logits, y = obj.logits_and_targets(obj.forward(model, p), p)
            logits, y = logits.double().reshape(-1, logits.shape[-1]), y.reshape(-1)
            total += float(torch.nn.functional.cross_entropy(logits, y, ignore_index=-100, reduction="sum"))
            count += int((y != -100).sum())
    assert res.n_examples == 6 and res.loss == pytest.approx(total / count, rel=1e-5)


def _surfaces(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / reference.MARKER).write_bytes(b"")
    return folder


def test_reference_lookup(tmp_path, monkeypatch):
    explicit = _surfaces(tmp_path / "explicit")
    assert reference.find_reference(explicit) == explicit
    env = _surfaces(tmp_path / "env" / reference.SUBFOLDER)
    monkeypatch.setenv(reference.ENV, str(tmp_path / "env"))
    assert reference.find_reference() == env  # the subfolder of an env folder counts too
    monkeypatch.delenv(reference.ENV)
    monkeypatch.setattr(reference, "REPO_ROOT", tmp_path / "repo")
    relative = _surfaces(tmp_path / "shared" / "reference" / reference.SUBFOLDER)
    assert reference.find_reference() == relative  # ../shared/reference beside the repository
    monkeypatch.setattr(reference, "REPO_ROOT", tmp_path / "elsewhere" / "repo")
    with pytest.raises(FileNotFoundError, match="--reference DIR") as err:
        reference.find_reference()
    assert reference.ENV in str(err.value) and str(tmp_path / "elsewhere" / "shared" / "reference") in str(err.value)
    with pytest.raises(FileNotFoundError, match="not in"):
        reference.find_reference(tmp_path / "nothing-here")
