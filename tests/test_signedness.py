"""A layer's input is unsigned only when the graph proves it non-negative, or --input-range says so
for a model input; calibration values never decide it (issue 12, item 7)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from acompile import compile_model
from acompile.compiler import Options
from acompile.errors import UsageError
from acompile.frontend.load import load_model_proto
from acompile.passes.precision import non_negative_values

RNG = np.random.default_rng(0)


def _model(nodes, inits, in_shape=(1, 8), out="y", out_shape=(1, 4)) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


def _gemm(inp: str, out: str = "y", k: int = 8) -> tuple[onnx.NodeProto, dict]:
    w = RNG.standard_normal((k, 4)).astype(np.float32)
    return helper.make_node("MatMul", [inp, "w"], [out]), {"w": w}


def _signed(model: onnx.ModelProto, **options) -> list[bool]:
    comp = compile_model(model, "isaac", Options(**options))
    return [layer.input_signed for layer in comp.mapping.layers]


def test_positive_calibration_data_does_not_make_the_model_input_unsigned():
    mm, w = _gemm("x")
    calib = {"x": np.abs(RNG.standard_normal((16, 8))).astype(np.float32)}
    assert _signed(_model([mm], w), calibration=calib) == [True]


def test_input_range_declares_a_model_input_non_negative():
    mm, w = _gemm("x")
    assert _signed(_model([mm], w), input_ranges={"x": (0.0, 1.0)}) == [False]
    assert _signed(_model([mm], w), input_ranges={"x": (-1.0, 1.0)}) == [True]
    with pytest.raises(UsageError, match="not a model input"):
        _signed(_model([mm], w), input_ranges={"nope": (0.0, 1.0)})


def test_relu_makes_the_next_layer_unsigned():
    mm, w = _gemm("r")
    assert _signed(_model([helper.make_node("Relu", ["x"], ["r"]), mm], w)) == [False]


def _resize_graph(mode: str):
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Resize", ["r", "", "scales"], ["y"], mode=mode)]
    model = _model(nodes, {"scales": np.array([1, 1, 2, 2], np.float32)}, in_shape=(1, 1, 4, 4),
                   out_shape=(1, 1, 8, 8))
    return load_model_proto(model)


def test_cubic_resize_does_not_keep_the_sign_but_nearest_and_linear_do():
    assert "y" in non_negative_values(_resize_graph("nearest"))
    assert "y" in non_negative_values(_resize_graph("linear"))
    assert "y" not in non_negative_values(_resize_graph("cubic"))
    # cubic interpolation really overshoots below zero on non-negative data
    import onnxruntime as ort
    model = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")],
                   {"scales": np.array([1, 1, 4, 4], np.float32)}, in_shape=(1, 1, 4, 4), out_shape=(1, 1, 16, 16))
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = 1.0
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert y.min() < 0


def _qdq(zero_point: np.ndarray | None, relu: bool):
    src = "r" if relu else "x"
    inits = {"s": np.array(0.1, np.float32)}
    q_in, dq_in = [src, "s"], ["q", "s"]
    if zero_point is not None:
        inits["zp"] = zero_point
        q_in.append("zp")
        dq_in.append("zp")
    nodes = ([helper.make_node("Relu", ["x"], ["r"])] if relu else []) + [
        helper.make_node("QuantizeLinear", q_in, ["q"]), helper.make_node("DequantizeLinear", dq_in, ["y"])]
    return non_negative_values(load_model_proto(_model(nodes, inits, out_shape=(1, 8))))


def test_quantize_linear_with_a_zero_point_of_zero_is_non_negative():
    assert "y" in _qdq(np.array(0, np.uint8), relu=False)          # uint8, zero point 0: q >= 0
    assert "y" in _qdq(None, relu=False)                           # default: uint8, zero point 0
    assert "y" not in _qdq(np.array(128, np.uint8), relu=False)    # q - 128 can be negative
    assert "y" not in _qdq(np.array(0, np.int8), relu=False)       # int8 q can be negative
    assert "y" in _qdq(np.array(0, np.int8), relu=True)            # ... unless its input is >= 0


def test_a_constant_is_non_negative_only_if_every_element_is():
    g = _resize_graph("nearest")
    cases = {"pos": np.array([0.0, 2.0], np.float32), "neg_later": np.array([1.0, -1.0], np.float32),
             "nan_later": np.array([1.0, np.nan], np.float32), "nan_first": np.array([np.nan, 1.0], np.float32),
             "ints": np.array([3, 0], np.int64), "empty": np.zeros(0, np.float32)}
    g.constants.update(cases)
    known = non_negative_values(g)
    assert {k for k in cases if k in known} == {"pos", "ints"}
