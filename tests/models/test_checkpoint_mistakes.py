"""Damaged, foreign or unusual checkpoints give one line of ours (issue 13, items 10 and 13-16)."""

from __future__ import annotations

import json
import os

import pytest
import torch

import architectures as A
from analyses.cli import main
from landscape.models.checkpoints import load_checkpoint
from landscape.models.weight_files import read_state_dict


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return A.save_arch("bert", tmp_path_factory.mktemp("ck") / "bert")[1]


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _one_line_error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("landscape: error: "), err
    assert "http" not in err and "Traceback" not in err
    return err


def test_config_json_that_is_not_json(bert_dir, tmp_path, capsys):
    """Defect (item 14): a broken config.json gave a transformers traceback."""
    ck = _copy(bert_dir, tmp_path / "ck")
    (ck / "config.json").write_text('{"model_type": "bert", ')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(ck)
    assert "not valid JSON" in _one_line_error(capsys, ["fisher", str(ck), "--out", str(tmp_path / "o")])


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_safetensors(bert_dir, tmp_path, capsys, damage):
    """Defect (item 14): a truncated or garbage model.safetensors gave a SafetensorError traceback."""
    ck = _copy(bert_dir, tmp_path / "ck")
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2] if damage == "truncated" else b"garbage" * 50)
    for path in (ck, ck / "model.safetensors"):
        with pytest.raises(ValueError, match="damaged or incomplete"):
            load_checkpoint(path)
    assert "damaged" in _one_line_error(capsys, ["scan", str(ck), "--out", str(tmp_path / "o")])


def test_truncated_torch_file_is_not_called_a_code_pickle(bert_dir, tmp_path):
    """Defect (item 15): a truncated .bin was reported as "needs code execution"."""
    model = load_checkpoint(bert_dir).model
    torch.save(model.state_dict(), tmp_path / "w.bin")
    data = (tmp_path / "w.bin").read_bytes()
    (tmp_path / "w.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged or incomplete") as info:
        read_state_dict(tmp_path / "w.bin")
    assert "code execution" not in str(info.value)

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"w": Evil()}, tmp_path / "evil.bin")
    with pytest.raises(ValueError, match="code execution"):
        read_state_dict(tmp_path / "evil.bin")


@pytest.mark.parametrize("kind", ["unknown", "custom"])
def test_unknown_or_custom_model_type_is_one_line_of_ours(bert_dir, tmp_path, capsys, kind):
    """Defect (item 16): transformers' messages ran to a second line and a hub URL for a local path."""
    ck = _copy(bert_dir, tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model_type"] = "my-own-bert"
    if kind == "custom":
        cfg["auto_map"] = {"AutoConfig": "modeling_mine.MyConfig", "AutoModelForMaskedLM": "modeling_mine.MyModel"}
    (ck / "config.json").write_text(json.dumps(cfg))
    err = _one_line_error(capsys, ["fisher", str(ck), "--out", str(tmp_path / "o")])
    assert ("custom model code" in err) if kind == "custom" else ("unknown to transformers" in err)


def test_causal_tokenizer_without_pad_token_pads_with_eos(tmp_path, caplog, monkeypatch):
    """Defect (item 10): GPT-2's tokenizer has no pad token, and batching crashed."""
    from analyses.common import load_target
    from landscape.util import meta

    monkeypatch.setattr(meta, "_said_once", set())  # said once per process: forget earlier tests' notes

    _, path = A.save_arch("gpt2", tmp_path / "gpt2")
    with caplog.at_level("WARNING"):
        target = load_target(str(path), examples=4, texts=A.texts(4))
    assert target.tokenizer.pad_token == target.tokenizer.eos_token
    assert any("no pad token" in r.message for r in caplog.records)
    assert any(int((b["attention_mask"] == 0).sum()) > 0 for b in target.data)  # mixed lengths were padded
    assert target.objective.evaluate(target.model, target.data) > 0


def test_max_length_is_capped_at_the_models_positions(tmp_path):
    """Defect (item 13): a tokenizer without model_max_length and the default --max-length 128
    against 64 positions crashed with a tensor size mismatch."""
    from analyses.common import load_target

    _, path = A.save_arch("roberta", tmp_path / "roberta")
    long = [" ".join(f"w{i % 30}" for i in range(200))]
    target = load_target(str(path), examples=1, texts=long, max_length=128)
    assert target.data[0]["input_ids"].shape[1] == 63  # RoBERTa positions start after the pad id (0 here)
    assert target.meta["max_length"] == 63 and "lowered" in target.meta["notes"][0]
    assert torch.isfinite(torch.tensor(target.objective.evaluate(target.model, target.data)))
