"""Curves, Fisher bars, spectral density, convergence and audit renderers; style and layering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import figures  # noqa: E402
from figures import audit, convergence, curves, fisher, spectrum, style  # noqa: E402
from landscape.params import layer_group  # noqa: E402

DPI = 40


def png_shape(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 1000
    img = mpimg.imread(path)
    assert img.std() > 0.01
    return img.shape[:2]


def seeds(rng: np.random.Generator, scale: float, n_seeds: int = 4, n: int = 11) -> np.ndarray:
    a = np.linspace(-1, 1, n)
    return scale * a**2 + 1 + rng.normal(0, 0.05, (n_seeds, n))


# ----------------------------------------------------------------------------- curves

def test_curves_mean_line_and_minmax_band(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = np.linspace(-1, 1, 11)
    data = {"top": seeds(rng, 3), "random": seeds(rng, 1), "bottom": seeds(rng, 0.5)}
    fig = curves.plot_curves(data, a, figsize=(4, 3), dpi=DPI, save=tmp_path / "c.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label() in ("top (4 seeds)", "random (4 seeds)", "bottom (4 seeds)")]
    assert len(lines) == 3 and len({ln.get_color() for ln in lines}) == 3
    np.testing.assert_allclose(lines[0].get_ydata(), data["top"].mean(axis=0))
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(data["top"].min(axis=0).min())
    assert band.max() == pytest.approx(data["top"].max(axis=0).max())
    assert png_shape(tmp_path / "c.png") == (3 * DPI, 4 * DPI)


def test_curve_bands_std_and_nan() -> None:
    v = np.array([[1.0, 2.0, np.nan], [3.0, 2.0, np.nan], [5.0, 2.0, np.nan]])
    mean, lo, hi = curves.band_limits(v, "std")
    assert mean[0] == 3 and lo[0] == pytest.approx(1) and hi[0] == pytest.approx(5)
    assert np.isnan(mean[2])  # not computed anywhere: a gap
    mean, lo, hi = curves.band_limits(v, "minmax")
    assert (lo[0], hi[0]) == (1, 5)
    fig = curves.plot_curves({"x": v}, [0.0, 1.0, 2.0], band="std", logy=True, dpi=DPI)
    assert fig.axes[0].get_yscale() == "log"


def test_curves_from_objects_and_lists_of_seeds() -> None:
    a = np.linspace(-1, 1, 5)
    objs = [SimpleNamespace(alphas=a, values={"loss": a**2 + s}) for s in (0.0, 1.0)]
    fig = curves.plot_curves({"seeds": objs, "one": objs[0]}, dpi=DPI)
    ln = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(ln.get_ydata(), a**2 + 0.5)


def test_bad_curve_inputs_are_clear() -> None:
    a = np.linspace(-1, 1, 5)
    with pytest.raises(ValueError, match="need \\[n_alphas\\] or \\[n_seeds, n_alphas\\] with n_alphas = 5"):
        curves.plot_curves({"x": np.zeros((3, 4))}, a)
    with pytest.raises(ValueError, match="pass alphas"):
        curves.plot_curves({"x": np.zeros((3, 5))})
    with pytest.raises(ValueError, match="unknown band 'iqr'"):
        curves.plot_curves({"x": np.zeros((3, 5))}, a, band="iqr")
    with pytest.raises(ValueError, match="non-empty dict"):
        curves.plot_curves({}, a)
    b = [SimpleNamespace(alphas=a, values={"loss": a}), SimpleNamespace(alphas=a[:4], values={"loss": a[:4]})]
    with pytest.raises(ValueError, match="different alphas"):
        curves.plot_curves({"x": b})


def test_curves_from_li_1d_file(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    from landscape.scans.li_hdf5 import write_li_h5

    a = np.linspace(-1, 1, 9)
    write_li_h5(tmp_path / "c.h5", a, None, {"loss": a**2})
    fig = curves.plot_curves({"li": tmp_path / "c.h5"}, dpi=DPI)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), a**2)


# ----------------------------------------------------------------------------- Fisher

def test_fisher_sorted_log_and_grouped(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    per_tensor = {f"bert.encoder.layer.{i}.attention.self.{k}.weight": float(10 ** rng.uniform(-8, -2))
                  for i in range(3) for k in ("query", "key", "value")}
    per_tensor["bert.embeddings.word_embeddings.weight"] = 1e-3
    per_tensor["cls.predictions.bias"] = 0.0  # drawn at a floor, not dropped
    fig = fisher.plot_fisher(per_tensor, per_layer="auto", dpi=DPI, save=tmp_path / "f.png")
    assert len(fig.axes) == 2
    ax_t, ax_l = fig.axes
    assert ax_t.get_xscale() == "log"
    widths = [p.get_width() for p in ax_t.patches]
    assert widths == sorted(widths, reverse=True) and len(widths) == 11
    labels = [t.get_text() for t in ax_t.get_yticklabels()]
    assert labels[0] == max(per_tensor, key=per_tensor.get)  # largest on top
    assert labels[-1] == "cls.predictions.bias"  # zero: at the bottom, drawn at a floor
    ticks = {t.get_text(): t.get_position()[1] for t in ax_t.get_yticklabels()}
    assert ticks[labels[0]] > ticks[labels[-1]]
    assert [t.get_text() for t in ax_l.get_yticklabels()] == ["embeddings", "layer.0", "layer.1", "layer.2", "head"]
    w, h = png_shape(tmp_path / "f.png")[::-1]
    assert w == 11 * DPI


def test_fisher_many_tensors_shows_top_and_bottom() -> None:
    scores = {f"t{i}": float(i + 1) for i in range(100)}
    fig = fisher.plot_fisher(scores, max_tensors=10, dpi=DPI)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 11  # 5 + separator + 5
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("90 more" in t for t in texts)
    obj = SimpleNamespace(per_tensor=lambda: {"a": 1.0, "b": 2.0})
    assert len(fisher.plot_fisher(obj, dpi=DPI).axes[0].patches) == 2


def test_group_by_layer_and_bad_fisher_input() -> None:
    g = fisher.group_by_layer({"m.layer.10.w": 5.0, "m.layer.0.w": 1.0, "m.layer.0.b": 3.0, "m.embeddings.w": 7.0,
                               "cls.w": 2.0})
    assert list(g.items()) == [("embeddings", 7.0), ("layer.0", 2.0), ("layer.10", 5.0), ("head", 2.0)]
    assert layer_group("transformer.h.3.mlp.c_fc.weight") == "layer.3"
    with pytest.raises(ValueError, match="non-empty dict"):
        fisher.plot_fisher({})
    with pytest.raises(ValueError, match="map names to numbers"):
        fisher.plot_fisher({"a": "high"})
    with pytest.raises(ValueError, match="unknown reduce"):
        fisher.group_by_layer({"a": 1.0}, reduce="median")


# ----------------------------------------------------------------------------- spectrum, convergence

def test_spectral_density_log_and_ticks(tmp_path: Path) -> None:
    g = np.linspace(-1, 10, 200)
    d = np.exp(-(g**2))
    fig = spectrum.plot_spectral_density(g, d, eigenvalues=[9.0, 8.5], dpi=DPI, save=tmp_path / "s.svg")
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_yscale() == "log"
    assert ax.get_lines()[0].get_ydata().min() == pytest.approx(1e-8)  # floored, not log(0)
    assert "eigenvalues (2)" in [ln.get_label() for ln in ax.get_lines()]
    assert (tmp_path / "s.svg").read_text().lstrip().startswith("<?xml")
    res = SimpleNamespace(grid=g, density=d, nodes=[np.array([0.0, 9.0])])
    top = SimpleNamespace(values=np.array([9.5, 7.0, 3.0]))
    fig = spectrum.plot_spectral_density(res, eigenvalues=top, dpi=DPI)
    assert "eigenvalues (3)" in [ln.get_label() for ln in fig.axes[0].get_lines()]
    with pytest.raises(ValueError, match="equal length"):
        spectrum.plot_spectral_density(g, d[:-1])
    with pytest.raises(ValueError, match="strictly increasing"):
        spectrum.plot_spectral_density(g[::-1], d)
    with pytest.raises(ValueError, match="negative"):
        spectrum.plot_spectral_density(g, -d)


def test_convergence_marks_the_sustained_crossing(tmp_path: Path) -> None:
    n = np.array([8, 16, 32, 64, 128, 256])
    sp = np.array([0.5, 0.96, 0.9, 0.951, 0.97, 0.99])
    assert convergence.threshold_crossing(n, sp, 0.95) == 64
    assert convergence.threshold_crossing(n, np.full(6, 0.99)) == 8
    assert convergence.threshold_crossing(n, sp[::-1]) is None
    fig = convergence.plot_convergence(n, 1 / np.sqrt(n), sp, dpi=DPI, save=tmp_path / "c.pdf")
    assert len(fig.axes) == 2 and (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"
    xs = [ln.get_xdata()[0] for ln in fig.axes[1].get_lines() if ln.get_linestyle() == ":"]
    assert xs == [64]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps({"n": n.tolist(), "rel_change": (1 / n).tolist(), "spearman": sp[::-1].tolist()}))
    fig = figures.plot_convergence(path, dpi=DPI)
    assert any("not reached" in t.get_text() for t in fig.axes[1].texts)
    with pytest.raises(ValueError, match="same non-zero length"):
        convergence.plot_convergence(n, n, sp[:3])
    with pytest.raises(ValueError, match="lacks key 'spearman'"):
        convergence.plot_convergence({"n": n, "rel_change": n})


# ----------------------------------------------------------------------------- audit

def audit_dict() -> dict:
    a = np.linspace(-1, 1, 9)
    return {
        "fisher_per_layer": {f"layer {i}": 10.0**-i for i in range(4)},
        "top_eigenvalue": {f"block {i}": float(i + 1) for i in range(4)},
        "trace": {f"block {i}": 10.0 * (i + 1) for i in range(4)},
        "sensitivity": {f"block {i}": (a.tolist(), ((i + 1) * a**2).tolist()) for i in range(4)},
    }


def test_audit_four_panels_from_dict_and_json(tmp_path: Path) -> None:
    fig = audit.plot_audit(audit_dict(), dpi=DPI, save=tmp_path / "a.png")
    assert len(fig.axes) == 4
    assert fig.axes[0].get_xscale() == "log"  # 3 decades of Fisher
    assert fig.axes[1].get_xscale() == "linear"  # eigenvalues span < 1 decade
    assert len(fig.axes[3].get_lines()) == 4 + 1  # curves + the alpha=0 marker
    assert png_shape(tmp_path / "a.png") == (8 * DPI, 12 * DPI)
    (tmp_path / "a.json").write_text(json.dumps(audit_dict()))
    assert len(audit.plot_audit(tmp_path / "a.json", dpi=DPI).axes) == 4
    partial = {"trace": {"b0": 1.0}, "curves": {"b0": {"alphas": [0, 1], "losses": [1, 2]}}}
    assert len(audit.plot_audit(partial, dpi=DPI).axes) == 2


def test_bad_audit_inputs_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="none of the panels"):
        audit.plot_audit({"foo": 1})
    with pytest.raises(ValueError, match="differ in length"):
        audit.plot_audit({"sensitivity": {"b": ([0, 1, 2], [1, 2])}})
    with pytest.raises(FileNotFoundError):
        audit.plot_audit(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- style and layering

def test_style_save_formats_and_sizes(tmp_path: Path) -> None:
    fig = style.new_figure(2, 1, dpi=DPI)
    fig.add_subplot().plot([0, 1], [0, 1])
    for suffix in (".png", ".pdf", ".svg"):
        assert style.save(fig, tmp_path / f"x{suffix}").stat().st_size > 100
    assert png_shape(tmp_path / "x.png") == (DPI, 2 * DPI)
    with pytest.raises(ValueError, match="use a .png, .pdf or .svg suffix"):
        style.save(fig, tmp_path / "x.gif")
    assert style.label("loss").startswith("loss (") and style.label("custom") == "custom"


def test_figures_are_not_kept_by_pyplot() -> None:
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    for _ in range(3):
        curves.plot_curves({"x": np.ones((2, 3))}, [0, 1, 2], dpi=DPI)
    assert len(plt.get_fignums()) == before


def test_landscape_never_imports_matplotlib() -> None:
    code = "import sys, landscape.scans.li_hdf5, landscape; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    code = ("import sys, figures; assert 'torch' not in sys.modules and 'matplotlib.pyplot' not in sys.modules; "
            "figures.plot_surface, figures.plot_metric_vs_size")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_convergence_from_the_fisher_convergence_result() -> None:
    from landscape.fisher import convergence as fc
    conv = fc.Convergence(n=[8, 16, 32, 64], n_counted=[8, 16, 32, 64], rel_change=[0.5, None, 0.1, 0.0],
                          spearman=[0.5, 0.96, 0.97, 1.0])
    fig = convergence.plot_convergence(conv, dpi=DPI)
    xs = [ln.get_xdata()[0] for ln in fig.axes[1].get_lines() if ln.get_linestyle() == ":"]
    assert xs == [conv.examples_to_reach(0.95)] == [16]
    late = fc.Convergence(n=[8, 16], n_counted=[8, 16], rel_change=[0.5, 0.0], spearman=[0.5, 1.0])
    fig = convergence.plot_convergence(late, dpi=DPI)  # the final point is 1 by construction: not a crossing
    assert any("not reached" in t.get_text() for t in fig.axes[1].texts)
