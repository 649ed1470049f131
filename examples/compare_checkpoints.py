"""Compare a pretrained and a fine-tuned checkpoint along the straight line between them.

    python examples/compare_checkpoints.py pretrained_dir finetuned_dir --out runs/compare

Loss (the pretrained model's objective: MLM or next-token, on held-out text) at
θ(α) = θ_pre + α·(θ_ft − θ_pre) for α ∈ [−0.5, 1.5]: α = 0 is the pretrained weights, α = 1 the
fine-tuned ones. A barrier between them, or a much steeper wall on one side, shows how far
fine-tuning moved the model on the pretraining loss. Saves ``interpolation.npz`` (a scan Curve),
``interpolation.png`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from analyses.common import load_target
from figures.curves import plot_curves
from landscape import scans
from landscape.scans import directions
from landscape.models.checkpoints import load_checkpoint
from landscape.util.files import write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pretrained", help="Hugging Face checkpoint directory (defines the objective and tokenizer)")
    p.add_argument("finetuned", help="checkpoint directory of the same architecture")
    p.add_argument("--out", default="runs/compare", help="output folder")
    p.add_argument("--points", type=int, default=21, help="points in α ∈ [-0.5, 1.5]")
    p.add_argument("--examples", type=int, default=32, help="held-out sequences")
    p.add_argument("--texts", default=None, help="held-out texts, one per line (default: held-out stdlib docstrings)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = p.parse_args(argv)

    if args.texts:
        texts = [t.strip() for t in Path(args.texts).read_text(encoding="utf-8").splitlines() if t.strip()]
    else:
        from analyses.common import heldout_texts

        texts = heldout_texts(args.examples)
    pre = load_target(args.pretrained, examples=args.examples, texts=texts)
    fine = load_checkpoint(args.finetuned).model
    d = directions.between(pre.model, fine)  # θ_ft − θ_pre
    alphas = np.linspace(-0.5, 1.5, args.points)
    out = Path(args.out)
    curve = scans.scan_1d(pre.model, pre.objective, pre.data, d, alphas, path=out / "interpolation.npz",
                         progress=not args.no_progress, distributed=False)
    loss = curve.values["loss"]
    at = {float(a): float(v) for a, v in zip(alphas, loss)}
    i0, i1 = int(np.argmin(abs(alphas))), int(np.argmin(abs(alphas - 1)))
    barrier = float(np.nanmax(loss[i0 : i1 + 1]) - max(loss[i0], loss[i1]))
    plot_curves({"pretrained → fine-tuned": loss}, alphas, band=None,
                title="Loss along θ_pre + α(θ_ft − θ_pre)", save=out / "interpolation.png")
    summary = {"pretrained": str(Path(args.pretrained).resolve()), "finetuned": str(Path(args.finetuned).resolve()),
               "distance": d.norm(), "loss_pretrained": float(loss[i0]), "loss_finetuned": float(loss[i1]),
               "barrier": barrier, "objective": pre.objective.describe(), "n_examples": pre.n_examples, "loss": at}
    write_json(out / "summary.json", summary)
    print(f"‖θ_ft − θ_pre‖ = {d.norm():.4g}; loss at α=0: {loss[i0]:.4f}, at α=1: {loss[i1]:.4f}, "
          f"barrier between them: {barrier:.4g}")
    print(f"wrote {out / 'interpolation.npz'}, {out / 'interpolation.png'} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
