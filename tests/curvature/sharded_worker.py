"""Worker for the sharded curvature test: ``torchrun --nproc_per_node=2 sharded_worker.py OUT``.

Every rank builds the same float64 model (an MLP; a tiny BERT with tied weights) and data, shards the model with FSDP2 (``fully_shard``, gloo
on CPU), and runs the stock Lanczos, Hutch++, Hutchinson and SLQ on sharded vectors; each rank saves its
numbers and its largest vector (numel) to ``OUT/<case>-rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest
from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective  # noqa: E402

from landscape import curvature, objectives, util  # noqa: E402
from landscape.curvature import distributed as sharded  # noqa: E402
from landscape.curvature.distributed.operator import local_shard  # noqa: E402

MLP = {"hidden": 7, "d_in": 5}
CASES = ["mlp", "bert", "mlp8"]  # mlp8: 8 batches, dealt whole to the ranks
EIG = {"mlp": {"k": 2, "tol": 1e-8}, "bert": {"k": 1, "tol": 1e-4}, "mlp8": {"k": 2, "tol": 1e-8}}  # the tiny BERT has dim 6008: fewer steps


def setup(case: str) -> tuple[torch.nn.Module, objectives.Objective, list]:
    """The float64 model, objective and data of a case (the same on every rank)."""
    if case == "bert":  # tied decoder/embedding weight: stays in the root unit
        return make_tiny_bert(dtype=torch.float64), mlm_objective(), make_mlm_batches(n_batches=2)
    # rank 1 holds 4 of 9 examples
    n_batches = 8 if case == "mlp8" else 3
    return make_mlp(**MLP), objectives.Criterion(), make_classification_data(n_batches=n_batches, batch_size=3,
                                                                             d_in=MLP["d_in"])


def run(model: torch.nn.Module, case: str = "mlp") -> dict:
    """The sharded algorithms on ``model`` (sharded or not) with the test's seeds."""
    _, obj, data = setup(case)
    op = sharded.ShardedHessianOperator(model, obj, data)
    before = [local_shard(p).detach().clone() for p in model.parameters()]
    eig = curvature.top_eigenvalues(op, seed=0, progress=False, **EIG[case])
    tr = curvature.trace(op, num_matvecs=12, seed=1, progress=False)
    hutch = curvature.trace(op, num_matvecs=4, method="hutchinson", seed=3, progress=False)
    dens = curvature.spectral_density(op, num_runs=2, lanczos_steps=6, seed=2, progress=False)
    after = [local_shard(p).detach() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after)), "weights changed"
    assert all(p.grad is None for p in model.parameters()), ".grad written"
    return {"world_size": op.ctx.world_size, "dim": op.dim, "local_dim": op.local_dim, "n_terms": op.n_terms,
            "max_vector_numel": op.max_vector_numel, "eig": eig.values.tolist(), "eig_matvecs": eig.n_matvecs,
            "trace": tr.estimate, "hutchinson": hutch.estimate, "nodes": [n.tolist() for n in dens.nodes],
            "weights": [w.tolist() for w in dens.weights], "meta": eig.meta["operator"]}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    ctx = util.dist_context()
    for case in CASES:
        res = run(sharded.shard_model(setup(case)[0]), case)
        (out / f"{case}-rank{ctx.rank}.json").write_text(json.dumps(res))
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
