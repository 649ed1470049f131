"""Turn result objects and result files into plain arrays for the renderers.

Everything here is duck-typed so that figures never depend on how a result was computed:

* a surface is ``(xs [nx], ys [ny], Z [ny, nx])``, any object with ``.xs``, ``.ys`` and
  ``.values`` (dict metric -> [ny, nx], like ``landscape.scans.runner.Surface``), the dict that
  ``landscape.scans.li_hdf5.read_li_h5`` returns, or a path to a ``.h5`` (Li et al.'s layout) or
  ``.npz`` file;
* a curve is ``(alphas [n], losses [n] or [n_seeds, n])``, any object with ``.alphas`` and
  ``.values[metric]`` (like ``landscape.scans.runner.Curve``), a list of such objects (one per seed),
  or a ``.h5``/``.npz`` path;
* other results (audits, convergence) are dicts, objects with attributes, or ``.json`` paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PathLike = (str, os.PathLike)


def _path(src: Any) -> Path:
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"no result file at {path}; check the path.")
    return path


def _npz_metric(data: Mapping[str, np.ndarray], metric: str, path: Path) -> np.ndarray:
    for key in (f"values__{metric}", metric, f"values/{metric}", f"values.{metric}", f"values_{metric}"):
        if key in data:
            return np.asarray(data[key], dtype=np.float64)
    raise KeyError(f"{path} has no metric {metric!r} (keys: {sorted(data)}); pass metric=<one of them>.")


def _load_scan_object(path: Path, kind: str) -> Any:
    """``Surface.load(path)`` / ``Curve.load(path)``, or ``None`` for an ``.npz`` that is not a
    landscape scan file (then plain npz keys are read). A damaged scan file raises."""
    from landscape.scans.results import Curve, NotAScanFile, Surface

    try:
        cls: type[Surface] | type[Curve] = Surface if kind == "Surface" else Curve
        return cls.load(path)
    except NotAScanFile:
        return None


def as_surface(src: Any, metric: str = "loss") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(xs [nx], ys [ny], Z [ny, nx])`` float64 from any surface source (module doc)."""
    if isinstance(src, PathLike):
        path = _path(src)
        if path.suffix.lower() in (".h5", ".hdf5"):
            from landscape.scans.li_hdf5 import read_li_h5

            src = read_li_h5(path)
        elif path.suffix.lower() == ".npz":
            obj = _load_scan_object(path, "Surface")
            if obj is not None:
                src = obj
            else:
                with np.load(path, allow_pickle=False) as data:
                    xs, ys = data["xs"], data["ys"]
                    src = (xs, ys, _npz_metric(data, metric, path))
        else:
            raise ValueError(f"cannot read a surface from {path.name!r}: use a .h5 (Li et al.) or .npz file.")
    if isinstance(src, Mapping) and "xcoordinates" in src:
        if src.get("ycoordinates") is None:
            raise ValueError("this file holds a 1D curve (no ycoordinates); draw it with figures.curves.plot_curves.")
        xs, ys, values = src["xcoordinates"], src["ycoordinates"], src["values"]
        z = _pick(values, metric)
    elif hasattr(src, "xs") and hasattr(src, "ys") and hasattr(src, "values"):
        xs, ys = src.xs, src.ys
        z = _pick(src.values, metric) if isinstance(src.values, Mapping) else np.asarray(src.values, dtype=np.float64)
        done = getattr(src, "done", None)
        if done is not None and np.shape(done) == np.shape(z):  # points not computed yet: gaps
            z = np.where(np.asarray(done, bool), z, np.nan)
    elif isinstance(src, Sequence) and len(src) == 3:
        xs, ys, z = src
    else:
        raise TypeError(
            f"cannot read a surface from {type(src).__name__}: pass (xs, ys, Z), a path to .h5/.npz, "
            "or an object with .xs, .ys and .values[metric]."
        )
    return check_grid(xs, ys, z)


