"""Worker for the torchrun curvature test: ``torchrun --nproc_per_node=2 dist_curvature_worker.py OUT``.

Every rank builds the same float64 model and data, and runs top eigenvalues (Lanczos), Hutch++
trace and SLQ on the sharded operator; rank 0 saves the numbers to ``OUT/<case>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest
from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective  # noqa: E402

from landscape import curvature, objectives, util  # noqa: E402

CASES = ["bert-hessian", "mlp-hessian", "mlp-fisher"]


def run_case(case: str, distributed: bool | None = None) -> dict:
    kind, op_kind = case.split("-")
    if kind == "bert":
        model, obj, data = make_tiny_bert(dtype=torch.float64), mlm_objective(), make_mlm_batches(n_batches=2)
    else:  # 3 batches of 3: rank 1 holds 4 of 9 examples
        model, obj, data = make_mlp(), objectives.Criterion(), make_classification_data(n_batches=3, batch_size=3)
    before = util.weights_fingerprint(model)
    if op_kind == "hessian":
        op = curvature.HessianOperator(model, obj, data, reuse_graph=False, mode="double_backward", distributed=distributed)
    else:
        op = curvature.EmpiricalFisherOperator(model, obj, data, distributed=distributed)
    eig = curvature.top_eigenvalues(op, k=2, tol=1e-8, seed=0)
    tr = curvature.trace(op, num_matvecs=12, seed=1, block_size=3)
    dens = curvature.spectral_density(op, num_runs=2, lanczos_steps=6, seed=2, block_size=2)
    assert util.weights_fingerprint(model) == before
    return {"world_size": op.ctx.world_size, "loss": op.loss, "n_terms": op.n_terms, "eig": eig.values.tolist(),
            "eig_matvecs": eig.n_matvecs, "trace": tr.estimate, "nodes": [n.tolist() for n in dens.nodes],
            "weights": [w.tolist() for w in dens.weights]}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    ctx = util.dist_context()
    for case in CASES:
        res = run_case(case)
        if ctx.is_main:
            (out / f"{case}.json").write_text(json.dumps(res))
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
