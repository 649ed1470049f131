"""The audit's adaptive Hutch++ trace: its interval covers exact traces (dense float64 references), a
tiny product cap marks it noisy, and the tables print every stochastic number with its error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_classification_data, make_mlp

from analyses.audit.adaptive import adaptive_trace, block_curvature, precise_enough
from analyses.audit.report import block_rows, noise_note, summary_table, with_error
from landscape import curvature, objectives
from landscape.curvature.base import flat_matvec


def _spd(dim: int = 60, seed: int = 0) -> torch.Tensor:
    """A float64 symmetric matrix with a decaying positive spectrum 100/k² (trace known exactly)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q @ torch.diag(100.0 / torch.arange(1, dim + 1, dtype=torch.float64) ** 2) @ q.T


def test_adaptive_trace_covers_the_exact_trace_and_counts_every_product():
    a = _spd()
    op = curvature.MatrixOperator(a)
    tr = adaptive_trace(op, num_matvecs=6, max_matvecs=200, rel_tol=0.1, seed=0)
    exact = float(torch.trace(a))
    assert not tr.noisy and tr.stderr <= 0.1 * abs(tr.estimate)
    assert abs(tr.estimate - exact) <= 3 * tr.stderr
    assert tr.n_matvecs == op.n_matvecs == sum(r["num_matvecs"] for r in tr.rounds)
    assert [r["num_matvecs"] for r in tr.rounds] == [6 * 2**i for i in range(len(tr.rounds))]


def test_a_tiny_cap_marks_the_trace_noisy():
    g = torch.Generator().manual_seed(1)
    b = torch.randn(40, 40, generator=g, dtype=torch.float64)
    a = (b + b.T) / 2 - torch.diag(torch.diag(b))  # indefinite, trace 0: no relative precision is reachable
    op = curvature.MatrixOperator(a)
    tr = adaptive_trace(op, num_matvecs=6, max_matvecs=6, rel_tol=0.1)
    assert tr.noisy and len(tr.rounds) == 1 and tr.n_matvecs == 6 and math.isfinite(tr.stderr)
    assert adaptive_trace(curvature.MatrixOperator(a), num_matvecs=6, max_matvecs=20).n_matvecs == 18  # 6 + 12


def test_three_products_have_no_error_and_are_never_precise():
    tr = adaptive_trace(curvature.MatrixOperator(_spd(20)), num_matvecs=3, max_matvecs=3)
    assert tr.noisy and not math.isfinite(tr.stderr)
    assert not precise_enough(1.0, float("nan"), 0.1) and precise_enough(-10.0, 0.5, 0.1)


@pytest.mark.parametrize("kw", [dict(num_matvecs=2), dict(rel_tol=0.0)])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError, match="num_matvecs|rel_tol"):
        adaptive_trace(curvature.MatrixOperator(_spd(10)), **({"num_matvecs": 6, "max_matvecs": 12} | kw))


def test_block_curvature_of_a_tiny_float64_model_covers_the_dense_hessian_trace():
    model = make_mlp(d_in=6, hidden=4, classes=3)  # 43 float64 parameters
    data = make_classification_data(n_batches=2, batch_size=5, d_in=6)
    op = curvature.HessianOperator(model, objectives.Criterion(torch.nn.CrossEntropyLoss()), data)
    dense = torch.stack([flat_matvec(op, e) for e in torch.eye(op.dim, dtype=torch.float64)])
    exact = float(torch.trace(dense))
    res = block_curvature(op, eig_tol=1e-6, eig_max_iter=op.dim, num_matvecs=6, max_matvecs=400, rel_tol=0.1,
                          seed=0)
    assert abs(res["trace"] - exact) <= 3 * res["trace_stderr"] and not res["trace_noisy"]
    assert res["top_eigenvalue"] == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-4)
    assert res["trace_per_param"] == pytest.approx(res["trace"] / op.dim)
    capped = block_curvature(op, eig_tol=1e-6, eig_max_iter=5, num_matvecs=3, max_matvecs=3, rel_tol=0.1, seed=0)
    assert capped["trace_noisy"] and capped["trace_stderr"] is None and capped["trace_matvecs"] == 3


def _fake_result(noisy: bool) -> dict:
    sens = {"curvature": 1.0, "loss_at_edge": 0.5}
    block = {"n_params": 10, "top_eigenvalue": 3.0, "trace": -184.0, "trace_stderr": 400.7, "trace_noisy": noisy,
             "trace_matvecs": 48, "trace_per_param": -18.4, "sensitivity": sens}
    overall = block | {"n_params": 10, "trace": 977.9, "trace_stderr": 40.1, "trace_noisy": False, "curvature": 1.0,
                       "loss_at_edge": 0.5, "loss0": 2.0, "avg_sharpness": 0.01, "avg_sharpness_stderr": 0.002,
                       "worst_sharpness": 0.1, "radius": 0.3}
    return {"blocks": {"layer.7": block}, "overall": overall, "fisher": {"per_layer": {"layer.7": 1e-3}, "mean": 1e-3},
            "config": {"trace_rel_tol": 0.1, "trace_max_matvecs": 48, "fisher_examples": 24, "eval_examples": 8},
            "meta": {}}


def test_tables_print_each_trace_with_its_error_products_and_noise_mark():
    res = _fake_result(noisy=True)
    assert with_error(res["blocks"]["layer.7"]) == "-184 ± 400.7 (noisy)"
    assert with_error(res["overall"]) == "977.9 ± 40.1"
    head, rows = block_rows(res)
    assert "trace ± stderr" in head and rows[0][head.index("trace products")] == "48"
    text = summary_table(res)
    assert "-184 ± 400.7 *" in text and "977.9 ± 40.1" in text and "0.01 ± 0.002" in text
    note = noise_note(res)
    assert "1 of 2 traces hit the cap (noisy: layer.7)" in note
    assert "24 sequences" in note and "8 other sequences" in note
    assert "noisy: none" in noise_note(_fake_result(noisy=False))
    assert np.isfinite(res["overall"]["trace_stderr"])
