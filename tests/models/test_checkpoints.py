"""Checkpoint loading from real saved transformers models, offline, with clear errors."""

from __future__ import annotations

import pytest
import torch

from conftest import make_mlm_batches, make_tiny_bert, mlm_objective
from landscape.models.checkpoints import load_checkpoint
from landscape.models.weight_files import read_state_dict


@pytest.fixture
def saved_bert(tmp_path):
    model = make_tiny_bert().eval()
    model.save_pretrained(tmp_path / "bert")
    return model, tmp_path / "bert"


def test_hf_directory_round_trip_gives_identical_losses(saved_bert):
    model, path = saved_bert
    ck = load_checkpoint(path)
    assert ck.task == "mlm" and not ck.model.training
    data = make_mlm_batches()
    obj = mlm_objective()
    assert obj.evaluate(ck.model, data) == obj.evaluate(model, data)
    # tying survives the round trip
    assert ck.model.cls.predictions.decoder.weight is ck.model.bert.embeddings.word_embeddings.weight


def test_a_directory_builds_one_model_only(saved_bert, monkeypatch):
    """Defect: the loader built a whole model from the config only to validate the architecture,
    then built it again from the weights."""
    from transformers import BertForMaskedLM

    built = []
    init = BertForMaskedLM.__init__

    def counting(self, *a, **k):
        built.append(1)
        init(self, *a, **k)

    monkeypatch.setattr(BertForMaskedLM, "__init__", counting)
    load_checkpoint(saved_bert[1])
    assert len(built) == 1


def test_safetensors_and_torch_files_with_config(saved_bert, tmp_path):
    model, path = saved_bert
    torch.save(model.state_dict(), path / "weights.pt")
    data, obj = make_mlm_batches(), mlm_objective()
    ref = obj.evaluate(model, data)
    for f in (path / "model.safetensors", path / "weights.pt"):
        assert obj.evaluate(load_checkpoint(f).model, data) == ref
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "w.pt").write_bytes((path / "weights.pt").read_bytes())
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(lone / "w.pt")
    assert obj.evaluate(load_checkpoint(lone / "w.pt", config=path).model, data) == ref


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "x.ckpt").write_text("hi")
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        load_checkpoint(tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="task must be"):
        load_checkpoint(tmp_path, task="vision")


def test_missing_mlm_head_is_named(tmp_path):
    from transformers import BertModel

    BertModel(make_tiny_bert().config).save_pretrained(tmp_path / "enc")
    with pytest.raises(ValueError, match="no MLM head"):
        load_checkpoint(tmp_path / "enc")


def test_wrong_architecture_is_named(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=30, n_embd=16, n_layer=1, n_head=2, n_positions=16)).save_pretrained(tmp_path / "gpt")
    assert load_checkpoint(tmp_path / "gpt").task == "causal"
    with pytest.raises(ValueError, match="no masked-LM class"):
        load_checkpoint(tmp_path / "gpt", task="mlm")


def test_pickle_needing_code_execution_is_refused(saved_bert):
    model, path = saved_bert
    torch.save({"model": model}, path / "pickled.pt")  # a whole module: needs code to unpickle
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(path / "pickled.pt")
    with pytest.raises(ValueError, match="code execution"):
        load_checkpoint(path / "pickled.pt")


def test_tokenizer_is_loaded_when_present(saved_bert, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    _, path = saved_bert
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]")
    fast.save_pretrained(path)
    ck = load_checkpoint(path)
    assert ck.tokenizer is not None and ck.tokenizer.mask_token_id == 4
