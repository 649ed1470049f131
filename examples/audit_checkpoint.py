"""Audit a checkpoint: where is its loss curved, and which blocks is it sensitive to?

    python examples/audit_checkpoint.py path/to/hf_checkpoint --out runs/my-audit
    python examples/audit_checkpoint.py default --small          # the embedded default model, quick settings

Writes result.json, arrays/, figures/, report.md and a self-contained report.html to --out and
prints a table per block (Fisher, Hessian λ₁ and trace, curvature of the 1D sensitivity curve).
The same audit runs from the shell as ``landscape audit PATH``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analyses.audit import AuditConfig, run

SMALL = dict(fisher_examples=6, eval_examples=3, batch_size=4, points_1d=5, eig_max_iter=4, trace_matvecs=3,
             full_trace_matvecs=3, avg_samples=2, worst_steps=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="local Hugging Face MLM or causal-LM directory, or 'default'")
    p.add_argument("--out", default=None, help="output folder (default: runs/audit-<name>)")
    p.add_argument("--texts", default=None, help="held-out texts, one per line (default: held-out stdlib docstrings)")
    p.add_argument("--small", action="store_true", help="tiny settings for a smoke run (seconds on a tiny model)")
    p.add_argument("--seeds", type=int, default=1, help="direction seeds per sensitivity curve")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = p.parse_args(argv)

    path = Path(args.checkpoint)
    if args.checkpoint != "default" and not (path / "config.json").is_file():
        p.error(f"{path} is not a Hugging Face checkpoint directory (no config.json).")
    texts = None
    if args.texts:
        texts = [t.strip() for t in Path(args.texts).read_text(encoding="utf-8").splitlines() if t.strip()]
    out = args.out or f"runs/audit-{path.resolve().name if args.checkpoint != 'default' else 'default'}"
    cfg = AuditConfig(checkpoint=args.checkpoint, out=out, texts=texts, seeds=tuple(range(args.seeds)),
                      progress=not args.no_progress, **(SMALL if args.small else {}))
    result = run(cfg)
    print(result.summary_table())
    print(f"\nreport: {Path(out) / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
