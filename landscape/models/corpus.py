"""Offline text corpus: docstrings of the running Python's standard library, and its tokenization.

Files are parsed with :mod:`ast` and never imported, so building the corpus has
no side effects.  Ordering is deterministic (sorted relative paths, then source
order within a file), so the same interpreter always yields the same corpus and
the same :func:`corpus_hash`.  Each docstring is a :class:`Document` that keeps the
module it came from, so rows can be grouped (clustered) by docstring or module.
:func:`build_tokenizer` trains a BERT WordPiece tokenizer on it (deterministically)
and :func:`chunk_texts` packs it into rows, recording each row's source docstring.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sysconfig
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "SKIP_DIRS",
    "stdlib_root",
    "iter_stdlib_files",
    "docstrings_from_source",
    "Document",
    "module_name",
    "stdlib_documents",
    "stdlib_docstrings",
    "stdlib_fingerprint",
    "corpus_hash",
    "is_heldout",
    "split_texts",
    "SPECIAL_TOKENS",
    "build_tokenizer",
    "chunk_texts",
    "unigram_entropy",
    "unigram_cross_entropy",
]

#: BERT special tokens, in id order 0-4.
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

#: Directory names skipped anywhere under the stdlib root: third-party
#: packages, test suites and test data, caches.
SKIP_DIRS: frozenset[str] = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idle_test",
        "__pycache__",
        "__phello__",
    }
)

#: Bumped whenever extraction rules change (invalidates memoised corpus hashes).
EXTRACTOR_VERSION = 2

# Statement lists that can hold (nested) definitions: if/for/while/with/try/match bodies.
_BODY_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def stdlib_root() -> Path:
    """Return the standard-library directory of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def iter_stdlib_files(root: Path | None = None) -> Iterator[Path]:
    """Yield ``*.py`` files under ``root`` (default: the stdlib), sorted by
    relative path, skipping :data:`SKIP_DIRS` (which covers ``lib2to3/tests`` and
    ``idlelib/idle_test``) and stray ``test_*.py`` files."""
    root = stdlib_root() if root is None else Path(root)
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        parts = rel.parts[:-1]
        if any(p in SKIP_DIRS for p in parts):
            continue
        if rel.name.startswith("test_"):
            continue
        files.append(rel)
    for rel in sorted(files, key=lambda p: p.as_posix()):
        yield root / rel


def _doc_nodes(node: ast.AST) -> Iterator[ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module/class/function nodes in source order, visiting statements only (fast)."""
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        yield node
    for name in _BODY_FIELDS:
        for child in getattr(node, name, None) or ():
            if isinstance(child, ast.AST):
                yield from _doc_nodes(child)


def docstrings_from_source(source: str | bytes) -> list[str]:
    """Return module/class/function docstrings of ``source`` in source order.

    Raises ``SyntaxError``/``ValueError`` if the source does not parse.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. invalid escape sequences
        tree = ast.parse(source)
    out: list[str] = []
    for node in _doc_nodes(tree):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            out.append(doc)
    return out


@dataclass(frozen=True)
class Document:
    """One docstring of the corpus and the module it came from.

    ``module`` is the dotted name of its file relative to the corpus root (``json/decoder.py`` ->
    ``json.decoder``, ``json/__init__.py`` -> ``json``); ``text`` the stripped docstring.
    """

    module: str
    text: str


def module_name(rel: Path) -> str:
    """Dotted module name of a ``.py`` path relative to the corpus root (``__init__`` -> its package)."""
    parts = list(rel.with_suffix("").parts)
    if parts and parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def stdlib_documents(min_chars: int = 40, root: Path | None = None) -> list[Document]:
    """The docstrings of the stdlib under ``root`` (default: the running Python's), with their modules.

    Files that fail to decode or parse are skipped.  Docstrings shorter than
    ``min_chars`` (after stripping) are dropped; exact duplicates are kept only
    once (first occurrence, with that occurrence's module), so the corpus has no
    trivially repeated texts.  Order: sorted file paths, then source order.
    Memoised per process (the files are parsed once per ``(root, min_chars)``).
    """
    root = stdlib_root() if root is None else Path(root)
    return list(_documents_cached(str(root), min_chars))


def stdlib_docstrings(min_chars: int = 40, root: Path | None = None) -> list[str]:
    """The texts of :func:`stdlib_documents`, in the same order."""
    return [d.text for d in stdlib_documents(min_chars, root)]


@functools.lru_cache(maxsize=8)
def _documents_cached(root: str, min_chars: int) -> tuple[Document, ...]:
    return tuple(_collect(Path(root), min_chars))


def _collect(root: Path, min_chars: int) -> list[Document]:
    seen: set[str] = set()
    out: list[Document] = []
    for path in iter_stdlib_files(root):
        try:
            docs = docstrings_from_source(path.read_bytes())
        except (SyntaxError, ValueError, UnicodeDecodeError, OSError, RecursionError):
            continue
        module = module_name(path.relative_to(root))
        for doc in docs:
            doc = doc.strip()
            if len(doc) < min_chars or doc in seen:
                continue
            seen.add(doc)
            out.append(Document(module, doc))
    return out


def stdlib_fingerprint(root: Path | None = None) -> str:
    """Cheap SHA-256 over (relative path, size, mtime) of the corpus files.

    Changes whenever a source file that could contribute docstrings changes;
    used to memoise :func:`corpus_hash` without re-parsing the stdlib.
    """
    root = stdlib_root() if root is None else Path(root)
    h = hashlib.sha256(f"{EXTRACTOR_VERSION}|{root}".encode())
    for path in iter_stdlib_files(root):
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def corpus_hash(texts: Sequence[str]) -> str:
    """SHA-256 hex digest of the ordered texts (length-prefixed, UTF-8)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _text_unit(text: str, salt: str = "") -> float:
    digest = hashlib.sha256((salt + "\x00" + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_heldout(text: str, fraction: float = 0.05, salt: str = "") -> bool:
    """Deterministically decide, from the text's hash alone, whether it is held out."""
    return _text_unit(text, salt) < fraction


def split_texts(
    texts: Sequence[str], heldout_fraction: float = 0.05, salt: str = ""
) -> tuple[list[str], list[str]]:
    """Split texts into (train, heldout) by hash; order within each is preserved.

    The decision depends only on each text (and ``salt``), so a text is held out
    regardless of which other texts are in the corpus.
    """
    train: list[str] = []
    heldout: list[str] = []
    for t in texts:
        (heldout if is_heldout(t, heldout_fraction, salt) else train).append(t)
    return train, heldout


# --------------------------------------------------------------------------- tokenization


def _wordpiece_vocab(texts: list[str], vocab_size: int, normalizer: Any, pre_tokenizer: Any) -> dict[str, int]:
    """Learn a WordPiece vocabulary deterministically.

    ``tokenizers.trainers.WordPieceTrainer`` is BPE training plus a ``##`` prefix for
    word-internal pieces, but it numbers those pieces in hash-map order, so equal-count
    merges tie-break differently from run to run (huggingface/tokenizers#1794).  We run the
    same BPE training with word-internal characters remapped to private-use code points
    (whose ids the trainer assigns in sorted order), then map the pieces back to ``##`` form.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    inner = sorted({c for w in counts for c in w[1:]})
    if len(inner) > 0x10FFFE - 0xF0000:
        raise ValueError("too many distinct characters for the WordPiece remapping")
    to_pua = {c: chr(0xF0000 + i) for i, c in enumerate(inner)}
    from_pua = {v: k for k, v in to_pua.items()}
    words = [w for w in sorted(counts) if not any(c in from_pua for c in w)]

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    bpe.train_from_iterator(
        (" ".join([w[0] + "".join(to_pua[c] for c in w[1:])] * counts[w]) for w in words), trainer=trainer)
    vocab: dict[str, int] = {}
    for piece, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]):
        if piece in SPECIAL_TOKENS:
            token = piece
        elif piece[0] in from_pua:  # word-internal piece: every character is remapped
            token = "##" + "".join(from_pua[c] for c in piece)
        else:
            token = piece[0] + "".join(from_pua.get(c, c) for c in piece[1:])
        vocab.setdefault(token, len(vocab))
    return vocab


def build_tokenizer(texts: list[str], vocab_size: int, lowercase: bool = True, max_seq_len: int = 128) -> Any:
    """Train a BERT-style WordPiece tokenizer on ``texts`` (deterministic); return a
    ``PreTrainedTokenizerFast`` with ``[PAD] [UNK] [CLS] [SEP] [MASK]`` set (ids 0-4)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = _wordpiece_vocab(texts, vocab_size, normalizer, pre_tokenizer)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_seq_len)
    return fast


