"""``landscape audit [CHECKPOINT]``: the top-level alias of ``landscape analyze audit`` (same flags, same result)."""

from __future__ import annotations

import argparse

from analyses.cli.analyze import add_study_arguments, studies

NAME = "audit"
HELP = "sensitivity audit of a checkpoint (alias of `landscape analyze audit`)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser, studies()["audit"])


def run(args: argparse.Namespace) -> int:  # pragma: no cover - add_study_arguments sets _run
    return int(args._run(args))
