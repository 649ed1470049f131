"""Atomic files and the one JSON encoding used for every result.

Every writer goes through :func:`atomic_path`: write to a hidden temporary name in the same folder,
flush, then ``os.replace`` onto the final name, so a crash never leaves a half-written result and a
reader never sees one. :func:`to_jsonable` converts numpy and torch scalars and arrays and paths,
and refuses any other unknown type, so a bug never ends up as a ``str(obj)`` in a result file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, fsynced. Returns the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically. Returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)``: numpy/torch scalars and arrays, dtypes, paths; else TypeError."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    if isinstance(o, (Path, torch.dtype, torch.device)):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__} ({o!r:.80})")


def dumps(obj: Any, *, indent: int | None = 2, allow_nan: bool = True) -> str:
    """JSON text with ``json_default`` for known types; ``allow_nan=False`` for strict JSON."""
    return json.dumps(obj, indent=indent, default=json_default, allow_nan=allow_nan)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2, allow_nan: bool = True) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`dumps`). Returns the path."""
    return write_text(path, dumps(obj, indent=indent, allow_nan=allow_nan) + "\n")


def read_json(path: str | Path, what: str = "JSON file", hint: str = "") -> Any:
    """Read JSON, with a one-line error naming the file if it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist{'; ' + hint if hint else ''}.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON ({exc}); re-create it.") from None


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or None when it is missing, NaN or infinite (strict JSON has neither)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` atomically, fsynced, under the exact name given. Returns the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)
