"""Values that are no tensors (sequences, optionals) and sub-graphs outside If/Loop/Scan (SequenceMap): they
stay nodes, run through onnxruntime with their types and attributes whole, and mapped.onnx keeps them valid.
Also: a Scan copied out of an unrolled body keeps its branches' outer reads, and a batched Scan-8 is named."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto as T, helper as h, numpy_helper

from acompile.backends.mapped_onnx import mapped_model
from acompile.backends.report import build_report
from acompile.simulation import load_compiled, simulate as run_folder
from helpers import cli, compiled, ort_outputs, simulate

F = T.FLOAT


def _vi(name, shape, elem=F):
    return h.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    model = h.make_model(h.make_graph(nodes, "g", inputs, outputs, list(inits)),
                         opset_imports=[h.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _weight(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _agrees(model, feeds, tmp_path) -> None:
    """Simulated (in process, and from the compiled folder) as onnxruntime runs it; mapped.onnx passes the
    checker."""
    want = ort_outputs(model, feeds)
    comp = compiled(model)
    for got, ref in zip(simulate(comp, feeds), want):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)
    onnx.checker.check_model(mapped_model(comp, build_report(comp)), full_check=True)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    np.savez(tmp_path / "feeds.npz", **feeds)
    code, _, err = cli("compile", str(path), "-t", "isaac", "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    out = run_folder(load_compiled(tmp_path / "out", mode="ideal"), feeds)
    for name, ref in zip([o.name for o in model.graph.output], want):
        np.testing.assert_allclose(np.asarray(out[name]), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_a_list_built_in_a_loop_starts_empty_with_its_element_type(tmp_path):
    """TorchScript's loops append to a list: SequenceEmpty(int64) carried by a Loop. Folding must not make
    it an array, and the empty list keeps its element type when the Loop runs."""
    body = h.make_graph(
        [h.make_node("MatMul", ["x", "W"], ["y"]), h.make_node("ArgMax", ["y"], ["k"], axis=1, keepdims=0),
         h.make_node("SequenceInsert", ["seq_in", "k"], ["seq_out"]), h.make_node("Identity", ["c_in"], ["c_out"])],
        "body", [_vi("i", [], T.INT64), _vi("c_in", [], T.BOOL),
                 h.make_tensor_sequence_value_info("seq_in", T.INT64, [2])],
        [_vi("c_out", [], T.BOOL), h.make_tensor_sequence_value_info("seq_out", T.INT64, [2])])
    nodes = [h.make_node("SequenceEmpty", [], ["empty"], dtype=T.INT64),
             h.make_node("Loop", ["n", "", "empty"], ["seq"], body=body),
             h.make_node("ConcatFromSequence", ["seq"], ["ks"], axis=0, new_axis=1)]
    model = _model(nodes, [_vi("x", [2, 4])], [_vi("ks", [3, 2], T.INT64)],
                   [numpy_helper.from_array(_weight(4, 3), "W"), numpy_helper.from_array(np.array(3, np.int64), "n")])
    _agrees(model, {"x": _weight(2, 4, seed=1)}, tmp_path)


def test_a_weight_taken_from_a_constant_sequence(tmp_path):
    nodes = [h.make_node("SplitToSequence", ["Ws", "split"], ["s"], axis=0),
             h.make_node("SequenceAt", ["s", "one"], ["W3"]),
             h.make_node("Squeeze", ["W3", "zero"], ["W"]),
             h.make_node("MatMul", ["x", "W"], ["y"])]
    inits = [numpy_helper.from_array(_weight(2, 4, 3), "Ws"),
             numpy_helper.from_array(np.array([1, 1], np.int64), "split"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero")]
    model = _model(nodes, [_vi("x", [2, 4])], [_vi("y", [2, 3])], inits)
    _agrees(model, {"x": _weight(2, 4, seed=1)}, tmp_path)


def test_sequence_map_reads_a_weight_of_the_enclosing_graph(tmp_path):
    body = h.make_graph([h.make_node("MatMul", ["e", "Wm"], ["o"]), h.make_node("Relu", ["o"], ["r"])], "m",
                        [_vi("e", [2, 4])], [_vi("r", [2, 3])])
    nodes = [h.make_node("SplitToSequence", ["x"], ["s"], axis=0, keepdims=0),
             h.make_node("SequenceMap", ["s"], ["s2"], body=body),
             h.make_node("ConcatFromSequence", ["s2"], ["y"], axis=0, new_axis=1)]
    model = _model(nodes, [_vi("x", [3, 2, 4])], [_vi("y", [3, 2, 3])], [numpy_helper.from_array(_weight(4, 3), "Wm")])
    _agrees(model, {"x": _weight(3, 2, 4, seed=1)}, tmp_path)


def _empty_optional(*consumers, outputs):
    tp = h.make_tensor_type_proto(F, [2, 3])
    return [h.make_node("Optional", [], ["o"], type=tp), *consumers], outputs


def test_an_empty_optional_steers_its_if_at_compile_time(tmp_path):
    then_g = h.make_graph([h.make_node("OptionalGetElement", ["o"], ["r"])], "then", [], [_vi("r", [2, 3])])
    else_g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["r2"])], "else", [], [_vi("r2", [2, 3])])
    nodes, outputs = _empty_optional(h.make_node("OptionalHasElement", ["o"], ["has"]),
                                     h.make_node("If", ["has"], ["y"], then_branch=then_g, else_branch=else_g),
                                     outputs=[_vi("y", [2, 3])])
    model = _model(nodes, [_vi("x", [2, 4])], outputs, [numpy_helper.from_array(_weight(4, 3), "W")], opset=18)
    _agrees(model, {"x": _weight(2, 4, seed=1)}, tmp_path)
    left = {n.op_type for n in compiled(model).graph.nodes}
    assert not left & {"If", "Optional", "OptionalHasElement", "MatMul"}       # the MatMul on crossbars


def test_a_type_attribute_survives_the_program_files(tmp_path):
    """Optional's ``type`` (a TypeProto) is kept whole: run in process, from program.json, in mapped.onnx."""
    nodes, outputs = _empty_optional(h.make_node("OptionalHasElement", ["o"], ["has"]),
                                     h.make_node("MatMul", ["x", "W"], ["y"]),
                                     outputs=[_vi("has", [], T.BOOL), _vi("y", [2, 3])])
    model = _model(nodes, [_vi("x", [2, 4])], outputs, [numpy_helper.from_array(_weight(4, 3), "W")], opset=18)
    _agrees(model, {"x": _weight(2, 4, seed=1)}, tmp_path)
    program = json.loads((tmp_path / "out" / "program.json").read_text())
    (optional,) = [n for n in program["ops"] if n["op"] == "Optional"]
    assert set(optional["attrs"]["type"]) == {"attribute", "kind"}
    node = next(n for n in onnx.load(str(tmp_path / "out" / "mapped.onnx")).graph.node if n.op_type == "Optional")
    assert node.attribute[0].tp.tensor_type.elem_type == F


