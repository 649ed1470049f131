"""Track curvature while fine-tuning: λ_max, Hessian/Fisher traces and a loss rise, with ``Trainer``.

    python examples/track_curvature_training.py [--steps 300] [--every N] [--out runs/track-curvature] [--small]

Fine-tunes the embedded default model (a small BERT, built and cached on first use) on its masked-LM
training sequences with ``transformers.Trainer`` (AdamW, linear decay). A
``landscape.training.CurvatureCallback`` measures the curvature of the MLM loss on a fixed held-out
probe batch (masks fixed by seed) every N steps, N chosen to keep the overhead at or under 10% of
training time unless ``--every`` fixes it. It writes ``curvature.jsonl`` (one line per measurement;
rerunning resumes and skips measured steps) and ``curvature.png`` (``figures.plot_training_curvature``).
``--small`` runs a few steps on a tiny probe (the test suite's smoke run). ``Trainer`` needs
``accelerate``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps")
    ap.add_argument("--every", type=int, default=None, help="measure every N steps (default: automatic, ≤ 10%%)")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--probe-examples", type=int, default=16, help="held-out sequences in the probe batch")
    ap.add_argument("--out", default="runs/track-curvature")
    ap.add_argument("--small", action="store_true", help="smoke run: 4 steps, 2 probe sequences, cheap estimates")
    args = ap.parse_args()
    try:
        import accelerate  # noqa: F401  (Trainer needs it)
    except ImportError:
        raise SystemExit("transformers.Trainer needs accelerate: pip install accelerate") from None
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from figures import plot_training_curvature
    from landscape import objectives
    from landscape.models.default_model import load_default
    from landscape.training import CurvatureCallback, CurvatureTracker

    steps, probe_n = (4, 2) if args.small else (args.steps, args.probe_examples)
    dm = load_default(progress=not args.small)
    model, out = dm.model, Path(args.out)
    train = [{"input_ids": ids, "attention_mask": am} for b in dm.train_batches(64, max_examples=16 * steps)
             for ids, am in zip(b["input_ids"], b["attention_mask"])]
    probe = dm.heldout_batches(batch_size=16, max_examples=probe_n)
    tracker = CurvatureTracker(model, objectives.MaskedLM(mask_prob=0.15, seed=0, tokenizer=dm.tokenizer), probe,
                               path=out / "curvature.jsonl", trace_matvecs=3 if args.small else 12,
                               eig_tol=1e-2)
    if args.small:
        tracker.hvp_mode = "double_backward"  # skip timing both HVP modes
    targs = TrainingArguments(output_dir=str(out / "trainer"), max_steps=steps, per_device_train_batch_size=16,
                              learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0.1, logging_steps=10,
                              report_to=[], save_strategy="no", use_cpu=not torch.cuda.is_available(), seed=0,
                              disable_tqdm=args.small)
    collator = DataCollatorForLanguageModeling(dm.tokenizer, mlm_probability=0.15)
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collator)
    every = 4 if args.small and args.every is None else args.every
    callback = CurvatureCallback(tracker, every=every).attach(trainer)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    rows = tracker.rows
    fig_path = out / "curvature.png"
    plot_training_curvature(out / "curvature.jsonl", save=fig_path)
    sched = callback.schedule
    for r in rows:
        print(f"step {r['step']:>4}  loss {r['loss']:.3f}  λ_max {r.get('top_eigenvalue', float('nan')):9.3f}  "
              f"tr H {r.get('hessian_trace', float('nan')):10.2f}  tr F {r.get('fisher_trace', float('nan')):10.2f}  "
              f"rise {r.get('loss_rise', float('nan')):.4f}  cost {r['cost_gradients']:.0f} gradients")
    step_s = sched.step_seconds_total / max(sched.steps_timed, 1)
    print(f"{len(rows)} measurements, interval {sched.interval} steps, mean step {step_s:.3f} s, measurements "
          f"{sched.measured_seconds_total:.1f} s = {100 * sched.overhead():.1f}% of training-step time "
          f"({wall:.1f} s wall in trainer.train())")
    print(f"wrote {out / 'curvature.jsonl'} and {fig_path}")


if __name__ == "__main__":
    main()
