"""Small helpers shared by the tests: compile in process, run onnxruntime, simulate."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import onnx
import onnxruntime as ort

from acompile.compiler import Options, compile_model
from acompile.sim.runtime import Simulator, WeightsFromGraph
from acompile.target import load_target


def cli(*argv: str) -> tuple[int, str, str]:
    """Run the acompile command line in this process: (exit code, stdout, stderr)."""
    from acompile.cli.app import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def ort_outputs(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def compiled(model: onnx.ModelProto, target="isaac", **options):
    t = load_target(target) if isinstance(target, str) else target
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return compile_model(copy, t, Options(**options))


def simulate(comp, feeds: dict, mode="ideal", path="fast", noise=None, seed=0) -> list[np.ndarray]:
    sim = Simulator(comp.graph, comp.mapping, WeightsFromGraph(comp.graph, comp.mapping), mode=mode, path=path,
                    noise=noise, seed=seed)
    out = sim.run(feeds)
    return [out[o] for o in comp.graph.outputs]


def blas_threads(_=None) -> int:
    """The BLAS threads of the process this runs in (threadpoolctl's view); a pool task as well."""
    from threadpoolctl import threadpool_info
    return max((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"), default=1)
