"""contrib_fused: the com.microsoft FusedConv, FusedGemm and FusedMatMul of a model onnxruntime optimized and
saved become the ONNX operators they fuse, so their weights go onto crossbars, and the outputs stay
onnxruntime's for every activation and parameter they carry."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import compiled, ort_outputs, simulate

RNG = np.random.default_rng(11)
X = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)


def _model(nodes, inputs, inits, outputs=("y",)):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                   for o in outputs],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def _conv(activation, params=None, summed=False):
    inits = {"w": (RNG.standard_normal((4, 3, 3, 3)) * 0.4).astype(np.float32),
             "b": RNG.standard_normal(4).astype(np.float32)}
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X.shape))]
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], **({"activation": activation} if activation else {})}
    if params is not None:
        attrs["activation_params"] = params
    names = ["x", "w", "b"]
    feeds = {"x": X}
    if summed:
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4, 8, 8]))
        feeds["z"] = RNG.standard_normal((2, 4, 8, 8)).astype(np.float32)
        names.append("z")
    node = helper.make_node("FusedConv", names, ["y"], "fused", domain="com.microsoft", **attrs)
    return _model([node], inputs, inits), feeds


CONVS = {"no_activation": (None, None),        # a Conv and the Add after it (a residual projection)
         "relu": ("Relu", None), "leaky_relu": ("LeakyRelu", [0.2]), "clip": ("Clip", [-0.5, 1.5]),
         "hard_sigmoid": ("HardSigmoid", [0.25, 0.4]), "sigmoid": ("Sigmoid", None), "tanh": ("Tanh", None)}


def _close(model, feeds, c):
    for got, want in zip(simulate(c, feeds), ort_outputs(model, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", sorted(CONVS))
def test_a_fused_conv_maps_with_its_activation_as_onnxruntime_applies_it(case):
    model, feeds = _conv(*CONVS[case], summed=case in ("relu", "no_activation"))
    c = compiled(model)
    assert [layer.op_type for layer in c.mapping.layers] == ["Conv"]
    assert not [n for n in c.graph.nodes if n.domain == "com.microsoft"]
    _close(model, feeds, c)


GEMM_ACTIVATIONS = {"leaky_relu": {"activation": "LeakyRelu", "activation_alpha": 0.3},
                    "hard_sigmoid": {"activation": "HardSigmoid", "activation_alpha": 0.3, "activation_beta": 0.4},
                    "selu": {"activation": "Selu", "activation_alpha": 1.5, "activation_gamma": 1.2},
                    "tanh": {"activation": "Tanh"}}


@pytest.mark.parametrize("case", sorted(GEMM_ACTIVATIONS))
def test_a_fused_gemm_maps_with_its_scales_and_activation(case):
    w = RNG.standard_normal((5, 6)).astype(np.float32)
    node = helper.make_node("FusedGemm", ["x", "w", "c"], ["y"], "gemm", domain="com.microsoft", transB=1,
                            alpha=0.5, beta=2.0, **GEMM_ACTIVATIONS[case])
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
                   {"w": w, "c": RNG.standard_normal(5).astype(np.float32)})
    c = compiled(model)
    assert [layer.matrices[0].k_in for layer in c.mapping.layers] == [6]
    _close(model, {"x": RNG.standard_normal((4, 6)).astype(np.float32)}, c)


@pytest.mark.parametrize("trans", [(0, 0), (0, 1), (1, 0)])
def test_a_fused_matmul_by_a_constant_maps_with_its_transposes_and_scale(trans):
    trans_a, trans_b = trans
    x_shape = [2, 7, 6] if not trans_a else [2, 6, 7]
    w = RNG.standard_normal((5, 6) if trans_b else (6, 5)).astype(np.float32)
    node = helper.make_node("FusedMatMul", ["x", "w"], ["y"], "mm", domain="com.microsoft", alpha=0.25,
                            transA=trans_a, transB=trans_b)
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)], {"w": w})
    c = compiled(model)
    assert [layer.matrices[0].k_in for layer in c.mapping.layers] == [6]
    _close(model, {"x": RNG.standard_normal(x_shape).astype(np.float32)}, c)


def test_what_has_no_onnx_form_stays_fused_digital_and_costed():
    node = helper.make_node("FusedMatMul", ["x", "w"], ["y"], "mm", domain="com.microsoft", transBatchA=1)
    x_shape = [2, 3, 6]          # read as (3, 2, 6): transBatchA swaps the batch axis and the first
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                   {"w": RNG.standard_normal((3, 6, 5)).astype(np.float32)})
    c = compiled(model)
    assert not c.mapping.layers
    (cost,) = c.cost["digital"]
    assert cost["op_type"] == "FusedMatMul" and cost["counts"]["digital_ops"] == (2 * 6 + 1) * 2 * 3 * 5
    _close(model, {"x": RNG.standard_normal(x_shape).astype(np.float32)}, c)


def test_a_blocked_layout_convolution_onnxruntime_saved_is_costed_as_its_products(tmp_path):
    """onnxruntime's highest level saves convolutions in its NCHWc layout for this machine's vectors: they
    stay digital, and cost the multiply-accumulates of their (reordered) weights, not one op per output."""
    w = (RNG.standard_normal((16, 16, 3, 3)) * 0.2).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])], {"w": w})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "saved.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    saved = onnx.load(tmp_path / "saved.onnx")
    if "com.microsoft.nchwc" not in {n.domain for n in saved.graph.node}:
        pytest.skip("onnxruntime writes no NCHWc nodes on this CPU")
    c = compiled(saved)
    (cost,) = [d for d in c.cost["digital"] if d["op_type"] == "Conv"]
    assert cost["counts"]["digital_ops"] >= 2 * 16 * 9 * 16 * 64 and "estimated" not in cost


@pytest.mark.parametrize("channels", [3, 1])     # 1: the last axis is shorter than the kernel, channels not space
def test_a_channels_last_qlinearconv_maps_with_the_models_integers(channels):
    """onnxruntime's highest level saves a quantized CNN's convolutions as com.microsoft QLinearConv on NHWC
    data (channels_last): the model's integers go onto crossbars between two Transposes, and the outputs are
    onnxruntime's exactly (uint8 weights: its u8u8 kernels do not saturate)."""
    w = RNG.integers(100, 156, (4, channels, 3, 3)).astype(np.uint8)
    inits = {"x_scale": np.float32(0.02), "x_zero": np.uint8(128), "w": w, "w_scale": np.float32(0.01),
             "w_zero": np.uint8(128), "y_scale": np.float32(0.05), "y_zero": np.uint8(120),
             "b": RNG.integers(-500, 500, 4).astype(np.int32)}
    names = ["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero", "b"]
    node = helper.make_node("QLinearConv", names, ["y"], "qconv", domain="com.microsoft", channels_last=1,
                            kernel_shape=[3, 3])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 6, 6, channels])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    imports = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=imports)
    c = compiled(model)
    assert [layer.op_type for layer in c.mapping.layers] == ["Conv"] and c.mapping.layers[0].model_quant
    x = RNG.integers(0, 256, (2, 6, 6, channels)).astype(np.uint8)
    for mode in ("ideal", "quantized"):
        (got,), (want,) = simulate(c, {"x": x}, mode=mode), ort_outputs(model, {"x": x})
        assert got.shape == want.shape and np.array_equal(got, want)
