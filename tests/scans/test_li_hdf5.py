"""Li et al.'s HDF5 surface layout: the published guided-dropout files and our writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from landscape.scans.li_hdf5 import read_li_h5, to_grid, write_li_h5  # noqa: E402

from conftest import REFERENCE_DIR as REF
REF_FILES = ["surf_res256_bert.h5", "surf_res256_bert_fisher_top.h5", "surf_res256_bert_fisher_bottom.h5"]
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason="reference surfaces not available")


@needs_ref
@pytest.mark.parametrize("name", REF_FILES)
def test_reference_files_read_on_a_16x16_grid(name: str) -> None:
    d = read_li_h5(REF / name)
    xs, ys, z = d["xcoordinates"], d["ycoordinates"], d["values"]["loss"]
    assert xs.shape == (16,) and ys.shape == (16,) and z.shape == (16, 16)
    assert xs.min() == pytest.approx(-1.5) and xs.max() == pytest.approx(1.5)
    assert ys.min() == pytest.approx(-1.5) and ys.max() == pytest.approx(1.5)
    assert np.isfinite(z).all()
    assert d["layout"] == "flat"
    assert d["metadata"]["dir_file"].startswith("dir_res256_bert")
    # README rule: flat value k sits at (x[k % 16], y[k // 16]).
    with h5py.File(REF / name, "r") as f:
        flat = f["train_loss"][()]
    for k in (0, 1, 15, 16, 17, 100, 255):
        assert z[k // 16, k % 16] == flat[k]
    # the trained point (0, 0) lies between grid points; the minimum is in the central 2x2 block
    iy, ix = np.unravel_index(np.argmin(z), z.shape)
    assert {int(iy), int(ix)} <= {7, 8}


def _li_writer(path: Path, xs: np.ndarray, ys: np.ndarray, f) -> None:
    """Emulate Li et al.'s plot_surface.py: allocate (len(x), len(y)), fill ravel()[k] at
    meshgrid(x, y).ravel()[k] (scheduler.get_unplotted_indices)."""
    losses = -np.ones((len(xs), len(ys)))
    X, Y = np.meshgrid(xs, ys)
    for k in range(losses.size):
        losses.ravel()[k] = f(X.ravel()[k], Y.ravel()[k])
    with h5py.File(path, "w") as h:
        h["dir_file"] = "dirs.h5"
        h["xcoordinates"] = xs
        h["ycoordinates"] = ys
        h["train_loss"] = losses
        h["train_acc"] = 100 - losses


def test_li_layout_non_square_keeps_x_and_y_straight(tmp_path: Path) -> None:
    xs, ys = np.linspace(-1, 1, 5), np.linspace(0, 2, 3)
    f = lambda x, y: 10 + 3 * x + 0.5 * y  # noqa: E731
    _li_writer(tmp_path / "li.h5", xs, ys, f)
    d = read_li_h5(tmp_path / "li.h5")
    assert d["layout"] == "li"
    X, Y = np.meshgrid(xs, ys)
    np.testing.assert_allclose(d["values"]["loss"], f(X, Y))
    np.testing.assert_allclose(d["values"]["accuracy"], 100 - f(X, Y))


def test_write_read_round_trip_non_square(tmp_path: Path) -> None:
    xs, ys = np.array([-1.0, 0.0, 1.0]), np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # nx=3, ny=5
    X, Y = np.meshgrid(xs, ys)
    z = X**2 + 10 * Y  # [5, 3], x and y distinguishable
    acc = 1 - z / 100
    out = write_li_h5(tmp_path / "sub" / "s.h5", xs, ys, {"loss": z, "accuracy": acc}, dir_file="d.h5")
    with h5py.File(out, "r") as f:
        assert f["train_loss"].shape == (3, 5)  # Li's [len(x), len(y)] on disk
        raw = f["train_loss"][()].ravel()
        for k in range(raw.size):  # Li's y-major flat order
            assert raw[k] == z[k // 3, k % 3]
        assert set(f.keys()) == {"dir_file", "xcoordinates", "ycoordinates", "train_loss", "train_acc"}
    d = read_li_h5(out)
    np.testing.assert_array_equal(d["xcoordinates"], xs)
    np.testing.assert_array_equal(d["ycoordinates"], ys)
    np.testing.assert_array_equal(d["values"]["loss"], z)
    np.testing.assert_array_equal(d["values"]["accuracy"], acc)
    assert d["metadata"]["dir_file"] == "d.h5"
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temp file left behind


def test_nan_is_written_as_li_uncomputed_and_read_back_as_nan(tmp_path: Path) -> None:
    xs, ys = np.linspace(0, 1, 4), np.linspace(0, 1, 2)
    z = np.arange(8.0).reshape(2, 4) + 1
    z[1, 2] = np.nan
    write_li_h5(tmp_path / "s.h5", xs, ys, z)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert (f["train_loss"][()] == -1).sum() == 1
    back = read_li_h5(tmp_path / "s.h5")["values"]["loss"]
    assert np.isnan(back[1, 2]) and np.isfinite(back).sum() == 7
    kept = read_li_h5(tmp_path / "s.h5", uncomputed=None)["values"]["loss"]
    assert kept[1, 2] == -1


def test_one_dimensional_round_trip(tmp_path: Path) -> None:
    xs = np.linspace(-1, 1, 7)
    write_li_h5(tmp_path / "c.h5", xs, None, {"loss": xs**2, "test_loss": xs**2 + 1})
    d = read_li_h5(tmp_path / "c.h5")
    assert d["ycoordinates"] is None and d["layout"] == "1d"
    np.testing.assert_array_equal(d["values"]["loss"], xs**2)
    np.testing.assert_array_equal(d["values"]["test_loss"], xs**2 + 1)


def test_missing_file_and_missing_coordinates_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no surface file"):
        read_li_h5(tmp_path / "nope.h5")
    with h5py.File(tmp_path / "dirs.h5", "w") as f:
        f["0"] = np.zeros(3)
    with pytest.raises(ValueError, match="no 'xcoordinates'"):
        read_li_h5(tmp_path / "dirs.h5")


def test_values_not_matching_the_grid_are_rejected(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["xcoordinates"] = np.linspace(0, 1, 4)
        f["ycoordinates"] = np.linspace(0, 1, 3)
        f["train_loss"] = np.zeros(10)
    with pytest.raises(ValueError, match="has 10 values .* needs 12"):
        read_li_h5(tmp_path / "bad.h5")
    with pytest.raises(ValueError, match="needs 6"):
        to_grid(np.zeros(5), 3, 2)


def test_writer_rejects_wrong_shapes(tmp_path: Path) -> None:
    xs, ys = np.linspace(0, 1, 3), np.linspace(0, 1, 5)
    with pytest.raises(ValueError, match=r"shape \(3, 5\) but xs/ys need \(5, 3\)"):
        write_li_h5(tmp_path / "s.h5", xs, ys, {"loss": np.zeros((3, 5))})
    with pytest.raises(ValueError, match="values is empty"):
        write_li_h5(tmp_path / "s.h5", xs, ys, {})
    assert not (tmp_path / "s.h5").exists()
