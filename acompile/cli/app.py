"""The ``acompile`` command: the parser assembled from the subcommand modules, ``main``, error
reporting and signals.

Exit codes everywhere: 0 success, 1 the model cannot be mapped as asked,
2 bad input (usage, unreadable or malformed files, a limit hit), 3 internal
error. Errors are one line on stderr (JSON with ``--format json``); the
traceback of an internal error only with ``-v``. SIGTERM, SIGHUP and SIGQUIT raise
:class:`acompile.files.Interrupted` so temporary files are cleaned up (exit 128 + the
signal: 143, 129, 131; Ctrl-C: 130). A closed stdout or stderr, or one that cannot
encode UTF-8, never turns a finished run into an error.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import signal
import sys
import warnings

from .._version import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, AcompileError, InvalidDataError, UsageError, clean
from ..files import HELD_SIGNALS, Interrupted, interruption
from . import examples

# command -> (module:function in acompile.cli that fills its parser, the help line, whether it takes the
# common options). Only the module of the command that runs is imported: `check` never pays for the
# simulator's or compile's imports. ``function(p, common)`` adds the command's options to ``p`` (and
# ``common`` to its own sub-commands) and sets ``func``.
COMMANDS = {
    "compile": ("compile:add_arguments", "map a model: program, device file, cost report, report.html, mapped.onnx",
                True),
    "simulate": ("simulate:add_simulate_arguments", "run a compiled OUT folder", True),
    "run": ("simulate:add_run_arguments", "compile into a temporary folder and simulate", True),
    "inspect": ("inspect:add_arguments", "summarise a device file", True),
    "ops": ("ops:add_arguments", "list the ONNX operators: which run analog (on crossbars), which digital", True),
    "check": ("check:add_arguments", "CI compatibility check of models against targets", False),  # own --format
    "targets": ("targets:add_arguments", "list, show, validate, compare target descriptions", True),
    "sweep": ("sweep:add_arguments", "compile (and simulate) models over a grid of target settings", True),
}


STOP_SIGNALS = tuple(s for s in HELD_SIGNALS if s != signal.SIGINT)   # SIGINT stays KeyboardInterrupt

# compile and check keep the cores busy with threads and processes of their own (file writers, conv workers,
# check --jobs); an OpenBLAS worker spins on a core for a while after each numpy product, taking it from them
# (the transformer block's compile: 310 -> 170 ms of CPU). The heavy products run on onnxruntime's threads.
ONE_BLAS_THREAD = ("compile", "check")
_KEPT: list | None = None   # what a command leaves to the process's end (entry_point), else None
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message, hint=f"see '{self.prog} --help'")


# signals received during this run: an interrupt that lands inside a C extension's import comes back as an
# ImportError with no trace of it, and is still an interrupt
RECEIVED: list[int] = []


def on_sigterm(signum, frame):
    """The SIGTERM (and SIGHUP, SIGQUIT) handler while ``main`` runs."""
    _deliver(signum, frame, Interrupted(signum))


def on_sigint(signum, frame):
    """Ctrl-C while ``main`` runs: KeyboardInterrupt, remembered."""
    _deliver(signum, frame, KeyboardInterrupt())


def _deliver(signum: int, frame, exc: BaseException) -> None:
    """Raise ``exc`` -- unless a module is being imported: an exception raised inside a C extension's
    initialisation (numpy, onnx, onnxruntime) can abort the interpreter, so the signal is sent again
    50 ms later, until the import is over."""
    RECEIVED.append(signum)
    f = frame
    while f is not None:
        if f.f_code.co_filename.startswith("<frozen importlib"):
            import os
            import threading
            timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        f = f.f_back
    raise exc


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the command line, only the options of the command it names (the other
    commands are listed with their help line), so only that command's module is imported."""
    parser = _Parser(prog="acompile", description="Map ONNX models onto analog in-memory-computing accelerators.")
    parser.add_argument("--version", action="version", version=f"acompile {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--format", choices=["text", "json"], default="text",
                        help="text for people, json for scripts (one JSON document on stdout)")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="say more: each compile step with its time; tracebacks of internal errors")
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    # the top-level parser has no option that takes a value: the first word is the command
    named = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (where, text, with_common) in COMMANDS.items():
        p = sub.add_parser(name, parents=[common] if with_common else [], help=text)
        if named is None or named == name:
            module, function = where.split(":")
            getattr(importlib.import_module(f"{__package__}.{module}"), function)(p, common)
    examples.attach(parser)
    return parser


