"""``landscape fisher CHECKPOINT --estimator empirical --examples 512 --out DIR``.

Writes to ``DIR``: ``fisher.safetensors`` + ``fisher.json`` (scores and metadata, readable by
``FisherDiagonal.load`` and ``landscape plot``), ``fisher_per_tensor.csv`` (one row per tensor:
mean/sum/max score, element count, layer group), ``fisher_per_layer.csv`` and
``fisher_convergence.json`` (``n``, ``n_counted``, ``rel_change``, ``spearman``,
``examples_to_reach_0.95``). Under ``torchrun`` every rank computes its shard and rank 0 writes.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from analyses.cli import add_common_arguments, add_data_arguments, add_include_argument

NAME = "fisher"
HELP = "diagonal Fisher scores of a checkpoint (empirical, mc, exact or batch), with convergence curves"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``landscape fisher``."""
    add_common_arguments(parser)
    parser.set_defaults(examples=512, out="runs/fisher")
    parser.add_argument("--estimator", default="empirical", choices=["empirical", "mc", "exact", "batch"],
                        help="empirical: true labels (the paper's); mc: sampled labels; exact: closed form "
                             "(few classes); batch: squared mini-batch gradient (biased)")
    parser.add_argument("--mc-samples", type=int, default=1, help="label draws per example for --estimator mc (≥ 1)")
    parser.add_argument("--chunk-size", type=int, default=16, help="examples per vectorised gradient call (≥ 1; bounds "
                                                                   "memory)")
    add_data_arguments(parser)
    add_include_argument(parser)
    parser.add_argument("--threshold", type=float, default=0.95, help="rank correlation reported as 'enough examples'")


def write_tables(F, out: Path) -> None:  # noqa: ANN001 - a FisherDiagonal
    """``fisher_per_tensor.csv`` and ``fisher_per_layer.csv``."""
    from landscape.params import layer_group

    means, sums, maxes = F.per_tensor("mean"), F.per_tensor("sum"), F.per_tensor("max")
    ranked = sorted(means, key=lambda n: -means[n])
    with open(out / "fisher_per_tensor.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "tensor", "group", "numel", "mean", "sum", "max"])
        for r, n in enumerate(ranked, 1):
            w.writerow([r, n, layer_group(n), F.scores[n].numel(), f"{means[n]:.6e}", f"{sums[n]:.6e}",
                        f"{maxes[n]:.6e}"])
    layer_mean, layer_sum = F.per_layer("mean"), F.per_layer("sum")
    with open(out / "fisher_per_layer.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["group", "mean", "sum"])
        for g in layer_mean:
            w.writerow([g, f"{layer_mean[g]:.6e}", f"{layer_sum[g]:.6e}"])


def announce_fisher(target: Any, estimator: str, mc_samples: int = 1, include: Any = None, world: int = 1) -> str:
    """Print the Fisher pass's estimated time: N per-example gradients (one batch gradient per batch
    for ``estimator="batch"``; ``mc_samples`` per example for ``"mc"``), shared by ``world`` ranks."""
    from analyses.cli.eta import announce, first_example, time_gradient

    if estimator == "batch":
        unit_s = time_gradient(target.model, target.objective, target.data[:1], params=include)
        return announce(len(target.data) / world, unit_s, "batch gradients")
    unit_s = time_gradient(target.model, target.objective, first_example(target.data), params=include)
    n = target.n_examples * (mc_samples if estimator == "mc" else 1)
    return announce(n / world, unit_s, "gradients")


def run(args: argparse.Namespace) -> int:
    """Compute the diagonal Fisher and write it under --out."""
    from analyses.common import load_target, read_texts
    from landscape import fisher, util
    from landscape.util.files import write_json

    if args.examples is not None and args.examples < 1:
        raise ValueError(f"--examples must be at least 1, got {args.examples}.")
    ctx = util.dist_context()
    texts = read_texts(args.texts)
    target = load_target(args.checkpoint, examples=args.examples, batch_size=args.batch_size, device=args.device,
                         seed=args.seed, texts=texts, max_length=args.max_length,
                         tokenizer=args.tokenizer, allow_unk=args.allow_unk)
    if ctx.is_main:
        announce_fisher(target, args.estimator, args.mc_samples, args.include, ctx.world_size)
    F = fisher.diagonal(target.model, target.objective, target.data, estimator=args.estimator,
                        mc_samples=args.mc_samples, seed=args.seed, chunk_size=args.chunk_size,
                        params=args.include, progress=not args.no_progress, convergence=True, distributed=ctx.active)
    F.meta["target"] = {"name": target.name, "task": target.task, **target.meta}
    if not ctx.is_main:
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    F.save(out / "fisher")
    write_tables(F, out)
    conv = F.convergence
    reach = conv.examples_to_reach(args.threshold) if conv is not None else None
    write_json(out / "fisher_convergence.json", {**(conv.to_dict() if conv else {}), "threshold": args.threshold,
                                                 f"examples_to_reach_{args.threshold:g}": reach,
                                                 "estimator": args.estimator})
    top = sorted(F.per_tensor().items(), key=lambda kv: -kv[1])[:5]
    for note in target.meta.get("notes", []):
        print(f"note: {note}")
    print(f"Fisher ({args.estimator}) of {target.name}: {F.meta['n_examples']} examples "
          f"({F.meta['n_examples_empty']} without a labelled token), {F.meta['seconds']:.1f} s, "
          f"per-example gradients: {F.meta['per_example']}")
    for name, value in top:
        print(f"  {value:.4e}  {name}")
    print(f"rank correlation >= {args.threshold:g} from n = "
          f"{reach if reach is not None else 'not reached (use more examples)'}")
    print(f"wrote {out}/fisher.safetensors, fisher.json, fisher_per_tensor.csv, fisher_per_layer.csv, "
          "fisher_convergence.json")
    return 0
