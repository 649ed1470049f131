"""The stdlib-docstring corpus: extraction without importing, determinism, hash, split."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from landscape.models import corpus


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return corpus.stdlib_docstrings()


def _write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def test_stdlib_corpus_size_and_content(docs):
    assert 4000 < len(docs) < 15000
    chars = sum(map(len, docs))
    assert 1.0e6 < chars < 3.5e6
    assert all(len(d) >= 40 and d == d.strip() for d in docs)
    assert len(set(docs)) == len(docs)
    # A docstring we know: the module docstring of the stdlib's json package.
    assert any(d.startswith("JSON (JavaScript Object Notation)") for d in docs)


def test_stdlib_corpus_is_deterministic(docs):
    again = [d.text for d in corpus._collect(corpus.stdlib_root(), 40)]  # a second, independent parse
    assert again == docs
    assert corpus.corpus_hash(again) == corpus.corpus_hash(docs)


def test_files_sorted_and_test_dirs_skipped():
    root = corpus.stdlib_root()
    files = [p.relative_to(root) for p in corpus.iter_stdlib_files()]
    assert files == sorted(files, key=lambda p: p.as_posix())
    assert len(files) > 300
    for rel in files:
        assert not set(rel.parts[:-1]) & {"site-packages", "test", "tests", "idle_test"}, rel
    assert Path("json/__init__.py") in files


def test_parses_without_importing(tmp_path, docs):
    # Stdlib modules with import side effects were parsed (the fixture ran) but never imported.
    assert "antigravity" not in sys.modules and "this" not in sys.modules
    marker = tmp_path / "imported.txt"
    _write(tmp_path, "probe_mod_landscape.py",
           f'"""Probe module docstring, long enough to keep."""\n'
           f'open({str(marker)!r}, "w").write("x")\n'
           f'raise SystemExit("imported!")\n'
           f'def f():\n    """Function docstring that is long enough to keep."""\n')
    before = set(sys.modules)
    got = corpus.stdlib_docstrings(root=tmp_path)
    assert got == ["Probe module docstring, long enough to keep.", "Function docstring that is long enough to keep."]
    assert not marker.exists()
    assert "probe_mod_landscape" not in set(sys.modules) - before


def test_skips_broken_files_and_short_or_duplicate_docstrings(tmp_path):
    _write(tmp_path, "a_good.py", '"""A module docstring that is long enough."""\nclass C:\n    """Short."""\n')
    _write(tmp_path, "b_syntax.py", '"""A docstring in a file that fails to parse."""\ndef (:\n')
    _write(tmp_path, "c_latin1.py", b'"""Caf\xe9 docstring in latin-1 without a coding line."""\n')
    _write(tmp_path, "d_dup.py", '"""A module docstring that is long enough."""\n')
    _write(tmp_path, "tests/e_in_tests.py", '"""A docstring inside a tests directory."""\n')
    _write(tmp_path, "site-packages/f.py", '"""A docstring inside site-packages here."""\n')
    assert corpus.stdlib_docstrings(min_chars=20, root=tmp_path) == ["A module docstring that is long enough."]
    assert corpus.stdlib_docstrings(min_chars=1, root=tmp_path) == ["A module docstring that is long enough.", "Short."]


def test_docstrings_in_source_order():
    src = '"""Mod."""\nclass A:\n    """A."""\n    def m(self):\n        """A.m."""\nasync def g():\n    """g."""\n'
    assert corpus.docstrings_from_source(src) == ["Mod.", "A.", "A.m.", "g."]


def test_corpus_hash_stable_and_sensitive():
    assert corpus.corpus_hash(["a", "b"]) == corpus.corpus_hash(["a", "b"])
    # Pinned value: the hash format must not drift (it is part of every cache key).
    assert corpus.corpus_hash(["a", "b"]) == "cf6ab613e3942391f88ed698557e1680f160bd10e88c6b668c50360c10930e2b"
    assert corpus.corpus_hash(["a", "b"]) != corpus.corpus_hash(["b", "a"])
    assert corpus.corpus_hash(["ab"]) != corpus.corpus_hash(["a", "b"])
    assert len(corpus.corpus_hash([])) == 64


def test_split_disjoint_deterministic_and_local(docs):
    train, held = corpus.split_texts(docs, 0.05)
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(docs)
    assert 0.035 < len(held) / len(docs) < 0.065
    assert corpus.split_texts(docs, 0.05) == (train, held)
    # The decision depends on the text only, not on the rest of the corpus.
    sub = docs[::7]
    sub_train, sub_held = corpus.split_texts(sub, 0.05)
    assert set(sub_held) == set(held) & set(sub)
    assert corpus.split_texts(docs, 0.2)[1] != held


def test_fingerprint_tracks_file_changes(tmp_path):
    path = _write(tmp_path, "m.py", '"""Doc."""\n')
    fp = corpus.stdlib_fingerprint(tmp_path)
    assert corpus.stdlib_fingerprint(tmp_path) == fp
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert corpus.stdlib_fingerprint(tmp_path) != fp


def test_tokenizer_is_deterministic_bert_wordpiece(docs):
    texts = docs[:400]
    tok = corpus.build_tokenizer(texts, vocab_size=500, max_seq_len=32)
    assert corpus.build_tokenizer(texts, vocab_size=500, max_seq_len=32).get_vocab() == tok.get_vocab()
    assert len(tok) == 500
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == corpus.SPECIAL_TOKENS
    assert (tok.pad_token, tok.mask_token, tok.cls_token, tok.sep_token) == ("[PAD]", "[MASK]", "[CLS]", "[SEP]")
    assert any(t.startswith("##") for t in tok.get_vocab())
    pieces = tok.tokenize("Return the value")
    assert pieces[0] == "return" and all(p.startswith("##") or p.isalpha() for p in pieces)
    ids = tok("Return the value.")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "return the value."


def test_chunk_texts_packs_rows():
    tok = corpus.build_tokenizer(["alpha beta gamma delta", "epsilon zeta eta theta"] * 5, vocab_size=60)
    rows = corpus.chunk_texts(tok, ["alpha beta gamma delta"] * 3, max_seq_len=8)
    ids, mask = rows["input_ids"], rows["attention_mask"]
    assert ids.dtype == torch.long and ids.shape[1] == 8
    assert (ids[:, 0] == tok.cls_token_id).all()
    n_stream = sum(len(tok.tokenize("alpha beta gamma delta")) + 1 for _ in range(3))  # +1: [SEP] between texts
    assert int(mask.sum()) - 2 * ids.shape[0] == n_stream
    assert (ids[mask == 0] == tok.pad_token_id).all()
    last = int(mask[-1].sum())
    assert ids[-1, last - 1] == tok.sep_token_id
    assert rows["doc_index"].shape == (ids.shape[0],) and rows["doc_index"][0] == 0


def test_documents_keep_their_module(docs, tmp_path):
    documents = corpus.stdlib_documents()
    assert [d.text for d in documents] == docs  # the same list, in the same order
    assert next(d for d in documents if d.text.startswith("JSON (JavaScript Object Notation)")).module == "json"
    assert any(d.module == "json.decoder" for d in documents)
    _write(tmp_path, "pkg/__init__.py", '"""The package docstring, long enough to keep."""\n')
    _write(tmp_path, "pkg/sub.py",
           '"""The submodule docstring, long enough."""\ndef f():\n    """Its function docstring."""\n')
    _write(tmp_path, "top.py", '"""The package docstring, long enough to keep."""\n')  # a duplicate: dropped
    got = corpus.stdlib_documents(min_chars=10, root=tmp_path)
    assert got == [corpus.Document("pkg", "The package docstring, long enough to keep."),
                   corpus.Document("pkg.sub", "The submodule docstring, long enough."),
                   corpus.Document("pkg.sub", "Its function docstring.")]
    assert corpus.module_name(Path("a/b/c.py")) == "a.b.c" and corpus.module_name(Path("__init__.py")) == "__init__"


def test_chunk_texts_records_the_source_text_of_each_row():
    texts = ["alpha beta", "gamma delta epsilon zeta eta theta alpha beta gamma", "delta", "epsilon zeta eta"]
    tok = corpus.build_tokenizer(texts * 3, vocab_size=60)
    body = 4
    rows = corpus.chunk_texts(tok, texts, max_seq_len=body + 2)
    # recomputed: the stream with each position's text, the separator after a text belonging to it
    stream = [(t, tid) for t, text in enumerate(texts)
              for tid in [*tok(text, add_special_tokens=False)["input_ids"], -1]]
    expected = []
    for start in range(0, len(stream), body):
        part = stream[start:start + body]
        expected.append(next((t for t, tid in part if tid != -1), part[0][0]))
    assert rows["doc_index"].dtype == torch.long and rows["doc_index"].tolist() == expected
    assert rows["doc_index"].shape[0] == rows["input_ids"].shape[0] and len(set(expected)) < len(expected)
