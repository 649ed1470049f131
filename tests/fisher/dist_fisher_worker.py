"""Worker for the torchrun Fisher tests: ``torchrun --nproc_per_node=2 dist_fisher_worker.py OUT``.

Every rank builds the same float64 models and data for each case of ``CASES``; rank 0 saves the
all-reduced scores to ``OUT/<case id>``. One launch serves every case (startup dominates).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest
from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective  # noqa: E402

from landscape import fisher, objectives, util  # noqa: E402


def build(kind: str, n_batches: int):
    if kind == "bert":
        return make_tiny_bert(dtype=torch.float64), mlm_objective(), make_mlm_batches(n_batches=n_batches)
    return make_mlp(), objectives.Criterion(), make_classification_data(n_batches=n_batches, batch_size=3)


# (model, estimator, batches, max_examples[, example_loss]); the 4th leaves rank 1 without data; the 5th and 6th
# have ≥ 4 batches per rank, so whole batches are dealt (rank 0 holds 5 of 9), raw tensors and MLM dicts; the
# last two weight each example by its mean token loss (rows dealt, then whole batches)
CASES = [("bert", "empirical", 2, None), ("mlp", "mc", 3, None), ("mlp", "batch", 3, None), ("mlp", "empirical", 1, 1),
         ("mlp", "empirical", 9, None), ("bert", "empirical", 9, None), ("bert", "empirical", 2, None, "mean"),
         ("bert", "empirical", 9, None, "mean")]


def case_id(case: tuple) -> str:
    return "-".join(str(c) for c in case)


def run_case(case: tuple) -> fisher.FisherDiagonal:
    kind, estimator, n_batches, max_examples, *example_loss = case
    model, obj, data = build(kind, n_batches)
    return fisher.diagonal(model, obj, data, estimator=estimator, mc_samples=2, chunk_size=2, progress=False,
                           max_examples=max_examples, example_loss=(example_loss or ["sum"])[0])


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    ctx = util.dist_context()
    for case in CASES:
        F = run_case(case)
        if ctx.is_main:
            F.save(out / case_id(case))
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
