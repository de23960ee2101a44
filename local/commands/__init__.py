"""Thin command-line shells over the ``local`` library: one module per ``python -m local`` subcommand.

Each module has ``add_parser(subparsers)`` and ``run(args) -> int`` and only parses, calls the
library and prints; the options they share are in :mod:`local.commands.options`.
"""
