"""Models at the edges of the opset range and of the element types, as exporters and converters write them:
integer products stay exact, what onnx's version converter leaves wrong is put right or named, a 4-bit
QuantizeLinear output runs, and an overflowing output is compared without a crash."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper

from acompile.simulation import compare
from helpers import cli, compiled, ort_outputs, simulate


def _model(nodes, inputs, outputs, inits=(), opset=17, ir_version=8):
    model = h.make_model(h.make_graph(nodes, "g", inputs, outputs, list(inits)),
                         opset_imports=[h.make_opsetid("", opset)], ir_version=ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def _same(model, feeds) -> None:
    """Simulated in ideal mode exactly as onnxruntime runs it, in its types."""
    for got, want in zip(simulate(compiled(model), feeds), ort_outputs(model, feeds)):
        assert np.asarray(got).dtype == want.dtype
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("elem, dtype", [(T.INT32, np.int32), (T.INT64, np.int64)])
def test_an_integer_product_stays_exact_integer_arithmetic(elem, dtype):
    """int32/int64 MatMul with a constant weight: onnxruntime's exact integer results (beyond 2^24, where
    float32 GEMMs round), in the model's type, and the integer Div after it divides integers."""
    rng = np.random.default_rng(0)
    w = rng.integers(-(1 << 20), 1 << 20, size=(4, 3)).astype(dtype)
    nodes = [h.make_node("MatMul", ["x", "W"], ["p"]), h.make_node("Div", ["p", "seven"], ["y"])]
    model = _model(nodes, [h.make_tensor_value_info("x", elem, [2, 4])], [h.make_tensor_value_info("y", elem, [2, 3])],
                   [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(7, dtype), "seven")])
    comp = compiled(model)
    assert not comp.mapping.layers         # the digital units' integer arithmetic, not crossbars
    x = rng.integers(-(1 << 10), 1 << 10, size=(2, 4)).astype(dtype)
    (got,), (want,) = simulate(comp, {"x": x}), ort_outputs(model, {"x": x})
    assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("mode", ["edge", "reflect", "constant"])
def test_pad_2_keeps_its_mode_through_the_converter(mode):
    """The converter leaves Pad-2's value attribute beside edge and reflect modes, where Pad-11 refuses it."""
    w = np.random.default_rng(1).normal(size=(2, 1, 3, 3)).astype(np.float32)
    nodes = [h.make_node("Pad", ["x"], ["p"], mode=mode, pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5),
             h.make_node("Conv", ["p", "W"], ["y"])]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 5, 5])],
                   [h.make_tensor_value_info("y", T.FLOAT, [1, 2, 6, 6])], [numpy_helper.from_array(w, "W")],
                   opset=10, ir_version=5)
    _same(model, {"x": np.random.default_rng(2).normal(size=(1, 1, 5, 5)).astype(np.float32)})


@pytest.mark.parametrize("out_type", [T.INT4, T.UINT4])
def test_quantize_linear_to_four_bits_without_a_zero_point(out_type):
    """QuantizeLinear-21 told its type by output_dtype: onnxruntime's binding cannot hand back 4-bit
    tensors, so it runs in numpy like the other 4-bit operators."""
    w = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    nodes = [h.make_node("QuantizeLinear", ["x", "s"], ["q"], output_dtype=out_type),
             h.make_node("DequantizeLinear", ["q", "s"], ["d"]), h.make_node("MatMul", ["d", "W"], ["y"])]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [2, 4])],
                   [h.make_tensor_value_info("y", T.FLOAT, [2, 3])],
                   [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(0.3, np.float32), "s")],
                   opset=21, ir_version=10)
    _same(model, {"x": np.random.default_rng(4).normal(size=(2, 4)).astype(np.float32)})


def _dropout_7(tmp_path, mask_read: bool):
    outputs = [h.make_tensor_value_info("y", T.FLOAT, [1, 4])] + \
        ([h.make_tensor_value_info("mask", T.FLOAT, [1, 4])] if mask_read else [])
    nodes = [h.make_node("MatMul", ["x", "W"], ["g"]), h.make_node("Dropout", ["g"], ["y", "mask"], ratio=0.3)]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 3])], outputs,
                   [numpy_helper.from_array(np.ones((3, 4), np.float32), "W")], opset=7, ir_version=4)
    ort_outputs(model, {"x": np.ones((1, 3), np.float32)})      # onnxruntime runs it
    onnx.save(model, str(tmp_path / "m.onnx"))
    return cli("check", str(tmp_path / "m.onnx"), "-t", "isaac", "--format", "json")


