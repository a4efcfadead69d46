"""Ideal mode of a quantized (QDQ or QOperator) model equals onnxruntime bit for bit (docs/analog.md, "Ideal
mode of a quantized model").

Each model is one QDQ layer (QuantizeLinear/DequantizeLinear on the input, an int8 weight dequantized per
output channel, a float bias) whose float output before its QuantizeLinear is also a graph output: any
difference in the last bit of a sum shows there, where the quantized output would show one only when it
straddles a rounding boundary. The shapes are those that change onnxruntime's kernel: a narrow output
(blocks of K grow), a single row or column (kernels of their own), a Gemm's C, a depthwise Conv, small
images in a batch that numpy's path would multiply several at a time.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from acompile.backends.program_reader import load_program
from acompile.cli.app import main
from acompile.simulation import reference_outputs


def _qdq_model(x_shape, weight_q, layer) -> onnx.ModelProto:
    """x -> Q -> DQ -> layer(x, DQ(weight_q), b) -> yf -> Q -> DQ -> y; outputs y and yf."""
    rng = np.random.default_rng(1)
    n_out = weight_q.shape[layer.get("axis", 0)]
    inits = [numpy_helper.from_array(weight_q, "wq"),
             numpy_helper.from_array((rng.random(n_out) * 0.01 + 0.001).astype(np.float32), "ws"),
             numpy_helper.from_array(np.zeros(n_out, np.int8), "wz"),
             numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
             numpy_helper.from_array(np.array(128, layer.get("x_type", np.uint8)), "xz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
             numpy_helper.from_array(np.array(128, np.uint8), "yz")]
    op, attrs = layer["op"], layer.get("attrs", {})
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=layer.get("axis", 0))]
    if layer.get("float_weight"):       # a layer the quantizer left in floats: its weight a float constant
        scale = numpy_helper.to_array(inits[1]).reshape([-1 if a == layer.get("axis", 0) else 1
                                                        for a in range(weight_q.ndim)])
        inits.append(numpy_helper.from_array((weight_q * scale).astype(np.float32), "wd"))
        nodes.pop()
    if op == "MatMul":
        nodes += [helper.make_node("MatMul", ["xd", "wd"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["yf"])]
    else:
        nodes.append(helper.make_node(op, ["xd", "wd", "b"], ["yf"], **attrs))
    nodes += [helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "qdq_layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "yf")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", layer.get("opset", 17))], ir_version=10)


def _int8(*shape):
    return np.random.default_rng(2).integers(-127, 128, shape).astype(np.int8)


CASES = {
    # a Gemm whose 100 outputs two threads would split: its C first, on one thread
    "gemm_c_narrow": ((4, 256), _int8(100, 256), {"op": "Gemm", "attrs": {"transB": 1}}),
    "gemm_c_wide_k": ((16, 784), _int8(784, 300), {"op": "Gemm", "axis": 1}),
    "gemm_one_column": ((16, 300), _int8(1, 300), {"op": "Gemm", "attrs": {"transB": 1}}),
    # 16-bit activations on a target of 8 input bits: acompile requantizes the layer, and its ideal mode still
    # computes as the model's Gemm does
    "gemm_c_16_bit_inputs": ((4, 256), _int8(100, 256), {"op": "Gemm", "attrs": {"transB": 1}, "x_type": np.uint16,
                                                         "opset": 21, "set": ["precision.input_bits=8"]}),
    "matmul_one_row": ((1, 1, 1024), _int8(1024, 512), {"op": "MatMul", "axis": 1}),
    "matmul_3d": ((2, 50, 384), _int8(384, 512), {"op": "MatMul", "axis": 1}),
    # a layer the quantizer left in floats, in a quantized model
    "matmul_float_weight": ((2, 50, 384), _int8(384, 512), {"op": "MatMul", "axis": 1, "float_weight": True}),
    "gemm_float_weight": ((4, 256), _int8(100, 256), {"op": "Gemm", "attrs": {"transB": 1}, "float_weight": True}),
    "conv_float_weight": ((2, 32, 20, 20), _int8(64, 32, 3, 3),
                          {"op": "Conv", "attrs": {"pads": [1] * 4}, "float_weight": True}),
    "conv_depthwise": ((2, 32, 20, 20), _int8(32, 1, 3, 3), {"op": "Conv", "attrs": {"group": 32, "pads": [1] * 4}}),
    "conv_small_images": ((16, 256, 4, 4), _int8(64, 256, 3, 3), {"op": "Conv", "attrs": {"pads": [1] * 4}}),
    "conv_1d": ((2, 80, 300), _int8(192, 80, 3), {"op": "Conv", "attrs": {"pads": [1, 1], "strides": [2]}}),
    # weights (C_in, C_out, *kernel), per output channel along axis 1: the model's integers on the crossbars
    # too, a row per (output channel, kernel position); onnxruntime multiplies W^T by each image, then col2im
    "conv_transpose": ((2, 64, 16, 16), _int8(64, 32, 4, 4),
                       {"op": "ConvTranspose", "axis": 1, "attrs": {"strides": [2, 2], "pads": [1] * 4}}),
    "conv_transpose_1d": ((2, 256, 20), _int8(256, 128, 4),
                          {"op": "ConvTranspose", "axis": 1, "attrs": {"strides": [2], "pads": [1, 1]}}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ideal_mode_of_a_qdq_layer_equals_onnxruntime_to_the_bit(case, tmp_path):
    x_shape, weight_q, layer = CASES[case]
    model_path = tmp_path / "model.onnx"
    onnx.save(_qdq_model(x_shape, weight_q, layer), model_path)
    x = np.random.default_rng(3).standard_normal(x_shape).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    settings = [f"--set={value}" for value in layer.get("set", ())]
    assert main(["compile", str(model_path), "--target", "isaac", *settings, "-q", "-o", str(tmp_path / "out"),
                 "--emit", "program"]) == 0
    assert main(["simulate", str(tmp_path / "out"), "--input", str(tmp_path / "x.npz"), "-q",
                 "--result", str(tmp_path / "y.npz")]) == 0
    ours = np.load(tmp_path / "y.npz")
    reference = reference_outputs(model_path, {"x": x})
    (record,) = json.loads((tmp_path / "out" / "program.json").read_text())["layers"]
    rows = weight_q.shape[1] * math.prod(weight_q.shape[2:]) if layer["op"] == "ConvTranspose" else None
    if "x_type" in layer or layer.get("float_weight"):
        assert "model_quant" not in record and "model_op" in record
    else:
        (read,) = load_program(tmp_path / "out")[1].layers    # the scales program.json names or lists
        assert len(read.model_quant["weight_scales"]) == (rows or weight_q.shape[layer.get("axis", 0)])
    for name in ("yf", "y"):
        assert np.array_equal(ours[name], reference[name]), \
            f"{name}: {np.count_nonzero(ours[name] != reference[name])} of {ours[name].size} differ"


def _qoperator_model(op: str, x_shape, w_shape, axis: int, attrs=None, ties: bool = False) -> onnx.ModelProto:
    """x -> QuantizeLinear -> one QLinearConv, QLinearMatMul or com.microsoft QGemm (uint8 activations, per
    channel int8 weights of 7 bits, which onnxruntime's u8s8 kernels multiply without saturating on any CPU)
    -> DequantizeLinear -> y. ``ties``: small weights and one multiplier (s_x · s_w) / s_y of exactly 1/2, so
    that every odd sum is a tie the kernel rounds to even (a float product divided by s_y lands either side)."""
    rng = np.random.default_rng(4)
    n_out = w_shape[axis]
    w_scale = np.full(n_out, 0.003, np.float32) if ties else (rng.random(n_out) * 0.004 + 0.001).astype(np.float32)
    y_scale = np.float32(2 * 0.02 * 0.003) if ties else np.float32(0.05)
    low, high = (-3, 4) if ties else (-64, 64)
    inits = [numpy_helper.from_array(rng.integers(low, high, w_shape).astype(np.int8), "wq"),
             numpy_helper.from_array(w_scale, "ws"), numpy_helper.from_array(np.zeros(n_out, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.02, np.float32), "xs"), numpy_helper.from_array(np.uint8(128), "xz"),
             numpy_helper.from_array(np.array(y_scale), "ys"), numpy_helper.from_array(np.uint8(120), "yz"),
             numpy_helper.from_array(rng.integers(-3000, 3000, n_out).astype(np.int32) * (not ties), "b")]
    ins = {"QLinearConv": ["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz", "b"],
           "QLinearMatMul": ["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz"],
           "QGemm": ["xq", "xs", "xz", "wq", "ws", "wz", "b", "ys", "yz"]}[op]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node(op, ins, ["yq"], **(attrs or {}),
                              domain="com.microsoft" if op == "QGemm" or "channels_last" in (attrs or {}) else ""),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    graph = helper.make_graph(nodes, "qoperator_layer", [x_info],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=8)


QOPERATOR_CASES = {
    "qlinearconv": ("QLinearConv", (4, 128, 16, 16), (128, 128, 3, 3), 0, {"pads": [1] * 4}),
    "qlinearmatmul": ("QLinearMatMul", (2, 128, 512), (512, 384), 1, None),
    "qgemm_c": ("QGemm", (64, 784), (1024, 784), 0, {"transB": 1}),
    "qgemm_ties": ("QGemm", (64, 16), (64, 16), 0, {"transB": 1}),
    # onnxruntime's optimizer saves channels-last com.microsoft QLinearConv (NHWC data): its rewrite reads the
    # input codes through a Transpose
    "qlinearconv_channels_last": ("QLinearConv", (2, 12, 12, 64), (64, 64, 3, 3), 0,
                                  {"pads": [1] * 4, "channels_last": 1}),
}


@pytest.mark.parametrize("case", list(QOPERATOR_CASES))
def test_ideal_mode_of_a_qoperator_layer_equals_onnxruntime_to_the_bit(case, tmp_path):
    """onnxruntime's kernel requantizes the exact integer sum with one float32 multiplier; the float product
    and QuantizeLinear of acompile's rewrite would round some outputs a step away (sim/requantize.py)."""
    op, x_shape, w_shape, axis, attrs = QOPERATOR_CASES[case]
    model_path = tmp_path / "model.onnx"
    onnx.save(_qoperator_model(op, x_shape, w_shape, axis, attrs, ties="ties" in case), model_path)
    x = np.random.default_rng(5).standard_normal(x_shape).astype(np.float32) * (0.1 if "ties" in case else 2)
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["compile", str(model_path), "--target", "isaac", "-q", "-o", str(tmp_path / "out"),
                 "--emit", "program"]) == 0
    assert main(["simulate", str(tmp_path / "out"), "--input", str(tmp_path / "x.npz"), "-q",
                 "--result", str(tmp_path / "y.npz")]) == 0
    ours, reference = np.load(tmp_path / "y.npz")["y"], reference_outputs(model_path, {"x": x})["y"]
    assert np.array_equal(ours, reference), f"{np.count_nonzero(ours != reference)} of {ours.size} differ"