def _pick(values: Mapping[str, Any], metric: str) -> np.ndarray:
    if metric not in values:
        raise KeyError(f"no metric {metric!r} in this result (has {sorted(values)}); pass metric=<one of them>.")
    return np.asarray(values[metric], dtype=np.float64)


def check_grid(xs: Any, ys: Any, z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``Z[ny, nx]`` against 1D ``xs``/``ys``; the error says how to fix a swapped grid."""
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if xs.ndim != 1 or ys.ndim != 1:
        raise ValueError(f"xs and ys must be 1D coordinate vectors, got shapes {xs.shape} and {ys.shape}.")
    if z.shape != (ys.size, xs.size):
        hint = " (it looks transposed: pass Z.T)" if z.shape == (xs.size, ys.size) else ""
        raise ValueError(f"Z has shape {z.shape} but needs [len(ys), len(xs)] = {(ys.size, xs.size)}{hint}.")
    if xs.size < 2 or ys.size < 2:
        raise ValueError(f"a surface needs at least 2 points per axis, got {xs.size} x {ys.size}.")
    return xs, ys, z


def as_curve(src: Any, metric: str = "loss") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(alphas [n], values [n_seeds, n])`` float64 from any curve source (module doc)."""
    if isinstance(src, PathLike):
        path = _path(src)
        if path.suffix.lower() in (".h5", ".hdf5"):
            from landscape.scans.li_hdf5 import read_li_h5

            data = read_li_h5(path)
            if data["ycoordinates"] is not None:
                raise ValueError(f"{path} holds a 2D surface; draw it with figures.surfaces.plot_surface_file.")
            return as_curve((data["xcoordinates"], _pick(data["values"], metric)))
        if path.suffix.lower() == ".npz":
            obj = _load_scan_object(path, "Curve")
            if obj is not None:
                return as_curve(obj, metric)
            with np.load(path, allow_pickle=False) as data:
                return as_curve((data["alphas"], _npz_metric(data, metric, path)))
        raise ValueError(f"cannot read a curve from {path.name!r}: use a .h5 (Li et al.) or .npz file.")
    if hasattr(src, "alphas") and hasattr(src, "values"):
        vals = src.values
        return as_curve((src.alphas, _pick(vals, metric) if isinstance(vals, Mapping) else vals))
    if isinstance(src, Sequence) and src and all(hasattr(s, "alphas") for s in src):
        parts = [as_curve(s, metric) for s in src]
        alphas = parts[0][0]
        if any(p[0].shape != alphas.shape or not np.allclose(p[0], alphas) for p in parts):
            raise ValueError("the seeds' curves use different alphas; scan every seed on the same grid.")
        return alphas, np.concatenate([p[1] for p in parts], axis=0)
    if isinstance(src, Sequence) and len(src) == 2:
        alphas = np.asarray(src[0], dtype=np.float64)
        vals = np.atleast_2d(np.asarray(src[1], dtype=np.float64))
        if alphas.ndim != 1 or vals.ndim != 2 or vals.shape[1] != alphas.size:
            raise ValueError(
                f"curve values have shape {np.shape(src[1])} but need [n_alphas] or [n_seeds, n_alphas] "
                f"with n_alphas = {alphas.size}."
            )
        return alphas, vals
    raise TypeError(
        f"cannot read a curve from {type(src).__name__}: pass (alphas, values), a path, "
        "or an object with .alphas and .values[metric]."
    )


def float_dict(src: Any, what: str) -> dict[str, float]:
    """``{name: float}`` from a mapping (or an object with ``per_tensor()``); clear error otherwise."""
    if hasattr(src, "per_tensor") and callable(src.per_tensor):
        src = src.per_tensor()
    if not isinstance(src, Mapping) or not src:
        raise ValueError(f"{what} must be a non-empty dict name -> float, got {type(src).__name__}.")
    try:
        return {str(k): float(v) for k, v in src.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must map names to numbers: {exc}") from None
