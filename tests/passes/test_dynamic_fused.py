"""onnxruntime fuses quantize_dynamic's DynamicQuantizeLinear -> MatMulInteger -> scale (-> bias) into
com.microsoft DynamicQuantizeMatMul or MatMulIntegerToFloat when it saves a model it optimized: they
become that chain again (qoperator), so the model's integer weights go onto crossbars and the outputs stay
onnxruntime's."""

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper, numpy_helper

import models
from helpers import compiled, ort_outputs, simulate

RNG = np.random.default_rng(5)
# 7-bit weights: onnxruntime's u8s8 kernels cannot saturate on a CPU without VNNI, so it is exact
W = RNG.integers(-63, 64, (12, 6)).astype(np.int8)
PER_COLUMN = (RNG.random(6) * 0.05 + 0.01).astype(np.float32)


def _model(op, per_column, bias):
    inits = {"w": W, "w_scale": PER_COLUMN if per_column else np.float32(0.02)}
    if op == "DynamicQuantizeMatMul":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 12])
        names = ["x", "w", "w_scale", "", "bias" if bias else ""]
    else:
        x = helper.make_tensor_value_info("x", TensorProto.UINT8, [3, 12])
        inits.update(x_scale=np.float32(0.05), x_zero=np.uint8(128))
        names = ["x", "w", "x_scale", "w_scale", "x_zero", "", "bias" if bias else ""]
    if bias:
        inits["bias"] = RNG.standard_normal(6).astype(np.float32)
    while not names[-1]:
        names.pop()
    node = helper.make_node(op, names, ["y"], "fused", domain="com.microsoft")
    graph = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("op", ["DynamicQuantizeMatMul", "MatMulIntegerToFloat"])
@pytest.mark.parametrize("per_column, bias", [(False, False), (True, True)])
def test_a_fused_dynamic_product_puts_the_models_integers_on_crossbars(op, per_column, bias):
    model = _model(op, per_column, bias)
    c = compiled(model)
    (layer,) = c.mapping.layers
    assert layer.model_quant is not None and layer.matrices[0].k_in == 12
    x = RNG.standard_normal((3, 12)).astype(np.float32) if op == "DynamicQuantizeMatMul" \
        else RNG.integers(0, 256, (3, 12)).astype(np.uint8)
    for mode in ("ideal", "quantized"):
        for got, want in zip(simulate(c, {"x": x}, mode=mode), ort_outputs(model, {"x": x}), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_quantize_dynamic_s_lstm_is_costed_as_its_products_every_step(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    onnx.save(models.recurrent("LSTM", hidden=8, inputs=4, seq=5, batch=2), tmp_path / "lstm.onnx")
    quantize_dynamic(tmp_path / "lstm.onnx", tmp_path / "int8.onnx", weight_type=QuantType.QInt8)
    quantized = onnx.load(tmp_path / "int8.onnx")
    assert [n.op_type for n in quantized.graph.node] == ["DynamicQuantizeLSTM"]
    (cost,) = compiled(quantized).cost["digital"]
    assert cost["counts"]["digital_ops"] == 5 * 2 * (2 * 32 * (4 + 8) + 10 * 8) and "estimated" not in cost
