"""Track curvature while fine-tuning: λ_max, Hessian/Fisher traces and a loss rise, with ``Trainer``.

    python examples/track_curvature_training.py [--steps 600] [--every N] [--out runs/track-curvature] [--small]

Fine-tunes the embedded default model (a small BERT, built and cached on first use) on its masked-LM
training sequences with ``transformers.Trainer`` (AdamW, linear decay). A
``landscape.training.CurvatureCallback`` measures the curvature of the MLM loss on a fixed held-out
probe batch (masks fixed by seed) whenever the measurements' cost, counted in gradients, stays at or
under 10% of the training gradients (the first measurement included), unless ``--every`` fixes the
interval. With 4 probe sequences and 16 training sequences per step, a step is 4 probe gradients
and a measurement at most 70, so the first comes after 175 steps and later ones about every 110-150.
It writes ``curvature.jsonl`` (one line per measurement;
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
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps")
    ap.add_argument("--every", type=int, default=None, help="measure every N steps (default: ≤ 10%% of the gradients)")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--probe-examples", type=int, default=4, help="held-out sequences in the probe batch")
    ap.add_argument("--out", default="runs/track-curvature")
    ap.add_argument("--small", action="store_true", help="smoke run: 4 steps, 2 probe sequences, measured at 0 and 4")
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
                               path=out / "curvature.jsonl")  # default settings: at most 70 gradients each
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
              f"rise {r.get('loss_rise', float('nan')):.4f}  cost {r['cost_gradients']:.0f} gradients "
              f"(timed {r['timed_cost_gradients']:.0f})")
    measured_s = sum(r["seconds"] for r in rows)
    print(f"{len(rows)} measurements in {steps} steps (a step = {sched.step_gradients:g} probe gradients): "
          f"{sched.measured_gradients:.0f} gradients = {100 * sched.overhead(steps):.1f}% of the training gradients; "
          f"timed: {measured_s:.1f} s of {wall:.1f} s in trainer.train() = "
          f"{100 * measured_s / max(wall - measured_s, 1e-9):.1f}% of training time")
    print(f"wrote {out / 'curvature.jsonl'} and {fig_path}")


if __name__ == "__main__":
    main()
