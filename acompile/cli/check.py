"""``acompile check``: its options, the settings they make, and where the report goes.

The checking itself is :mod:`acompile.check`; this module only wires it to the
command line (check's ``--format`` has more choices than the other commands').
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

from ..check.discover import discover
from ..check.render import FORMATS, RENDERERS, render_text
from ..check.schema import ERROR, PATH_LIMIT
from .compile import add_input_range_option, add_input_shape_option, parse_input_ranges, parse_input_shapes
from ..errors import InvalidDataError, UsageError, clean
from ..files import atomic_file
from .progress import clear, ticker


def add_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Options of ``acompile check``; not ``common``, whose --format is text|json only."""
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="output format: text (default), json, markdown (CI job summary) or junit (XML)")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of internal errors")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("paths", nargs="+", metavar="PATH", help="model files, or folders (every .onnx below them)")
    p.add_argument("--target", "-t", action="append", required=True, metavar="T",
                   help="shipped target name or .toml file; repeat for several targets")
    p.add_argument("-o", "--output", metavar="FILE", help="write the chosen format to FILE (text still printed)")
    p.add_argument("--max-chips", type=int, metavar="N",
                   help="incompatible if the mapping needs more than N chips (default: no limit)")
    p.add_argument("--digital-ok", action="append", metavar="OPS",
                   help="comma-separated digital op types that are expected (besides data movement and "
                        "activations); '*' accepts every digital op")
    p.add_argument("--min-analog-fraction", type=float, metavar="F",
                   help="incompatible if less than this fraction (0..1) of the MACs runs on crossbars "
                        "(default: no minimum)")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="check in N processes (0: one per CPU); output does not depend on N")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a field of every target, e.g. --set adc.bits=6 (repeatable)")
    add_input_shape_option(p)
    add_input_range_option(p)
    p.add_argument("--bind", metavar="DATA", help=".npz of graph inputs to freeze as constants in every model")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="check on a Dask distributed cluster (tcp://host:8786); needs acompile[distributed]")
    p.set_defaults(func=run)


def _settings(args):
    """The check.verdict.Settings the options make."""
    if args.max_chips is not None and args.max_chips < 0:
        raise UsageError(f"--max-chips must be 0 or more (got {args.max_chips})")
    f = args.min_analog_fraction
    if f is not None and not (0.0 <= f <= 1.0):
        raise UsageError(f"--min-analog-fraction must be between 0 and 1 (got {f})",
                         hint="a fraction: 0.9 means 90%")
    if args.jobs < 0:
        raise UsageError(f"--jobs must be 0 (one per CPU) or more (got {args.jobs})")
    from ..check.verdict import Settings, parse_digital_ok
    from ..target import parse_settings
    return Settings(max_chips=args.max_chips, min_analog_fraction=f, digital_ok=parse_digital_ok(args.digital_ok),
                    verbose=bool(getattr(args, "verbose", False)),
                    overrides=tuple(parse_settings(args.set).items()),
                    input_shapes=tuple(parse_input_shapes(args.input_shape).items()), bind=_bind(args.bind),
                    input_ranges=tuple(parse_input_ranges(args.input_range).items()))


def _bind(path: str | None) -> tuple:
    if not path:
        return ()
    from ..calibrate import load_arrays
    return tuple(sorted(load_arrays(path, [], what="--bind").items()))


def _write(path: str, text: str) -> None:
    """``-o FILE``: replaced atomically, never half-written."""
    if Path(path).is_dir():
        raise UsageError("-o names a folder; give a file name", where=clean(path, PATH_LIMIT))
    try:
        with atomic_file(Path(path)) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
    except OSError as e:
        raise InvalidDataError(f"cannot write the output file: {e.strerror}", where=clean(path, PATH_LIMIT))


def run(args) -> int:
    from ..limits import collector_paused
    with collector_paused():    # numpy, onnx and acompile are imported from here on (forked workers collect)
        return _run(args)


def _run(args) -> int:
    from ..check.verdict import Job, report, run_checks
    start = time.perf_counter()
    settings = _settings(args)
    targets = list(dict.fromkeys(args.target))
    models = discover(args.paths)
    jobs = [Job(shown, path, t, error) for shown, path, error in models for t in targets]
    n_jobs = args.jobs or os.cpu_count() or 1
    if args.scheduler:
        gc.enable()     # a cluster client runs long and makes its own garbage
        from ..sweeps.dask_backend import run_checks_on_cluster
        results = run_checks_on_cluster(jobs, settings, args.scheduler)
    else:
        step = ticker(args)
        results = run_checks(jobs, settings, n_jobs, progress=step)
        clear(step)
    doc = report(results, settings, targets, time.perf_counter() - start)
    fmt = args.format if args.format in RENDERERS else "text"
    quiet = getattr(args, "quiet", False)
    if args.output:
        _write(args.output, RENDERERS[fmt](doc))
        if not quiet:
            sys.stdout.write(render_text(doc))
    elif fmt != "text" or not quiet:
        sys.stdout.write(RENDERERS[fmt](doc))
    if quiet:   # errors are still said, once each
        for message in dict.fromkeys(r["error"]["message"] for r in results if r["verdict"] == ERROR):
            print(f"acompile: error: {message}", file=sys.stderr)
    return doc["exit_code"]
