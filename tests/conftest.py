"""Shared fixtures: tiny float64 models small enough for dense Hessians, and tiny real
``transformers`` models built from configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from landscape import objectives

def _reference_dir() -> Path:
    """Li et al.-layout HDF5 surfaces published with the guided-dropout paper, found by the toolkit's
    one lookup (:func:`analyses.reference.find_reference`: $LANDSCAPE_REFERENCE, ../shared/reference)."""
    from analyses.reference import REPO_ROOT, SUBFOLDER, find_reference

    try:
        return find_reference()
    except FileNotFoundError:
        return REPO_ROOT.parent / "shared" / "reference" / SUBFOLDER


REFERENCE_DIR = _reference_dir()


def reference_file(name: str = "surf_res256_bert.h5") -> Path:
    """A published reference surface (needs h5py); skips the test when the files are not beside the repo."""
    pytest.importorskip("h5py")
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip("reference surfaces not available")
    return path
SPECIAL_IDS = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID = 4


def tiny_bert_config(vocab: int = 40, hidden: int = 16, layers: int = 2, **kw):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=32, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, pad_token_id=0, **kw,
    )


def make_tiny_bert(seed: int = 0, dtype: torch.dtype = torch.float32, **kw):
    """A BertForMaskedLM with default (SDPA) attention, in train mode as users leave it."""
    from transformers import BertForMaskedLM

    torch.manual_seed(seed)
    model = BertForMaskedLM(tiny_bert_config(**kw)).to(dtype)
    model.train()
    return model


def make_mlm_batches(n_batches: int = 2, batch_size: int = 3, seq_len: int = 12, vocab: int = 40, seed: int = 0):
    """Token batches with [CLS] ... [SEP] and some right padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(5, vocab, (batch_size, seq_len), generator=g)
        ids[:, 0] = 2
        ids[:, -1] = 3
        am = torch.ones_like(ids)
        am[-1, seq_len // 2 :] = 0
        ids[-1, seq_len // 2 :] = 0
        ids[-1, seq_len // 2 - 1] = 3
        out.append({"input_ids": ids, "attention_mask": am})
    return out


def mlm_objective(mask_prob: float = 0.3, seed: int = 0) -> objectives.MaskedLM:
    return objectives.MaskedLM(mask_prob=mask_prob, seed=seed, mask_token_id=MASK_ID, special_token_ids=SPECIAL_IDS)


def make_mlp(seed: int = 0, d_in: int = 4, hidden: int = 5, classes: int = 3, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes)).to(dtype)


def make_classification_data(n_batches: int = 3, batch_size: int = 4, d_in: int = 4, classes: int = 3, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch_size, d_in, generator=g, dtype=dtype), torch.randint(0, classes, (batch_size,), generator=g))
        for _ in range(n_batches)
    ]


@pytest.fixture
def tiny_bert():
    return make_tiny_bert()


@pytest.fixture
def mlm_batches():
    return make_mlm_batches()


@pytest.fixture
def mlm_obj():
    return mlm_objective()


@pytest.fixture
def mlp():
    return make_mlp()


@pytest.fixture
def cls_data():
    return make_classification_data()


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny BERT + word-level tokenizer saved with ``save_pretrained`` (see ``saved_models``)."""
    from saved_models import save_word_checkpoint

    return save_word_checkpoint(tmp_path / "bert")


def torchrun_worker(worker: Path, *args: str, timeout: int = 300) -> None:
    """Run ``worker`` under ``torchrun --standalone --nproc_per_node=2`` (gloo, one thread per rank)."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
