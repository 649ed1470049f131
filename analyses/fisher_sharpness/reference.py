"""Summary numbers of a 2D loss surface, for ours and the paper's published ones alike.

The guided-dropout surfaces (Li et al.'s HDF5 layout; bert-base-uncased, 16×16 over [-1.5, 1.5]²,
no grid point at the origin) and arm P's surfaces get the same numbers:

* min and max of the loss over the grid;
* the fitted curvature at the origin: the largest eigenvalue of the 2×2 Hessian of a quadratic
  least-squares fit to the points nearest the origin (:func:`landscape.sharpness.curvature_at_origin`);
* the loss rise at fixed radii r: the mean of the bilinearly interpolated loss at (±r, 0) and
  (0, ±r), minus the interpolated loss at the origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from landscape import sharpness

RADII = (0.25, 0.5, 1.0)
REFERENCE_FILES = {"all": "surf_res256_bert.h5", "top": "surf_res256_bert_fisher_top.h5",
                   "bottom": "surf_res256_bert_fisher_bottom.h5"}


def _interp(xs: np.ndarray, ys: np.ndarray, z: np.ndarray, points: np.ndarray) -> np.ndarray:
    from scipy.interpolate import RegularGridInterpolator

    f = RegularGridInterpolator((ys, xs), z, method="linear", bounds_error=True)
    return f(points[:, ::-1])  # (x, y) -> (y, x)


def surface_summary(xs: Any, ys: Any, z: Any, radii: tuple[float, ...] = RADII) -> dict[str, Any]:
    """min, max, fitted curvature at the origin and loss rise at ``radii`` of ``Z [ny, nx]``."""
    xs, ys, z = np.asarray(xs, float), np.asarray(ys, float), np.asarray(z, float)
    fit = sharpness.curvature_at_origin(xs, z, ys=ys)
    center = float(_interp(xs, ys, z, np.array([[0.0, 0.0]]))[0])
    rise = {}
    for r in radii:
        if r > min(abs(xs[0]), xs[-1], abs(ys[0]), ys[-1]):
            continue
        pts = np.array([[r, 0.0], [-r, 0.0], [0.0, r], [0.0, -r]])
        rise[f"{r:g}"] = float(_interp(xs, ys, z, pts).mean() - center)
    finite = z[np.isfinite(z)]
    return {"min": float(finite.min()), "max": float(finite.max()), "center": center,
            "curvature": float(fit.curvature), "fit_window": float(fit.window), "fit_points": int(fit.n_points),
            "loss_rise": rise, "grid": [int(xs.size), int(ys.size)], "range": [float(xs[0]), float(xs[-1])]}


def reference_summaries(folder: str | Path) -> dict[str, Any]:
    """The three published surfaces (all / top / bottom), each summarized; paths kept for the figure."""
    from landscape.scans.li_hdf5 import read_li_h5

    folder = Path(folder)
    out: dict[str, Any] = {"folder": str(folder), "model": "bert-base-uncased (Sharma et al., 2024)", "surfaces": {}}
    for half, name in REFERENCE_FILES.items():
        d = read_li_h5(folder / name)
        out["surfaces"][half] = {"path": str(folder / name),
                                 **surface_summary(d["xcoordinates"], d["ycoordinates"], d["values"]["loss"])}
    return out
