"""Arithmetic on parameter-shaped vectors, ``dict[str, Tensor]``.

A vector maps parameter names to tensors of the parameters' shapes. All operations keep the key
order of their first argument and use ``torch._foreach_*`` kernels, which fuse the per-tensor loop.
Random draws take an explicit seed and are reproducible across processes and devices (they are
drawn on the CPU in float64 and then cast), so rank 0 and rank 1 of a distributed run build the
same direction.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Vector = dict[str, Tensor]


def _check_same_keys(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> None:
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"vectors have different parameters (first differences: {missing}).")


def check_like(v: Mapping[str, Tensor], reference: Mapping[str, Tensor], what: str = "vector") -> None:
    """Raise a clear error unless ``v`` has exactly the keys and shapes of ``reference``."""
    _check_same_keys(reference, v)
    for name, ref in reference.items():
        if tuple(v[name].shape) != tuple(ref.shape):
            raise ValueError(
                f"{what}[{name!r}] has shape {tuple(v[name].shape)}, expected {tuple(ref.shape)}."
            )


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """⟨a, b⟩ = Σ_k Σ_i a_k[i] b_k[i], a 0-d tensor."""
    _check_same_keys(a, b)
    keys = list(a)
    if not keys:
        raise ValueError("dot of empty vectors.")
    return sum(torch.sum(a[k] * b[k]) for k in keys)  # type: ignore[return-value]


def norm(a: Mapping[str, Tensor]) -> Tensor:
    """Euclidean norm ‖a‖₂ over all entries, a 0-d tensor."""
    norms = torch._foreach_norm(list(a.values()))
    return torch.linalg.vector_norm(torch.stack(norms))


def scale(a: Mapping[str, Tensor], alpha: float | Tensor) -> Vector:
    """α·a (new tensors)."""
    return dict(zip(a.keys(), torch._foreach_mul(list(a.values()), alpha)))


def add(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float = 1.0) -> Vector:
    """A + α·b (new tensors)."""
    _check_same_keys(a, b)
    keys = list(a)
    return dict(zip(keys, torch._foreach_add([a[k] for k in keys], [b[k] for k in keys], alpha=alpha)))


def axpy(alpha: float, x: Mapping[str, Tensor], y: dict[str, Tensor]) -> dict[str, Tensor]:
    """Y ← y + α·x in place; returns y."""
    _check_same_keys(x, y)
    keys = list(y)
    torch._foreach_add_([y[k] for k in keys], [x[k] for k in keys], alpha=alpha)
    return y


def zeros_like(a: Mapping[str, Tensor]) -> Vector:
    """A zero vector with the keys, shapes, dtypes and devices of ``a``."""
    return {k: torch.zeros_like(t) for k, t in a.items()}


def clone(a: Mapping[str, Tensor]) -> Vector:
    """A detached copy of ``a``."""
    return {k: t.detach().clone() for k, t in a.items()}


def to_flat(a: Mapping[str, Tensor]) -> Tensor:
    """Concatenate the entries of ``a`` in key order into one 1-D tensor of length Σ numel."""
    return torch.cat([t.reshape(-1) for t in a.values()])


def from_flat(flat: Tensor, like: Mapping[str, Tensor]) -> Vector:
    """Split a 1-D tensor back into a vector with the keys and shapes of ``like``.

    The result takes the dtype and device of ``like``.
    """
    total = sum(t.numel() for t in like.values())
    if flat.ndim != 1 or flat.numel() != total:
        raise ValueError(f"flat vector has shape {tuple(flat.shape)}, expected ({total},).")
    out: Vector = {}
    offset = 0
    for k, t in like.items():
        n = t.numel()
        out[k] = flat[offset : offset + n].view(t.shape).to(dtype=t.dtype, device=t.device)
        offset += n
    return out


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def randn_like(like: Mapping[str, Tensor], seed: int) -> Vector:
    """Standard Gaussian entries, reproducible from ``seed`` on any device and dtype."""
    g = _generator(seed)
    return {
        k: torch.randn(t.shape, generator=g, dtype=torch.float64).to(dtype=t.dtype, device=t.device)
        for k, t in like.items()
    }


def rademacher_like(like: Mapping[str, Tensor], seed: int) -> Vector:
    """Entries ±1 with probability ½ each, reproducible from ``seed``."""
    g = _generator(seed)
    return {
        k: (torch.randint(0, 2, t.shape, generator=g) * 2 - 1).to(dtype=t.dtype, device=t.device)
        for k, t in like.items()
    }
