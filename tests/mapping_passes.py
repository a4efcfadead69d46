"""Run one mapping pass outside the compiler: the compile pipeline up to the pass, then the pass alone,
with the graph and the mapping verified after it (as the pass manager does)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from acompile.compiler import Options, pipeline
from acompile.frontend.load import load_model_proto
from acompile.passes.base import CompileState
from acompile.target import load_target
from frontend_passes import tiny_model, weights


def state_before(model: onnx.ModelProto, p, target="isaac", **options) -> CompileState:
    """The compile state just before pass ``p`` (every earlier pass of the pipeline run)."""
    opts = Options(**options)
    t = load_target(target) if isinstance(target, str) else target
    state = CompileState(load_model_proto(model, batch=opts.batch, limits=opts.limits), t, opts)
    for q in pipeline():
        if q is p:
            return state
        q(state)
    raise ValueError(f"{p.name} is not in the pipeline")


def run_pass(state: CompileState, p) -> CompileState:
    p(state)
    state.graph.verify()
    state.mapping.verify()
    return state


def after(model: onnx.ModelProto, p, target="isaac", **options) -> CompileState:
    return run_pass(state_before(model, p, target, **options), p)


def conv_relu_linear(seed: int = 0, channels: int = 6, groups: int = 1) -> onnx.ModelProto:
    """x[1,4,5,5] -> Conv(3x3, pad 1, groups) -> Relu -> Flatten -> Gemm(10): two analog layers."""
    w = weights(seed)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=groups),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1)]
    return tiny_model(nodes, [("x", (1, 4, 5, 5))], [("y", (1, 10))],
                      {"w": w(channels, 4 // groups, 3, 3) * 0.3, "b": w(channels), "fc": w(10, channels * 25) * 0.1,
                       "fb": w(10)})


def wide_linear(k: int = 300, n: int = 70, seed: int = 0) -> onnx.ModelProto:
    """One Linear layer larger than a crossbar in both directions on every shipped target."""
    w = weights(seed)
    return tiny_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], [("x", (2, k))], [("y", (2, n))],
                      {"w": w(n, k) * 0.1, "b": w(n)})


def feeds(state_or_graph, seed: int = 0) -> dict[str, np.ndarray]:
    graph = getattr(state_or_graph, "graph", state_or_graph)
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(graph.static_shape(n)).astype(np.float32) for n in graph.inputs}
