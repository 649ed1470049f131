"""figures.plot_training_curvature: from rows or the JSONL file, with the 2/η line; computes no loss."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import figures  # noqa: E402
from figures.training import plot_training_curvature  # noqa: E402


def _rows(n: int = 5) -> list[dict]:
    return [{"step": 10 * i, "lr": 0.1 * (1 - i / n), "loss": 3.0 - 0.1 * i, "top_eigenvalue": 5.0 + i,
             "hessian_trace": 50.0 + i, "hessian_trace_stderr": 2.0, "fisher_trace": 40.0, "fisher_trace_stderr": 1.0,
             "loss_rise": 0.01 * i, "cost_gradients": 90.0, "overhead": 0.05 + 0.01 * i} for i in range(n)]


def test_figure_from_file_has_edge_of_stability_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(_rows())))
    fig = figures.plot_training_curvature(path, save=tmp_path / "c.png", dpi=40)
    assert (tmp_path / "c.png").stat().st_size > 1000
    axes = fig.get_axes()
    assert len(axes) == 5 and "overhead 9.0% of the training gradients" in fig._suptitle.get_text()
    eig = axes[1]
    edge = [ln for ln in eig.get_lines() if "2/η" in str(ln.get_label())]
    assert len(edge) == 1
    np.testing.assert_allclose(edge[0].get_ydata(), [2 / r["lr"] for r in _rows()])
    np.testing.assert_allclose(eig.get_lines()[0].get_xdata(), [0, 10, 20, 30, 40])  # sorted by step


def test_figure_from_rows_subset_and_errors(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "lr"} for r in _rows()]
    fig = plot_training_curvature(rows, quantities=["top_eigenvalue"], dpi=40)
    assert len(fig.get_axes()) == 1 and not [ln for ln in fig.get_axes()[0].get_lines() if "2/η" in str(ln.get_label())]
    with pytest.raises(ValueError, match="no values"):
        plot_training_curvature(rows, quantities=["sharpness"])
    with pytest.raises(ValueError, match="no measurements"):
        plot_training_curvature([])
    with pytest.raises(ValueError, match="step"):
        plot_training_curvature([{"loss": 1.0}])