def test_the_mask_of_dropout_7_is_named(tmp_path):
    """Before opset 10 the mask has the data's type; the converter makes it bool under the old type."""
    code, out, _ = _dropout_7(tmp_path, mask_read=True)
    assert code == 1
    (reason,) = json.loads(out)["results"][0]["reasons"]
    assert (reason["node"], reason["op_type"], reason["opset"]) == ("Dropout", "Dropout", 7)
    assert _dropout_7(tmp_path, mask_read=False)[0] == 0      # unread, it converts


def test_an_output_that_overflowed_is_compared():
    """A float64 model's values beyond float32 come back infinite: the comparison says so, no crash."""
    ref = {"y": np.array([1e39, -2e39])}
    entry = compare({"y": np.array([np.inf, -np.inf])}, ref)["y"]
    assert entry["relative_error"] == math.inf and entry["snr_db"] == -math.inf
    assert compare({"y": np.zeros(2)}, {"y": np.zeros(2)})["y"]["snr_db"] == math.inf


def test_nan_the_model_computes_is_met_not_counted_as_error():
    """A fully masked attention row is NaN in onnxruntime's output: the same NaN in the simulated output is
    counted apart, and the rest compared."""
    ref = {"y": np.array([[np.nan, np.nan], [1.0, 2.0]])}
    entry = compare({"y": np.array([[np.nan, np.nan], [1.0, 2.5]])}, ref)["y"]
    assert entry["nan_in_both"] == 2 and entry["max_abs_error"] == 0.5
    assert math.isnan(compare({"y": np.array([[0.0, 0.0], [1.0, 2.0]])}, ref)["y"]["max_abs_error"])


@pytest.mark.parametrize("op", ["LayerNormalization", "SimplifiedLayerNormalization"])
def test_onnxruntimes_own_onnx_domain_normalisations_pass_the_opset_converter(op):
    """onnxruntime's transformer optimizer writes LayerNormalization into opset-14 graphs (before ONNX had it)
    and SimplifiedLayerNormalization at any opset; onnxruntime runs both, and onnx's converter has no adapter
    for them: they were refused (exit 1) and now keep their meaning through the conversion."""
    rng = np.random.default_rng(8)
    nodes = [h.make_node("MatMul", ["x", "W"], ["m"]),
             h.make_node(op, ["m", "scale"] + (["bias"] if op == "LayerNormalization" else []), ["y"],
                         axis=-1, epsilon=1e-5)]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bias")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [3, 8])],
                         [h.make_tensor_value_info("y", T.FLOAT, [3, 6])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 14)], ir_version=8)     # no ONNX schema has it
    _same(model, {"x": rng.standard_normal((3, 8)).astype(np.float32)})
    assert [layer.op_type for layer in compiled(model).mapping.layers] == ["Linear"]


def test_a_model_before_opset_7_is_converted(tmp_path):
    """onnxruntime runs an opset-6 Conv and Sum: converted like any old model, it maps and matches."""
    w = np.random.default_rng(5).normal(size=(2, 1, 3, 3)).astype(np.float32)
    nodes = [h.make_node("Conv", ["x", "W"], ["c"], name="conv"), h.make_node("Sum", ["c", "c"], ["y"], name="sum")]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 5, 5])],
                   [h.make_tensor_value_info("y", T.FLOAT, [1, 2, 3, 3])], [numpy_helper.from_array(w, "W")],
                   opset=6, ir_version=4)
    _same(model, {"x": np.random.default_rng(6).normal(size=(1, 1, 5, 5)).astype(np.float32)})
    assert len(compiled(model).mapping.layers) == 1


