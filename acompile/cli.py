"""Command-line interface: argparse subcommands, output formats, exit codes.

Exit codes everywhere: 0 success, 1 the model cannot be mapped as asked,
2 bad input (usage, unreadable or malformed files, a limit hit), 3 internal
error. Errors are one line on stderr (JSON with ``--format json``); the
traceback of an internal error only with ``-v``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from . import __version__
from .errors import (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, AcompileError, InvalidDataError, UsageError, clean)

EMITTABLE = ("program", "device", "report")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message, hint=f"see '{self.prog} --help'")


class Interrupted(BaseException):
    """SIGTERM turned into an exception so cleanup (temporary folders) runs."""


def _on_sigterm(signum, frame):
    raise Interrupted()


# ---------------------------------------------------------------------------
# helpers shared by subcommands
# ---------------------------------------------------------------------------

def _say(args, text: str) -> None:
    if not getattr(args, "quiet", False):
        sys.stdout.write(text)


def _progress(args):
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None
    start = time.perf_counter()

    def report(step: str) -> None:
        print(f"\r  [{time.perf_counter() - start:6.1f}s] {step:<24}", end="", file=sys.stderr, flush=True)
    return report


def _options(args, calibration=None, calibration_name="default"):
    from .compiler import Options
    from .frontend.load import Limits
    bind = None
    if getattr(args, "bind", None):
        from .calibrate import load_arrays
        bind = load_arrays(args.bind, [], what="--bind")
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1 (got {args.batch})")
    return Options(batch=args.batch, seed=args.seed, allow_unsupported=args.allow_unsupported,
                   calibration=calibration, calibration_name=calibration_name, bind=bind,
                   replicate=getattr(args, "replicate", "none"),
                   limits=Limits.from_env(), progress=_progress(args))


def _load_target(spec: str):
    from .target import load_target
    return load_target(spec)


def _model_inputs(model_path: str) -> list[str]:
    """Graph input names (not initializers) of a model, read cheaply for --calibration .npy files."""
    from .frontend.load import Limits, read_model_proto
    m = read_model_proto(model_path, Limits.from_env())
    inits = {t.name for t in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits]


def _parse_emit(text: str) -> set[str]:
    items = {x.strip() for x in text.split(",") if x.strip()}
    bad = items - set(EMITTABLE)
    if bad or not items:
        raise UsageError(f"--emit takes a comma-separated subset of {','.join(EMITTABLE)} (got {clean(text)!r})")
    return items


def _compile_to(args, out: Path, emit: set[str]):
    from .backends.device import write_device
    from .backends.output import atomic_folder
    from .backends.program import write_program
    from .backends.report import build_report, write_report
    from .calibrate import load_arrays
    from .compiler import compile_model, dumps_json
    target = _load_target(args.target)
    calibration, cal_name = None, "default"
    if getattr(args, "calibration", None):
        calibration = load_arrays(args.calibration, _model_inputs(args.model), what="calibration")
        cal_name = clean(Path(args.calibration).name)
    options = _options(args, calibration, cal_name)
    compiled = compile_model(args.model, target, options)
    if options.progress:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    report = build_report(compiled)
    written = []
    with atomic_folder(out) as tmp:
        sha = None
        if "program" in emit or "device" in emit:
            sha = write_program(tmp, compiled, dumps_json)
            written += ["program.json", "program.npz"]
        if "device" in emit:
            write_device(tmp / "device.acdev", compiled, sha, dumps_json)
            written.append("device.acdev")
        if "report" in emit:
            written += write_report(report, tmp, dumps_json)
    return compiled, report, written


# ---------------------------------------------------------------------------
# subcommands
# ---------------------------------------------------------------------------

def cmd_compile(args) -> int:
    from .backends.report import terminal_table
    out = Path(args.output) if args.output else Path("acompile-out") / Path(args.model).stem
    compiled, report, written = _compile_to(args, out, _parse_emit(args.emit))
    if args.format == "json":
        print(json.dumps({"status": "ok", "output": str(out), "files": written, "totals": report["totals"],
                          "unsupported": report["unsupported"]}, sort_keys=True, default=float))
    else:
        _say(args, terminal_table(report))
        _say(args, f"wrote {', '.join(written)} to {clean(str(out))}\n")
    return EXIT_OK


def _read_inputs(path: str, graph) -> dict:
    from .calibrate import load_arrays
    return load_arrays(path, list(graph.inputs), what="input")


def _simulate_folder(args, folder: Path, model_for_compare: str | None) -> int:
    import numpy as np
    from .compiler import dumps_json
    from .simulation import accuracy, compare, load_compiled, reference_outputs, simulate
    loaded = load_compiled(folder, args.mode)
    feeds = _read_inputs(args.input, loaded.graph)
    results = simulate(loaded, feeds, mode=args.mode, seed=args.seed, path=args.path,
                       progress=not args.quiet)
    labels = None
    if args.labels:
        try:
            labels = np.load(args.labels, allow_pickle=False)
        except Exception as e:
            raise InvalidDataError(f"cannot read labels ({type(e).__name__})", where=clean(args.labels))
    summary = {"mode": args.mode, "seed": args.seed, "outputs": {clean(k): list(v.shape) for k, v in results.items()}}
    if model_for_compare:
        summary["comparison"] = compare(results, reference_outputs(Path(model_for_compare), feeds), labels)
    elif labels is not None:
        summary["comparison"] = accuracy(results, labels)
    if args.result:
        _write_results(Path(args.result), results)
    if args.format == "json":
        print(dumps_json(_json_safe(summary)), end="")
    else:
        _say(args, _sim_text(summary))
    return EXIT_OK


def _write_results(path: Path, results: dict) -> None:
    """Outputs as an .npz (deterministic, no pickle), written to a temporary file and renamed."""
    from .backends.archive import ArchiveWriter
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer = ArchiveWriter(tmp)
        try:
            for name in sorted(results):
                writer.add_array(f"{name}.npy", results[name])
        finally:
            writer.close()
        os.replace(tmp, path)
    except OSError as e:
        raise UsageError(f"cannot write the results: {e.strerror or e}", where=clean(str(path)))
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_safe(obj):
    import math
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def _sim_text(summary: dict) -> str:
    lines = [f"simulated in {summary['mode']} mode (seed {summary['seed']}): "
             + ", ".join(f"{k} {v}" for k, v in summary["outputs"].items())]
    for name, c in summary.get("comparison", {}).items():
        parts = []
        if "max_abs_error" in c:
            parts.append(f"max|err| {c['max_abs_error']:.3g}, rel.err {c['relative_error']:.3g}, "
                         f"SNR {c['snr_db']:.1f} dB")
        if "top1_agreement" in c:
            parts.append(f"top-1 agreement {c['top1_agreement']:.2%}")
        if "top1_accuracy_simulated" in c:
            parts.append(f"accuracy {c['top1_accuracy_simulated']:.2%}")
        if "top1_accuracy_onnxruntime" in c:
            parts.append(f"(onnxruntime {c['top1_accuracy_onnxruntime']:.2%})")
        lines.append(f"  {name}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def cmd_simulate(args) -> int:
    return _simulate_folder(args, Path(args.folder), args.compare)


def cmd_run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="acompile-run-") as tmp:
        args.output = str(Path(tmp) / "out")
        quiet = args.quiet
        args.quiet = True
        _compile_to(args, Path(args.output), set(EMITTABLE) - {"report"} | {"report"})
        args.quiet = quiet
        return _simulate_folder(args, Path(args.output), args.compare or args.model)


def cmd_inspect(args) -> int:
    from .backends.device import inspect_text
    sys.stdout.write(inspect_text(Path(args.device)))
    return EXIT_OK


def cmd_ops(args) -> int:
    from .frontend.ops import supported_table
    rows = supported_table()
    if args.format == "json":
        print(json.dumps([{"op_type": o, "kind": k, "note": n} for o, k, n in rows], indent=2))
    else:
        for o, k, n in rows:
            print(f"{o:<28} {k:<8} {n}")
    return EXIT_OK


def cmd_targets(args) -> int:
    from . import target as t
    action = args.targets_action
    if action == "validate":
        return t.cmd_validate(args.files, fmt=args.format)
    if action == "show":
        return t.cmd_show(args.name, resolved=args.resolved, fmt=args.format, summary=args.summary)
    if action == "list":
        return t.cmd_list()
    if action == "diff":
        return t.cmd_diff(args.a, args.b)
    if action == "schema":
        return t.cmd_schema()
    raise UsageError("targets needs an action: validate, show, list, diff or schema")


def cmd_check(args) -> int:
    from .check import cmd_check as run_check
    return run_check(args)


# ---------------------------------------------------------------------------
# parser and main
# ---------------------------------------------------------------------------

def _compile_options(p, with_output=True):
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--target", "-t", required=True, help="shipped target name (isaac, puma, ...) or a .toml file")
    if with_output:
        p.add_argument("-o", "--output", help="output folder (default acompile-out/MODEL)")
    p.add_argument("--batch", type=int, default=1, help="batch size used for cost (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for calibration defaults and noise (default 0)")
    p.add_argument("--allow-unsupported", action="store_true",
                   help="cost unsupported ops as unknown digital ops instead of failing")
    p.add_argument("--calibration", help="calibration inputs: .npz keyed by input name, or .npy for one input")
    p.add_argument("--bind", help=".npz of graph inputs to freeze as constants (weights given as inputs)")
    p.add_argument("--replicate", choices=["none", "auto"], default="none",
                   help="auto: copy the slowest layers onto spare crossbars of the chips used (default none)")


def _sim_options(p):
    p.add_argument("--input", "-i", required=True, help="inputs: .npz keyed by input name, or .npy for one input")
    p.add_argument("--mode", default="ideal", choices=["ideal", "quantized", "noisy"])
    p.add_argument("--path", default="fast", choices=["fast", "reference"],
                   help="vectorised kernel or the slow loop-based reference")
    p.add_argument("--result", "-r", dest="result", help="write outputs to this .npz")
    p.add_argument("--labels", help=".npy of integer labels: report top-1 accuracy")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="acompile", description="Map ONNX models onto analog in-memory-computing accelerators.")
    parser.add_argument("--version", action="version", version=f"acompile {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of internal errors")
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("compile", parents=[common], help="map a model: program, device file and cost report")
    _compile_options(p)
    p.add_argument("--emit", default="program,device,report", help="what to write (default program,device,report)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("simulate", parents=[common], help="run a compiled OUT folder")
    p.add_argument("folder", help="folder written by acompile compile")
    _sim_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", help="ONNX model to run in onnxruntime on the same inputs")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("run", parents=[common], help="compile into a temporary folder and simulate")
    _compile_options(p, with_output=False)
    _sim_options(p)
    p.add_argument("--compare", help="ONNX model for the comparison (default: MODEL itself)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", parents=[common], help="summarise a device file")
    p.add_argument("device")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("ops", parents=[common], help="list the supported ONNX operators")
    p.set_defaults(func=cmd_ops)

    p = sub.add_parser("check", help="CI compatibility check of models against targets")
    from .check import add_arguments as add_check_arguments
    add_check_arguments(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("targets", parents=[common], help="list, show, validate, compare target descriptions")
    tsub = p.add_subparsers(dest="targets_action", parser_class=_Parser)
    v = tsub.add_parser("validate", parents=[common], help="report every problem in target files")
    v.add_argument("files", nargs="+")
    s = tsub.add_parser("show", help="print a target (merged with what it extends)")
    s.add_argument("name")
    s.add_argument("--resolved", action="store_true", help="show the merged result with defaults")
    s.add_argument("--summary", action="store_true", help="derived power, area, TOPS, TOPS/W, TOPS/mm2")
    s.add_argument("--format", choices=["toml", "json", "text"], default="toml")
    tsub.add_parser("list", help="shipped and local targets")
    d = tsub.add_parser("diff", help="fields that differ between two targets")
    d.add_argument("a")
    d.add_argument("b")
    tsub.add_parser("schema", help="JSON Schema of target files")
    p.set_defaults(func=cmd_targets)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    fmt = "json" if "--format" in argv and "json" in argv[argv.index("--format") + 1:argv.index("--format") + 2] \
        else "text"
    verbose = "-v" in argv or "--verbose" in argv
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        pass  # not in the main thread (tests); SIGTERM keeps its default
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            raise UsageError("a command is needed: compile, simulate, run, check, inspect, ops or targets",
                             hint="see 'acompile --help'")
        with warnings.catch_warnings():
            if not verbose:     # numpy's overflow/NaN warnings on hostile data: the one error line says enough
                warnings.simplefilter("ignore")
            return int(args.func(args))
    except AcompileError as e:
        if _interrupted(e):
            return 130 if isinstance(_interruption(e), KeyboardInterrupt) else 143
        _report_error(e, fmt)
        return e.exit_code
    except KeyboardInterrupt:
        print("acompile: interrupted", file=sys.stderr)
        return 130
    except Interrupted:
        print("acompile: terminated", file=sys.stderr)
        return 143
    except RecursionError:
        _report_error(AcompileError("the input nests too deeply to process"), fmt)
        return EXIT_BAD_INPUT
    except MemoryError:
        from .errors import LimitError
        _report_error(LimitError("out of memory; the model or data is too large for this machine"), fmt)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    except OSError as e:    # the file system said no (a -r path in a missing folder, a folder where a file goes)
        if _interrupted(e):
            return 130 if isinstance(_interruption(e), KeyboardInterrupt) else 143
        _report_error(InvalidDataError(f"cannot read or write a file: {e.strerror or type(e).__name__}",
                                       where=clean(e.filename2 or e.filename) if e.filename else None), fmt)
        return EXIT_BAD_INPUT
    except Exception as e:  # a bug: one line, traceback on request
        if _interrupted(e):
            return 130 if isinstance(_interruption(e), KeyboardInterrupt) else 143
        if verbose:
            traceback.print_exc()
        msg = f"internal error: {type(e).__name__}: {clean(str(e), 200)} -- please report this at the project's issue tracker (rerun with -v for the traceback)"
        if fmt == "json":
            print(json.dumps({"error": {"code": "internal", "exit_code": EXIT_INTERNAL, "message": msg}}),
                  file=sys.stderr)
        else:
            print(f"acompile: {msg}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            try:
                signal.signal(signal.SIGTERM, previous)
            except ValueError:
                pass


def _interruption(e: BaseException | None) -> BaseException | None:
    """The KeyboardInterrupt or Interrupted that an ordinary error was raised from, if any.

    A signal handler that raises while a C extension initialises (onnxruntime's
    first import) comes back as ``ImportError: initialization failed`` caused by
    the interrupt, and may then be wrapped again into an AcompileError.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (KeyboardInterrupt, Interrupted)):
            return e
        e = e.__cause__ or e.__context__
    return None


def _interrupted(e: BaseException) -> bool:
    """Say 'interrupted'/'terminated' (and return True) when ``e`` is an interrupt in disguise."""
    interrupt = _interruption(e)
    if interrupt is None:
        return False
    print("acompile: interrupted" if isinstance(interrupt, KeyboardInterrupt) else "acompile: terminated",
          file=sys.stderr)
    return True


def _report_error(e: AcompileError, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps({"error": e.to_json()}, sort_keys=True), file=sys.stderr)
    else:
        print(f"acompile: error: {e.one_line()}", file=sys.stderr)


def entry_point() -> None:
    sys.exit(main())
