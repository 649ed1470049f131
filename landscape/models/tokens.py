"""Finding a checkpoint's tokenizer, and checking that it reads the evaluation texts.

A tokenizer that turns the texts into ``[UNK]`` makes every loss meaningless, and silently so when
only part of the tokens are unknown. :func:`token_stats` measures, on the texts a run evaluates,

    unk_share       = #[UNK] tokens / #tokens      (special tokens [CLS], [SEP], ... not counted)
    truncated_share = #texts longer than max_length tokens / #texts

and :func:`check_unknown_tokens` refuses an ``unk_share`` above :data:`MAX_UNK_SHARE` with one line
naming the likely cause: a lower-casing tokenizer for a cased vocabulary (a ``vocab.txt`` read
without its ``tokenizer_config.json``), or texts without separators for a character vocabulary.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MAX_UNK_SHARE", "TOKENIZER_FILES", "check_unknown_tokens", "find_tokenizer", "load_tokenizer",
           "token_stats"]

MAX_UNK_SHARE = 0.05
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
log = logging.getLogger("landscape.models")


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in TOKENIZER_FILES)


def load_tokenizer(source: str | Path, config: Any = None) -> Any:
    """A tokenizer from a folder, a ``tokenizer.json`` or a vocabulary file (``vocab.txt``), offline.

    ``config`` (the checkpoint's) picks the tokenizer class when the folder has no
    ``tokenizer_config.json``."""
    from transformers import AutoTokenizer

    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"--tokenizer {source} does not exist; give the folder holding the tokenizer files "
                                "(tokenizer.json or vocab.txt) or one of those files.")
    kw: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    if config is not None:
        kw["config"] = config
    if source.is_file():
        kw["tokenizer_file" if source.suffix == ".json" else "vocab_file"] = str(source)
        source = source.parent
    elif not _has_tokenizer(source):
        raise FileNotFoundError(f"--tokenizer {source} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}).")
    try:
        return AutoTokenizer.from_pretrained(str(source), **kw)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ValueError(f"tokenizer {source} cannot be loaded: {first}") from None


def find_tokenizer(checkpoint_dir: Path, tokenizer: str | Path | None = None, config: Any = None) -> Any:
    """The tokenizer for a checkpoint: ``tokenizer`` when given, else the checkpoint folder's, else the
    one a folder up (said in one log line); ``None`` when there is none."""
    if tokenizer is not None:
        return load_tokenizer(tokenizer, config)
    if _has_tokenizer(checkpoint_dir):
        return load_tokenizer(checkpoint_dir, config)
    parent = checkpoint_dir.parent
    if parent != checkpoint_dir and _has_tokenizer(parent):
        log.warning("landscape: note: no tokenizer in %s; using the one a folder up, in %s (pass --tokenizer to "
                    "choose another).", checkpoint_dir, parent)
        return load_tokenizer(parent, config)
    return None


def token_stats(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, Any]:
    """``unk_share``, ``truncated_share`` and counts over ``texts`` (see the module docstring)."""
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    special = set(getattr(tokenizer, "all_special_ids", []) or []) - {unk}
    n_tok = sum(1 for ids in enc for t in ids if t not in special)
    n_unk = sum(1 for ids in enc for t in ids if unk is not None and t == unk)
    n_special = max(len(tokenizer("", add_special_tokens=True)["input_ids"]), 0)
    n_trunc = sum(1 for ids in enc if len(ids) + n_special > max_length)
    return {"n_texts": len(enc), "n_tokens": n_tok, "n_unk": n_unk, "unk_share": n_unk / n_tok if n_tok else 0.0,
            "n_truncated": n_trunc, "truncated_share": n_trunc / len(enc) if enc else 0.0, "max_length": max_length}


def _plain_vocab(tokenizer: Any) -> list[str]:
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    ordered = sorted(vocab, key=vocab.__getitem__)
    return [t for t in ordered if t not in special and not (t.startswith("[") and t.endswith("]"))]


def _lowercases(tokenizer: Any) -> bool:
    if getattr(tokenizer, "do_lower_case", False):
        return True
    probe = tokenizer.tokenize("QZXJ") if hasattr(tokenizer, "tokenize") else []
    return bool(probe) and "".join(t.lstrip("#") for t in probe).islower()


def likely_cause(tokenizer: Any) -> str:
    """The most likely reason for many ``[UNK]``s, from the vocabulary and the tokenizer's settings."""
    vocab = _plain_vocab(tokenizer)
    cased = [t for t in vocab if t.lstrip("#") != t.lstrip("#").lower()]
    if cased and _lowercases(tokenizer):
        return (f"the tokenizer lower-cases its input but the vocabulary is cased ({len(cased)} tokens with capitals, "
                "e.g. " + ", ".join(repr(t) for t in cased[:3]) + "): put a tokenizer_config.json with "
                "\"do_lower_case\": false beside vocab.txt, or pass --tokenizer DIR holding the right one")
    chars = [t for t in vocab if len(t.lstrip("#")) == 1]
    if vocab and len(chars) >= 0.9 * len(vocab):
        return ("the vocabulary is single characters and words of several characters have no token: write the texts "
                "with a separator (a space) between characters, or pass --tokenizer for a tokenizer that splits them")
    return ("the tokenizer does not match the texts or the model: pass --tokenizer DIR with the checkpoint's own "
            "tokenizer")


def check_unknown_tokens(stats: dict[str, Any], tokenizer: Any, allow_unk: bool = False) -> None:
    """Refuse texts whose ``[UNK]`` share exceeds :data:`MAX_UNK_SHARE` (one line: the share, the likely
    cause and ``--allow-unk``)."""
    if allow_unk or stats["unk_share"] <= MAX_UNK_SHARE:
        return
    raise ValueError(f"{stats['unk_share']:.0%} of the {stats['n_tokens']} tokens of the evaluation texts are [UNK] "
                     f"(at most {MAX_UNK_SHARE:.0%} allowed); likely cause: {likely_cause(tokenizer)}; or pass "
                     "--allow-unk (allow_unk=True) to proceed anyway.")
