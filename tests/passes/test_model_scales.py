"""model_scales: QOperator/integer ops become the QDQ form, and QDQ layers' scales are recorded.

qonnx style: onnxruntime on the graph exported before the pass and after it agrees (the integer
product exactly; a requantized output within one step, where float rounding meets a tie).
"""

import numpy as np
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
