"""One module per ``landscape`` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. ``analyses.cli`` lists them in ``COMMANDS``.
"""
