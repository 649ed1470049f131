"""The result protocol: every result has ``to_dict()``; results that are files have ``save(path)``
and ``load(path)``.

:class:`JsonResult` gives a dataclass result all three with one JSON encoding (``util.files``):
numpy arrays and scalars become lists and floats, ``meta`` stays a dict, and fields listed in
``_transient`` (tensors, such as eigenvectors) are left out. ``from_dict`` inverts ``to_dict``,
turning lists back into arrays for fields annotated as ``np.ndarray``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from landscape.util.files import read_json, write_json

R = TypeVar("R", bound="JsonResult")


def plain(value: Any) -> Any:
    """``value`` with arrays, tensors and numpy scalars turned into JSON-able Python values."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class JsonResult:
    """Mixin for ``@dataclass`` results: ``to_dict``, ``from_dict``, ``save`` and ``load`` as JSON."""

    _transient: ClassVar[tuple[str, ...]] = ()  # fields not written (e.g. tensors)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-able Python values (arrays as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in self._transient:
                continue
            out[f.name] = plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        """Rebuild from :meth:`to_dict`'s output (transient fields get their defaults or empty)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            if name in cls._transient:
                kwargs[name] = _default(f)
            elif name in d:
                kwargs[name] = _restore(d[name], str(f.type))
        return cls(**kwargs)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (atomically), tagged with the result's class."""
        return write_json(path, {"format": f"landscape.{type(self).__name__}/1", **self.to_dict()})

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read a file written by :meth:`save`."""
        d = read_json(path, what=f"{cls.__name__} file")
        want = f"landscape.{cls.__name__}/1"
        if d.get("format") != want:
            raise ValueError(f"{path} is not a {cls.__name__} file (format {d.get('format')!r}, expected {want!r}).")
        return cls.from_dict(d)


def _default(f: dataclasses.Field) -> Any:
    """A field's default (or its factory's product); an empty list when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return []


def _restore(value: Any, annotation: str) -> Any:
    if value is None:
        return None
    if annotation.startswith("list[np.ndarray]"):
        return [np.asarray(v, dtype=np.float64) for v in value]
    if "np.ndarray" in annotation and isinstance(value, list):
        return np.asarray(value, dtype=np.float64)
    return value


def as_dict(result: Any) -> dict[str, Any]:
    """A result as a dict, for analyses and figures alike.

    ``result``: a dict (copied), an object with ``to_dict()`` (or plain attributes), a ``.json`` file,
    or a run folder holding ``result.json``."""
    if isinstance(result, (str, os.PathLike)):
        path = Path(result)
        if path.is_dir():
            path = path / "result.json"
        elif path.suffix.lower() != ".json":
            raise ValueError(f"expected a .json result file or a run folder holding result.json, got {path.name!r}.")
        return read_json(path, what="result")
    if isinstance(result, Mapping):
        return dict(result)
    if hasattr(result, "to_dict"):
        return dict(result.to_dict())
    if hasattr(result, "__dict__"):
        return dict(vars(result))
    raise TypeError(f"cannot read a result from {type(result).__name__}: pass a dict, a result object, a .json path or "
                    "a run folder.")
