"""The fast per-example Fisher path swaps the 2-D padding mask for a 4-D one only where the model's
outputs are unchanged by it (issue 13, item 7)."""

from __future__ import annotations


import architectures as A
from landscape import fisher, objectives
from landscape.models.checkpoints import texts_to_batches


def _data(arch: str):
    model = A.build(arch)
    tok = A.tokenizer(A.ARCHS[arch])
    data = texts_to_batches(tok, A.texts(6, lo=10, hi=20), max_length=32, batch_size=6)  # longer than the window
    return model, objectives.MaskedLM(mask_prob=0.3, seed=0, tokenizer=tok), data


def _max_rel_diff(a, b) -> float:
    top = max(float(t.abs().max()) for t in b.scores.values())
    return max(float((a.scores[n] - b.scores[n]).abs().max()) for n in b.scores) / top


def test_modernbert_sliding_window_keeps_the_2d_mask():
    """Defect: the 4-D mask dropped ModernBERT's sliding-window attention, so the vmapped Fisher was
    off by ~8e-4 of the maximum score; the check (2 examples, losses at 1e-4) let it through."""
    model, obj, data = _data("modernbert")
    fast = fisher.diagonal(model, obj, data, progress=False, convergence=False)
    loop = fisher.diagonal(model, obj, data, progress=False, convergence=False, per_example="loop")
    assert fast.meta["hf_4d_mask"] is False
    assert _max_rel_diff(fast, loop) < 1e-6


def test_bert_still_takes_the_fast_4d_path():
    """The stricter check does not turn the fast path off where the 4-D mask is exact."""
    model, obj, data = _data("bert")
    fast = fisher.diagonal(model, obj, data, progress=False, convergence=False)
    loop = fisher.diagonal(model, obj, data, progress=False, convergence=False, per_example="loop")
    assert fast.meta["hf_4d_mask"] is True and fast.meta["per_example"] == "vmap"
    assert _max_rel_diff(fast, loop) < 1e-5
