"""Guided dropout with ``transformers.Trainer``: Fisher → rates → ``apply`` → ``trainer.train()``.

    python examples/guided_dropout_trainer.py [CHECKPOINT_DIR] [--texts FILE] [--examples 256] [--epochs 3]

With no checkpoint it uses the embedded default model (built and cached on first use) and the
stdlib-docstring topic task. ``--texts`` gives the held-out text of the Fisher pass (one per line;
default: the stdlib docstrings), for a checkpoint whose vocabulary does not cover them. ``Trainer`` needs ``accelerate`` (``pip install accelerate``).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default="default")
    ap.add_argument("--texts", default=None, help="held-out texts for the Fisher, one per line (default: docstrings)")
    ap.add_argument("--examples", type=int, default=256, help="training examples")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--test-examples", type=int, default=None, help="evaluate on the first N test examples (default: all)")
    ap.add_argument("--out", default="runs/guided-dropout-trainer")
    args = ap.parse_args()
    try:
        import accelerate  # noqa: F401  (Trainer needs it)
    except ImportError:
        raise SystemExit("transformers.Trainer needs accelerate: pip install accelerate") from None
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from analyses.common import load_target, read_texts
    from analyses.guided_dropout.tasks import topic_task
    from landscape import dropout, fisher

    # 1. Fisher of the MLM pretraining loss on held-out text, as in the paper.
    target = load_target(args.checkpoint, examples=128, batch_size=16, texts=read_texts(args.texts))
    F = fisher.diagonal(target.model, target.objective, target.data, estimator="empirical")
    # 2. Rates: rank-linear from 0.1 (lowest-Fisher site) to 0 (highest); printed and saved.
    rates = dropout.guided_rates(target.model, F, p_max=0.1, p_min=0.0)
    for site, p in rates.rates.items():
        print(f"{site:<30} score {rates.scores[site]:.3e}  p = {p:.4f}")
    rates.save(f"{args.out}/rates.json")

    # 3. A classifier from the same checkpoint and a small labelled set.
    task = topic_task()
    path = target.meta.get("path", args.checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(task.classes))
    tok = target.tokenizer

    def dataset(examples):
        enc = tok([e[0] for e in examples], truncation=True, max_length=32, padding="max_length")
        return [{"input_ids": torch.tensor(i), "attention_mask": torch.tensor(a), "labels": torch.tensor(e[2])}
                for i, a, e in zip(enc["input_ids"], enc["attention_mask"], examples)]

    g = torch.Generator().manual_seed(0)
    train = dataset([task.pool[i] for i in torch.randperm(len(task.pool), generator=g)[: args.examples].tolist()])
    test = dataset(task.test[: args.test_examples])
    targs = TrainingArguments(output_dir=args.out, num_train_epochs=args.epochs, per_device_train_batch_size=16,
                              learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=0.1, report_to=[],
                              save_strategy="no", use_cpu=True, seed=0)
    trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=test,
                      compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())})
    # 4. Fine-tune under the guided rates; the model's own rates come back on exit.
    with dropout.apply(model, rates):
        trainer.train()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
