"""Tiny real checkpoints saved to disk, texts, and file checks shared by the CLI, audit and example tests."""

from __future__ import annotations

import random
import struct
from pathlib import Path

from conftest import make_tiny_bert

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "of", "to", "is", "and", "in", "return", "if", "for", "be", "this", "that", "an", "or",
         "with", "as", "it", "not", "by", "are", "on", "from", "value", "list", "string", "object", "file",
         "name", "none", "true", "false", "function", "default", "set"]



def save_word_checkpoint(path: Path) -> Path:
    """A tiny BERT with a lowercase word-level tokenizer over ``WORDS``, saved to ``path``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

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


def make_tokenizer(vocab: int = 40):
    """A WordLevel tokenizer over words ``w0 … w{vocab-6}`` with BERT's special tokens, as a fast HF tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab - len(SPECIALS))]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_texts(n: int = 12, vocab: int = 40, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [" ".join(f"w{r.randrange(vocab - len(SPECIALS))}" for _ in range(r.randint(6, 14))) for _ in range(n)]


def save_tiny_checkpoint(path: Path, seed: int = 0, model=None):
    """Save a tiny ``BertForMaskedLM`` (or ``model``) and its tokenizer to ``path``; returns (model, tokenizer)."""
    model = model if model is not None else make_tiny_bert(seed)
    tok = make_tokenizer()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok


def write_texts(path: Path, n: int = 12) -> Path:
    path.write_text("\n".join(tiny_texts(n)), encoding="utf-8")
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])
