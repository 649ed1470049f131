"""Sharded curvature (FSDP2, finite-difference products, sharded Krylov vectors) on 2 CPU ranks
(gloo) equals the single-process double-backward results to 1e-5, and no rank holds a full vector."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_classification_data, make_mlp, torchrun_worker  # noqa: E402
from sharded_worker import CASES, EIG, run, setup  # noqa: E402

from landscape import curvature, objectives  # noqa: E402
from landscape.curvature import distributed as sharded  # noqa: E402

WORKER = Path(__file__).parent / "sharded_worker.py"


def _reference(case: str) -> dict:
    """The single-process double-backward operator and the stock algorithms, same seeds."""
    model, obj, data = setup(case)
    op = curvature.HessianOperator(model, obj, data, mode="double_backward", reuse_graph=False, distributed=False)
    dens = curvature.spectral_density(op, num_runs=2, lanczos_steps=6, seed=2, progress=False)
    dense = None if case == "bert" else np.linalg.eigvalsh(np.stack(
        [curvature.flat_matvec(op, e).numpy() for e in torch.eye(op.dim, dtype=torch.float64)]))
    return {"dim": op.dim, "n_terms": op.n_terms,
            "eig": curvature.top_eigenvalues(op, seed=0, progress=False, **EIG[case]).values.tolist(),
            "trace": curvature.trace(op, num_matvecs=12, seed=1, progress=False).estimate,
            "hutchinson": curvature.trace(op, num_matvecs=4, method="hutchinson", seed=3, progress=False).estimate,
            "nodes": [n.tolist() for n in dens.nodes], "weights": [w.tolist() for w in dens.weights],
            "dense": dense}


@pytest.fixture(scope="module")
def references() -> dict:
    return {case: _reference(case) for case in CASES}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded")
    torchrun_worker(WORKER, str(out))
    return out


def _check(res: dict, ref: dict) -> None:
    assert res["dim"] == ref["dim"] and res["n_terms"] == ref["n_terms"]
    np.testing.assert_allclose(res["eig"], ref["eig"], rtol=1e-5)
    if ref["dense"] is not None:
        np.testing.assert_allclose(res["eig"], ref["dense"][::-1][: len(res["eig"])], rtol=1e-5)
    assert abs(res["trace"] - ref["trace"]) <= 1e-5 * abs(ref["trace"])
    assert abs(res["hutchinson"] - ref["hutchinson"]) <= 1e-5 * abs(ref["hutchinson"])
    scale = max(float(np.max(np.abs(n))) for n in ref["nodes"])  # nodes to 1e-5 of the spectral radius
    for a, b in zip(res["nodes"], ref["nodes"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)
    for a, b in zip(res["weights"], ref["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


def test_single_process_sharded_algorithms_match_double_backward(references):
    case = "mlp"
    res = run(setup(case)[0], case)
    assert res["world_size"] == 1 and res["local_dim"] == res["dim"]
    _check(res, references[case])


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_fsdp_two_ranks_match_single_process_and_hold_half_vectors(references, two_ranks, case):
    reference = references[case]
    ranks = [json.loads((two_ranks / f"{case}-rank{r}.json").read_text()) for r in range(2)]
    for res in ranks:
        assert res["world_size"] == 2
        _check(res, reference)
        # no rank ever held a full parameter vector: every flat vector is this rank's slice
        assert res["max_vector_numel"] == res["local_dim"] < res["dim"]
    assert sum(r["local_dim"] for r in ranks) == reference["dim"]
    assert ranks[0]["eig"] == ranks[1]["eig"] and ranks[0]["trace"] == ranks[1]["trace"]


def test_bad_input_names_the_fix():
    model = make_mlp()
    data = make_classification_data()
    with pytest.raises(ValueError, match="no trainable parameter"):
        sharded.ShardedHessianOperator(model, objectives.Criterion(), data, params=["nope.*"])
    op = sharded.ShardedHessianOperator(model, objectives.Criterion(), data)
    with pytest.raises(ValueError, match="sharded flat vector"):
        op.from_flat(torch.zeros(op.dim + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="1 ≤ k < dim"):
        curvature.top_eigenvalues(op, k=op.dim)
    for method in ("arpack", "lobpcg"):  # scipy needs whole vectors: refused before any product
        with pytest.raises(ValueError, match="sliced across processes"):
            curvature.top_eigenvalues(op, method=method, progress=False)
    assert op.n_matvecs == 0


def test_power_iteration_runs_on_sliced_vectors():
    """The stock power iteration takes its inner products through the operator's allsum too."""
    model, obj, data = setup("mlp")
    ref = curvature.HessianOperator(model, obj, data, mode="double_backward", distributed=False)
    op = sharded.ShardedHessianOperator(model, obj, data)
    a = curvature.top_eigenvalues(ref, method="power", tol=1e-10, max_iter=500, progress=False)
    b = curvature.top_eigenvalues(op, method="power", tol=1e-10, max_iter=500, progress=False)
    np.testing.assert_allclose(b.values, a.values, rtol=1e-6)
    assert b.meta["model"] == {"class": type(model).__name__, "sharded": False}
