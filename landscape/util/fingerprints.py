"""Short hashes that tie results to what made them: architecture, weights, tensors and data.

Every fingerprint is the first 16 hex digits of a SHA-256. ``tensors_fingerprint`` and
``data_fingerprint`` hash bit-exact values, so a resumed scan or a loaded Fisher file can refuse
work made for other weights, directions or data. ``batch_moments`` is the one order-invariant
summary: it lets an operator accept a shuffled DataLoader while refusing a resampling one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def _update(h: Any, name: str, t: Tensor) -> None:
    h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())


def tensors_fingerprint(tensors: Mapping[str, Tensor]) -> str:
    """A hash of the names, shapes, dtypes and bit-exact values of a dict of tensors."""
    h = hashlib.sha256()
    for name, t in tensors.items():
        _update(h, name, t)
    return h.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the parameter names, shapes and dtypes: the architecture, not the values.

    Used to refuse directions, Fisher scores or scan files made for a different model.
    """
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    return h.hexdigest()[:16]


def weights_fingerprint(model: nn.Module) -> str:
    """A hash of the parameter values themselves (bit-exact): changes if any weight moves."""
    return tensors_fingerprint(dict(model.named_parameters()))


def data_fingerprint(batches: Iterable[Mapping[str, Any]]) -> str:
    """A hash of every tensor of a sequence of dict batches (inputs, labels, masks), bit-exact."""
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            if isinstance(b[k], Tensor):
                _update(h, k, b[k])
    return h.hexdigest()[:16]


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """A hash of a JSON-able settings dict (key order ignored): tags resumable part files."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def batch_moments(batch: Any) -> np.ndarray:
    """(number of entries, Σx, Σx²) over every numeric tensor of a raw batch, float64.

    Summed over batches this is invariant to order and to how examples are grouped into batches,
    so a shuffled DataLoader passes a determinism check and a resampling one does not.
    """
    if isinstance(batch, Tensor):
        x = batch.detach().double()
        return np.array([x.numel(), float(x.sum()), float((x * x).sum())]) if x.numel() else np.zeros(3)
    if isinstance(batch, Mapping):
        return sum((batch_moments(v) for v in batch.values()), np.zeros(3))
    if isinstance(batch, (list, tuple)):
        return sum((batch_moments(v) for v in batch), np.zeros(3))
    return np.zeros(3)
