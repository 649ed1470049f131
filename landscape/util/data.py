"""The data argument shared by every estimator: checks (re-iterable, non-empty) and raw-batch rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor


def check_reiterable(data: Any, what: str = "data") -> None:
    """Refuse data that can be iterated only once, or that is not iterable at all.

    Every estimator walks the data several times (once per matvec, once per grid point), so a
    generator or iterator would silently yield nothing on the second pass.
    """
    if data is None:
        raise ValueError(f"{what} is None: pass a list of batches or a DataLoader.")
    if isinstance(data, Iterator):
        raise TypeError(
            f"{what} is a one-shot iterator ({type(data).__name__}); it would be used up after "
            "the first pass. Pass a re-iterable such as list(batches) or a DataLoader."
        )
    if not isinstance(data, Iterable):
        raise TypeError(f"{what} must be an iterable of batches, got {type(data).__name__}.")


def batches_of(data: Iterable[Any], what: str = "data") -> Iterator[Any]:
    """Iterate ``data`` after ``check_reiterable``; raise if it yields no batch at all."""
    check_reiterable(data, what)
    empty = True
    for batch in data:
        empty = False
        yield batch
    if empty:
        raise ValueError(f"{what} is empty: it yielded no batch.")


def raw_batch_size(batch: Any) -> int | None:
    """Examples in a raw batch whose entries are all tensors sharing the first dimension.

    Dicts, tuples/lists and bare tensors qualify; anything else (strings, mixed entries) gives ``None``.
    """
    if isinstance(batch, dict):
        values = list(batch.values())
    else:
        values = list(batch) if isinstance(batch, (tuple, list)) else [batch]
    sizes = {int(v.shape[0]) for v in values if isinstance(v, Tensor) and v.ndim}
    return sizes.pop() if len(sizes) == 1 and all(isinstance(v, Tensor) for v in values) else None


def raw_batch_rows(batch: Any, rows: list[int]) -> Any:
    """Rows ``rows`` of a raw batch that :func:`raw_batch_size` accepts, in the batch's own type."""
    idx = torch.tensor(rows)
    if isinstance(batch, dict):
        return {k: v.index_select(0, idx.to(v.device)) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(v.index_select(0, idx.to(v.device)) for v in batch)
    return batch.index_select(0, idx.to(batch.device))
