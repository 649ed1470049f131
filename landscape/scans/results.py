"""Scan results and their files: :class:`Curve` (1D) and :class:`Surface` (2D).

Both hold coordinates, ``values`` (``dict[metric, ndarray]``, NaN where a point is not computed or
its value is not finite), a completion mask ``done`` and ``meta`` (JSON-able). ``save`` writes one
``.npz`` with the meta embedded as a JSON string, atomically (temporary file, then rename), so an
interrupted write never leaves a truncated file; ``load`` reads it back. ``nonfinite`` marks points
that were computed but whose loss was NaN or ±inf.

Layout of a :class:`Surface`: ``values[m][iy, ix]`` is the value at ``(xs[ix], ys[iy])``, as
``np.meshgrid(xs, ys)``; the flat point index is ``k = iy * nx + ix``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from landscape.util.files import dumps, write_npz

FORMAT = "landscape-scan/1"


class NotAScanFile(ValueError):
    """An ``.npz`` that was not written by :meth:`Curve.save` / :meth:`Surface.save`."""


class DamagedFile(ValueError):
    """A scan file that cannot be read: truncated (an interrupted copy) or not an ``.npz`` at all."""


class _GridResult:
    kind = "grid"
    shape: tuple[int, ...]

    def __init__(self, values: dict[str, np.ndarray] | None, done: np.ndarray | None,
                 meta: dict[str, Any] | None, nonfinite: np.ndarray | None, metrics: tuple[str, ...]) -> None:
        metrics = tuple(values) if values else tuple(metrics)
        self.values: dict[str, np.ndarray] = (
            {m: np.asarray(v, dtype=np.float64).reshape(self.shape) for m, v in values.items()}
            if values else {m: np.full(self.shape, np.nan) for m in metrics}
        )
        self.done = np.zeros(self.shape, bool) if done is None else np.asarray(done, bool).reshape(self.shape)
        self.nonfinite = (np.zeros(self.shape, bool) if nonfinite is None
                          else np.asarray(nonfinite, bool).reshape(self.shape))
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    # flat views, index k in C order of `shape`
    def _set_flat(self, k: int, point: dict[str, float]) -> None:
        idx = np.unravel_index(k, self.shape)
        for m in self.values:
            v = float(point.get(m, np.nan))
            self.values[m][idx] = v if np.isfinite(v) else np.nan
        loss = float(point.get("loss", 0.0))
        self.nonfinite[idx] = not np.isfinite(loss)
        self.done[idx] = True

    def _merge_from(self, other: _GridResult) -> int:
        """Copy the points ``other`` finished and this one did not; returns their number."""
        new = other.done & ~self.done
        for m in self.values:
            self.values[m][new] = other.values[m][new]
        self.nonfinite[new] = other.nonfinite[new]
        self.done |= other.done
        return int(new.sum())

    def _coords(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def points(self) -> np.ndarray:
        """Coefficients of every point in flat order, ``[n_points, n_directions]``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Coordinates, ``values`` per metric, ``done``, ``nonfinite`` and ``meta`` as lists (NaN kept)."""
        return {"kind": self.kind, **{k: v.tolist() for k, v in self._coords().items()},
                "values": {m: v.tolist() for m, v in self.values.items()}, "done": self.done.tolist(),
                "nonfinite": self.nonfinite.tolist(), "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (coordinates, ``values__<metric>``, ``done``, ``nonfinite``, JSON meta),
        atomically. Returns the path."""
        arrays = {**self._coords(), "done": self.done, "nonfinite": self.nonfinite}
        for m, v in self.values.items():
            arrays[f"values__{m}"] = v
        header = {"format": FORMAT, "kind": self.kind, "meta": self.meta}
        arrays["meta_json"] = np.array(dumps(header, indent=None))
        write_npz(path, arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Read a file written by :meth:`save` (of either kind: returns a Curve or a Surface)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"scan file {path} does not exist.")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "meta_json" not in z.files:
                    raise NotAScanFile(f"{path} is not a landscape scan file (no meta_json entry).")
                header = json.loads(str(z["meta_json"]))
                arrays = {k: z[k] for k in z.files}
        except NotAScanFile:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise DamagedFile(f"{path} is damaged or truncated ({type(exc).__name__}: {first}); "
                              "delete it to start over (or re-run the command without --resume).") from None
        kind = header.get("kind")
        target: type[Curve] | type[Surface] | None = {"curve": Curve, "surface": Surface}.get(str(kind))
        if target is None:
            raise ValueError(f"{path}: unknown scan kind {kind!r}.")
        if cls not in (_GridResult, target):
            raise ValueError(f"{path} holds a {kind}, not a {cls.__name__}.")
        values = {k[len("values__"):]: v for k, v in arrays.items() if k.startswith("values__")}
        return target._from_arrays(arrays, values, header.get("meta", {}))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(shape={self.shape}, metrics={list(self.values)}, "
                f"done={self.n_done}/{self.done.size})")


