"""``landscape analyze NAME``: one subcommand per registered analysis (:data:`analyses.study.STUDIES`),
its flags generated from the analysis's config dataclass."""

from __future__ import annotations

import argparse
import importlib
import time

from analyses.cli.config_flags import add_config_arguments, config_from_args
from analyses.study import STUDIES, Study, wrote_line

NAME = "analyze"
HELP = "run a named analysis: " + ", ".join(("fisher-sharpness", "guided-dropout", "audit", "block-spectra"))

#: modules whose import registers the built-in analyses
BUILTIN = ("analyses.fisher_sharpness.study", "analyses.guided_dropout.study", "analyses.audit.study",
           "analyses.block_spectra.study")


def studies() -> dict[str, Study]:
    """Every registered analysis, the built-in ones first."""
    for module in BUILTIN:
        importlib.import_module(module)
    return STUDIES


def add_study_arguments(parser: argparse.ArgumentParser, study: Study) -> None:
    """The config-generated flags of ``study`` plus its own extras; the command runs :func:`run_study`."""
    add_config_arguments(parser, study.config)
    study.add_arguments(parser)
    parser.set_defaults(_run=lambda args: run_study(study, args))


def run_study(study: Study, args: argparse.Namespace) -> int:
    """Build the config from the flags, run the analysis and print its summary."""
    study.adjust(args)
    config = config_from_args(study.config, args)
    t0 = time.perf_counter()
    result = study.run(config)
    seconds = time.perf_counter() - t0
    text, out = study.summary(result), getattr(result, "out", "") or getattr(config, "out", "")
    print((text + "\n\n" if text else "") + wrote_line(out, study.files, seconds))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One subparser per registered analysis."""
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    for name, study in studies().items():
        doc = study.description or study.help
        add_study_arguments(sub.add_parser(name, help=study.help, description=doc), study)


def run(args: argparse.Namespace) -> int:
    """Run the analysis named on the command line."""
    return run_study(studies()[args.analysis], args)
