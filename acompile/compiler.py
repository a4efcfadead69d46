"""The compile pipeline: an explicit, ordered list of steps.

Each step is a function ``(graph, context) -> graph``; the pipeline times it,
verifies the IR afterwards and can dump the IR (``ACOMPILE_DUMP_IR=folder``).
``check`` runs the same frontend and mapping steps as ``compile`` (up to the
cost model, without calibration or files), so the two can never disagree.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .calibrate import calibrate
from .cost import cost_model
from .errors import UnsupportedError
from .frontend.canonicalise import canonicalise
from .frontend.fold import fold_constants
from .frontend.load import Limits, load_model, load_model_proto
from .frontend.ops import Problem, classify
from .ir import Graph
from .passes.boundaries import insert_boundaries
from .passes.lower import lower_analog
from .passes.pack import pack
from .passes.partition import partition
from .passes.place import place
from .passes.precision import choose_precision
from .passes.replicate import replicate


@dataclass
class Options:
    """Compile choices (hardware facts live in the target)."""
    batch: int = 1
    seed: int = 0
    allow_unsupported: bool = False
    calibration: dict[str, np.ndarray] | None = None
    calibration_name: str = "default"
    bind: dict[str, np.ndarray] | None = None
    replicate: str = "none"         # "none" | "auto": copy slow layers onto spare crossbars
    limits: Limits = field(default_factory=Limits.from_env)
    progress: Callable[[str], None] | None = None


@dataclass
class Compiled:
    graph: Graph
    target: object
    options: Options
    problems: list[Problem]
    cost: dict
    timings_s: dict[str, float]

    @property
    def mapping(self):
        return self.graph.meta["mapping"]


def _steps(options: Options, with_calibration: bool):
    nonneg = set()
    if options.calibration:
        nonneg = {k for k, v in options.calibration.items()
                  if np.asarray(v).dtype.kind in "fiu" and np.asarray(v).size and np.min(v) >= 0}
    steps = [
        ("fold_constants", lambda g, t: fold_constants(g, options.limits)),
        ("canonicalise", lambda g, t: canonicalise(g)),
        ("classify", None),
        ("lower_analog", lower_analog),
        ("choose_precision", lambda g, t: choose_precision(g, t, nonneg)),
        ("partition", partition),
        ("pack", pack),
        ("replicate", lambda g, t: replicate(g, t, options.replicate)),
        ("place", place),
        ("insert_boundaries", insert_boundaries),
    ]
    if with_calibration:
        steps.append(("calibrate", lambda g, t: calibrate(g, t, options.calibration, options.seed)))
    return steps


def run_pipeline(model, target, options: Options, *, with_calibration: bool = True,
                 stop_on_problems: bool = True) -> Compiled:
    """Load ``model`` (a path or a ModelProto) and map it onto ``target``."""
    timings: dict[str, float] = {}
    dump = os.environ.get("ACOMPILE_DUMP_IR")
    t0 = time.perf_counter()
    if isinstance(model, (str, os.PathLike)):
        graph = load_model(model, batch=options.batch, bind=options.bind, limits=options.limits)
    else:
        graph = load_model_proto(model, batch=options.batch, bind=options.bind, limits=options.limits)
    graph.meta["batch"] = options.batch
    timings["load"] = time.perf_counter() - t0
    problems: list[Problem] = []
    for name, step in _steps(options, with_calibration):
        if options.progress:
            options.progress(name)
        t = time.perf_counter()
        if name == "classify":
            problems = classify(graph, allow_unsupported=options.allow_unsupported)
            if problems and stop_on_problems and not options.allow_unsupported:
                raise UnsupportedError(
                    f"{len(problems)} node(s) cannot be mapped; first: {problems[0].line()}",
                    where=graph.source, hint="--allow-unsupported costs them as unknown digital ops",
                    problems=problems)
            if problems and not options.allow_unsupported:
                break
        else:
            graph = step(graph, target)
        graph.verify()
        timings[name] = time.perf_counter() - t
        if dump:
            _dump(graph, Path(dump), len(timings), name)
    cost = cost_model(graph, target) if "insert_boundaries" in timings else {}
    return Compiled(graph, target, options, problems, cost, timings)


def _dump(graph: Graph, folder: Path, index: int, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{n.name}\t{n.domain + '.' if n.domain else ''}{n.op_type}\t{n.kind}\t{n.inputs} -> {n.outputs}"
             for n in graph.nodes]
    (folder / f"{index:02d}_{name}.txt").write_text("\n".join(lines) + "\n")


def compile_model(model, target, options: Options | None = None) -> Compiled:
    return run_pipeline(model, target, options or Options())


def dumps_json(obj) -> str:
    """Deterministic JSON: sorted keys, floats rounded to a stable repr, numpy scalars converted."""
    return json.dumps(obj, sort_keys=True, indent=2, default=_json_default, allow_nan=False) + "\n"


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