def test_run_says_nothing_of_saturating_kernels_where_the_outputs_agree(tmp_path):
    """The note that onnxruntime's u8s8 kernels saturate on this CPU (when they do) explains a difference;
    with 7-bit weights they cannot, the outputs agree, and run does not print it."""
    import json
    import contextlib
    import io
    op, x_shape, w_shape, axis, attrs = QOPERATOR_CASES["qgemm_c"]
    onnx.save(_qoperator_model(op, x_shape, w_shape, axis, attrs), tmp_path / "model.onnx")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(5).standard_normal(x_shape).astype(np.float32))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", str(tmp_path / "model.onnx"), "--target", "isaac", "--input", str(tmp_path / "x.npz"),
                     "--format", "json"]) == 0
    doc = json.loads(out.getvalue())
    assert doc["comparison"]["y"]["max_abs_error"] == 0 and "reference_caveat" not in doc


def _case_paths():
    """Every case on the fast path; the reference path (loops over row blocks, cycles and slices) on the
    small ones by default, on the large ones with ``-m slow``."""
    for case, (_, x_shape, w_shape, *_) in QOPERATOR_CASES.items():
        for path in ("fast", "reference"):
            large = path == "reference" and math.prod(x_shape) * w_shape[0] > 1 << 22
            yield pytest.param(case, path, id=f"{case}-{path}", marks=[pytest.mark.slow] if large else [])


