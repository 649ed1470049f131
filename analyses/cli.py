"""The ``landscape`` command line: one subcommand per module in ``analyses.commands``.

Bad input ends with a one-line ``landscape: error: ...`` on stderr and exit status 2; an
interrupt exits 130 after the command has saved what it finished.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Subcommand modules, in the order --help lists them. A module that fails to import is skipped
# with a note, so one broken optional command never takes the whole CLI down.
COMMANDS = [
    "default_model",
    "fisher",
    "hessian",
    "scan",
    "plot",
    "audit",
    "analyze",
]

USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, NotADirectoryError, NotImplementedError)


def add_common_arguments(parser: argparse.ArgumentParser, *, checkpoint: bool = True) -> None:
    """The flags every computing subcommand shares: checkpoint, --out, --device, --seed, --examples."""
    if checkpoint:
        parser.add_argument("checkpoint", nargs="?", default="default",
                            help="local Hugging Face checkpoint directory, .safetensors or .pt file; "
                                 "'default' (the default) uses the embedded default model")
    parser.add_argument("--out", default=None, help="output folder for results (created if missing)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--examples", type=int, default=None, help="number of held-out examples to use")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Loss-landscape analysis: Fisher scores, Hessian spectra, filter-normalized scans.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        try:
            module = importlib.import_module(f"analyses.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"analyses.commands.{module_name}":
                continue  # not built yet
            raise
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    from analyses.guided_dropout.cli import add_guided_dropout_parser  # issue 11; re-wire when commands move

    add_guided_dropout_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"landscape: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("landscape: interrupted; finished work was saved where the command supports it.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
