"""The compile pipeline: compile options, the ordered list of passes, and the pass manager.

The manager checks the passes' requires/provides before running any, times each
one, verifies the graph and the mapping after it, and can dump both
(``ACOMPILE_DUMP_IR=folder``). ``check`` runs the same passes as ``compile`` up to
the cost model (without calibration or files), so the two can never disagree.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import AcompileError, UnsupportedError
from .frontend.load import load_model, load_model_proto
from .frontend.ops import Problem
from .ir import Graph
from .jsonio import dumps_json
from .limits import Limits
from .mapping import Mapping
from .passes.base import CompileState, Pass, check_order
from .passes.boundaries import insert_boundaries
from .passes.classify import classify
from .passes.contrib_attention import contrib_attention
from .passes.contrib_fused import contrib_fused
from .passes.explicit_bias import explicit_bias
from .passes.fold_affine import fold_affine
from .passes.fold_constants import fold_constants
from .passes.gemm_to_linear import gemm_to_linear, unmapped_linear
from .passes.lower import lower_analog
from .passes.ml_linear import ml_linear
from .passes.pack import pack
from .passes.partition import partition
from .passes.place import place
from .passes.precision import choose_precision
from .passes.quantized_layers import apply_model_scales, model_scale_notes, model_scales
from .passes.replicate import replicate
from .passes.contiguous import contiguous_weights
from .passes.stft_conv import stft_conv
from .passes.unroll_control import unroll_control
from .passes.unroll_recurrent import unroll_recurrent

FRONTEND = (model_scales, fold_constants, unroll_control, unroll_recurrent, ml_linear, contrib_fused,
            contrib_attention, stft_conv, gemm_to_linear, fold_affine, explicit_bias, classify, unmapped_linear)
MAPPING = (lower_analog, choose_precision, apply_model_scales, partition, pack, replicate, place, insert_boundaries)


@dataclass
class Options:
    """Compile choices (hardware facts live in the target)."""
    batch: int = 1
    seed: int = 0
    allow_unsupported: bool = False
    calibration: dict[str, np.ndarray] | None = None
    calibration_name: str = "default"
    bind: dict[str, np.ndarray] | None = None
    input_shapes: dict | None = None  # --input-shape: {input name (None: the only input): dims}
    replicate: str = "none"         # "none" | "auto": copy slow layers onto spare crossbars
    input_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)   # --input-range NAME:LO,HI
    limits: Limits = field(default_factory=Limits.from_env)
    progress: Callable[[str], None] | None = None


@dataclass
class Compiled:
    graph: Graph
    target: object
    options: Options
    mapping: Mapping | None          # None when compilation stopped at unsupported nodes
    problems: list[Problem]
    cost: dict                       # the cost figures as report.json holds them ({} without a mapping)
    timings_s: dict[str, float]
    warnings: list[str] = field(default_factory=list)   # one line each: a layer's ADC loses bits of its range


def pipeline(with_calibration: bool = True) -> list[Pass]:
    """The passes of a compile, in order."""
    if not with_calibration:
        return [*FRONTEND, *MAPPING]
    from .calibrate import calibrate    # check never calibrates: it need not import the simulator's numerics
    return [*FRONTEND, *MAPPING, contiguous_weights, calibrate]


def _locate(e: AcompileError, source: str | None) -> None:
    """Name the model file in an error a pass raised about one of its nodes."""
    if source and not (e.where or "").startswith(source):
        e.where = f"{source}: {e.where}" if e.where else source


def run_pipeline(model, target, options: Options, *, with_calibration: bool = True,
                 stop_on_problems: bool = True, on_mapped: Callable[[CompileState], None] | None = None) -> Compiled:
    """Load ``model`` (a path or a ModelProto) and map it onto ``target``.

    Unsupported nodes (found by ``classify``) stop the compile unless ``options.allow_unsupported``:
    with an :class:`UnsupportedError`, or, without ``stop_on_problems``, with no mapping and no cost.
    ``on_mapped(state)`` is called once the mapping is final, before calibration (which sets only the layers'
    input and ADC scales): ``acompile compile`` starts writing the weights then, in a forked process for a large
    model, and the mapping's invariants are checked right after, while that process runs (an int8 ResNet-50's
    compile 299 -> 290 ms); a broken mapping ends the compile there, the writers stopped and nothing written.
    Without calibration (``check``) nothing reads the weights' values after the mapping: a weight a folded
    BatchNormalization or Mul would scale keeps its model values (fold_affine.PendingScale), so the graph
    returned holds the mapping's shapes and costs, not the weights a compile would write.
    """
    passes = pipeline(with_calibration)
    check_order(passes)
    dump = os.environ.get("ACOMPILE_DUMP_IR")
    # the graph's and the mapping's invariants are checked once, after the last pass (in pure Python, over
    # every node and block: after each of the eight mapping passes the mapping's check was most of what
    # `check` spent on a transformer block, and the graph's after each of 22 passes 0.1 s of a 24,000-node
    # model's); the loader checks the model's graph as read. ACOMPILE_VERIFY_EACH_PASS=1 (the tests,
    # ACOMPILE_DUMP_IR) checks both after every pass, naming the culprit
    each_pass = bool(dump) or os.environ.get("ACOMPILE_VERIFY_EACH_PASS", "") not in ("", "0")
    t0 = time.perf_counter()
    if isinstance(model, (str, os.PathLike)):
        graph = load_model(model, batch=options.batch, bind=options.bind, limits=options.limits,
                           input_shapes=options.input_shapes)
    else:
        graph = load_model_proto(model, batch=options.batch, bind=options.bind, limits=options.limits,
                                 input_shapes=options.input_shapes)
    timings = {"load": time.perf_counter() - t0}
    graph.meta["compile_seed"] = options.seed     # programming draws follow it (sim/runtime.py)
    state = CompileState(graph, target, options, weights_read=with_calibration)
    mapped = False
    for p in passes:
        if p.name == "calibrate" and state.mapping is not None:
            _mapped(state, on_mapped, check=not each_pass)
            mapped = True
        if options.progress:
            options.progress(p.name)
        t = time.perf_counter()
        try:
            p(state)
        except AcompileError as e:
            _locate(e, graph.source)
            raise
        if p is classify and state.problems and not options.allow_unsupported:
            if stop_on_problems:
                raise UnsupportedError(
                    f"{len(state.problems)} node(s) cannot be mapped; first: {state.problems[0].line()}",
                    where=graph.source, hint="--allow-unsupported costs them as unknown digital ops",
                    problems=state.problems)
            break
        if each_pass:
            state.graph.verify()
            if state.mapping is not None:
                state.mapping.verify()
        timings[p.name] = time.perf_counter() - t
        if dump:
            _dump(state, Path(dump), len(timings), p.name)
    if state.mapping is not None and not mapped:
        _mapped(state, on_mapped, check=not each_pass)
    if not each_pass:
        state.graph.verify()
    from .cost import cost_model    # after the mapping: a compile's writers start without waiting for its import
    cost = cost_model(state.graph, state.mapping, target, _samples(state)).to_dict() \
        if "boundaries" in state.facts else {}
    warnings = model_scale_notes(state.graph)
    if "calibrated" in state.facts:
        from .calibrate import adc_warnings, calibration_notes
        warnings += calibration_notes(state.graph) + adc_warnings(state.mapping)
    return Compiled(state.graph, target, options, state.mapping, state.problems, cost, timings, warnings)


def _mapped(state: CompileState, on_mapped, check: bool) -> None:
    """The final mapping: ``on_mapped``, then checked."""
    if on_mapped is not None:
        on_mapped(state)
    if check:
        state.mapping.verify()


def _dump(state: CompileState, folder: Path, index: int, name: str) -> None:
    """The IR after one pass, one node a line, and the mapping (once there is one) as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{n.name}\t{n.domain + '.' if n.domain else ''}{n.op_type}\t{n.kind}\t{n.inputs} -> {n.outputs}"
             for n in state.graph.nodes]
    (folder / f"{index:02d}_{name}.txt").write_text("\n".join(lines) + "\n")
    if state.mapping is not None:
        (folder / f"{index:02d}_{name}.mapping.json").write_text(dumps_json(state.mapping.to_dict()))


def compile_model(model, target, options: Options | None = None,
                  on_mapped: Callable[[CompileState], None] | None = None) -> Compiled:
    return run_pipeline(model, target, options or Options(), on_mapped=on_mapped)


def _samples(state: CompileState) -> int:
    """Samples in one compiled inference: the batch, where the model's batch dimension was free to set."""
    return state.options.batch if state.graph.meta.get("dynamic_batch") else 1
