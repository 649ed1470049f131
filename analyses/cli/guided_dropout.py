"""Command line: ``landscape guided-dropout CKPT [--fisher F.safetensors] --out rates.json`` and
``landscape analyze guided-dropout``.

The first is this module's subcommand (``NAME``, ``HELP``, ``add_arguments``, ``run``); the second is
registered under ``landscape analyze`` by ``analyses.cli.analyze``. Bad input raises
``ValueError``/``FileNotFoundError``, which the CLI prints as one ``landscape: error: ...`` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["NAME", "HELP", "add_arguments", "run", "add_study_parser", "rates_table", "run_rates", "run_study"]

# Choices spelled out here so that building the parser imports nothing heavy (a test keeps them in
# step with landscape.dropout.SCORE_METHODS / MAPPINGS and analyses.guided_dropout.ARMS).
SCORE_METHODS = ("mean_of_means", "element_mean", "max_mean")
MAPPINGS = ("rank_linear", "log_linear")
ARMS = ("none", "uniform", "guided", "reversed", "permuted", "gaussian", "fisher_l2", "unit")
RATES_HELP = "Fisher-guided dropout rates for a checkpoint (Sharma et al., 2024): sites, scores and rates, saved as JSON"
STUDY_HELP = "does guided dropout beat uniform dropout and its permuted/reversed controls in low-data fine-tuning?"


NAME = "guided-dropout"
HELP = RATES_HELP


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``landscape guided-dropout``."""
    p.add_argument("checkpoint", nargs="?", default="default",
                   help="local Hugging Face checkpoint directory (or 'default', the embedded default model)")
    p.add_argument("--fisher", default=None, help="Fisher scores (.safetensors from `landscape fisher`); default: "
                                                   "compute the empirical MLM Fisher on held-out text")
    p.add_argument("--out", default="rates.json", help="where to write the rates JSON (default: rates.json)")
    p.add_argument("--examples", type=int, default=128, help="held-out sequences for the Fisher when computed here")
    p.add_argument("--texts", default=None, help="text file, one example per line, for the Fisher (default: held-out corpus)")
    p.add_argument("--p-max", type=float, default=0.1, help="rate of the lowest-score site (paper: 0.1)")
    p.add_argument("--p-min", type=float, default=0.0, help="rate of the highest-score site (paper: 0)")
    p.add_argument("--score", default="mean_of_means", choices=SCORE_METHODS, help="site score (paper: mean_of_means)")
    p.add_argument("--mapping", default="rank_linear", choices=MAPPINGS, help="score-to-rate map (paper: rank_linear)")
    p.add_argument("--units", action="store_true", help="also write per-unit rates (unit granularity)")
    p.add_argument("--check", action="store_true", help="measure each site's realized rate in a train-mode forward")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0, help="MLM mask seed")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    return run_rates(args)


def rates_table(rates: Any, check: dict[str, Any] | None = None) -> str:
    """Plain-text table: site, role, guarded tensors, score, rate (and the realized rate with --check)."""
    sites = rates.meta.get("sites", {})
    head = f"{'site':<34}{'role':<20}{'tensors':>8}{'score':>13}{'rate':>9}" + (f"{'realized':>10}" if check else "")
    rows = [head, "-" * len(head)]
    for sid, p in rates.rates.items():
        role = sites.get(sid, {}).get("role", "")
        n = len(sites.get(sid, {}).get("params", []))
        line = f"{sid:<34}{role:<20}{n:>8}{rates.scores.get(sid, float('nan')):>13.4e}{p:>9.4f}"
        if check:
            line += f"{check[sid].rate:>10.4f}"
        rows.append(line)
    return "\n".join(rows)


def run_rates(args: argparse.Namespace) -> int:
    """``landscape guided-dropout``."""
    from analyses.common import load_target, read_texts
    from landscape import dropout, fisher

    if args.examples is not None and args.examples < 1:
        raise ValueError(f"--examples must be at least 1, got {args.examples}.")
    texts = None if args.texts is None else read_texts(args.texts)
    target = load_target(args.checkpoint, examples=args.examples, batch_size=8, device=args.device, seed=args.seed, texts=texts)
    dropout.find_sites(target.model)  # fail before the Fisher pass when there is nothing to guide
    if args.fisher is not None:
        F = fisher.FisherDiagonal.load(args.fisher, model=target.model)
    else:
        F = fisher.diagonal(target.model, target.objective, target.data, estimator="empirical", seed=args.seed,
                            progress=not args.no_progress, convergence=False)
    rates = dropout.guided_rates(target.model, F, method=args.score, mapping=args.mapping, p_max=args.p_max,
                                 p_min=args.p_min, units=args.units)
    rates.meta["checkpoint"] = str(args.checkpoint)
    rates.meta["fisher_source"] = str(args.fisher) if args.fisher else f"computed: MLM/causal loss on {target.n_examples} held-out sequences"
    check = None
    if args.check:
        with dropout.apply(target.model, rates):
            check = dropout.measure_rates(target.model, target.data[:2])
        rates.meta["realized"] = {k: v.to_dict() for k, v in check.items()}
    out = rates.save(Path(args.out))
    sites = rates.meta["sites"]
    print(f"{len(sites)} dropout sites in {rates.meta['model_class']} ({rates.meta['model_type']}); "
          f"{args.score} of the Fisher ({F.estimator}, {F.meta.get('n_examples')} examples), {args.mapping} map "
          f"from p = {args.p_max} to {args.p_min}")
    print(rates_table(rates, check))
    if rates.meta["head_dropouts"]:
        print(f"left at their default (head): {', '.join(rates.meta['head_dropouts'])}")
    for path, why in rates.meta["unmatched_dropouts"]:
        print(f"not a site: {path} ({why})")
    if check is not None:
        bad = [k for k, m in check.items() if not m.ok()]
        print("realized rates match the assigned ones within binomial tolerance" if not bad
              else f"realized rates OFF at {bad}")
    print(f"wrote {out}")
    return 0


