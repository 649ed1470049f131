"""Checks on the data argument shared by every estimator: re-iterable and non-empty."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


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
