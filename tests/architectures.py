"""Tiny checkpoints of every architecture a user may bring, built from configs and saved to disk.

Each builder returns a model small enough (hidden 16, 1-2 layers, vocabulary 40) that the Fisher,
curvature, a scan and the audit run on it in about a second. :func:`save_arch` writes it with
``save_pretrained`` together with an offline word-level tokenizer; causal LMs get a tokenizer with
*no* pad token, as GPT-2's has none.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from saved_models import SPECIALS

VOCAB = 40
HIDDEN = 16
#: architecture -> task ("mlm", "causal", "cls")
ARCHS = {
    "bert": "mlm", "roberta": "mlm", "distilbert": "mlm", "albert": "mlm", "electra": "mlm", "deberta-v2": "mlm",
    "modernbert": "mlm", "gpt2": "causal", "llama": "causal", "bert-cls": "cls",
}
N_LABELS = 3


def _common(**kw: Any) -> dict[str, Any]:
    return dict(vocab_size=VOCAB, pad_token_id=0, **kw)


def build(arch: str, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised tiny ``arch`` model in eval mode (eager or default attention)."""
    import transformers as tf

    torch.manual_seed(seed)
    enc = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=64)
    if arch == "bert":
        model = tf.BertForMaskedLM(tf.BertConfig(**_common(**enc)))
    elif arch == "roberta":
        model = tf.RobertaForMaskedLM(tf.RobertaConfig(**_common(**enc, bos_token_id=2, eos_token_id=3)))
    elif arch == "distilbert":
        model = tf.DistilBertForMaskedLM(tf.DistilBertConfig(**_common(dim=HIDDEN, n_layers=2, n_heads=2, hidden_dim=32,
                                                                     max_position_embeddings=64)))
    elif arch == "albert":
        model = tf.AlbertForMaskedLM(tf.AlbertConfig(**_common(embedding_size=8, **enc)))
    elif arch == "electra":
        model = tf.ElectraForMaskedLM(tf.ElectraConfig(**_common(embedding_size=HIDDEN, **enc)))
    elif arch == "deberta-v2":
        model = tf.DebertaV2ForMaskedLM(tf.DebertaV2Config(**_common(**enc, relative_attention=True, position_buckets=8,
                                                                     pos_att_type=["p2c", "c2p"])))
    elif arch == "modernbert":
        model = tf.ModernBertForMaskedLM(tf.ModernBertConfig(
            **_common(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=64, global_attn_every_n_layers=2, local_attention=4,
                      bos_token_id=2, eos_token_id=3, sep_token_id=3, cls_token_id=2, mask_token_id=4)))
    elif arch == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=2, n_head=2, n_positions=64,
                                                 bos_token_id=2, eos_token_id=3))
    elif arch == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2,
                                                   num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
                                                   max_position_embeddings=64, bos_token_id=2, eos_token_id=3))
    elif arch == "bert-cls":
        model = tf.BertForSequenceClassification(tf.BertConfig(**_common(**enc, num_labels=N_LABELS)))
    else:
        raise KeyError(arch)
    model.config.mask_token_id = 4
    return model.eval()


def tokenizer(task: str) -> Any:
    """A word-level fast tokenizer over ``w0 … w34``; MLMs and classifiers get BERT's specials and
    a [CLS] … [SEP] template; causal LMs get bos/eos/unk only (no pad token, like GPT-2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(VOCAB - len(SPECIALS))]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if task == "causal":
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="[CLS]", eos_token="[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def save_arch(arch: str, path: Path, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    """Build ``arch``, ``save_pretrained`` it with its tokenizer under ``path``; returns (model, path)."""
    model = build(arch, seed)
    model.save_pretrained(path)
    tokenizer(ARCHS[arch]).save_pretrained(path)
    return model, path


def texts(n: int = 10, seed: int = 0, lo: int = 3, hi: int = 12) -> list[str]:
    """Random word sequences of mixed lengths."""
    r = random.Random(seed)
    return [" ".join(f"w{r.randrange(VOCAB - len(SPECIALS))}" for _ in range(r.randint(lo, hi))) for _ in range(n)]


def labelled_rows(n: int = 10, seed: int = 0) -> list[tuple[str, int]]:
    """(text, label) pairs for the classifier."""
    return [(t, i % N_LABELS) for i, t in enumerate(texts(n, seed))]
