"""Command line: ``landscape guided-dropout CKPT [--fisher F.safetensors] --out rates.json``, the rates tool.

The study is ``landscape analyze guided-dropout`` (registered by :mod:`analyses.guided_dropout.study`). Bad input raises
``ValueError``/``FileNotFoundError``, which the CLI prints as one ``landscape: error: ...`` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["NAME", "HELP", "add_arguments", "run", "rates_table", "run_rates"]

# Choices spelled out here so that building the parser imports nothing heavy (a test keeps them in
# step with landscape.dropout.SCORE_METHODS / MAPPINGS).
SCORE_METHODS = ("mean_of_means", "element_mean", "max_mean")
MAPPINGS = ("rank_linear", "log_linear")
RATES_HELP = ("Fisher-guided dropout rates for a checkpoint (Sharma et al., 2024): sites, scores and rates, saved as "
              "JSON")


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
    p.add_argument("--texts", default=None, help="text file, one example per line, for the Fisher (default: held-out "
                                                 "corpus)")
    p.add_argument("--tokenizer", default=None, metavar="DIR|FILE",
                   help="tokenizer folder, tokenizer.json or vocab.txt for a checkpoint saved without one")
    p.add_argument("--allow-unk", action="store_true",
                   help="accept texts that tokenize to over 5 percent [UNK] tokens (refused otherwise)")
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
    """``landscape guided-dropout``: the rates tool."""
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
    target = load_target(args.checkpoint, examples=args.examples, batch_size=8, device=args.device, seed=args.seed,
                         texts=texts, tokenizer=args.tokenizer, allow_unk=args.allow_unk)
    dropout.find_sites(target.model)  # fail before the Fisher pass when there is nothing to guide
    if args.fisher is not None:
        F = fisher.FisherDiagonal.load(args.fisher, model=target.model)
    else:
        from analyses.cli.fisher import announce_fisher

        announce_fisher(target, "empirical")
        F = fisher.diagonal(target.model, target.objective, target.data, estimator="empirical", seed=args.seed,
                            progress=not args.no_progress, convergence=False)
    rates = dropout.guided_rates(target.model, F, method=args.score, mapping=args.mapping, p_max=args.p_max,
                                 p_min=args.p_min, units=args.units)
    rates.meta["checkpoint"] = str(args.checkpoint)
    rates.meta["fisher_source"] = (str(args.fisher) if args.fisher
                                   else f"computed: MLM/causal loss on {target.n_examples} held-out sequences")
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
