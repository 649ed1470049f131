"""Tiny models of every supported architecture, a word-level tokenizer, and texts, for the dropout tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = 48
COMMON = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
              max_position_embeddings=40)
ARCHS = ("bert", "roberta", "distilbert", "electra", "deberta-v2", "albert", "gpt2", "llama", "qwen2")


def make_model(arch: str, seed: int = 0, head: str = "lm", num_labels: int = 3):
    """A tiny ``...ForMaskedLM``/``...ForCausalLM`` (``head="lm"``) or ``...ForSequenceClassification``."""
    import transformers as T

    torch.manual_seed(seed)
    cls = {"bert": "Bert", "roberta": "Roberta", "distilbert": "DistilBert", "electra": "Electra", "deberta-v2": "DebertaV2",
           "albert": "Albert", "gpt2": "GPT2", "llama": "Llama", "qwen2": "Qwen2"}[arch]
    kw = dict(COMMON, pad_token_id=0)
    if arch == "distilbert":
        kw = dict(vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=40, pad_token_id=0)
    elif arch == "gpt2":
        kw = dict(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=40, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    elif arch == "deberta-v2":
        kw.update(relative_attention=True, pos_att_type=["p2c", "c2p"], conv_kernel_size=3, max_relative_positions=16)
    elif arch == "albert":
        kw.update(embedding_size=8, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    elif arch == "electra":
        kw.update(embedding_size=16)
    elif arch in ("llama", "qwen2"):
        kw.update(num_key_value_heads=1, attention_dropout=0.1)
    config = getattr(T, f"{cls}Config")(**kw)
    if head == "cls":
        config.num_labels = num_labels
        model = getattr(T, f"{cls}ForSequenceClassification")(config)
    else:
        lm = "ForCausalLM" if arch in ("llama", "qwen2") else "LMHeadModel" if arch == "gpt2" else "ForMaskedLM"
        model = getattr(T, f"{cls}{lm}")(config)
    return model


def make_tokenizer():
    """A WordLevel tokenizer over ``w0 … w42`` with BERT's special tokens (single and pair templates)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(VOCAB - len(SPECIALS))]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=40)


def texts(n: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [" ".join(f"w{r.randrange(VOCAB - len(SPECIALS))}" for _ in range(r.randint(6, 14))) for _ in range(n)]


def save_checkpoint(path: Path, arch: str = "bert", seed: int = 0):
    model = make_model(arch, seed)
    model.save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return model


def token_batches(n_batches: int = 2, batch: int = 8, seq: int = 24, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(5, VOCAB, (batch, seq), generator=g)
        ids[:, 0] = 2
        am = torch.ones_like(ids)
        am[-1, seq // 2:] = 0
        ids[-1, seq // 2:] = 0
        out.append({"input_ids": ids, "attention_mask": am})
    return out


def write_labelled(path: Path, n: int, seed: int = 0, labels=("a", "b", "c"), pair: bool = False) -> Path:
    """Rows whose label is readable from the words (class k uses words w{k}, w{k+3}, ...)."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        y = i % len(labels)
        words = [f"w{r.randrange(y, VOCAB - len(SPECIALS), len(labels))}" for _ in range(r.randint(4, 9))]
        row = {"text": " ".join(words), "label": labels[y]}
        if pair:
            row["text_pair"] = " ".join(reversed(words))
        rows.append(row)
    if path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(x) for x in rows) + "\n")
    else:
        import csv

        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return path


def study_files(root: Path) -> Path:
    """A guided-dropout study's inputs under ``root``: a saved BERT ``ckpt``, labelled ``train.csv``
    (60 rows) and ``test.csv`` (24), and ``heldout.txt`` (12 lines) for the MLM Fisher."""
    save_checkpoint(root / "ckpt")
    write_labelled(root / "train.csv", 60)
    write_labelled(root / "test.csv", 24, seed=1)
    (root / "heldout.txt").write_text("\n".join(texts(12, seed=5)))
    return root
