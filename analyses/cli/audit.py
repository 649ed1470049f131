"""``landscape audit [CHECKPOINT]``: the top-level alias of ``landscape analyze audit`` (same flags, same result)."""

from __future__ import annotations

import argparse

from analyses.cli.analyze import add_study_arguments, run_study, studies

NAME = "audit"
HELP = "sensitivity audit of a checkpoint (alias of `landscape analyze audit`)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``landscape analyze audit``, generated from :class:`analyses.audit.AuditConfig`."""
    add_study_arguments(parser, studies()["audit"])


def run(args: argparse.Namespace) -> int:
    """Run the registered audit analysis."""
    return run_study(studies()["audit"], args)
