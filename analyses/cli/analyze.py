"""``landscape analyze fisher-sharpness``: the flagship study (see analyses.fisher_sharpness)."""

from __future__ import annotations

import argparse

from analyses.cli import add_common_arguments, add_range_argument, parse_range

NAME = "analyze"
HELP = "run a named analysis (fisher-sharpness: is the loss sharper along high-Fisher parameters?)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    p = sub.add_parser("fisher-sharpness", help="perturb top/random/bottom-Fisher parameters and compare sharpness",
                       description="Perturb top-, random- and bottom-Fisher parameters of matched size and "
                                   "compare the sharpness of the MLM loss (Sharma et al., 2024).")
    add_common_arguments(p)
    p.set_defaults(examples=64, out="runs/fisher-sharpness")
    p.add_argument("--eval-examples", type=int, default=8, help="held-out sequences for scans and curvature")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.5], help="mask sizes as fractions")
    p.add_argument("--granularities", nargs="+", default=["element", "tensor"], choices=["element", "tensor"])
    p.add_argument("--seeds", type=int, default=3, help="number of direction seeds (seed, seed+1, ...)")
    p.add_argument("--points", type=int, default=15, help="points of each 1D scan")
    p.add_argument("--grid", type=int, default=7, help="points per side of each 2D scan")
    add_range_argument(p)
    p.add_argument("--trace-matvecs", type=int, default=9, help="Hutch++ matvecs per mask")
    p.add_argument("--resume", action="store_true", help="reuse finished masks and scan points in --out")
    from analyses.cli.guided_dropout import add_study_parser

    add_study_parser(sub)


def run(args: argparse.Namespace) -> int:
    from analyses.fisher_sharpness import FisherSharpnessConfig, run as run_study

    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1.")
    r = parse_range(args.range, symmetric=True)[1]
    cfg = FisherSharpnessConfig(
        checkpoint=args.checkpoint, out=args.out, fisher_examples=args.examples, eval_examples=args.eval_examples,
        fractions=tuple(args.fractions), granularities=tuple(args.granularities),
        seeds=tuple(range(args.seed, args.seed + args.seeds)), points_1d=args.points, range_1d=r,
        grid_2d=args.grid, range_2d=r, trace_matvecs=args.trace_matvecs, seed=args.seed,
        device=args.device, resume=args.resume, progress=not args.no_progress,
    )
    result = run_study(cfg)
    print(summary_table(result.to_dict()))
    print(f"\nwrote {args.out}/result.json, report.md and figures/ in {result.meta['timings']['total_s']:.0f} s")
    return 0


def summary_table(res: dict) -> str:
    """Mean sharpness per mask, and each group's verdict, as plain text."""
    metrics = ("curvature", "basin_width", "avg_sharpness", "worst_sharpness", "top_eigenvalue", "trace_per_dim")
    head = f"{'mask':<22}" + "".join(f"{m:>16}" for m in metrics)
    rows = [head, "-" * len(head)]
    for key, entry in res["masks"].items():
        rows.append(f"{key:<22}" + "".join(f"{entry['metrics'][m]['mean']:>16.4g}" for m in metrics))
    rows.append("")
    rows += [f"{group}: {v['summary']}" for group, v in res["verdicts"].items()]
    return "\n".join(rows)


