"""The ``acompile`` command line: :mod:`.app` assembles the parser and runs ``main``; one module per
subcommand (:mod:`.compile`, :mod:`.simulate` for simulate and run, :mod:`.inspect`, :mod:`.ops`,
:mod:`.check`, :mod:`.targets`, :mod:`.sweep`) registers its options and does its work."""

from .app import build_parser, entry_point, main

__all__ = ["build_parser", "entry_point", "main"]
