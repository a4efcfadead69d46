"""``acompile sweep``: a design-space sweep into SWEEP_DIR (results.csv/json, pareto.svg, sweep.md)."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import EXIT_OK, EXIT_UNMAPPABLE, UsageError, clean


def add_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Options of ``acompile sweep``."""
    p.add_argument("models", nargs="+", metavar="MODEL", help="ONNX model files")
    p.add_argument("--target", "-t", required=True, help="shipped target name or .toml file")
    p.add_argument("--set", action="append", metavar="KEY=V1,V2",
                   help="a swept target field: values (adc.bits=4,6,8) or an integer range LO:HI[:STEP] "
                        "(adc.bits=4:9); repeat for more keys (cross product)")
    p.add_argument("--data", help="inputs (.npy, or .npz keyed by input name): simulate every point")
    p.add_argument("--labels", help=".npy of integer labels: the accuracy column")
    p.add_argument("--mode", choices=["ideal", "quantized", "noisy"], help="simulation mode (default quantized)")
    p.add_argument("--repeats", type=int, default=1, metavar="N", help="independent noisy chip instances per point")
    p.add_argument("--seed", type=int, default=0, help="base seed; each row's own seed is in the table")
    p.add_argument("--batch", type=int, default=1, help="batch size used for cost (default 1)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", "-j", type=int, default=0, help="local worker processes (default: one per CPU)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on a Dask distributed scheduler, e.g. tcp://10.0.0.5:8786 (acompile[distributed])")
    p.add_argument("-o", "--output", required=True, metavar="SWEEP_DIR", help="output folder (reruns resume)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..sweeps import sweep
    if args.jobs < 0:
        raise UsageError(f"--jobs must be 0 (one per CPU) or more (got {args.jobs})")
    quiet = getattr(args, "quiet", False)
    rows = sweep(args.models, args.target, args.set or [], data=args.data, labels=args.labels, mode=args.mode,
                 repeats=args.repeats, seed=args.seed, batch=args.batch, jobs=args.jobs or os.cpu_count() or 1,
                 scheduler=args.scheduler, output=args.output, progress=not quiet,
                 on_note=lambda note: print(f"acompile: note: {note}", file=sys.stderr))
    ok = sum(r["status"] == "ok" for r in rows)
    if args.format == "json":
        import json
        print(json.dumps({"output": args.output, "rows": len(rows), "ok": ok}, sort_keys=True))
    elif not quiet:
        print(f"{len(rows)} rows ({ok} ok) -> {clean(args.output)}/results.csv, results.json, pareto.svg, sweep.md")
    return EXIT_OK if ok else EXIT_UNMAPPABLE
