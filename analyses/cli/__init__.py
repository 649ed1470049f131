"""The ``landscape`` command line: one subcommand per module in this package.

Bad input ends with a one-line ``landscape: error: ...`` on stderr and exit status 2; an
interrupt exits 130 after the command has saved what it finished.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from analyses.cli.errors import run_guarded
from landscape.util.lock import hold

# Subcommand modules, in the order --help lists them.
COMMANDS = [
    "default_model",
    "fisher",
    "hessian",
    "scan",
    "plot",
    "audit",
    "guided_dropout",
    "analyze",
]


def add_common_arguments(parser: argparse.ArgumentParser, *, checkpoint: bool = True, progress: bool = True) -> None:
    """The flags every computing subcommand shares: checkpoint, --out, --device, --seed, --examples,
    --no-progress."""
    if checkpoint:
        parser.add_argument("checkpoint", nargs="?", default="default",
                            help="local Hugging Face checkpoint directory, .safetensors or .pt file; "
                                 "'default' (the default) uses the embedded default model")
    parser.add_argument("--out", default=None, help="output folder for results (created if missing)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--examples", type=int, default=None,
                        help="number of held-out examples to use (≥ 1; lowered, with a note, to what the data holds)")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_data_arguments(parser: argparse.ArgumentParser, *, batch_size: int = 8) -> None:
    """--texts, --batch-size, --max-length, --tokenizer and --allow-unk: the evaluation text and how it
    is tokenized and batched."""
    parser.add_argument("--texts", default=None, metavar="FILE",
                        help="UTF-8 file of texts, one per line, or .csv (header: text,label) / .jsonl "
                             "({\"text\", \"label\"}) with labels for sequence classifiers "
                             "(default: the held-out stdlib docstrings)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="sequences per batch (≥ 1, default "
                                                                           f"{batch_size})")
    parser.add_argument("--max-length", type=int, default=128,
                        help="tokens per sequence at most (≥ 2, default 128; capped at the model's positions)")
    parser.add_argument("--tokenizer", default=None, metavar="DIR|FILE",
                        help="tokenizer folder, tokenizer.json or vocab.txt "
                             "(default: the checkpoint's, else one folder up)")
    parser.add_argument("--allow-unk", action="store_true",
                        help="run even when more than 5%% of the evaluation tokens are [UNK]")


def add_range_argument(parser: argparse.ArgumentParser, default: float = 1.0, what: str = "scan coefficients") -> None:
    """--range R (meaning [-R, R]) or --range LO HI, the same flag in every command."""
    parser.add_argument("--range", type=float, nargs="+", default=[-default, default], metavar="R | LO HI",
                        help=f"{what}: R for [-R, R], or LO HI (default {-default:g} {default:g})")


def add_include_argument(parser: argparse.ArgumentParser) -> None:
    """--include GLOB [GLOB ...]: restrict to parameters whose names match (fnmatch globs)."""
    parser.add_argument("--include", nargs="+", default=None, metavar="GLOB",
                        help="parameter-name globs to restrict to, e.g. 'bert.encoder.*' (default: all)")


def parse_range(values: Sequence[float], flag: str = "--range", symmetric: bool = False) -> tuple[float, float]:
    """``[R]`` -> (-R, R); ``[LO, HI]`` -> (LO, HI). ``symmetric``: the command needs LO = -HI."""
    if len(values) == 1:
        lo, hi = -abs(values[0]), abs(values[0])
    elif len(values) == 2:
        lo, hi = float(values[0]), float(values[1])
    else:
        raise ValueError(f"{flag} takes R or LO HI, got {len(values)} numbers.")
    if not lo < hi:
        raise ValueError(f"{flag} needs LO < HI (or R > 0), got {lo:g} {hi:g}.")
    if symmetric and lo != -hi:
        raise ValueError(f"{flag} must be symmetric around 0 here (R or -R R), got {lo:g} {hi:g}.")
    return lo, hi


def check_out(out: str | os.PathLike | None, flag: str = "--out") -> None:
    """Refuse an output folder that is an existing file or cannot be written, before any computing.

    Creates nothing: it writes and removes a probe file in the folder, or in its nearest existing
    ancestor when the folder does not exist yet (the command creates it later)."""
    if out is None:
        return
    path = Path(out).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path} is an existing file, not a folder; give a folder path.")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"{flag} {path}: {probe} is a file, not a folder.")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".landscape-write-test-"):
            pass
    except OSError as exc:
        raise PermissionError(f"{flag} {path} is not writable ({exc.strerror or exc}); choose a folder you can "
                              "write to.") from None


def check_device(device: str | None) -> None:
    """Refuse a ``--device`` torch cannot parse or this machine does not have, before loading anything."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a torch device; use e.g. cpu, cuda or cuda:0.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available here (torch {torch.__version__} "
                             f"{'has no CUDA support' if torch.version.cuda is None else 'finds no GPU'}); use "
                             "--device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu.")


def _precheck(args: argparse.Namespace) -> None:
    """Checks every computing command shares, done before any work (``plot``'s --out is a file)."""
    if getattr(args, "command", None) != "plot":
        check_out(getattr(args, "out", None))
    check_device(getattr(args, "device", None))


def build_parser() -> argparse.ArgumentParser:
    """The ``landscape`` parser: one subcommand per module in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Loss-landscape analysis: Fisher scores, Hessian spectra, filter-normalized scans.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress details, and show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(f"analyses.cli.{module_name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, and map errors to exit codes (see :func:`analyses.cli.errors.run_guarded`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return run_guarded(lambda: _run_locked(args), verbose=args.verbose)


def _run_locked(args: argparse.Namespace) -> int:
    """Precheck, then run the command holding the lock of its --out (rank 0 only under torchrun)."""
    _precheck(args)
    out = getattr(args, "out", None) if args.command != "plot" else None
    with hold(out if os.environ.get("RANK", "0") == "0" else None, command=" ".join(["landscape", *sys.argv[1:]])):
        return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
