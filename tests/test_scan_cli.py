"""``landscape scan`` on a checkpoint directory the test saves (tiny BERT + word-level tokenizer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analyses.cli import main
from conftest import make_tiny_bert
from landscape.scan import Surface

WORDS = ["the", "a", "of", "to", "is", "and", "in", "return", "if", "for", "be", "this", "that", "an", "or",
         "with", "as", "it", "not", "by", "are", "on", "from", "value", "list", "string", "object", "file",
         "name", "none", "true", "false", "function", "default", "set"]


@pytest.fixture
def checkpoint(tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = tmp_path / "bert"
    model = make_tiny_bert()
    model.config.mask_token_id = 4
    model.save_pretrained(path)
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")
    fast.save_pretrained(path)
    return path


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