def chunk_texts(tokenizer: Any, texts: list[str], max_seq_len: int) -> dict[str, torch.Tensor]:
    """Pack the texts' tokens ([SEP] between texts) into ``[CLS] ... [SEP]`` rows of ``max_seq_len``.

    Only the last row can be shorter; it is padded with the pad id.

    Returns:
        ``input_ids`` and ``attention_mask`` (int64 ``[n_rows, max_seq_len]``) and ``doc_index``
        (int64 ``[n_rows]``): the index in ``texts`` of the text that supplied the row's first real
        token (the first token that is not a separating [SEP]; a row holding only separators takes
        the text the first one closes).
    """
    enc = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    stream: list[int] = []
    owner: list[int] = []  # per stream position: the text it came from
    real: list[bool] = []  # per stream position: a text's token, not a separator
    for t, e in enumerate(enc):
        stream.extend(e.ids)
        stream.append(tokenizer.sep_token_id)
        owner.extend([t] * (len(e.ids) + 1))
        real.extend([True] * len(e.ids) + [False])
    body = max_seq_len - 2
    starts = range(0, len(stream), body)
    ids = torch.full((len(starts), max_seq_len), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(starts), max_seq_len), dtype=torch.long)
    doc = torch.zeros(len(starts), dtype=torch.long)
    for r, i in enumerate(starts):
        row = [tokenizer.cls_token_id, *stream[i:i + body], tokenizer.sep_token_id]
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
        first = next((j for j in range(i, min(i + body, len(stream))) if real[j]), i)
        doc[r] = owner[first]
    return {"input_ids": ids, "attention_mask": mask, "doc_index": doc}


def unigram_entropy(input_ids: torch.Tensor, special_ids: list[int]) -> float:
    """Entropy (nats) of the unigram distribution of the non-special tokens."""
    flat = input_ids.flatten()
    keep = ~torch.isin(flat, torch.tensor(special_ids))
    counts = torch.bincount(flat[keep]).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def unigram_cross_entropy(train_ids: torch.Tensor, heldout_ids: torch.Tensor, special: list[int], vocab: int) -> float:
    """Cross-entropy (nats) of held-out non-special tokens under add-one-smoothed train unigram frequencies."""
    sp = torch.tensor(special)
    tr, he = train_ids.flatten(), heldout_ids.flatten()
    counts = torch.bincount(tr[~torch.isin(tr, sp)], minlength=vocab).double() + 1.0
    counts[sp] = 0.0
    logp = (counts / counts.sum()).log()
    return float(-logp[he[~torch.isin(he, sp)]].mean())
