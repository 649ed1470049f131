"""Read and write loss surfaces in Li et al.'s (2018) ``loss-landscape`` HDF5 layout.

A surface file holds ``xcoordinates`` [nx], optionally ``ycoordinates`` [ny] (absent for a 1D
curve), one dataset per metric (``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``) and a
scalar ``dir_file`` naming the direction file.

Grid order. Li et al.'s ``plot_surface.py`` allocates each 2D metric with shape
``(len(x), len(y))`` but fills it through its flat index: ``scheduler.get_unplotted_indices``
enumerates ``numpy.meshgrid(x, y)`` raveled, so flat value ``k`` is the loss at
``(x[k % nx], y[k // nx])``, and ``plot_2D.py`` hands the array unchanged to
``contour(meshgrid(x, y), Z)``, which reads it as ``Z[iy, ix]``. The on-disk *shape* is therefore
``[nx, ny]`` while the *memory order* is y-major. A plain transpose of that array would swap the
axes (on square grids, silently); the faithful reading is ``raw.ravel().reshape(ny, nx)``.
The guided-dropout files (Sharma et al., 2024) store the same order flat, ``[nx * ny]``, and read
the same way. This module always returns ``Z[ny, nx]`` with ``Z[iy, ix] = f(x[ix], y[iy])``.

Uncomputed points: Li et al. initialise every metric with ``-1`` and treat values ``<= 0`` as
still to be computed. The reader turns exact ``-1`` into NaN (``uncomputed=-1.0``; pass ``None``
to keep it) and the writer stores NaN as ``-1`` so Li et al.'s tools resume those points.

h5py is an optional dependency (``pip install h5py`` or ``pip install landscape[h5]``); it is
imported inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from landscape.util.files import atomic_path

#: Li et al.'s dataset name -> our metric name.
LI_TO_METRIC = {"train_loss": "loss", "train_acc": "accuracy", "test_loss": "test_loss", "test_acc": "test_acc"}
#: our metric name -> Li et al.'s dataset name.
METRIC_TO_LI = {v: k for k, v in LI_TO_METRIC.items()}

_COORDS = ("xcoordinates", "ycoordinates")


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:  # pragma: no cover - exercised only without h5py
        raise ImportError(
            "reading/writing HDF5 surfaces needs h5py: `pip install h5py` or `pip install landscape[h5]`."
        ) from None
    return h5py


def _decode(value: Any) -> Any:
    """HDF5 scalars/bytes -> plain Python values for metadata."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_grid(raw: np.ndarray, nx: int, ny: int | None, name: str = "values") -> np.ndarray:
    """Map a stored metric to ``[ny, nx]`` (2D) or ``[nx]`` (1D), following Li et al.'s order.

    Accepts ``[nx, ny]`` (Li et al.), ``[ny, nx]`` or flat ``[nx * ny]`` arrays; all store
    value ``k`` at ``(x[k % nx], y[k // nx])``. Raises ``ValueError`` when the size does not match.
    """
    raw = np.asarray(raw, dtype=np.float64)
    expected = nx if ny is None else nx * ny
    if raw.size != expected:
        grid = f"[{nx}]" if ny is None else f"{ny}x{nx} (ny x nx)"
        raise ValueError(
            f"dataset {name!r} has {raw.size} values (shape {raw.shape}) but the grid {grid} needs {expected}; "
            "the file's coordinates and values do not belong together."
        )
    return raw.reshape(nx) if ny is None else raw.reshape(ny, nx)


