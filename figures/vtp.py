"""ParaView export: a surface as VTK XML PolyData (``.vtp``), ASCII, no vtk dependency.

Points are ``(x, y, z)`` with ``z = zscale * loss`` (optionally ``log(loss + log_shift)``, and
clipped at ``zmax``) for every finite grid value; each grid cell whose four corners are finite
becomes one quad polygon. The loss is stored as point data (``name``) and the mean of each quad's
four corners as cell data (``name + "_cell_mean"``). NaN/inf points and the cells touching them
are left out, so ParaView shows gaps where nothing was computed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from figures.sources import as_surface, check_grid


def _block(values: np.ndarray, fmt: str, per_line: int) -> str:
    flat = values.ravel()
    lines = [" ".join(fmt % v for v in flat[i:i + per_line]) for i in range(0, flat.size, per_line)]
    return "\n".join("          " + line for line in lines)


def surface_polydata(xs: Any, ys: Any, z: Any, zscale: float = 1.0, log: bool = False, log_shift: float = 0.1,
                     zmax: float | None = None) -> dict[str, np.ndarray]:
    """Points [P, 3], point scalars [P], quad connectivity [Q, 4] and cell means [Q] for a grid.

    Grid point ``(iy, ix)`` is ``(xs[ix], ys[iy], Z[iy, ix])``; quads go counter-clockwise
    ``(iy, ix) -> (iy, ix+1) -> (iy+1, ix+1) -> (iy+1, ix)``.
    """
    xs, ys, z = check_grid(xs, ys, z)
    loss = z.copy()
    height = loss if zmax is None else np.minimum(loss, zmax)
    if log:
        with np.errstate(invalid="ignore", divide="ignore"):
            height = np.log(height + log_shift)
    height = height * zscale
    ok = np.isfinite(height) & np.isfinite(loss)
    index = -np.ones(z.shape, dtype=np.int64)
    index[ok] = np.arange(int(ok.sum()))
    X, Y = np.meshgrid(xs, ys)
    points = np.stack([X[ok], Y[ok], height[ok]], axis=1)
    corners = np.stack([index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]], axis=-1)  # [ny-1, nx-1, 4]
    quads = corners[(corners >= 0).all(axis=-1)]
    cell_mean = loss[ok][quads].mean(axis=1) if quads.size else np.zeros(0)
    return {"points": points, "scalars": loss[ok], "quads": quads, "cell_mean": cell_mean}


def write_vtp(path: str | os.PathLike, xs: Any, ys: Any, z: Any, *, name: str = "loss", zscale: float = 1.0,
              log: bool = False, log_shift: float = 0.1, zmax: float | None = None) -> Path:
    """Write ``Z[ny, nx]`` over ``xs [nx]`` x ``ys [ny]`` as an ASCII ``.vtp`` file (atomic write).

    Args:
        name: point-data array name (the metric).
        zscale: multiplies the height, to balance loss units against direction units.
        log: height ``log(loss + log_shift)`` (Li et al.'s ``--log``); zmax: clip the height first.
    Returns the path. Open it in ParaView (File > Open), colour by ``name``.
    """
    path = Path(path)
    if path.suffix.lower() != ".vtp":
        raise ValueError(f"ParaView PolyData files end in .vtp, got {path.name!r}.")
    pd = surface_polydata(xs, ys, z, zscale, log, log_shift, zmax)
    n_pts, n_quads = len(pd["points"]), len(pd["quads"])
    if n_pts == 0:
        raise ValueError("the surface has no finite value to export.")

    def array(tag: str, values: np.ndarray, fmt: str, per_line: int, comps: int = 1, dtype: str = "Float64") -> str:
        rng = f' RangeMin="{values.min():.17g}" RangeMax="{values.max():.17g}"' if values.size else ""
        return (f'        <DataArray type="{dtype}" Name={quoteattr(tag)} NumberOfComponents="{comps}" '
                f'format="ascii"{rng}>\n{_block(values, fmt, per_line)}\n        </DataArray>\n')

    offsets = 4 * np.arange(1, n_quads + 1, dtype=np.int64)
    text = "".join([
        '<?xml version="1.0"?>\n',
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n',
        "  <PolyData>\n",
        f'    <Piece NumberOfPoints="{n_pts}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" '
        f'NumberOfPolys="{n_quads}">\n',
        f"      <PointData Scalars={quoteattr(name)}>\n", array(name, pd["scalars"], "%.9g", 6), "      </PointData>\n",
        f"      <CellData Scalars={quoteattr(name + '_cell_mean')}>\n",
        array(name + "_cell_mean", pd["cell_mean"], "%.9g", 6), "      </CellData>\n",
        "      <Points>\n", array("Points", pd["points"], "%.9g", 6, comps=3), "      </Points>\n",
        "      <Polys>\n",
        array("connectivity", pd["quads"], "%d", 12, dtype="Int64"),
        array("offsets", offsets, "%d", 12, dtype="Int64"),
        "      </Polys>\n",
        "    </Piece>\n  </PolyData>\n</VTKFile>\n",
    ])
    from landscape.util.files import write_text  # deferred: `import figures` stays free of torch

    return write_text(path, text)


def surface_file_to_vtp(src: Any, path: str | os.PathLike, metric: str = "loss", **kwargs: Any) -> Path:
    """:func:`write_vtp` from any surface source (``.h5``/``.npz`` path, ``scans.Surface``, ``(xs, ys, Z)``)."""
    xs, ys, z = as_surface(src, metric)
    return write_vtp(path, xs, ys, z, name=metric, **kwargs)
