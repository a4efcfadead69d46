"""Frontend behaviour real models need (issue 11): dynamic input dimensions and --input-shape,
stale exporter shapes, shapes folding reveals, If with a constant condition, ops only onnxruntime knows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import models
from acompile.errors import UsageError
from acompile.frontend.export import to_onnx
from acompile.frontend.load import load_model_proto
from acompile.passes.classify import classify
from frontend_passes import feeds_for, frontend, ort_run, run, state_of

F = TensorProto.FLOAT


def classified(graph):
    state = state_of(graph)
    state.facts.add("canonical")
    return run(state, classify).problems


def _matmul_model(x_shape, w_shape=(8, 4)) -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal(w_shape).astype(np.float32)
    y_shape = [d if isinstance(d, int) and d > 0 else f"d{i}" for i, d in enumerate(x_shape[:-1])] + [w_shape[1]]
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "m",
                          [helper.make_tensor_value_info("x", F, list(x_shape))],
                          [helper.make_tensor_value_info("y", F, y_shape)], [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_minus_one_input_dimension_is_dynamic():
    g = load_model_proto(_matmul_model([2, -1, 8]))
    assert g.tensors["x"].shape[0] == 2 and isinstance(g.tensors["x"].shape[1], str)


def test_input_shape_fixes_dynamic_dimensions_by_name_or_bare():
    model = _matmul_model(["N", "T", 8])
    g = load_model_proto(model, input_shapes={"x": (3, 5, 8)})
    assert g.static_shape("y") == (3, 5, 4) and not g.meta["dynamic_batch"]
    assert load_model_proto(model, input_shapes={None: (1, 7, 8)}).static_shape("y") == (1, 7, 4)
    # a None size (shapes from calibration data) keeps the model's own, batch-fixed, dimension
    g = load_model_proto(model, input_shapes={"x": (None, 6, 8)}, batch=2)
    assert g.static_shape("y") == (2, 6, 4) and g.meta["dynamic_batch"]


@pytest.mark.parametrize("shapes, needle", [({"nope": (1, 8)}, "not a graph input"),
                                            ({"x": (1, 8)}, "2 dimensions; the model has 3"),
                                            ({"x": (1, 2, 9)}, "fixes it to 8")])
def test_input_shape_errors_name_the_input_and_the_flag(shapes, needle):
    with pytest.raises(UsageError, match="--input-shape") as e:
        load_model_proto(_matmul_model(["N", "T", 8]), input_shapes=shapes)
    assert needle in str(e.value)


def test_stale_declared_shapes_are_dropped_not_fatal():
    model = _matmul_model([2, 8])
    model.graph.value_info.append(helper.make_tensor_value_info("y", F, [7]))   # disagrees with inference
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", F, [2]))
    assert load_model_proto(model).static_shape("y") == (2, 4)


@pytest.mark.parametrize("declared", ["no shape", "no type"])
def test_a_graph_output_declared_without_shape_or_type_loads(declared):
    model = _matmul_model([2, 8])
    if declared == "no shape":
        model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", F, None))
    else:
        model.graph.output[0].CopyFrom(onnx.ValueInfoProto(name="y"))
    with pytest.raises(onnx.checker.ValidationError):      # the checker refuses it; onnxruntime runs it
        onnx.checker.check_model(model)
    x = np.ones((2, 8), np.float32)
    assert ort_run(model, {"x": x})[0].shape == (2, 4)
    g = load_model_proto(model)
    assert g.static_shape("y") == (2, 4) and g.tensors["y"].dtype == np.float32


def test_if_with_a_constant_condition_is_inlined_and_its_matmul_maps():
    w = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Relu", ["t"], ["yt"])],
                             "then", [], [helper.make_tensor_value_info("yt", F, ["N", 4])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["n"]), helper.make_node("MatMul", ["n", "w"], ["ye"])],
                              "else", [], [helper.make_tensor_value_info("ye", F, ["N", 4])])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "one"], ["d"]),
             helper.make_node("Equal", ["d", "eight"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    g = helper.make_graph(nodes, "if", [helper.make_tensor_value_info("x", F, ["N", 8])],
                          [helper.make_tensor_value_info("y", F, ["N", 4])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(1, np.int64), "one"),
                           numpy_helper.from_array(np.array(8, np.int64), "eight")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    graph = frontend(model)
    ops = [n.op_type for n in graph.nodes]
    assert "If" not in ops and "Relu" in ops and "Neg" not in ops      # the taken (then) branch only
    assert classified(graph) == [] and any(n.kind == "analog" for n in graph.nodes)
    feeds = feeds_for(graph)
    np.testing.assert_allclose(ort_run(to_onnx(graph), feeds)[0], ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_folding_reveals_shapes_that_whole_model_inference_lost():
    # Pad's pads come out of a Concat of a Shape computation: inference cannot follow, folding can
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "z", "one"], ["s0"]),
             helper.make_node("Sub", ["s0", "s0"], ["zero"]), helper.make_node("Concat", ["zero", "two", "zero", "two"],
                                                                            ["pads"], axis=0),
             helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
             helper.make_node("MatMul", ["p", "w"], ["y"])]
    w = np.random.default_rng(2).standard_normal((12, 3)).astype(np.float32)
    g = helper.make_graph(nodes, "pad", [helper.make_tensor_value_info("x", F, [2, 8])],
                          [helper.make_tensor_value_info("y", F, [2, 3])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([0], np.int64), "z"),
                           numpy_helper.from_array(np.array([1], np.int64), "one"),
                           numpy_helper.from_array(np.array([2], np.int64), "two")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    graph = frontend(model)
    assert graph.static_shape("p") == (2, 12)
    assert classified(graph) == []


def test_ops_only_onnxruntime_knows_run_digitally_with_an_estimated_cost():
    m = _matmul_model([1, 8])
    m.graph.node.append(helper.make_node("TopK", ["y", "k"], ["v", "i"], axis=-1))
    m.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "k"))
    m.graph.node.append(helper.make_node("Normalizer", ["v"], ["z"], domain="ai.onnx.ml", norm="L2"))
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("z", F, [1, 2]))
    graph = frontend(m)
    assert classified(graph) == []
    estimated = {n.op_type for n in graph.nodes if n.meta.get("cost_estimated")}
    assert estimated == {"TopK", "Normalizer"}


def test_an_op_nobody_runs_is_still_refused():
    problems = classified(frontend(models.unsupported_op_model()))
    assert [(p.op_type, p.domain) for p in problems] == [("TopK", models.CUSTOM_DOMAIN)]
    assert "onnxruntime" in problems[0].reason