def read_li_h5(path: str | os.PathLike, uncomputed: float | None = -1.0) -> dict[str, Any]:
    """Read a surface/curve HDF5 file written by Li et al.'s tools or the guided-dropout repository.

    Returns a dict with
      ``xcoordinates``: ndarray [nx];
      ``ycoordinates``: ndarray [ny], or ``None`` for a 1D file;
      ``values``: dict metric -> ndarray [ny, nx] (2D) or [nx] (1D), float64. Li's names map to
      ``loss``/``accuracy``/``test_loss``/``test_acc``; other datasets of grid size keep their name;
      ``metadata``: file attributes and the remaining datasets (e.g. ``dir_file``) as Python values;
      ``layout``: ``"li"`` ([nx, ny] on disk), ``"flat"`` ([nx*ny]), ``"yx"`` ([ny, nx]) or ``"1d"``;
      ``path``: the file path as a string.
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no surface file at {path}; check the path (Li et al. files end in .h5).")
    with h5py.File(path, "r") as f:
        if "xcoordinates" not in f:
            raise ValueError(
                f"{path} has no 'xcoordinates' dataset (found {sorted(f.keys())}); it is not a loss-surface file "
                "in Li et al.'s layout (perhaps a direction file?)."
            )
        xs = np.asarray(f["xcoordinates"][()], dtype=np.float64).reshape(-1)
        ys = np.asarray(f["ycoordinates"][()], dtype=np.float64).reshape(-1) if "ycoordinates" in f else None
        nx, ny = xs.size, (None if ys is None else ys.size)
        grid_size = nx if ny is None else nx * ny
        values: dict[str, np.ndarray] = {}
        metadata: dict[str, Any] = {str(k): _decode(v) for k, v in f.attrs.items()}
        layout = "1d"
        for key in f.keys():
            if key in _COORDS:
                continue
            obj = f[key]
            if not isinstance(obj, h5py.Dataset):
                metadata[key] = f"<group with {len(obj)} members>"
                continue
            known = key in LI_TO_METRIC
            numeric = obj.dtype.kind in "fiub"
            if known or (numeric and obj.shape != () and obj.size == grid_size):
                raw = np.asarray(obj[()], dtype=np.float64)
                grid = to_grid(raw, nx, ny, name=key)
                if uncomputed is not None:
                    grid = np.where(grid == uncomputed, np.nan, grid)
                values[LI_TO_METRIC.get(key, key)] = grid
                if ny is not None:
                    layout = "flat" if raw.ndim == 1 else ("li" if raw.shape == (nx, ny) else "yx")
            else:
                metadata[key] = _decode(obj[()])
    if not values:
        raise ValueError(f"{path} has coordinates but no metric dataset (expected one of {sorted(LI_TO_METRIC)}).")
    return {"xcoordinates": xs, "ycoordinates": ys, "values": values, "metadata": metadata,
            "layout": layout, "path": str(path)}


def write_li_h5(
    path: str | Path,
    xs: np.ndarray,
    ys: np.ndarray | None,
    values: Mapping[str, np.ndarray] | np.ndarray,
    dir_file: str = "",
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a surface in Li et al.'s layout, atomically (temporary file, then rename).

    Args:
        xs: [nx] coordinates; ys: [ny] coordinates, or ``None`` for a 1D curve.
        values: dict metric -> [ny, nx] (or [nx] for 1D), or one array taken as ``loss``.
            ``loss``/``accuracy``/``test_loss``/``test_acc`` are stored as ``train_loss``/
            ``train_acc``/``test_loss``/``test_acc``; other names are stored as given.
        dir_file: stored as the ``dir_file`` dataset, as Li et al.'s tools do.
        attrs: extra HDF5 attributes (strings, numbers).

    On disk each 2D metric has shape ``[nx, ny]`` and holds ``Z[ny, nx]`` in Li et al.'s y-major
    flat order (see the module docstring); NaN is stored as ``-1`` (Li's "not computed").
    """
    h5py = _h5py()
    xs = np.asarray(xs, dtype=np.float64).reshape(-1)
    ys = None if ys is None else np.asarray(ys, dtype=np.float64).reshape(-1)
    if not isinstance(values, Mapping):
        values = {"loss": values}
    if not values:
        raise ValueError("values is empty: pass at least one metric, e.g. {'loss': Z} with Z of shape [ny, nx].")
    nx = xs.size
    expected = (nx,) if ys is None else (ys.size, nx)
    arrays: dict[str, np.ndarray] = {}
    for name, z in values.items():
        z = np.asarray(z, dtype=np.float64)
        if z.shape != expected:
            raise ValueError(
                f"metric {name!r} has shape {z.shape} but xs/ys need {expected} "
                f"({'[nx]' if ys is None else '[ny, nx]'}); transpose or check the coordinates."
            )
        z = np.where(np.isnan(z), -1.0, z)
        arrays[METRIC_TO_LI.get(name, name)] = z.reshape(nx) if ys is None else z.reshape(nx, ys.size)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["dir_file"] = dir_file
        f["xcoordinates"] = xs
        if ys is not None:
            f["ycoordinates"] = ys
        for key, arr in arrays.items():
            f[key] = arr
        for key, val in (attrs or {}).items():
            f.attrs[key] = val
    return Path(path)
