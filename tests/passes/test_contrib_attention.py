"""contrib_attention: onnxruntime's fused com.microsoft Attention (its transformer optimizer's output) puts
its merged Q, K, V product on crossbars and answers as onnxruntime does, with every mask format, past
state, attention bias and attribute it carries; what MultiHeadAttention cannot stand for stays fused,
costed with its product."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from acompile.cli import main as cli_main
from helpers import compiled, ort_outputs, simulate

B, S, D, N, P = 2, 5, 16, 4, 3


def _model(mask=None, past=False, attention_bias=False, sizes=None, **attrs):
    """One com.microsoft Attention over x (B, S, D), with the mask of the kind named, and its feeds."""
    rng = np.random.default_rng(7)
    widths = sizes or [D, D, D]
    total = S + (P if past else 0)
    w = (rng.standard_normal((D, sum(widths))) * 0.3).astype(np.float32)
    bias = (rng.standard_normal(sum(widths)) * 0.1).astype(np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, D])]
    feeds = {"x": rng.standard_normal((B, S, D)).astype(np.float32)}
    masks = {"raw": np.array([[1] * total, [1] * (total - 2) + [0, 0]], np.int32),
             "raw_3d": (rng.random((B, S, total)) > 0.3).astype(np.int32),
             "lengths": np.array([total, total - 2], np.int32),
             "start_end": np.array([total, total - 1, 0, 1], np.int32)}
    names = ["x", "w", "b", "", "", ""]
    if mask:
        feeds["mask"] = masks[mask]
        feeds["mask"][..., 0] = 1 if mask == "raw_3d" else feeds["mask"][..., 0]
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, list(feeds["mask"].shape)))
        names[3] = "mask"
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if past:
        feeds["past"] = rng.standard_normal((2, B, N, P, D // N)).astype(np.float32)
        inputs.append(helper.make_tensor_value_info("past", TensorProto.FLOAT, [2, B, N, P, D // N]))
        outputs.append(helper.make_tensor_value_info("present", TensorProto.FLOAT, None))
        names[4] = "past"
    if attention_bias:
        feeds["ab"] = rng.standard_normal((1, N, S, total)).astype(np.float32)
        inputs.append(helper.make_tensor_value_info("ab", TensorProto.FLOAT, [1, N, S, total]))
        names[5] = "ab"
    while not names[-1]:
        names.pop()
    if sizes:
        attrs["qkv_hidden_sizes"] = sizes
    node = helper.make_node("Attention", names, [o.name for o in outputs], "attention", domain="com.microsoft",
                            num_heads=N, **attrs)
    graph = helper.make_graph([node], "g", inputs, outputs, [numpy_helper.from_array(w, "w"),
                                                             numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return model, feeds


CASES = {
    "plain": {}, "raw_mask": {"mask": "raw"}, "raw_3d_mask": {"mask": "raw_3d"}, "lengths": {"mask": "lengths"},
    "causal": {"unidirectional": 1}, "causal_raw_mask": {"mask": "raw", "unidirectional": 1},
    "past_present": {"past": True, "mask": "raw", "unidirectional": 1},
    "attention_bias": {"attention_bias": True, "mask": "raw"},
    "v_narrower": {"sizes": [D, D, 8]}, "scale_and_fill": {"mask": "raw", "scale": 0.3, "mask_filter_value": -100.0},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_merged_product_runs_on_crossbars_and_the_outputs_are_onnxruntimes(case):
    model, feeds = _model(**CASES[case])
    c = compiled(model)
    (layer,) = c.mapping.layers
    assert layer.matrices[0].k_in == D and layer.matrices[0].n_out == sum(CASES[case].get("sizes") or [3 * D])
    assert [n.op_type for n in c.graph.nodes if n.domain == "com.microsoft"] == ["MultiHeadAttention"]
    for got, want in zip(simulate(c, feeds), ort_outputs(model, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_mask_multiheadattention_cannot_read_leaves_the_attention_fused_and_costed_with_its_product():
    model, feeds = _model(mask="start_end")
    c = compiled(model)
    assert not c.mapping.layers
    (cost,) = [d for d in c.cost["digital"] if d["op_type"] == "Attention"]
    product = 2 * B * S * D * 3 * D
    scores = 2 * B * S * S * (D + D) + 5 * B * N * S * S
    assert cost["counts"]["digital_ops"] == product + B * S * 3 * D + scores and not cost["unknown"]
    for got, want in zip(simulate(c, feeds), ort_outputs(model, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_attention_left_digital_is_costed_as_scores_over_the_past_and_new_keys():
    model, _ = _model(past=True, mask="raw")
    c = compiled(model)
    (cost,) = [d for d in c.cost["digital"] if d["op_type"] == "MultiHeadAttention"]
    total = S + P
    assert cost["counts"]["digital_ops"] == B * (S * D + S * 2 * D) + 2 * B * S * total * 2 * D + 5 * B * N * S * total
    analog = sum(layer["counts"]["macs"] for layer in c.cost["layers"])
    assert analog == B * S * D * 3 * D


def test_mapped_onnx_of_the_split_attention_passes_the_checker(tmp_path):
    model, _ = _model(past=True, mask="lengths", unidirectional=1)
    onnx.save(model, tmp_path / "m.onnx")
    assert cli_main(["compile", str(tmp_path / "m.onnx"), "--target", "isaac", "-q", "-o", str(tmp_path / "out"),
                     "--emit", "mapped-with-weights"]) == 0
    mapped = onnx.load(tmp_path / "out" / "mapped.onnx")
    onnx.checker.check_model(mapped)
    assert "MultiHeadAttention" in {n.op_type for n in mapped.graph.node}


def _node_model(node, inputs, initializers):
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                    for o in node.output], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def test_fused_operators_of_the_table_are_costed_as_what_they_compute_and_not_as_estimates():
    rng = np.random.default_rng(3)
    kv_heads, head, past = 2, 8, 3
    shapes = {"q": [1, S, N * head], "k": [1, S, kv_heads * head], "v": [1, S, kv_heads * head],
              "pk": [1, kv_heads, past, head], "pv": [1, kv_heads, past, head]}
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in shapes.items()]
    lengths = [numpy_helper.from_array(np.array([past + S - 1], np.int32), "lens"),
               numpy_helper.from_array(np.array(past + S, np.int32), "total")]     # as a model computes them
    gqa = helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "lens", "total"], ["y", "pk2", "pv2"],
                           "gqa", domain="com.microsoft", num_heads=N, kv_num_heads=kv_heads)
    model = _node_model(gqa, inputs, lengths)
    c = compiled(model)
    (cost,) = c.cost["digital"]
    total = past + S
    assert cost["counts"]["digital_ops"] == 2 * S * total * 2 * N * head + 5 * N * S * total
    assert "estimated" not in cost and not cost["unknown"]
    for got, want in zip(simulate(c, feeds), ort_outputs(model, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["raw_mask", "past_present"])
def test_quantize_dynamic_s_qattention_puts_the_models_integers_on_crossbars(case, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model, feeds = _model(**CASES[case])
    onnx.save(model, tmp_path / "float.onnx")
    # 7-bit weights: onnxruntime's u8s8 kernels cannot saturate on a CPU without VNNI, so it is exact
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "int8.onnx", weight_type=QuantType.QInt8, reduce_range=True)
    quantized = onnx.load(tmp_path / "int8.onnx")
    assert "QAttention" in {n.op_type for n in quantized.graph.node}
    c = compiled(quantized)
    (layer,) = c.mapping.layers
    assert layer.model_quant is not None and layer.matrices[0].n_out == 3 * D
    assert [n.op_type for n in c.graph.nodes if n.domain == "com.microsoft"] == ["MultiHeadAttention"]
    want = ort_outputs(quantized, feeds)
    for mode in ("ideal", "quantized"):
        for got, ref in zip(simulate(c, feeds, mode=mode), want, strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
