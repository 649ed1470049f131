"""torchrun with 2 CPU ranks (gloo): the sharded curvature operator gives the single-process
eigenvalues, trace and spectral density to 1e-6 (the operator all-reduces every product)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import torchrun_worker  # noqa: E402
from dist_curvature_worker import CASES, run_case  # noqa: E402

WORKER = Path(__file__).parent / "dist_curvature_worker.py"


@pytest.fixture(scope="module")
def dist_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("curvature_dist")
    torchrun_worker(WORKER, str(out))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_torchrun_two_ranks_equals_single_process(dist_out, case):
    D = json.loads((dist_out / f"{case}.json").read_text())
    S = run_case(case, distributed=False)
    assert D["world_size"] == 2 and S["world_size"] == 1 and D["n_terms"] == S["n_terms"]
    assert abs(D["loss"] - S["loss"]) <= 1e-10 * abs(S["loss"])
    np.testing.assert_allclose(D["eig"], S["eig"], rtol=1e-6)
    assert D["eig_matvecs"] == S["eig_matvecs"]
    assert abs(D["trace"] - S["trace"]) <= 1e-6 * abs(S["trace"])
    for a, b in zip(D["nodes"] + D["weights"], S["nodes"] + S["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
