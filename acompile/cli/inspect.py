"""``acompile inspect``: a summary of a device file for people."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EXIT_OK


def run(args) -> int:
    from ..backends.device_reader import inspect_summary, inspect_text
    device = Path(args.device)
    if device.is_dir() and (device / "device.acdev").is_file():     # the OUT folder compile wrote
        device = device / "device.acdev"
    if args.format == "json":
        from ..jsonio import dumps_json
        sys.stdout.write(dumps_json(inspect_summary(device)))
    else:
        sys.stdout.write(inspect_text(device))
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Options of ``acompile inspect``."""
    p.add_argument("device", help="device.acdev file written by acompile compile (or the OUT folder holding it)")
    p.set_defaults(func=run)
