"""``acompile compile``: map a model into an OUT folder (program, device file, cost report, report.html,
mapped.onnx).

Also the compile options and the compile-into-a-folder step that ``run`` shares.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..errors import EXIT_OK, UsageError, clean
from .progress import clear, ticker

EMITTABLE = ("program", "device", "report", "html", "mapped", "mapped-with-weights")
# From this many weights on, a compile writes the device file's cells in a forked process (_Writers): on a
# 2-core machine ResNet-50's compile took 0.50 s with them on a thread, 0.43 s forked, and the int8 model's
# 0.41 -> 0.33 s. Below about 2 M weights a forked process's pages, copied as the rest of the compile writes
# them, cost more than its cells' GIL handoffs: a 1.5 M-weight MLP's compile 223 ms on a thread, 233 forked;
# the transformer block's (3.1 M) 243 -> 234 ms forked (medians of 21 interleaved; 189 -> 195 before the
# cells were encoded from the weights where they lie and the blocks became tables).
FORKED_CELLS_WEIGHTS = 1 << 21
# Below this many weights, when the compile calibrates, that forked process also writes program.npz once its
# cells are done: they then take less than calibration's fixed part (importing the simulator and onnxruntime,
# about 40 ms), and program.npz no longer takes turns at the GIL with calibration. The transformer block's
# (3.1 M weights) compile 207 -> 200 ms; the ResNet-50's (25 M), whose cells outlast its calibration, would
# have taken 413 -> 454 ms.
FORKED_CONSTANTS_WEIGHTS = 1 << 22
DEFAULT_EMIT = "program,device,report,html,mapped"


def say(args, text: str) -> None:
    """Print ``text`` unless ``-q``."""
    if not getattr(args, "quiet", False):
        sys.stdout.write(text)


def _options(args, calibration=None, calibration_name="default"):
    from ..compiler import Options
    from ..limits import Limits
    bind = None
    if getattr(args, "bind", None):
        from ..calibrate import load_arrays
        bind = load_arrays(args.bind, [], what="--bind")
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1 (got {args.batch})")
    shapes = parse_input_shapes(getattr(args, "input_shape", None))
    if getattr(args, "data_shapes", None):      # run: the data's shapes, where --input-shape gives none
        shapes = {**args.data_shapes, **shapes}
    elif not shapes and calibration is not None:
        from ..frontend.input_shapes import data_shapes, input_dims
        shapes = data_shapes(input_dims(args.model), calibration, whole=False)
    return Options(batch=args.batch, seed=args.seed, allow_unsupported=args.allow_unsupported,
                   calibration=calibration, calibration_name=calibration_name, bind=bind, input_shapes=shapes or None,
                   replicate=getattr(args, "replicate", "none"),
                   input_ranges=parse_input_ranges(getattr(args, "input_range", None)),
                   limits=Limits.from_env(), progress=ticker(args))


def bounded_int(lo: int, hi: int):
    """An argparse type: an integer from ``lo`` to ``hi`` (else a one-line usage error naming the range)."""
    def parse(text: str) -> int:
        try:
            value = int(text) if len(text) < 40 else None
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi:,} (got {clean(text, 40)!r})")
        return value
    parse.__name__ = "integer"
    return parse


SEED = bounded_int(0, 2**63 - 1)
BATCH = bounded_int(1, 2**31 - 1)


def _parse_emit(text: str) -> set[str]:
    items = {x.strip() for x in text.split(",") if x.strip()}
    bad = items - set(EMITTABLE)
    if bad or not items or {"mapped", "mapped-with-weights"} <= items:
        raise UsageError(f"--emit takes a comma-separated subset of {','.join(EMITTABLE)} (got {clean(text)!r})")
    return items


def compile_to(args, out: Path, emit: set[str]):
    """Compile ``args.model`` for ``args.target`` and write the ``emit`` files into ``out``, atomically.
    Return the compiled program, its report, the names of the files written and their :class:`Timings`."""
    import threading
    from ..backends.report import build_report
    from ..calibrate import load_arrays
    from ..compiler import compile_model
    from ..files import atomic_folder, check_replaceable
    from ..frontend.input_shapes import model_inputs
    from ..lazy import LazyThreads
    from ..target import apply_overrides, load_target, parse_settings
    from .timing import Timings, process_wall_s
    target = apply_overrides(load_target(args.target), parse_settings(getattr(args, "set", None)))
    calibration, cal_name = None, "default"
    if getattr(args, "calibration", None):
        inputs, weights = model_inputs(args.model)
        calibration = load_arrays(args.calibration, inputs, what="calibration", weights=weights)
        cal_name = clean(Path(args.calibration).name)
    options = _options(args, calibration, cal_name)
    check_replaceable(out)      # refused before the work; checked again when OUT is replaced
    if options.progress:
        options.progress("loading the model")
    # What calibration leaves alone -- the device file's cells, program.npz's constants -- is written from the
    # moment the mapping is final, while this thread calibrates (_Writers.start). Leaving the pool waits for its
    # writers (told to stop, and the cells' process ended, when this thread failed or was interrupted) before
    # atomic_folder puts OUT in place or removes it.
    stop = threading.Event()
    with atomic_folder(out) as tmp, LazyThreads(2, "acompile-writer") as pool:
        writers = _Writers(pool, stop, tmp, emit, Timings(account_memory=bool(getattr(args, "verbose", False))))
        try:
            writers.timings.before_steps_s = process_wall_s()
            compiled = compile_model(args.model, target, options, on_mapped=writers.start)
            if options.progress:
                options.progress("writing " + ", ".join(sorted(emit)))
            report = build_report(compiled)
            written = writers.finish(compiled, report)
        except BaseException:
            stop.set()
            writers.cancel()
            raise
    clear(options.progress)
    return compiled, report, written, writers.timings


class _Writers:
    """Writes the ``emit`` files into ``tmp``: the device file's cells and program.npz from the moment the
    mapping is final (:meth:`start`), the rest once the compile is done (:meth:`finish`).

    A model's cells (of FORKED_CELLS_WEIGHTS weights or more) are encoded in a forked copy of this process
    where that is safe (``isolated.beside``): their many short numpy passes and this thread's Python
    (calibration, the program, the reports) took turns at one GIL, and on a 2-core machine each handoff cost
    more than most of the passes. Otherwise they are encoded on ``pool``. program.npz is written on ``pool``
    while this thread calibrates (its writes let go of the GIL), or by the cells' process after them for a
    model of fewer than FORKED_CONSTANTS_WEIGHTS weights; when calibration observes nothing (a quantized
    model's own scales), on this thread once the compile is done: a thread then only adds GIL handoffs,
    over the int8 ResNet-50's 300 entries 18 ms of its compile (331 -> 314 ms).
    """

    def __init__(self, pool, stop, tmp: Path, emit: set[str], timings):
        self.pool, self.stop, self.tmp, self.emit, self.timings = pool, stop, tmp, emit, timings
        self.started = False
        self.cells = self.constants = None
        self.constants_forked = False   # program.npz is written by the cells' process

    def start(self, state) -> None:
        from ..backends.device import write_cells   # here: what a forked process imports costs it more
        from ..calibrate import observes_activations
        from ..isolated import beside
        self.started = True
        calibrating = ("program" in self.emit or "device" in self.emit) and \
            observes_activations(state.mapping, state.target)
        if "device" in self.emit:   # its header, with what calibration sets, is added by finish
            path = self.tmp / "device.acdev"
            weights = sum(layer.weights for layer in state.mapping.layers)
            if weights >= FORKED_CELLS_WEIGHTS:
                constants = self.tmp if calibrating and weights < FORKED_CONSTANTS_WEIGHTS else None
                self.cells = beside(_timed_cells, write_cells, path, state, None, self.timings.account_memory,
                                    constants, what="device file's cells")
                self.constants_forked = self.cells is not None and constants is not None
            if self.cells is None:
                self.cells = self.pool.submit(_timed_cells, write_cells, path, state, self.stop)
        if calibrating and not self.constants_forked:
            self.constants = self.pool.submit(self.timings.timed, ["program.npz"], "writer", _write_constants,
                                              self.tmp, state.graph, state.mapping, self.stop)

    def finish(self, compiled, report: dict) -> list[str]:
        """Write the remaining files; wait for the cells and program.npz; return every file's name."""
        import time
        from ..backends.device import add_header, header_parts
        from ..backends.program import write_constants, write_program
        from ..backends.report import write_report
        from ..jsonio import dumps_lines
        from .timing import Written
        if not self.started:
            self.start(compiled)    # a compile without calibration never called it
        tmp, emit, written, timed = self.tmp, self.emit, [], self.timings.timed

        def program(constants) -> str:
            """program.json beside program.npz (``constants``: what wrote it said); its sha256."""
            written[:0] = ["program.json", "program.npz", "target.toml"]
            return timed(["program.json", "target.toml"], "main", write_program, tmp, compiled, dumps_lines, constants)

        program_sha = None      # program.json once program.npz is: before the reports, or after the cells' process
        if ("program" in emit or "device" in emit) and not self.constants_forked:
            program_sha = program(self.constants.result() if self.constants is not None else
                                  timed(["program.npz"], "main", write_constants, tmp, compiled.graph, compiled.mapping))
        if "report" in emit:
            written += timed(None, "main", write_report, report, tmp, dumps_lines)
        if "html" in emit:
            from ..backends.html import write_html
            timed(["report.html"], "main", write_html, tmp / "report.html", report, compiled.mapping)
            written.append("report.html")
        if "mapped" in emit or "mapped-with-weights" in emit:
            from ..backends.mapped_onnx import write_mapped
            timed(["mapped.onnx"], "main", write_mapped, tmp / "mapped.onnx", compiled, report,
                  "mapped-with-weights" in emit)
            written.append("mapped.onnx")
        parts = header_parts(compiled) if self.cells is not None else None    # while the cells are written
        if self.cells is not None:
            written.insert(3 if program_sha else 0, "device.acdev")
            cells, seconds, self.timings.forked_private_bytes, forked, npz_seconds = self.cells.result()
        if self.constants_forked:
            self.timings.entries.append(Written(["program.npz"], npz_seconds, "process"))
            program_sha = program(forked)
        if self.cells is not None:
            begin = time.perf_counter()
            add_header(tmp / "device.acdev", cells, parts, program_sha)
            self.timings.entries.append(Written(["device.acdev"], seconds + time.perf_counter() - begin,
                                                "process" if self._forked() else "writer"))
        return written

    def cancel(self) -> None:
        """The compile failed or was interrupted: end the cells' process, if there is one (a thread stops at
        ``stop``)."""
        if self._forked():
            self.cells.cancel()

    def _forked(self) -> bool:
        from ..isolated import Child
        return isinstance(self.cells, Child)


def _write_constants(*args):
    """``write_constants``, imported on the writer's thread: the program's modules are none of what the cells'
    process, forked just before, needs."""
    from ..backends.program import write_constants
    return write_constants(*args)


def _timed_cells(write_cells, path: Path, state, stop, account_memory: bool = False,
                 constants_in: Path | None = None):
    """``write_cells`` (device.write_cells), the seconds it took, where asked (a forked process, -v) the memory
    this process holds of its own once done (what it adds to the compile's), then, given ``constants_in``,
    program.npz written there (``write_constants``' listing, and the seconds it took; both None otherwise)."""
    import time
    from .timing import private_bytes
    begin = time.perf_counter()
    cells = write_cells(path, state, stop)
    seconds = time.perf_counter() - begin
    constants = npz_seconds = None
    if constants_in is not None:
        begin = time.perf_counter()
        constants = _write_constants(constants_in, state.graph, state.mapping, stop)
        npz_seconds = time.perf_counter() - begin
    return cells, seconds, private_bytes() if account_memory else None, constants, npz_seconds


def run(args) -> int:
    from ..backends.report import terminal_table
    from ..limits import collector_paused
    from .app import keep_until_exit
    out = Path(args.output) if args.output else Path("acompile-out") / Path(args.model).stem
    with collector_paused():
        compiled, report, written, timings = compile_to(args, out, _parse_emit(args.emit))
    keep_until_exit(compiled, report)
    verbose = getattr(args, "verbose", False)
    if verbose:
        from .timing import print_profile, profile
        account = profile(compiled.timings_s, timings, out)
        if not args.quiet:
            print_profile(account)
    if not args.quiet:
        for line in report["warnings"]:
            sys.stderr.write(f"acompile: warning: {line}\n")
    if args.format == "json":
        print(json.dumps({"status": "ok", "output": str(out), "files": written, "totals": report["totals"],
                          "unsupported": report["unsupported"], **({"profile": account} if verbose else {})},
                         sort_keys=True, default=float))
    else:
        say(args, terminal_table(report))
        say(args, f"wrote {', '.join(written)} to {clean(str(out))}\n")
    return EXIT_OK


def add_compile_options(p: argparse.ArgumentParser, with_output: bool = True) -> None:
    """The model, target and compile choices that ``compile`` and ``run`` share."""
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--target", "-t", required=True, help="shipped target name (isaac, puma, ...) or a .toml file")
    add_set_option(p)
    if with_output:
        p.add_argument("-o", "--output", help="output folder (default acompile-out/MODEL)")
    p.add_argument("--batch", type=BATCH, default=1, help="batch size used for cost (default 1)")
    p.add_argument("--seed", type=SEED, default=0, help="seed for calibration defaults and noise (default 0)")
    p.add_argument("--allow-unsupported", action="store_true",
                   help="cost unsupported ops as unknown digital ops instead of failing")
    p.add_argument("--calibration", help="calibration inputs: .npz keyed by input name, or .npy for one input")
    p.add_argument("--bind", help=".npz of graph inputs to freeze as constants (weights given as inputs)")
    add_input_shape_option(p)
    add_input_range_option(p)
    p.add_argument("--replicate", choices=["none", "auto"], default="none",
                   help="auto: copy the slowest layers onto spare crossbars of the chips used (default none)")


def add_input_shape_option(p: argparse.ArgumentParser) -> None:
    """``--input-shape NAME:D1,D2,...`` (repeatable; bare ``D1,D2,...`` for a single-input model)."""
    p.add_argument("--input-shape", action="append", metavar="NAME:D1,D2,...",
                   help="static shape for a model input with dynamic dimensions (repeatable; a bare D1,D2,... "
                        "names a single-input model's input)")


def parse_input_shapes(values: list[str] | None) -> dict:
    """{input name (None for a bare shape): dims} from the ``--input-shape`` values."""
    shapes: dict = {}
    for text in values or []:
        name, colon, dims_text = text.rpartition(":")
        key = name if colon else None
        try:
            dims = tuple(int(d) for d in dims_text.split(",") if d.strip() != "")
        except ValueError:
            dims = ()
        # 0: the empty past of a decoder's first step; never the leading (batch) axis, which the cost divides by
        if not dims or dims[0] < 1 or any(d < 0 for d in dims) or (colon and not name):
            raise UsageError(f"--input-shape takes NAME:D1,D2,... with sizes of 0 or more, the first at least 1 "
                             f"(got {clean(text, 80)!r})")
        if key in shapes:
            raise UsageError(f"--input-shape gives {'the input' if key is None else repr(clean(key))} twice")
        shapes[key] = dims
    return shapes


def add_input_range_option(p: argparse.ArgumentParser) -> None:
    """``--input-range NAME:LO,HI`` (repeatable): the values a model input takes."""
    p.add_argument("--input-range", action="append", metavar="NAME:LO,HI",
                   help="values a model input takes (repeatable); LO >= 0 streams it unsigned, saving its sign "
                        "cycle. Model inputs are signed otherwise, whatever the calibration data holds. Without "
                        "--calibration, the default data draws it uniformly from LO to HI")


def parse_input_ranges(values: list[str] | None) -> dict[str, tuple[float, float]]:
    """{input name: (lo, hi)} from the ``--input-range`` values."""
    ranges: dict[str, tuple[float, float]] = {}
    for text in values or []:
        name, colon, bounds = text.rpartition(":")
        try:
            lo, hi = (float(v) for v in bounds.split(","))
        except ValueError:
            lo = hi = float("nan")
        if not colon or not name or not (lo <= hi) or not all(map(math.isfinite, (lo, hi))):
            raise UsageError(f"--input-range takes NAME:LO,HI with finite LO <= HI (got {clean(text, 80)!r})")
        if name in ranges:
            raise UsageError(f"--input-range gives {clean(name)!r} twice")
        ranges[name] = (lo, hi)
    return ranges


def add_set_option(p: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable): change one field of the resolved target."""
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a target field, e.g. --set adc.bits=6 (repeatable; checked like a target file)")


def add_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Options of ``acompile compile``."""
    add_compile_options(p)
    p.add_argument("--emit", default=DEFAULT_EMIT, metavar="LIST",
                   help=f"comma-separated files to write, from {', '.join(EMITTABLE)}; mapped-with-weights is "
                        f"mapped.onnx with the weights inside (default {DEFAULT_EMIT})")
    p.set_defaults(func=run)