def test_a_node_the_converter_cannot_bring_forward_is_named(tmp_path):
    """A broadcasting Add-5 after a BatchNormalization-5: onnx's converter needs a shape it does not infer
    at that opset and refuses the Add; check names it (exit 1)."""
    ones = np.ones((2,), np.float32)
    nodes = [h.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             h.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], is_test=1,
                         consumed_inputs=[0, 0, 0, 1, 1], name="bn"),
             h.make_node("Add", ["n", "a"], ["y"], broadcast=1, name="add")]
    inits = [numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "W"),
             *(numpy_helper.from_array(ones, k) for k in "sbmv"),
             numpy_helper.from_array(np.ones((2, 1, 1), np.float32), "a")]
    model = h.make_model(h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 5, 5])],
                                      [h.make_tensor_value_info("y", T.FLOAT, [1, 2, 3, 3])], inits),
                         opset_imports=[h.make_opsetid("", 5)], ir_version=4)
    onnx.save(model, str(tmp_path / "m.onnx"))
    code, out, _ = cli("check", str(tmp_path / "m.onnx"), "-t", "isaac", "--format", "json")
    assert code == 1, out
    assert [(r["node"], r["opset"]) for r in json.loads(out)["results"][0]["reasons"]] == [("add", 5)]


def test_a_model_of_ai_onnx_ml_operators_only_needs_no_ai_onnx_import(tmp_path):
    """onnxmltools' XGBoost and CatBoost's own export import ai.onnx.ml alone: onnxruntime runs them, so
    acompile does (a model that uses ai.onnx operators without importing them stays bad input)."""
    nodes = [h.make_node("Normalizer", ["x"], ["n"], domain="ai.onnx.ml", norm="L2"),
             h.make_node("LinearRegressor", ["n"], ["y"], domain="ai.onnx.ml", coefficients=[0.5, -1.0, 2.0],
                         intercepts=[0.25])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 3])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2, 1])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("ai.onnx.ml", 1)], ir_version=8)
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "x.npy", np.array([[1, 2, 3], [-1, 0, 4]], np.float32))
    for command in (["check", str(tmp_path / "m.onnx")],
                    ["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o")],
                    ["run", str(tmp_path / "m.onnx"), "-i", str(tmp_path / "x.npy"), "--format", "json"]):
        code, out, err = cli(*command, "-t", "isaac")
        assert code == 0, err
    assert json.loads(out)["comparison"]["y"]["relative_error"] < 1e-6
    onnx.checker.check_model(onnx.load(str(tmp_path / "o" / "mapped.onnx")))
    model.graph.node.append(h.make_node("Relu", ["y"], ["z"]))
    model.graph.output[0].name = "z"
    onnx.save(model, str(tmp_path / "bad.onnx"))
    code, out, _ = cli("check", str(tmp_path / "bad.onnx"), "-t", "isaac")
    assert code == 2 and "uses ai.onnx operators but imports no ai.onnx opset" in out


@pytest.mark.parametrize("opset", [5, 13, 17])
def test_a_label_encoder_after_a_tree_ensemble_does_not_crash_onnx(tmp_path, opset):
    """skl2onnx's decision_path: a TreeEnsembleRegressor feeding a LabelEncoder. onnx 1.23's shape inference
    and version converter end the process (SIGSEGV) on it; acompile infers it apart and hides it from the
    converter, so it runs as onnxruntime runs it, whatever the opset it was written at."""
    tree = dict(nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[1, 0, 0],
                nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_values=[0.0, 0.0, 0.0],
                nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0], nodes_hitrates=[1.0] * 3,
                nodes_missing_value_tracks_true=[0] * 3, target_ids=[0, 0], target_nodeids=[1, 2],
                target_treeids=[0, 0], target_weights=[1.0, 2.0], n_targets=1, post_transform="NONE")
    nodes = [h.make_node("TreeEnsembleRegressor", ["X"], ["path"], domain="ai.onnx.ml", **tree),
             h.make_node("LabelEncoder", ["path"], ["y"], domain="ai.onnx.ml", keys_floats=[1.0, 2.0],
                         values_strings=["left", "right"], default_string="none")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("X", T.FLOAT, [None, 3])],
                         [h.make_tensor_value_info("y", T.STRING, None)])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset), h.make_opsetid("ai.onnx.ml", 2)],
                         ir_version=7)
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "x.npy", np.array([[0, -1, 0], [0, 1, 0]], np.float32))
    code, out, err = cli("run", str(tmp_path / "m.onnx"), "-t", "isaac", "-i", str(tmp_path / "x.npy"),
                         "-r", str(tmp_path / "r.npz"))
    assert code == 0, err
    with np.load(tmp_path / "r.npz") as r:
        assert r["y"].reshape(-1).tolist() == ["left", "right"]


