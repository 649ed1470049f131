"""The measurement file: one JSON line per measurement, resumable.

``curvature.jsonl`` holds one object per line, appended and flushed as each measurement ends, so
a crash loses at most the measurement in flight (a torn last line is dropped with a warning). A
sidecar ``curvature.jsonl.meta.json`` holds :func:`landscape.util.meta.result_meta` of the first
run; a later run on the same file must have the same settings, and skips the steps already there.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MeasurementLog", "read_measurements"]


def read_measurements(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a measurement file, in file order. A torn (unparsable) last line is dropped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no measurement file at {p}; pass the path a CurvatureTracker wrote (path=...).")
    lines = p.read_text().splitlines()
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                warnings.warn(f"{p}: dropped a torn last line (a measurement interrupted while writing).", stacklevel=2)
                break
            raise ValueError(f"{p}, line {i + 1} is not JSON; the file is damaged (not a torn last line).") from None
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{p}, line {i + 1} is not a measurement row (an object with a 'step').")
        rows.append(row)
    return rows


class MeasurementLog:
    """Rows in memory, mirrored to a JSONL file when ``path`` is given.

    Args:
        path: the ``.jsonl`` file, or ``None`` (rows kept in memory only).
        meta: the run's ``result_meta``; its ``settings`` must match an existing file's.
        write: whether this process writes the file (under ``torchrun`` only rank 0 does; every
            rank reads it, so all ranks skip the same resumed steps).
    """

    def __init__(self, path: str | os.PathLike | None, meta: Mapping[str, Any], write: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.meta, self.write = dict(meta), write
        self.rows: list[dict[str, Any]] = []
        if self.path is None:
            return
        meta_path = self.path.with_name(self.path.name + ".meta.json")
        if self.path.is_file():
            self.rows = read_measurements(self.path)
            if write:
                self._rewrite()  # drops a torn last line before appending
        if meta_path.is_file():
            old = json.loads(meta_path.read_text()).get("settings")
            if old != self.meta.get("settings"):
                raise ValueError(f"{self.path} was measured with other settings ({old}) than this run's "
                                 f"({self.meta.get('settings')}); pass a new path or the same settings.")
        elif write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            meta_path.write_text(json.dumps(self.meta, indent=1, default=str))

    @property
    def steps(self) -> set[int]:
        """Steps already measured."""
        return {int(r["step"]) for r in self.rows}

    def get(self, step: int) -> dict[str, Any] | None:
        """The row of ``step``, if measured."""
        return next((r for r in self.rows if int(r["step"]) == step), None)

    def append(self, row: Mapping[str, Any]) -> None:
        """Add a row and append it to the file (flushed)."""
        self.rows.append(dict(row))
        if self.path is not None and self.write:
            with self.path.open("a") as f:
                f.write(json.dumps(dict(row), default=float) + "\n")
                f.flush()

    def _rewrite(self) -> None:
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        os.replace(tmp, self.path)
