"""Surface renderers: kinds, shared scales, non-square grids, NaN gaps, files and bad input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from figures import surfaces, vtp  # noqa: E402
from figures.sources import as_surface  # noqa: E402

from conftest import REFERENCE_DIR as REF
REF_FILES = {"all": "surf_res256_bert.h5", "fisher top": "surf_res256_bert_fisher_top.h5",
             "fisher bottom": "surf_res256_bert_fisher_bottom.h5"}
DPI = 40


def grid(nx: int = 7, ny: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys = np.linspace(-1, 1, nx), np.linspace(-0.5, 0.5, ny)
    X, Y = np.meshgrid(xs, ys)
    return xs, ys, 1.0 + X**2 + 3 * Y**2 + 0.2 * X


def png_shape(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 1000
    img = mpimg.imread(path)
    assert img.std() > 0.01  # not blank
    return img.shape[:2]


@pytest.mark.parametrize("kind", surfaces.KINDS)
def test_each_kind_renders_a_non_square_grid(kind: str, tmp_path: Path) -> None:
    xs, ys, z = grid()
    fig = surfaces.plot_surface(xs, ys, z, kind, figsize=(4, 3), dpi=DPI, save=tmp_path / "s.png", title=kind)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # panel + colour bar
    assert png_shape(tmp_path / "s.png") == (3 * DPI, 4 * DPI)
    ax = fig.axes[0]
    if kind != "surface3d":  # x horizontal over xs, y vertical over ys
        assert ax.get_xlim()[0] <= xs[0] and ax.get_xlim()[1] >= xs[-1]
        assert ax.get_ylim()[0] <= ys[0] and ax.get_ylim()[1] >= ys[-1]
        assert ax.get_xlim()[1] - ax.get_xlim()[0] < 2 * (xs[-1] - xs[0])


def test_heatmap_places_values_at_their_coordinates() -> None:
    xs, ys, z = grid(5, 3)
    fig = surfaces.plot_surface(xs, ys, z, "heatmap", dpi=DPI)
    img = fig.axes[0].images[0]
    np.testing.assert_array_equal(np.asarray(img.get_array()), z)  # rows = y, origin lower
    assert img.origin == "lower"
    left, right, bottom, top = img.get_extent()
    assert left < xs[0] < xs[-1] < right and bottom < ys[0] < ys[-1] < top


def test_non_uniform_heatmap_uses_a_mesh(tmp_path: Path) -> None:
    xs, ys, z = np.array([-1.0, -0.2, 0.0, 0.3, 1.0]), np.array([0.0, 1.0, 3.0]), np.ones((3, 5))
    z[0, 0] = 2
    fig = surfaces.plot_surface(xs, ys, z, "heatmap", dpi=DPI, save=tmp_path / "m.png")
    assert len(fig.axes[0].collections) == 1 and not fig.axes[0].images


def test_nan_points_are_gaps() -> None:
    xs, ys, z = grid(9, 9)
    z[4, 4] = np.nan
    z[0, :3] = np.inf
    for kind in surfaces.KINDS:
        fig = surfaces.plot_surface(xs, ys, z, kind, dpi=DPI)
        assert isinstance(fig, Figure)
    fig = surfaces.plot_surface(xs, ys, z, "heatmap", dpi=DPI)
    arr = fig.axes[0].images[0].get_array()
    assert arr.mask[4, 4] and arr.mask[0, :3].all() and arr.mask.sum() == 4
    with pytest.raises(ValueError, match="no finite values"):
        surfaces.plot_surface(xs, ys, np.full_like(z, np.nan), "contourf")


def test_shared_scale_levels_cover_all_panels() -> None:
    xs, ys, z = grid()
    norm, levels = surfaces.scale([z, 2 * z], levels=11)
    assert norm.vmin == pytest.approx(z.min()) and norm.vmax == pytest.approx(2 * z.max())
    assert levels.size == 11
    norm, levels = surfaces.scale([z], levels=5, logz=True)
    np.testing.assert_allclose(np.diff(np.log(levels)), np.log(levels[1] / levels[0]))


def test_side_by_side_uses_one_colour_bar_and_one_scale(tmp_path: Path) -> None:
    xs, ys, z = grid()
    srcs = {"all": (xs, ys, z), "top": (xs, ys, 3 * z), "bottom": (xs, ys, z + 0.1)}
    fig = surfaces.plot_surfaces(srcs, "contourf", panel_size=2, dpi=DPI, save=tmp_path / "p.png")
    assert len(fig.axes) == 4
    norms = {(c.norm.vmin, c.norm.vmax) for ax in fig.axes[:3] for c in ax.collections if hasattr(c, "norm")}
    assert len(norms) == 1
    (lo, hi), = norms
    assert lo == pytest.approx(z.min()) and hi == pytest.approx(3 * z.max())
    levels = {tuple(np.round(ax.collections[0].levels, 9)) for ax in fig.axes[:3]}
    assert len(levels) == 1
    assert png_shape(tmp_path / "p.png") == (round(2.5 * DPI), round(6.9 * DPI))


@pytest.mark.skipif(not REF.is_dir(), reason="reference surfaces not available")
def test_reference_files_side_by_side_and_as_files(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    paths = {k: REF / v for k, v in REF_FILES.items()}
    for kind in ("contourf", "surface3d"):
        out = tmp_path / f"ref_{kind}.pdf" if kind == "surface3d" else tmp_path / f"ref_{kind}.svg"
        fig = surfaces.plot_surfaces(paths, kind, dpi=DPI, save=out)
        assert len(fig.axes) == 4 and out.stat().st_size > 5000
    assert (tmp_path / "ref_surface3d.pdf").read_bytes().startswith(b"%PDF")
    assert ET.parse(tmp_path / "ref_contourf.svg").getroot().tag.endswith("svg")
    fig = surfaces.plot_surface_file(paths["all"], "contour", dpi=DPI, save=tmp_path / "one.png")
    assert fig.axes[0].get_title() == "surf_res256_bert.h5" and len(fig.axes) == 2


def test_duck_typed_surface_objects_and_npz(tmp_path: Path) -> None:
    xs, ys, z = grid()
    obj = SimpleNamespace(xs=xs, ys=ys, values={"loss": z, "accuracy": 1 / z}, done=np.ones_like(z, bool))
    fig = surfaces.plot_surface_file(obj, "heatmap", metric="accuracy", dpi=DPI)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), 1 / z)
    np.savez(tmp_path / "s.npz", xs=xs, ys=ys, loss=z)
    np.testing.assert_array_equal(as_surface(tmp_path / "s.npz")[2], z)
    with pytest.raises(KeyError, match="no metric 'test_loss'"):
        surfaces.plot_surface_file(obj, metric="test_loss")


def test_bad_surface_inputs_are_clear(tmp_path: Path) -> None:
    xs, ys, z = grid(5, 3)
    with pytest.raises(ValueError, match="unknown surface kind 'wireframe'"):
        surfaces.plot_surface(xs, ys, z, "wireframe")
    with pytest.raises(ValueError, match=r"looks transposed: pass Z.T"):
        surfaces.plot_surface(xs, ys, z.T)
    with pytest.raises(FileNotFoundError, match="no result file"):
        surfaces.plot_surface_file(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="use a .h5"):
        (tmp_path / "x.csv").write_text("1")
        surfaces.plot_surface_file(tmp_path / "x.csv")
    with pytest.raises(ValueError, match=".png, .pdf or .svg"):
        surfaces.plot_surface(xs, ys, z, save=tmp_path / "s.jpg2")
    with pytest.raises(ValueError, match="non-empty dict"):
        surfaces.plot_surfaces({})
    with pytest.raises(TypeError, match="cannot read a surface"):
        surfaces.plot_surfaces({"a": 3})


def test_vtp_export_parses_with_right_counts(tmp_path: Path) -> None:
    xs, ys, z = grid(5, 4)
    z[2, 3] = np.nan  # one point missing: drops the 4 quads touching it
    out = vtp.write_vtp(tmp_path / "s.vtp", xs, ys, z)
    root = ET.parse(out).getroot()
    assert root.tag == "VTKFile" and root.get("type") == "PolyData"
    piece = root.find("PolyData/Piece")
    assert int(piece.get("NumberOfPoints")) == 19
    assert int(piece.get("NumberOfPolys")) == 3 * 4 - 4
    pts = np.array(piece.find("Points/DataArray").text.split(), dtype=float).reshape(-1, 3)
    assert pts.shape == (19, 3)
    finite = np.isfinite(z)
    np.testing.assert_allclose(pts[:, 2], z[finite])
    X, Y = np.meshgrid(xs, ys)
    np.testing.assert_allclose(pts[:, 0], X[finite]) and np.testing.assert_allclose(pts[:, 1], Y[finite])
    scal = np.array(piece.find("PointData/DataArray").text.split(), dtype=float)
    assert piece.find("PointData/DataArray").get("Name") == "loss" and scal.size == 19
    polys = piece.find("Polys")
    conn = np.array(polys[0].text.split(), dtype=int)
    offs = np.array(polys[1].text.split(), dtype=int)
    assert conn.size == 32 and offs[-1] == 32 and conn.max() < 19
    cell = np.array(piece.find("CellData/DataArray").text.split(), dtype=float)
    np.testing.assert_allclose(cell, pts[conn.reshape(-1, 4), 2].mean(axis=1))
    with pytest.raises(ValueError, match="end in .vtp"):
        vtp.write_vtp(tmp_path / "s.xml", xs, ys, z)


@pytest.mark.skipif(not REF.is_dir(), reason="reference surfaces not available")
def test_vtp_from_reference_file(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    out = vtp.surface_file_to_vtp(REF / REF_FILES["all"], tmp_path / "ref.vtp", log=True)
    piece = ET.parse(out).getroot().find("PolyData/Piece")
    assert piece.get("NumberOfPoints") == "256" and piece.get("NumberOfPolys") == "225"


def test_real_scan_results_render(tmp_path: Path) -> None:
    """``landscape.scans.runner`` Surface/Curve objects and their .npz files; unfinished points are gaps."""
    from landscape import scans
    from figures import curves

    xs, ys, z = grid(5, 3)
    surf = scans.Surface(xs, ys, values={"loss": z}, done=np.ones(z.shape, bool))
    surf.done[1, 2] = False
    path = surf.save(tmp_path / "surf.npz")
    got = as_surface(path)[2]
    assert np.isnan(got[1, 2]) and np.isfinite(got).sum() == z.size - 1
    fig = surfaces.plot_surface_file(path, "heatmap", dpi=DPI)
    assert fig.axes[0].images[0].get_array().mask[1, 2]
    a = np.linspace(-1, 1, 5)
    curve = scans.Curve(a, values={"loss": a**2}, done=np.ones(5, bool))
    cpath = curve.save(tmp_path / "curve.npz")
    fig = curves.plot_curves({"file": cpath, "object": curve}, dpi=DPI)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), a**2)


def test_a_scan_file_of_the_wrong_kind_says_so(tmp_path: Path) -> None:
    """Defect: every exception while loading a scan was swallowed, so a curve file given as a surface
    failed later with a bare missing-key error instead of naming the problem."""
    from landscape.scans import Curve

    path = Curve(np.linspace(-1, 1, 5), values={"loss": np.arange(5.0)}, done=np.ones(5, bool)).save(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="holds a curve, not a Surface"):
        as_surface(path)
    plain = tmp_path / "plain.npz"
    np.savez(plain, xs=np.arange(3.0), ys=np.arange(2.0), loss=np.ones((2, 3)))
    assert as_surface(plain)[2].shape == (2, 3)  # a plain npz (not a scan file) still reads by its keys
