"""Progress of long steps on stderr: one rewritten line on a terminal, nothing otherwise (CI logs,
pipes, ``-q``), so logs never fill with carriage returns."""

from __future__ import annotations

import sys
import time
from typing import Callable


def ticker(args) -> Callable[[str], None] | None:
    """A ``step(text)`` callback that shows elapsed time and the step, or None where it would not be
    seen (``-q``, stderr not a terminal). :func:`clear` erases the line when done."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None
    start = time.perf_counter()

    def step(text: str) -> None:
        print(f"\r  [{time.perf_counter() - start:6.1f}s] {text[:60]:<60}", end="", file=sys.stderr, flush=True)
    return step


def clear(step: Callable[[str], None] | None) -> None:
    if step is not None:
        print("\r" + " " * 72 + "\r", end="", file=sys.stderr, flush=True)
