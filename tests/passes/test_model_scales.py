"""model_scales: QOperator/integer ops become the QDQ form, and QDQ layers' scales are recorded.

qonnx style: onnxruntime on the graph exported before the pass and after it agrees (the integer
product exactly; a requantized output within one step, where float rounding meets a tie).
"""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from acompile.frontend.export import to_onnx
from acompile.frontend.load import load_model_proto
from acompile.passes.quantized_layers import model_scales
from frontend_passes import ort_run, run, state_of


def _model(nodes, x_type, y_type, inits, opset=17):
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", x_type, [4, 6])],
                              [helper.make_tensor_value_info("y", y_type, [4, 3])],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _check(model, feeds, atol):
    state = state_of(load_model_proto(model))
    before = ort_run(to_onnx(state.graph), feeds)
    run(state, model_scales)
    after = ort_run(to_onnx(state.graph), feeds)
    np.testing.assert_allclose(np.asarray(after[0], np.int64), np.asarray(before[0], np.int64), atol=atol)
    return state


def test_qlinear_matmul_becomes_dq_matmul_q_with_its_scales():
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (6, 3)).astype(np.int8)
    inits = {"sx": np.float32(0.05), "zx": np.uint8(120), "w": w, "sw": np.full(3, 0.02, np.float32),
             "zw": np.zeros(3, np.int8), "sy": np.float32(0.3), "zy": np.uint8(128)}
    node = helper.make_node("QLinearMatMul", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"], ["y"], name="qmm")
    x = rng.integers(0, 256, (4, 6)).astype(np.uint8)
    state = _check(_model([node], TensorProto.UINT8, TensorProto.UINT8, inits), {"x": x}, atol=1)
    assert [n.op_type for n in state.graph.nodes] == ["DequantizeLinear", "DequantizeLinear", "MatMul",
                                                       "QuantizeLinear"]
    rec = state.graph.meta["model_quant"]["qmm"]
    assert rec["weight_scales"] == [np.float32(0.02)] * 3 and rec["input_zero_point"] == 120
    assert rec["input_offset"] == 120 and rec["input_bits"] == 8
    assert state.facts == {"model_scales_read"}


def test_matmul_integer_keeps_the_exact_integer_product():
    rng = np.random.default_rng(1)
    inits = {"w": rng.integers(-127, 128, (6, 3)).astype(np.int8), "zx": np.uint8(37), "zw": np.int8(0)}
    node = helper.make_node("MatMulInteger", ["x", "w", "zx", "zw"], ["y"], name="mmi")
    x = rng.integers(0, 256, (4, 6)).astype(np.uint8)
    model = _model([node], TensorProto.UINT8, TensorProto.INT32, inits)
    state = state_of(load_model_proto(model))
    run(state, model_scales)
    after = ort_run(to_onnx(state.graph), {"x": x})
    # the exact product, not onnxruntime's MatMulInteger: its u8s8 kernel saturates pairs of products
    # at int16 on x86 CPUs without VNNI
    exact = (x.astype(np.int64) - 37) @ inits["w"].astype(np.int64)
    np.testing.assert_array_equal(np.asarray(after[0], np.int64), exact)
    ops = [n.op_type for n in state.graph.nodes]
    assert "MatMulInteger" not in ops and "MatMul" in ops
    rec = state.graph.meta["model_quant"]["mmi"]
    assert rec["weight_scales"] == [1.0] * 3 and rec["input_scale"] == 1.0 and rec["input_offset"] == 0


def _conv_integer_model(x_shape, w, attrs, zero_point, opset=17):
    """x (uint8) -> ConvInteger(w, zp_x) -> y (int32); zp_x a constant, or DynamicQuantizeLinear's of a float x."""
    nodes, inits = [], {"w": w}
    if zero_point is None:          # dynamic: x_q and zp_x from DynamicQuantizeLinear of a float input
        nodes.append(helper.make_node("DynamicQuantizeLinear", ["xf"], ["x", "sx", "zx"]))
        x_in = helper.make_tensor_value_info("xf", TensorProto.FLOAT, list(x_shape))
    else:
        inits["zx"] = np.uint8(zero_point)
        x_in = helper.make_tensor_value_info("x", TensorProto.UINT8, list(x_shape))
    nodes.append(helper.make_node("ConvInteger", ["x", "w", "zx"], ["y"], name="ci", **attrs))
    graph = helper.make_graph(nodes, "ci", [x_in], [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 3, 9, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 3, 9, 8), (4, 3, 3, 2), {"pads": [0, 2, 1, 1], "strides": [2, 1]}),
    ((1, 4, 9, 9), (6, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2], "group": 2}),
    ((1, 3, 10, 7), (4, 3, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ((1, 3, 10, 7), (4, 3, 3, 3), {"pads": [2, 1, 2, 1], "dilations": [2, 1]}),
    ((1, 3, 9, 8), (4, 3, 3, 3), {"auto_pad": "VALID"}),
    ((1, 3, 17), (5, 3, 4), {"pads": [2, 1]}),
])
@pytest.mark.parametrize("zero_point", [37, None])
def test_conv_integer_padding_reads_the_zero_point_and_its_term_is_one_sum_per_channel(x_shape, w_shape, attrs,
                                                                                         zero_point):
    """ConvInteger pads x_q with zp_x: the rewrite pads explicitly (a Pad by zp_x), so zp_x's term is one
    weight sum per output channel, not a constant the size of the output; the integer product is the
    model's (inputs below 128 keep onnxruntime's u8s8 kernel from saturating)."""
    rng = np.random.default_rng(7)
    w = rng.integers(-100, 101, w_shape).astype(np.int8)
    model = _conv_integer_model(x_shape, w, attrs, zero_point)
    if zero_point is None:
        feeds = {"xf": (rng.random(x_shape) * 0.8 - 0.2).astype(np.float32)}    # its zero point is 51
    else:
        feeds = {"x": rng.integers(0, 128, x_shape).astype(np.uint8)}
    state = _check(model, feeds, atol=0)
    terms = [v for k, v in state.graph.constants.items() if k.endswith("_wsum")]
    assert len(terms) == 1 and terms[0].shape == (1, w_shape[0]) + (1,) * (len(w_shape) - 2)
    padded = any(attrs.get("pads", [0])) or attrs.get("auto_pad", "").startswith("SAME")
    assert [n.op_type for n in state.graph.nodes].count("Pad") == int(padded)
    conv = next(n for n in state.graph.nodes if n.op_type == "Conv")
    assert not any(conv.attrs.get("pads", [])) and conv.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")


def test_conv_integer_at_its_first_opset_pads_by_its_zero_point_too():
    """A model at opset 10 (ConvInteger's first, where Pad takes its value as an attribute) is brought to the
    current opset on load, so its padding becomes a Pad by the zero point too."""
    rng = np.random.default_rng(8)
    w = rng.integers(-100, 101, (4, 3, 3, 3)).astype(np.int8)
    model = _conv_integer_model((1, 3, 6, 5), w, {"pads": [1, 1, 1, 1]}, 37, opset=10)
    state = _check(model, {"x": rng.integers(0, 128, (1, 3, 6, 5)).astype(np.uint8)}, atol=0)
    (term,) = [v for k, v in state.graph.constants.items() if k.endswith("_wsum")]
    assert term.shape == (1, 4, 1, 1) and "Pad" in [n.op_type for n in state.graph.nodes]