class Curve(_GridResult):
    """A 1D scan: ``alphas [n]``, ``values[m] [n]``, ``done [n]``, ``meta``."""

    kind = "curve"

    def __init__(self, alphas: np.ndarray, values: dict[str, np.ndarray] | None = None, done: np.ndarray | None = None,
                 meta: dict[str, Any] | None = None, nonfinite: np.ndarray | None = None,
                 metrics: tuple[str, ...] = ("loss",)) -> None:
        self.alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
        self.shape = (self.alphas.size,)
        super().__init__(values, done, meta, nonfinite, metrics)

    def _coords(self) -> dict[str, np.ndarray]:
        return {"alphas": self.alphas}

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], values: dict[str, np.ndarray], meta: dict) -> Curve:
        return cls(arrays["alphas"], values, arrays["done"], meta, arrays.get("nonfinite"))

    def points(self) -> np.ndarray:
        """Coefficients of every point, ``[n, 1]``."""
        return self.alphas[:, None]

    # -- Li et al.'s HDF5 layout (through landscape.scans.li_hdf5)
    def to_h5(self, path: str | Path) -> Path:
        """Write the curve in Li et al.'s 1D layout (``xcoordinates``, ``train_loss`` [n])."""
        from landscape.scans.li_hdf5 import write_li_h5

        return write_li_h5(path, self.alphas, None, self.values, attrs={"landscape_format": FORMAT})

    @classmethod
    def from_h5(cls, path: str | Path) -> Curve:
        """Read a Li et al. 1D file (no ``ycoordinates``)."""
        from landscape.scans.li_hdf5 import read_li_h5

        raw = read_li_h5(path)
        if raw.get("ycoordinates") is not None:
            raise ValueError(f"{path} holds a 2D surface, not a curve; use Surface.from_h5.")
        return cls(raw["xcoordinates"], *_from_li(raw))


class Surface(_GridResult):
    """A 2D scan: ``xs [nx]``, ``ys [ny]``, ``values[m] [ny, nx]`` (row = y), ``done [ny, nx]``, ``meta``."""

    kind = "surface"

    def __init__(self, xs: np.ndarray, ys: np.ndarray, values: dict[str, np.ndarray] | None = None,
                 done: np.ndarray | None = None, meta: dict[str, Any] | None = None,
                 nonfinite: np.ndarray | None = None, metrics: tuple[str, ...] = ("loss",)) -> None:
        self.xs = np.asarray(xs, dtype=np.float64).reshape(-1)
        self.ys = np.asarray(ys, dtype=np.float64).reshape(-1)
        self.shape = (self.ys.size, self.xs.size)
        super().__init__(values, done, meta, nonfinite, metrics)

    def _coords(self) -> dict[str, np.ndarray]:
        return {"xs": self.xs, "ys": self.ys}

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], values: dict[str, np.ndarray], meta: dict) -> Surface:
        return cls(arrays["xs"], arrays["ys"], values, arrays["done"], meta, arrays.get("nonfinite"))

    def points(self) -> np.ndarray:
        """Coefficients (x, y) of every point in flat order k = iy·nx + ix, ``[ny·nx, 2]``."""
        gx, gy = np.meshgrid(self.xs, self.ys)
        return np.stack([gx.ravel(), gy.ravel()], axis=1)

    # -- Li et al.'s HDF5 layout (through landscape.scans.li_hdf5)
    def to_h5(self, path: str | Path) -> Path:
        """Write ``xcoordinates``, ``ycoordinates``, ``train_loss`` (and ``train_acc``) in the layout
        of Li et al.'s ``loss-landscape`` (see ``landscape.scans.li_hdf5``; NaN is stored as -1)."""
        from landscape.scans.li_hdf5 import write_li_h5

        return write_li_h5(path, self.xs, self.ys, self.values, attrs={"landscape_format": FORMAT})

    @classmethod
    def from_h5(cls, path: str | Path) -> Surface:
        """Read a Li et al. surface file (``[nx, ny]`` on disk, or flat ``nx·ny`` values in
        ``meshgrid(x, y)`` order such as the guided-dropout files). Points whose values are all
        NaN (uncomputed, -1 on disk) are not done."""
        from landscape.scans.li_hdf5 import read_li_h5

        raw = read_li_h5(path)
        if raw.get("ycoordinates") is None:
            raise ValueError(f"{path} holds a 1D curve (no ycoordinates), not a surface; use Curve.from_h5.")
        return cls(raw["xcoordinates"], raw["ycoordinates"], *_from_li(raw))


def _from_li(raw: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    values = {k: np.asarray(v, dtype=np.float64) for k, v in raw["values"].items()}
    done = np.zeros(next(iter(values.values())).shape, bool)
    for v in values.values():
        done |= np.isfinite(v)
    meta = {"source": str(raw.get("path")), "format": "li_h5", "layout": raw.get("layout"),
            "file_metadata": {k: v for k, v in raw.get("metadata", {}).items()
                              if isinstance(v, (str, int, float, bool))}}
    return values, done, meta
