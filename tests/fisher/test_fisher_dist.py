"""torchrun with 2 CPU ranks (gloo) gives the single-process Fisher to floating-point tolerance."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from landscape import fisher

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest
from conftest import torchrun_worker  # noqa: E402
from dist_fisher_worker import CASES, case_id, run_case  # noqa: E402

WORKER = Path(__file__).parent / "dist_fisher_worker.py"


@pytest.fixture(scope="module")
def dist_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fisher_dist")
    torchrun_worker(WORKER, str(out))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_torchrun_two_ranks_equals_single_process(dist_out, case):
    D = fisher.FisherDiagonal.load(dist_out / case_id(case))
    S = run_case(case)
    assert D.meta["world_size"] == 2 and S.meta["world_size"] == 1
    assert D.meta["n_examples"] == S.meta["n_examples"]
    assert D.meta["example_loss"] == S.meta["example_loss"] == (case[4] if len(case) > 4 else "sum")
    for n in S.names:
        torch.testing.assert_close(D.scores[n], S.scores[n], rtol=1e-10, atol=1e-14)
    assert D.convergence.n == S.convergence.n
    for a, b in zip(D.convergence.spearman, S.convergence.spearman):
        assert (a is None and b is None) or abs(a - b) < 1e-9


def test_whole_batches_are_dealt_only_with_enough_batches_per_rank():
    from landscape.fisher.estimators import WHOLE_BATCHES_PER_RANK, _whole_batches
    from landscape.util import DistContext

    two, n = DistContext(0, 2), 2 * WHOLE_BATCHES_PER_RANK
    assert _whole_batches(list(range(n)), None, two)
    assert not _whole_batches(list(range(n - 1)), None, two)  # too few: rows, for balance
    assert not _whole_batches(list(range(n)), 5, two)  # a max_examples cut: rows
    assert not _whole_batches(iter(range(n)), None, two)  # unsized
    assert not _whole_batches(list(range(n)), None, DistContext())
