"""classify: every node analog or digital by the op table; what cannot map is recorded, never dropped."""

import numpy as np
import pytest
from onnx import helper

from acompile.frontend.load import load_model_proto
from acompile.passes.classify import classify
from frontend_passes import check_pass, run, state_of, tiny_model, weights


def test_analog_and_digital_nodes_follow_the_op_table():
    w = weights()
    model = tiny_model(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)],
        [("x", (1, 2, 3, 3))], [("y", (1, 4))], {"w": w(3, 2, 1, 1), "fc": w(4, 27)})
    state = check_pass(model, classify)
    assert [(n.op_type, n.kind) for n in state.graph.nodes] == [
        ("Conv", "analog"), ("Relu", "digital"), ("Flatten", "digital"), ("Linear", "analog")]
    assert state.problems == [] and "classified" in state.facts


def test_dynamic_weights_are_recorded_and_ops_onnxruntime_knows_run_digitally():
    model = tiny_model(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("TopK", ["c", "k"], ["y", "idx"], axis=3)],
        [("x", (1, 1, 3, 3)), ("w", (1, 1, 1, 1))], [("y", (1, 1, 3, 2))], {"k": np.array([2])})
    state = check_pass(model, classify)
    # TopK is not in acompile's op table: it runs on the digital units through onnxruntime, cost estimated
    assert [(p.op_type, p.category) for p in state.problems] == [("Conv", "dynamic_weights")]
    conv, topk = state.graph.nodes
    assert conv.kind == "digital" and conv.meta["unknown"]
    assert topk.kind == "digital" and topk.meta["cost_estimated"] and not topk.meta.get("unknown")


def test_classify_needs_a_canonical_graph():
    state = state_of(load_model_proto(tiny_model([helper.make_node("Relu", ["x"], ["y"])], [("x", (1,))],
                                                 [("y", (1,))])))
    with pytest.raises(RuntimeError, match="canonical"):
        run(state, classify)
