"""``landscape hessian`` end to end on a tiny BERT checkpoint saved by the test."""

from __future__ import annotations

import json

import pytest
import torch

from analyses import cli
from landscape import util


def save_checkpoint(path, seed: int = 0):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + [chr(c) for c in range(ord("a"), ord("z") + 1)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, pad_token_id=0)
    model = BertForMaskedLM(config)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return model


def write_texts(path):
    path.write_text("\n".join(["the quick brown fox jumps", "over the lazy dog", "curvature of the loss",
                                "hessian vector products", "lanczos finds eigenvalues"]), encoding="utf-8")
    return str(path)


@pytest.mark.slow
def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    ck = tmp_path / "ck"
    model = save_checkpoint(ck)
    texts = write_texts(tmp_path / "t.txt")
    before = util.weights_fingerprint(model)
    out = tmp_path / "out"
    rc = cli.main(["hessian", str(ck), "--texts", texts, "--examples", "2", "--batch-size", "2", "--top-k", "2", "--tol", "1e-2",
                   "--trace", "--trace-matvecs", "3", "--density", "--density-runs", "1", "--lanczos-steps", "3",
                   "--mode", "double_backward",
                   "--fisher", "--allow-unk", "--out", str(out)])  # spaces are [UNK] in this character vocabulary
    printed = capsys.readouterr().out
    assert rc == 0
    assert "eigenvalue 2" in printed and "trace" in printed and "fisher" in printed
    res = json.loads((out / "hessian.json").read_text())
    h = res["results"]["hessian"]
    assert len(h["eigenvalues"]["values"]) == 2 and h["eigenvalues"]["values"][0] >= h["eigenvalues"]["values"][1]
    assert h["trace"]["n_matvecs"] == 3 and h["density"]["n_matvecs"] == 3
    assert res["results"]["fisher"]["eigenvalues"]["values"][1] >= -1e-6  # PSD
    assert res["n_examples"] == 2 and "torch" in res["versions"]
    assert h["operator"]["mode"] == "double_backward"
    assert util.weights_fingerprint(model) == before  # the saved copy is untouched too


def test_cli_bad_input_exits_2(tmp_path, capsys):
    ck = tmp_path / "ck"
    save_checkpoint(ck)
    texts = write_texts(tmp_path / "t.txt")
    assert cli.main(["hessian", str(ck), "--top-k", "0"]) == 2
    assert "nothing to compute" in capsys.readouterr().err
    assert cli.main(["hessian", str(ck), "--texts", texts, "--examples", "2", "--allow-unk", "--include", "no.such.*"]) == 2
    assert "matches nothing" in capsys.readouterr().err
    assert cli.main(["hessian", str(tmp_path / "missing")]) == 2
    assert cli.main(["hessian", str(ck), "--texts", str(tmp_path / "none.txt")]) == 2
    assert "is not a file" in capsys.readouterr().err