def add_study_parser(analyze_subparsers: Any) -> argparse.ArgumentParser:
    """Register ``landscape analyze guided-dropout`` on the ``analyze`` subparsers."""
    p = analyze_subparsers.add_parser("guided-dropout", help=STUDY_HELP, description=STUDY_HELP + " Default settings "
                                      "(one task, sizes 64 and 256, 5 seeds, every arm) take a few minutes on 2 CPU cores.")
    p.add_argument("checkpoint", nargs="?", default="default", help="local Hugging Face MLM checkpoint directory, or 'default'")
    p.add_argument("--out", default="runs/guided-dropout", help="output folder (created if missing)")
    p.add_argument("--tasks", nargs="+", default=["topic"], choices=["topic", "same_module"], help="built-in tasks")
    p.add_argument("--data", default=None, help="your labelled CSV/JSONL (text, optional text_pair, label) instead")
    p.add_argument("--test-data", default=None, help="a labelled test file for --data (default: hold out 25%%)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="training sizes (train + validation)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (seed, seed+1, ...)")
    p.add_argument("--seed", type=int, default=0, help="first seed; also the Fisher mask seed")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms to run")
    p.add_argument("--epochs", type=int, default=8, help="epochs (small sets train for at least --min-steps steps)")
    p.add_argument("--min-steps", type=int, default=60, help="fewest optimizer steps per run")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--max-length", type=int, default=32, help="tokens per example")
    p.add_argument("--fisher-examples", type=int, default=128, help="held-out sequences for the MLM Fisher")
    p.add_argument("--fisher-texts", default=None, help="text file, one example per line, for the MLM Fisher "
                                                        "(default: the held-out docstring corpus)")
    p.add_argument("--l2", type=float, default=0.01, help="strength of the Fisher-weighted L2 pull (fisher_l2 arm)")
    p.add_argument("--uniform-rate", type=float, default=None, help="rate of the uniform arm (default: the checkpoint's "
                                                                   "own, or 0.1 if they are all 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for the small default model)")
    p.add_argument("--full", action="store_true", help="the full grid: both tasks, sizes 64 256 512, 10 seeds, 12 epochs")
    p.add_argument("--no-resume", action="store_true", help="recompute runs already in --out/runs.jsonl")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(_run=run_study)
    return p


def run_study(args: argparse.Namespace) -> int:
    """``landscape analyze guided-dropout``."""
    from analyses.guided_dropout.report import arm_table
    from analyses.guided_dropout.study import GuidedDropoutConfig, run

    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1.")
    if args.full:
        args.tasks, args.sizes, args.seeds, args.epochs = ["topic", "same_module"], [64, 256, 512], max(args.seeds, 10), 12
    cfg = GuidedDropoutConfig(
        checkpoint=args.checkpoint, out=args.out, tasks=tuple(args.tasks), data=args.data, test_data=args.test_data,
        sizes=tuple(args.sizes), seeds=tuple(range(args.seed, args.seed + args.seeds)), arms=tuple(args.arms),
        epochs=args.epochs, min_steps=args.min_steps, lr=args.lr, max_length=args.max_length,
        fisher_examples=args.fisher_examples, fisher_texts=args.fisher_texts, l2_strength=args.l2, uniform_rate=args.uniform_rate, threads=args.threads,
        seed=args.seed, resume=not args.no_resume, progress=not args.no_progress)
    result = run(cfg)
    res = result.to_dict()
    print(arm_table(res))
    for task, qs in res["verdicts"].items():
        for q in qs.values():
            print(f"{task}: {q['sentence']}")
    print(f"\nwrote {args.out}/result.json, runs.jsonl, rates.json, report.md and figures/ in "
          f"{res['meta']['timings']['total_s']:.0f} s")
    return 0