def _one_blas_thread(argv: list[str]) -> None:
    """OpenBLAS on one thread for the commands of ``ONE_BLAS_THREAD``: only before numpy is loaded (it reads
    the setting then), and never over a thread count the user set."""
    named = next((a for a in argv if not a.startswith("-")), "")
    if named in ONE_BLAS_THREAD and "numpy" not in sys.modules and not any(map(os.environ.get, BLAS_THREAD_VARIABLES)):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _one_blas_thread(argv)
    _usable_streams()
    fmt = "json" if "--format=json" in argv or ("--format" in argv and
                                                "json" in argv[argv.index("--format") + 1:argv.index("--format") + 2]) \
        else "text"
    verbose = "-v" in argv or "--verbose" in argv
    previous = {}
    try:
        RECEIVED.clear()
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:
        pass  # not in the main thread (tests); the signals keep their defaults
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if fmt == "json" and getattr(args, "format", None) == "text":
            args.format = "json"    # "targets --format json validate": a sub-command's default must not undo it
        if not getattr(args, "command", None):
            raise UsageError("a command is needed: compile, simulate, run, sweep, check, inspect, ops or targets",
                             hint="see 'acompile --help'")
        with warnings.catch_warnings():
            if not verbose:     # numpy's overflow/NaN warnings on hostile data: the one error line says enough
                warnings.simplefilter("ignore")
            return int(args.func(args))
    except AcompileError as e:
        if _interrupted(e):
            return _interrupt_code(e)
        _report_error(e, fmt)
        return e.exit_code
    except KeyboardInterrupt:
        print("acompile: interrupted", file=sys.stderr)
        return 130
    except Interrupted as e:
        print("acompile: terminated", file=sys.stderr)
        return 128 + e.signum
    except RecursionError:
        _report_error(AcompileError("the input nests too deeply to process"), fmt)
        return EXIT_BAD_INPUT
    except MemoryError:
        from ..errors import LimitError
        _report_error(LimitError("out of memory; the model or data is too large for this machine"), fmt)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    except OSError as e:    # the file system said no (a -r path in a missing folder, a folder where a file goes)
        if _interrupted(e):
            return _interrupt_code(e)
        _report_error(InvalidDataError(f"cannot read or write a file: {e.strerror or type(e).__name__}",
                                       where=clean(e.filename2 or e.filename) if e.filename else None), fmt)
        return EXIT_BAD_INPUT
    except Exception as e:  # a bug: one line, traceback on request
        if _interrupted(e):
            return _interrupt_code(e)
        if verbose:
            import traceback
            traceback.print_exc()
        from ..requirements import unmet
        broken = unmet()       # another install may have changed a dependency under acompile
        after = (f"{', '.join(what for what, _ in broken)}, against acompile's requirements: "
                 f"pip install {' '.join(repr(need) for _, need in broken)}" if broken
                 else "please report this at the project's issue tracker (rerun with -v for the traceback)")
        msg = f"internal error: {type(e).__name__}: {clean(str(e), 200)} -- {after}"
        if fmt == "json":
            print(json.dumps({"error": {"code": "internal", "exit_code": EXIT_INTERNAL, "message": msg}}),
                  file=sys.stderr)
        else:
            print(f"acompile: {msg}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _usable_streams() -> None:
    """A closed stdout/stderr becomes os.devnull; one that cannot encode every character escapes it."""
    import os
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
        elif (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "") not in ("utf8", "utf8sig") \
                and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _interrupted(e: BaseException) -> bool:
    """Say 'interrupted'/'terminated' (and return True) when ``e`` is an interrupt in disguise."""
    signum = _interrupt_signal(e)
    if signum is None:
        return False
    print("acompile: interrupted" if signum == signal.SIGINT else "acompile: terminated", file=sys.stderr)
    return True


def _interrupt_signal(e: BaseException) -> int | None:
    interrupt = interruption(e)
    if interrupt is None:
        return RECEIVED[0] if RECEIVED else None
    return signal.SIGINT if isinstance(interrupt, KeyboardInterrupt) else interrupt.signum


def _interrupt_code(e: BaseException) -> int:
    return 128 + _interrupt_signal(e)


def _report_error(e: AcompileError, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps({"error": e.to_json()}, sort_keys=True), file=sys.stderr)
    else:
        print(f"acompile: error: {e.one_line()}", file=sys.stderr)


def keep_until_exit(*objects) -> None:
    """Leave ``objects`` (a command's results) to the end of the process when it ends through
    :func:`entry_point`, which frees them all at once: a compiled int8 ResNet-50 freed object by object, as
    the command returned, took 3 ms of it. Elsewhere (tests, the Python API) this does nothing."""
    if _KEPT is not None:
        _KEPT.extend(objects)


def entry_point() -> None:
    """The ``acompile`` command: :func:`main`, then the process ends at once.

    When main returns, every output is written and closed, every pool of workers shut down and every
    temporary folder removed. What the interpreter's teardown would still do -- free each object, join
    idle threads, destroy onnxruntime's sessions -- the operating system does faster as the process
    ends (60 ms against 10 ms after a ResNet-50 compile of 0.7 s): stdout and stderr are flushed, then
    the process exits. A child process still alive (none should be), or a profiler or tracer that
    reports at exit (cProfile, coverage), gets the ordinary exit.
    """
    global _KEPT
    _KEPT = []
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):   # the reader went away, or a stream was closed: nothing left to say
        pass
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None and multiprocessing.active_children() \
            or sys.getprofile() is not None or sys.gettrace() is not None:
        gc.freeze()     # the final collections need not walk every numpy, onnx and acompile object
        sys.exit(code)
    os._exit(code)