def test_a_sequence_output_keeps_its_type_in_mapped_onnx(tmp_path):
    nodes = [h.make_node("MatMul", ["x", "W"], ["a"]), h.make_node("SplitToSequence", ["a"], ["s"], axis=1)]
    model = _model(nodes, [_vi("x", [2, 4])], [h.make_tensor_sequence_value_info("s", F, [2, 1])],
                   [numpy_helper.from_array(_weight(4, 3), "W")])
    comp = compiled(model)
    mapped = mapped_model(comp, build_report(comp))
    onnx.checker.check_model(mapped, full_check=True)
    assert mapped.graph.output[0].type.HasField("sequence_type")


def test_an_if_copied_out_of_an_unrolled_scan_reads_the_copies(tmp_path):
    """Each step's copy of the If reads that step's values: in mapped.onnx its branches do too."""
    then_g = h.make_graph([h.make_node("Add", ["p", "bias"], ["r"])], "then", [], [_vi("r", [1, 4])])
    else_g = h.make_graph([h.make_node("Sub", ["p", "bias"], ["r"])], "else", [], [_vi("r", [1, 4])])
    body = h.make_graph(
        [h.make_node("MatMul", ["x_t", "Wx"], ["p"]), h.make_node("ReduceSum", ["x_t"], ["sm"], keepdims=0),
         h.make_node("Greater", ["sm", "z"], ["c"]),
         h.make_node("If", ["c"], ["r"], then_branch=then_g, else_branch=else_g),
         h.make_node("Add", ["h_in", "r"], ["h_out"]), h.make_node("Identity", ["r"], ["y_t"])],
        "body", [_vi("h_in", [1, 4]), _vi("x_t", [1, 3])], [_vi("h_out", [1, 4]), _vi("y_t", [1, 4])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "z")])
    nodes = [h.make_node("Scan", ["h0", "x"], ["hT", "ys"], body=body, num_scan_inputs=1)]
    model = _model(nodes, [_vi("h0", [1, 4]), _vi("x", [4, 1, 3]), _vi("bias", [1, 4])],
                   [_vi("hT", [1, 4]), _vi("ys", [4, 1, 4])], [numpy_helper.from_array(_weight(3, 4), "Wx")], opset=16)
    feeds = {"h0": _weight(1, 4, seed=1), "x": _weight(4, 1, 3, seed=2), "bias": _weight(1, 4, seed=3)}
    _agrees(model, feeds, tmp_path)
    assert not any(n.op_type == "Scan" for n in compiled(model).graph.nodes)     # unrolled


def test_a_batched_scan_8_is_named(tmp_path):
    body = h.make_graph([h.make_node("MatMul", ["x_t", "Wx"], ["b"]), h.make_node("Add", ["h_in", "b"], ["h_out"])],
                        "body", [_vi("h_in", [4]), _vi("x_t", [3])], [_vi("h_out", [4])])
    nodes = [h.make_node("Scan", ["", "h0", "x"], ["hT"], body=body, num_scan_inputs=1, name="rnn")]
    model = _model(nodes, [_vi("h0", [2, 4]), _vi("x", [2, 5, 3])], [_vi("hT", [2, 4])],
                   [numpy_helper.from_array(_weight(3, 4), "Wx")], opset=8)
    ort_outputs(model, {"h0": _weight(2, 4), "x": _weight(2, 5, 3)})      # onnxruntime runs it
    onnx.save(model, str(tmp_path / "m.onnx"))
    code, out, _ = cli("check", str(tmp_path / "m.onnx"), "-t", "isaac", "--format", "json")
    assert code == 1
    (reason,) = json.loads(out)["results"][0]["reasons"]
    assert (reason["node"], reason["op_type"], reason["opset"]) == ("rnn", "Scan", 8)
    assert "batch axis" in reason["message"]