def test_stft_without_onesided_is_one_sided():
    """STFT's onesided defaults to 1 (onnxruntime); onnx's shape inference takes the whole spectrum when the
    attribute is absent, which made the mel filterbank after it look the wrong size (exit 1)."""
    rng = np.random.default_rng(3)
    frame = numpy_helper.from_array(np.array(16, np.int64), "len")
    step = numpy_helper.from_array(np.array(8, np.int64), "step")
    mel = numpy_helper.from_array(rng.random((9, 4)).astype(np.float32), "mel")
    nodes = [h.make_node("STFT", ["x", "step", "", "len"], ["s"]),
             h.make_node("ReduceL2", ["s"], ["mag"], axes=[3], keepdims=0),
             h.make_node("MatMul", ["mag", "mel"], ["y"])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 64, 1])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 7, 4])], [frame, step, mel])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)    # onnx's own full
    onnx.checker.check_model(model)                                 # check refuses it: the inference bug
    _same(model, {"x": rng.normal(size=(1, 64, 1)).astype(np.float32)})
    assert [layer.op_type for layer in compiled(model).mapping.layers] == ["Conv", "Linear"]    # stft_conv


def test_a_model_that_cannot_run_at_batch_1_says_so(tmp_path):
    """hummingbird's trees Squeeze every size-1 axis, the batch among them at batch 1: onnxruntime runs the
    model at any batch but 1. A dynamic batch is costed at 1 by default, so check says which batch failed
    and how to give another; given one, the model maps."""
    rng = np.random.default_rng(7)
    nodes = [h.make_node("MatMul", ["x", "W"], ["p"]),                              # [N, 4]
             h.make_node("Transpose", ["p"], ["t"], perm=[1, 0]),                   # [4, N]
             h.make_node("Reshape", ["t", "to3"], ["r"]),                           # [4, 1, N]
             h.make_node("Squeeze", ["r"], ["s"]),                                  # [4, N]; [4] at N = 1
             h.make_node("Transpose", ["s"], ["y"], perm=[1, 0])]
    inits = [numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array([4, 1, -1], np.int64), "to3")]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 6])],
                   [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])], inits)
    onnx.save(model, str(tmp_path / "m.onnx"))
    code, out, _ = cli("check", str(tmp_path / "m.onnx"), "-t", "isaac")
    assert code == 2 and "(at batch 1: the model runs at batch 2, not at 1)" in out and "--input-shape" in out
    assert cli("check", str(tmp_path / "m.onnx"), "-t", "isaac", "--input-shape", "x:3,6")[0] == 0
    feeds = {"x": rng.normal(size=(3, 6)).astype(np.float32)}
    (got,) = simulate(compiled(model, batch=3), feeds)
    np.testing.assert_allclose(got, ort_outputs(model, feeds)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 2), (11, -2), (11, -1), (9, None), (12, 0)])
def test_hardmax_before_opset_13_reduces_over_its_flattened_axes(opset, axis):
    """Hardmax before opset 13 takes [N, C, H, W] as a matrix of the axes before ``axis`` by those from it,
    one maximum per row; onnx's converter kept ``axis`` as a single axis (Hardmax-13's meaning): the
    outputs were wrong by far (relative error 2.6 to 7.9), in a branch run by onnxruntime too."""
    rng = np.random.default_rng(11)
    attrs = {} if axis is None else {"axis": axis}
    x = h.make_tensor_value_info("x", T.FLOAT, [2, 3, 4, 5])
    y = h.make_tensor_value_info("y", T.FLOAT, [2, 3, 4, 5])
    w = numpy_helper.from_array(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "w")
    feeds = {"x": rng.standard_normal((2, 3, 4, 5)).astype(np.float32)}
    _same(_model([h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Hardmax", ["c"], ["y"], **attrs)],
                 [x], [y], [w], opset=opset), feeds)
    branch = h.make_graph([h.make_node("Hardmax", ["c"], ["b"], **attrs)], "then", [],
                          [h.make_tensor_value_info("b", T.FLOAT, [2, 3, 4, 5])])
    other = h.make_graph([h.make_node("Identity", ["c"], ["o"])], "else", [],
                         [h.make_tensor_value_info("o", T.FLOAT, [2, 3, 4, 5])])
    nodes = [h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("If", ["cond"], ["y"], then_branch=branch,
                                                                   else_branch=other)]
    model = _model(nodes, [x, h.make_tensor_value_info("cond", T.BOOL, [])], [y], [w], opset=opset)
    _same(model, {**feeds, "cond": np.array(True)})
