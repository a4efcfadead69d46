"""Run frontend passes on an IR graph outside the compiler, and check them the qonnx way:
onnxruntime on the graph exported before the pass and after it must agree."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from acompile.frontend.export import to_onnx
from acompile.frontend.load import load_model_proto
from acompile.ir import Graph
from acompile.limits import Limits
from acompile.passes.base import CompileState
from acompile.passes.classify import classify
from acompile.passes.explicit_bias import explicit_bias
from acompile.passes.fold_affine import fold_affine
from acompile.passes.fold_constants import fold_constants
from acompile.passes.gemm_to_linear import gemm_to_linear
from acompile.passes.unroll_recurrent import unroll_recurrent

FRONTEND = (fold_constants, unroll_recurrent, gemm_to_linear, fold_affine, explicit_bias, classify)


def tiny_model(nodes, inputs, outputs, weights=None, opset: int = 17) -> onnx.ModelProto:
    """A checked model: ``inputs``/``outputs`` are (name, shape) float32 tensors, ``weights`` name -> array."""
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (weights or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def weights(seed: int = 0):
    """f(*shape) -> a float32 array of that shape, from one seeded generator."""
    rng = np.random.default_rng(seed)
    return lambda *shape: rng.standard_normal(shape).astype(np.float32)


def state_of(graph: Graph, limits: Limits | None = None) -> CompileState:
    return CompileState(graph, None, SimpleNamespace(limits=limits or Limits(), allow_unsupported=False))


def run(state: CompileState, *passes) -> CompileState:
    for p in passes:
        p(state)
        state.graph.verify()
    return state


def prerequisites(p) -> tuple:
    """The frontend passes before ``p`` in pipeline order."""
    return FRONTEND[:FRONTEND.index(p)]


def frontend(model: onnx.ModelProto, upto=explicit_bias) -> Graph:
    """The IR of ``model`` after the frontend passes up to and including ``upto``."""
    state = state_of(load_model_proto(model))
    return run(state, *prerequisites(upto), upto).graph


def ort_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def feeds_for(graph: Graph, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(graph.static_shape(name)).astype(graph.dtype(name))
            for name in graph.inputs}


def check_pass(model: onnx.ModelProto, p) -> CompileState:
    """Load ``model``, run ``p``'s prerequisites, then ``p`` alone; onnxruntime on the graph exported
    before and after ``p`` gives the same outputs. Returns the state after ``p``."""
    state = run(state_of(load_model_proto(model)), *prerequisites(p))
    feeds = feeds_for(state.graph)
    before = ort_run(to_onnx(state.graph), feeds)
    run(state, p)
    after = ort_run(to_onnx(state.graph), feeds)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    return state
