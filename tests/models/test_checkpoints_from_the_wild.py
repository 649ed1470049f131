"""Issue 20, items 1-2: hub names from the local cache, checkpoints saved by other code, tokenizers
found a folder up or given, and the [UNK] check that names the cause."""

from __future__ import annotations

import shutil

import pytest
import torch

from analyses.cli import main
from analyses.common import load_target
from conftest import make_tiny_bert, tiny_bert_config
from landscape.models import hub_cache
from landscape.models.checkpoints import load_checkpoint
from saved_models import save_tiny_checkpoint, tiny_texts

CHARS = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
CHAR_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS]


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k in sb)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A Hugging Face cache layout holding ``org/tiny-bert``: refs/main -> snapshots/<hash>/."""
    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--org--tiny-bert"
    snap = repo / "snapshots" / "0123abcd"
    model, _ = save_tiny_checkpoint(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    for var in ("HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    return cache, model


def test_hub_name_resolves_from_hf_hub_cache_and_hf_home(hub, monkeypatch):
    cache, model = hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    ck = load_checkpoint("org/tiny-bert")
    assert ck.path == cache / "models--org--tiny-bert" / "snapshots" / "0123abcd"
    assert _same_weights(ck.model, model) and ck.tokenizer is not None
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    assert load_checkpoint("org/tiny-bert@0123abcd").path == ck.path
    target = load_target("org/tiny-bert", examples=4, texts=tiny_texts(4))
    assert target.meta["checkpoint"] == str(ck.path.resolve()) and target.meta["tokens"]["unk_share"] == 0.0


def test_missing_hub_name_is_one_line_naming_the_cache(hub, monkeypatch, capsys):
    cache, _ = hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache") as err:
        load_checkpoint("bert-base-uncased")
    msg = str(err.value)
    assert str(cache) in msg and "models--bert-base-uncased" in msg and "huggingface-cli download" in msg
    assert "\n" not in msg
    assert main(["hessian", "bert-base-uncased", "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("landscape: error: checkpoint 'bert-base-uncased'")
    assert hub_cache.looks_like_hub_name("org/name@v1") and not hub_cache.looks_like_hub_name("./x")


def _third_party(root, heads=("mlm", "extra"), vocab_up=True, n_classes=3):
    """A BERT saved by other code: an unknown architecture name, pytorch_model.bin, vocab.txt a folder up."""
    cfg = tiny_bert_config(vocab=len(CHAR_VOCAB))
    model = make_tiny_bert(vocab=len(CHAR_VOCAB))
    state = {k: v for k, v in model.state_dict().items() if "mlm" in heads or not k.startswith("cls.")}
    if "mlm" not in heads:  # a classifier reads the pooler
        state["bert.pooler.dense.weight"], state["bert.pooler.dense.bias"] = torch.randn(16, 16), torch.zeros(16)
    if "extra" in heads:
        state["classifier.weight"], state["classifier.bias"] = torch.randn(n_classes, 16), torch.zeros(n_classes)
    cfg.architectures = ["BertForPreTrainingWithExtraHeads"]
    (root / "model").mkdir(parents=True)
    cfg.to_json_file(root / "model" / "config.json")
    torch.save(state, root / "model" / "pytorch_model.bin")
    (root / ("vocab.txt" if vocab_up else "model/vocab.txt")).write_text("\n".join(CHAR_VOCAB) + "\n")
    return root / "model", model


def test_extra_heads_architecture_loads_its_mlm_head_quietly(tmp_path, capfd, caplog):
    path, model = _third_party(tmp_path)
    ck = load_checkpoint(path)
    out, err = capfd.readouterr()
    assert ck.task == "mlm" and type(ck.model).__name__ == "BertForMaskedLM" and _same_weights(ck.model, model)
    assert "LOAD REPORT" not in out + err and "UNEXPECTED" not in out + err and "it/s" not in out + err
    notes = [r.getMessage() for r in caplog.records if "BertForPreTrainingWithExtraHeads" in r.getMessage()]
    assert len(notes) == 1 and "classifier.weight" in notes[0] and "BertForMaskedLM" in notes[0]
    assert any("a folder up" in r.getMessage() for r in caplog.records)
    assert ck.tokenizer is not None and ck.tokenizer.convert_tokens_to_ids("Q") == CHAR_VOCAB.index("Q")


def test_unknown_architecture_with_only_a_classifier_loads_as_classifier(tmp_path):
    path, _ = _third_party(tmp_path, heads=("extra",), n_classes=2)  # the config's num_labels
    ck = load_checkpoint(path)
    assert ck.task == "cls" and type(ck.model).__name__ == "BertForSequenceClassification"


def test_cased_character_vocabulary_gets_the_cause_and_the_flags(tmp_path, capsys):
    path, _ = _third_party(tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("A B C D E F G H\nH G F E D C B A\nQ W E R T Y\n")
    with pytest.raises(ValueError, match="lower-cases its input but the vocabulary is cased.*--allow-unk"):
        load_target(str(path), examples=3, texts=["A B C D", "E F G H"])
    assert main(["hessian", str(path), "--texts", str(texts), "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("landscape: error")]
    assert len(err) == 1 and "100% of the" in err[0] and "do_lower_case" in err[0] and "--allow-unk" in err[0]
    (tmp_path / "tok").mkdir()
    shutil.copy(tmp_path / "vocab.txt", tmp_path / "tok" / "vocab.txt")
    (tmp_path / "tok" / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    target = load_target(str(path), examples=2, texts=["A B C D", "E F G H"], tokenizer=tmp_path / "tok")
    assert target.meta["tokens"]["unk_share"] == 0.0 and target.meta["tokens"]["n_tokens"] == 8
    assert load_target(str(path), examples=2, texts=["A B", "C D"], allow_unk=True).meta["tokens"]["unk_share"] == 1.0


def test_character_vocabulary_without_separators_is_named(tmp_path):
    path, _ = _third_party(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    with pytest.raises(ValueError, match="single characters.*separator"):
        load_target(str(path), examples=2, texts=["ABCDEFGH", "HGFEDCBA"])
    target = load_target(str(path), examples=2, texts=["A B C D E F G H", "H G F E D C B A"], max_length=8)
    assert target.meta["tokens"]["truncated_share"] == 1.0  # 8 characters + [CLS] [SEP] > 8


def test_partial_unknown_tokens_are_measured_and_refused_above_five_percent(tmp_path):
    save_tiny_checkpoint(tmp_path / "ck")
    texts = ["w1 w2 w3 w4 w5 w6 w7 w8 w9 zzz"] * 3  # 10% unknown
    with pytest.raises(ValueError, match="10% of the 30 tokens"):
        load_target(str(tmp_path / "ck"), examples=3, texts=texts)
    ok = load_target(str(tmp_path / "ck"), examples=3, texts=["w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 "
                                                              "w18 w19 w20 zzz"] * 3)
    assert ok.meta["tokens"]["unk_share"] == pytest.approx(1 / 21)


def test_tokenizer_file_and_missing_tokenizer(tmp_path):
    path, _ = _third_party(tmp_path, vocab_up=False)
    (tmp_path / "model" / "vocab.txt").rename(tmp_path / "chars.txt")
    with pytest.raises(ValueError, match="no tokenizer files.*--tokenizer"):
        load_target(str(path), examples=1, texts=["A"])
    ck = load_checkpoint(path, tokenizer=tmp_path / "chars.txt")
    assert ck.tokenizer.convert_tokens_to_ids("[MASK]") == 4
    with pytest.raises(FileNotFoundError, match="--tokenizer .* does not exist"):
        load_checkpoint(path, tokenizer=tmp_path / "nope")
