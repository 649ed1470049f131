"""``landscape analyze fisher-sharpness``: the flagship study (see analyses.fisher_sharpness)."""

from __future__ import annotations

import argparse

from analyses.cli import add_common_arguments, add_data_arguments, add_range_argument, parse_range

NAME = "analyze"
HELP = "run a named analysis (fisher-sharpness: is the loss sharper along high-Fisher parameters?)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    p = sub.add_parser("fisher-sharpness", help="the paper's tensor halves (arm P) and matched masks at equal norm (arm E)",
                       description="Arm P reproduces the paper's protocol (all tensors ranked by mean Fisher and halved, "
                                   "filter-normalized, 1-D tensors fixed); arm E compares top-Fisher element masks with a "
                                   "stratified random, a random and a bottom-Fisher mask of the same size at equal norm. "
                                   "Each arm's answer reads one endpoint's 95%% bootstrap interval (Sharma et al., 2024).")
    add_common_arguments(p)
    add_data_arguments(p, batch_size=32)
    p.set_defaults(examples=64, out="runs/fisher-sharpness")
    p.add_argument("--eval-examples", type=int, default=128,
                   help="held-out sequences of the evaluation pool, disjoint from the --examples Fisher sequences (default 128)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1], help="arm E mask sizes as fractions in (0, 0.5] (default 0.1)")
    p.add_argument("--seeds", type=int, default=8, help="number of direction seeds, SEED, SEED+1, ... (default 8)")
    p.add_argument("--curve-seeds", type=int, default=3, help="seeds that also get 1D curves and basin widths (default 3)")
    p.add_argument("--points", type=int, default=7, help="points of each 1D curve (default 7)")
    p.add_argument("--grid", type=int, default=21, help="points per side of arm P's 2D surfaces (default 21)")
    p.add_argument("--surface-examples", type=int, default=32, help="pool sequences used for the 2D surfaces (default 32)")
    add_range_argument(p, default=1.5, what="1D and 2D scan range")
    p.add_argument("--trace-probes", type=int, default=4, help="Hutchinson probes per arm E mask (default 4)")
    p.add_argument("--eig-iter", type=int, default=8, help="Lanczos steps per arm E mask (default 8)")
    p.add_argument("--eig-examples", type=int, default=32, help="pool sequences for the top-eigenvalue HVPs (default 32)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (default 2000)")
    p.add_argument("--reference", default="auto", metavar="DIR|auto|none",
                   help="folder of the paper's guided-dropout surfaces to show beside arm P (default: auto, found beside the repository)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished parts in --out; refuses parts computed with other settings")
    from analyses.cli.guided_dropout import add_study_parser

    add_study_parser(sub)


def run(args: argparse.Namespace) -> int:
    from analyses.fisher_sharpness import FisherSharpnessConfig
    from analyses.fisher_sharpness import run as run_study

    if args.seeds < 2:
        raise ValueError(f"--seeds must be at least 2 (a spread over seeds needs two), got {args.seeds}.")
    r = parse_range(args.range, symmetric=True)[1]
    cfg = FisherSharpnessConfig(
        checkpoint=args.checkpoint, out=args.out, texts=args.texts, max_length=args.max_length, fisher_examples=args.examples,
        eval_examples=args.eval_examples, batch_size=args.batch_size, fractions=tuple(args.fractions),
        seeds=tuple(range(args.seed, args.seed + args.seeds)), curve_seeds=min(args.curve_seeds, args.seeds),
        points_1d=args.points, range_1d=r, grid_2d=args.grid, range_2d=r, surface_examples=args.surface_examples,
        trace_probes=args.trace_probes, eig_iter=args.eig_iter, eig_examples=args.eig_examples, n_boot=args.bootstrap, seed=args.seed,
        reference=args.reference, device=args.device, resume=args.resume, progress=not args.no_progress,
    )
    result = run_study(cfg)
    print(summary_text(result.to_dict()))
    t = result.meta["timings"]
    print(f"\nwrote {args.out}/result.json, report.md and figures/ in {t.get('total_with_figures_s', t['total_s']):.0f} s")
    return 0


def summary_text(res: dict) -> str:
    """The arm P table, arm E endpoints and the verdict, as plain text."""
    rows = ["Arm P (the paper's tensor halves):",
            f"  {'half':<7}{'tensors':>8}{'moving':>8}{'params moved':>14}{'|d|':>9}{'dHd':>10}  {'95% CI':<20}{'dHd/|d|^2':>11}"]
    for half, h in res["arm_p"]["halves"].items():
        if "skipped" in h:
            rows.append(f"  {half:<7}{h['n_tensors']:>8}{0:>8}{0:>14}  {h['skipped']}")
            continue
        c, n = h["curvature"], h["curvature_per_norm2"]
        rows.append(f"  {half:<7}{h['n_tensors']:>8}{h['n_moving_tensors']:>8}{h['n_params_moved']:>14,}{h['norm']:>9.3g}"
                    f"{c['estimate']:>10.3g}  [{c['interval'][0]:.3g}, {c['interval'][1]:.3g}]".ljust(20) + f"{n['estimate']:>11.3e}")
    rows.append("Arm E endpoints (ratio of dHd, top / control, 95% interval):")
    import math

    for group, eps in res["arm_e"]["endpoints"].items():
        for control, e in eps.items():
            if e["kind"] == "log_ratio":
                lo, hi = (math.exp(x) for x in e["interval"])
                rows.append(f"  {group} vs {control:<11} x{math.exp(e['estimate']):.3g} [{lo:.3g}, {hi:.3g}]  ({e['outcome']})")
            else:
                rows.append(f"  {group} vs {control:<11} diff {e['estimate']:+.3g} [{e['interval'][0]:+.3g}, {e['interval'][1]:+.3g}]  ({e['outcome']})")
    rows += ["", "Variance: " + res["variance"]["summary"], "", "Verdict:"]
    rows += [f"- {line}" for line in res["verdict"]["arm_p"] + res["verdict"]["arm_e"]]
    return "\n".join(rows)
