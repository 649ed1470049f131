"""``landscape audit [CHECKPOINT]``: sensitivity audit of a checkpoint (see analyses.audit)."""

from __future__ import annotations

import argparse
from pathlib import Path

from analyses.cli import add_common_arguments, add_data_arguments, add_range_argument, parse_range
from analyses.common import read_texts

NAME = "audit"
HELP = "sensitivity audit of a checkpoint: Fisher, Hessian blocks, per-block 1D curves, sharpness, HTML report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.set_defaults(examples=24)
    parser.epilog = ("--examples sets the Fisher sequences. Raise --examples, --eval-examples, --seeds, --points, "
                     "--eig-iters and --trace-matvecs for tighter estimates (time grows about linearly).")
    parser.add_argument("--eval-examples", type=int, default=8, help="held-out sequences for curvature, scans, sharpness (≥ 1)")
    parser.add_argument("--seeds", type=int, default=1, help="direction seeds per sensitivity curve (≥ 1: seed, seed+1, ...)")
    parser.add_argument("--points", type=int, default=9, help="points of each 1D curve (≥ 5)")
    add_range_argument(parser, what="curve coefficients α")
    parser.add_argument("--eig-iters", type=int, default=10, help="Lanczos matvecs at most, per block (≥ 2)")
    parser.add_argument("--trace-matvecs", type=int, default=6, help="Hutch++ matvecs per block (≥ 3, and ≥ 6 for an error estimate; the full model gets 1.5×)")
    parser.add_argument("--radius", type=float, default=0.01, help="sharpness radius as a fraction of ‖θ‖ (> 0)")
    parser.add_argument("--hvp-mode", default="double_backward", choices=["auto", "double_backward", "forward_over_reverse"],
                        help="Hessian-vector product mode (auto times both first)")
    parser.add_argument("--no-block-curvature", action="store_true", help="skip the per-block Hessian (curves only)")
    add_data_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="reuse finished parts and scan points in --out")


def _check_checkpoint(checkpoint: str) -> None:
    if checkpoint in ("", "default"):
        return
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; give a local Hugging Face checkpoint directory "
                                "(or omit it to audit the embedded default model).")
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a Hugging Face checkpoint directory (no config.json); point to the "
                                "folder that save_pretrained wrote.")


def run(args: argparse.Namespace) -> int:
    from analyses.audit import AuditConfig
    from analyses.audit import run as run_audit

    _check_checkpoint(args.checkpoint)
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1.")
    name = "default" if args.checkpoint in ("", "default") else Path(args.checkpoint).expanduser().resolve().name
    out = args.out or f"runs/audit-{name}"
    cfg = AuditConfig(
        checkpoint=args.checkpoint, out=out, fisher_examples=args.examples, eval_examples=args.eval_examples,
        texts=read_texts(args.texts), max_length=args.max_length, seeds=tuple(range(args.seed, args.seed + args.seeds)),
        points_1d=args.points, range_1d=parse_range(args.range, symmetric=True)[1], batch_size=args.batch_size, eig_max_iter=args.eig_iters, trace_matvecs=args.trace_matvecs,
        full_trace_matvecs=max(3, (3 * args.trace_matvecs) // 2), radius=args.radius,
        block_curvature=not args.no_block_curvature, hvp_mode=args.hvp_mode, seed=args.seed, device=args.device, resume=args.resume,
        progress=not args.no_progress,
    )
    result = run_audit(cfg)
    print(result.summary_table())
    print(f"\nwrote {out}/result.json, report.md, report.html and figures/ in {result.meta['timings']['total_s']:.0f} s")
    return 0