@pytest.mark.parametrize("case, path", list(_case_paths()))
def test_quantized_mode_of_a_qoperator_layer_with_a_lossless_adc_is_onnxruntimes_integer_execution(case, path,
                                                                                                   tmp_path):
    """The crossbars' exact integer sums, requantized as the op's kernel does by the digital units."""
    op, x_shape, w_shape, axis, attrs = QOPERATOR_CASES[case]
    model_path = tmp_path / "model.onnx"
    onnx.save(_qoperator_model(op, x_shape, w_shape, axis, attrs, ties="ties" in case), model_path)
    x = np.random.default_rng(5).standard_normal(x_shape).astype(np.float32) * (0.1 if "ties" in case else 2)
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["compile", str(model_path), "--target", "isaac", "--set", "adc.bits=16", "-q",
                 "-o", str(tmp_path / "out"), "--emit", "program,device"]) == 0
    assert main(["simulate", str(tmp_path / "out"), "--input", str(tmp_path / "x.npz"), "-q", "--mode", "quantized",
                 "--path", path, "--result", str(tmp_path / "y.npz")]) == 0
    ours, reference = np.load(tmp_path / "y.npz")["y"], reference_outputs(model_path, {"x": x})["y"]
    assert np.array_equal(ours, reference), f"{np.count_nonzero(ours != reference)} of {ours.size} differ"


def test_an_integer_product_runs_on_every_core_and_a_qdq_layer_as_onnxruntime_does():
    """A ConvInteger's or MatMulInteger's product sums integers, exact in float32 whatever their order: ideal
    mode gives it numpy's and onnxruntime's threads. A QDQ layer's float product follows the model's op."""
    import corpus
    from acompile import compile_model, load_target
    from acompile.sim.gemm import follows_model
    target = load_target("isaac")
    dynamic = compile_model(str(corpus.path("q_cnn_dynamic")), target).mapping.layers
    assert dynamic and all(layer.model_quant and not follows_model(layer) for layer in dynamic)
    qdq = compile_model(str(corpus.path("q_cnn_qdq_channel")), target).mapping.layers
    assert qdq and all(follows_model(layer) for layer in qdq)
