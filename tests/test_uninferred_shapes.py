"""Models onnxruntime runs whose shapes ONNX cannot infer, or that ONNX's checker refuses.

GroupNormalization (opset 18 and 21) and MeanVarianceNormalization get no shape from ONNX's shape
inference, the checker refuses GroupNormalization-18 as deprecated, and MeanVarianceNormalization's
function body makes strict inference fail: onnxruntime runs all of them, so acompile must map the
Conv behind them and simulate them to onnxruntime's outputs. An operator whose output size depends
on the data (NonZero) must stay unknown, never sized from a run on zeros.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from helpers import cli as _cli

C = 8



def _norm_then_conv(norm: onnx.NodeProto, inits: list, opset: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = nh.from_array(rng.standard_normal((4, C, 3, 3)).astype(np.float32), "cw")
    g = h.make_graph([norm, h.make_node("Conv", ["n", "cw"], ["y"], pads=[1, 1, 1, 1])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, C, 6, 6])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits + [w])
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=9)


def _group_norm(opset: int) -> onnx.ModelProto:
    n = C if opset >= 21 else 2          # opset 18: one scale per group; 21: per channel
    rng = np.random.default_rng(1)
    inits = [nh.from_array(rng.standard_normal(n).astype(np.float32), "gs"),
             nh.from_array(rng.standard_normal(n).astype(np.float32), "gb")]
    return _norm_then_conv(h.make_node("GroupNormalization", ["x", "gs", "gb"], ["n"], num_groups=2), inits, opset)


MODELS = {
    "group_norm_21": lambda: _group_norm(21),
    "group_norm_18": lambda: _group_norm(18),
    "mean_variance_normalization": lambda: _norm_then_conv(h.make_node("MeanVarianceNormalization", ["x"], ["n"]), [], 13),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_conv_behind_maps_and_simulates_as_onnxruntime(name, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(MODELS[name](), str(path))
    np.save(tmp_path / "x.npy", np.random.default_rng(2).standard_normal((1, C, 6, 6)).astype(np.float32))
    code, out, err = _cli("check", str(path), "--target", "isaac", "--format", "json")
    assert code == 0, out + err
    result = json.loads(out)["results"][0]
    assert result["figures"]["crossbars"] == 1 and result["figures"]["analog_mac_fraction"] > 0.5, result
    code, out, err = _cli("run", str(path), "--target", "isaac", "--input", str(tmp_path / "x.npy"), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["comparison"]["y"]["relative_error"] < 1e-5


def test_a_data_sized_shape_stays_unknown(tmp_path):
    """NonZero's output size depends on the data: the MatMul after it is refused (exit 1), not sized
    from a run on zeros."""
    w = nh.from_array(np.ones((2, 8), np.float32), "w")
    g = h.make_graph([h.make_node("NonZero", ["x"], ["nz"]), h.make_node("Transpose", ["nz"], ["t"]),
                      h.make_node("Cast", ["t"], ["f"], to=T.FLOAT), h.make_node("MatMul", ["f", "w"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [4, 4])], [h.make_tensor_value_info("y", T.FLOAT, None)],
                     initializer=[w])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8), str(path))
    code, out, err = _cli("check", str(path), "--target", "isaac")
    assert code == 1, out + err
    assert "MatMul_3" in out and "NonZero" in out


def test_a_model_neither_checker_nor_onnxruntime_takes_is_refused(tmp_path):
    """The fallback to onnxruntime is for models it runs: a Conv reading a value nothing produces stays exit 2."""
    w = nh.from_array(np.ones((4, C, 3, 3), np.float32), "cw")
    g = h.make_graph([h.make_node("Conv", ["nowhere", "cw"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, C, 6, 6])], [h.make_tensor_value_info("y", T.FLOAT, None)],
                     initializer=[w])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8), str(path))
    code, out, err = _cli("check", str(path), "--target", "isaac")
    assert code == 2, out + err


def test_a_constant_weight_matmul_whose_input_rank_is_lost_is_named(tmp_path):
    """After an STFT of dynamic length ONNX loses even the rank: the MatMul with a constant weight cannot
    become a crossbar layer, and check says why instead of running it digitally without a word."""
    rng = np.random.default_rng(0)
    nodes = [h.make_node("STFT", ["wav", "step", "win"], ["s"], onesided=1),
             h.make_node("ReduceSumSquare", ["s"], ["p"], axes=[3], keepdims=0),
             h.make_node("MatMul", ["p", "W"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("wav", T.FLOAT, [1, "N", 1])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)],
                     [nh.from_array(rng.standard_normal((33, 10)).astype(np.float32), "W"),
                      nh.from_array(np.array(32, np.int64), "step"), nh.from_array(np.hanning(64).astype(np.float32), "win")])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8), str(path))
    code, out, err = _cli("check", str(path), "--target", "isaac")
    assert code == 1 and "MatMul_2" in out and "--input-shape wav:" in out, out + err
    code, out, err = _cli("check", str(path), "--target", "isaac", "--input-shape", "wav:1,320,1", "--format", "json")
    result = json.loads(out)["results"][0]
    assert code == 0 and "STFT" not in result["digital_ops"], out + err       # the STFT is a Conv then (stft_conv)


def test_input_shapes_a_fixed_reshape_cannot_take_are_bad_input_in_check_and_compile(tmp_path):
    """A legacy export bakes batch x heads into a Reshape: shapes that do not fit are exit 2 from check
    and compile alike, naming the Reshape (onnxruntime refuses to run them too)."""
    w = np.ones((16, 16), np.float32)
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["a"]), h.make_node("Reshape", ["a", "shape"], ["b"]),
                      h.make_node("MatMul", ["b", "W2"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["B", "T", 16])], [h.make_tensor_value_info("y", T.FLOAT, None)],
                     [nh.from_array(w, "W"), nh.from_array(w[:8, :4].copy(), "W2"),
                      nh.from_array(np.array([6, 6, 8], np.int64), "shape")])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)], ir_version=8), str(path))
    for command in (["check"], ["compile", "-o", str(tmp_path / "out")]):
        code, out, err = _cli(*command, str(path), "--target", "isaac", "--input-shape", "x:3,9,16")
        assert code == 2, out + err
        assert "node 'Reshape_1' (Reshape): cannot reshape 432 elements (shape [3, 9, 16]) into [6, 6, 8]" in out + err
    assert not (tmp_path / "out").exists()
    assert _cli("check", str(path), "--target", "isaac", "--input-shape", "x:2,9,16")[0] == 0     # 288 elements fit


def _dynamic_conv(tmp_path, opset: int):
    """A Conv whose input [1, 3, H, 8] has a dynamic height."""
    w = nh.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    g = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, "H", 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=[w])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=8), str(path))
    return path


def test_reasons_name_the_opset_the_model_was_written_in(tmp_path):
    """An opset-13 model is converted to opset 17 inside: the refusal still says opset 13."""
    code, out, err = _cli("check", str(_dynamic_conv(tmp_path, 13)), "--target", "isaac", "--format", "json")
    (reason,) = json.loads(out)["results"][0]["reasons"]
    assert code == 1 and (reason["op_type"], reason["opset"]) == ("Conv", 13), reason


def test_the_fix_for_a_dynamic_input_shows_its_shape(tmp_path):
    """The hint spells the input's shape with its dynamic dimensions by name: the user replaces those."""
    code, out, err = _cli("check", str(_dynamic_conv(tmp_path, 17)), "--target", "isaac")
    assert code == 1 and "--input-shape x:1,3,H,8, a number for each named dimension" in out, out


def _batch_reshape_through_where() -> onnx.ModelProto:
    """x [N, 4, 6] with a dynamic N, reshaped to [N, 24] by a target computed from its shape through
    Equal and Where (BERT's and GPT-2's exports compute their mask and attention shapes so), then a
    dense layer. ONNX's data propagation does not follow Equal or Where."""
    c = lambda v, n: nh.from_array(np.array(v, np.int64), n)
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "zero"], ["n"]),
             h.make_node("Concat", ["n", "minus1"], ["t0"], axis=0), h.make_node("Equal", ["t0", "zeros"], ["is0"]),
             h.make_node("Where", ["is0", "ones", "t0"], ["t"]), h.make_node("Reshape", ["x", "t"], ["r"]),
             h.make_node("MatMul", ["r", "W"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 6])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 5])],
                     [c([0], "zero"), c([-1], "minus1"), c([0, 0], "zeros"), c([1, 1], "ones"),
                      nh.from_array(np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32), "W")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_the_fix_names_every_dynamic_input(tmp_path):
    """Two dynamic inputs reach the layer: both are named, in the model's order, each with its own fix."""
    g = h.make_graph([h.make_node("Add", ["a", "b"], ["c"]), h.make_node("MatMul", ["c", "W"], ["y"])], "g",
                     [h.make_tensor_value_info("a", T.FLOAT, [1, "s", 6]), h.make_tensor_value_info("b", T.FLOAT, [1, "s", 6])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], [nh.from_array(np.ones((6, 3), np.float32), "W")])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8), str(path))
    code, out, _ = _cli("check", str(path), "--target", "isaac", "--format", "json")
    message = json.loads(out)["results"][0]["reasons"][0]["message"]
    assert code == 1 and "model inputs 'a', 'b' have dynamic dimensions (fix them with --input-shape a:1,s,6 " \
                         "--input-shape b:1,s,6," in message


def _batch_times_heads() -> onnx.ModelProto:
    """x [N, 4, 6] split into 2N rows of heads (a target computed from the shape), a digital MatMul over
    them, merged back to [2N, 4] the same way, then a dense layer: DeBERTa's attention at batch * heads
    (the targets pass an Equal and a Where, which ONNX's data propagation does not follow)."""
    c = lambda v, n: nh.from_array(np.array(v, np.int64), n)
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "zero"], ["n0"]),
             h.make_node("Equal", ["n0", "zero"], ["e"]), h.make_node("Where", ["e", "one", "n0"], ["n"]),
             h.make_node("Mul", ["n", "two"], ["n2"]),
             h.make_node("Concat", ["n2", "split"], ["t1"], axis=0), h.make_node("Reshape", ["x", "t1"], ["a"]),
             h.make_node("Transpose", ["a"], ["at"], perm=[0, 2, 1]), h.make_node("MatMul", ["a", "at"], ["m"]),
             h.make_node("Concat", ["n2", "four"], ["t2"], axis=0), h.make_node("Reshape", ["m", "t2"], ["r"]),
             h.make_node("MatMul", ["r", "W"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 6])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)],
                     [c([0], "zero"), c([1], "one"), c([2], "two"), c([2, 6], "split"), c([4], "four"),
                      nh.from_array(np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32), "W")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def _if_on_a_batch_free_size() -> onnx.ModelProto:
    """An If on x.shape[1] == 4 (an axis the dynamic batch does not touch), each branch a dense layer."""
    c = lambda v, n: nh.from_array(np.array(v, np.int64), n)
    w = lambda seed: nh.from_array(np.random.default_rng(seed).standard_normal((6, 5)).astype(np.float32), f"W{seed}")
    branch = lambda seed: h.make_graph([h.make_node("MatMul", ["x", f"W{seed}"], [f"b{seed}"])], f"br{seed}", [],
                                       [h.make_tensor_value_info(f"b{seed}", T.FLOAT, None)], [w(seed)])
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Slice", ["s", "one", "two"], ["d"]),
             h.make_node("Equal", ["d", "four"], ["e"]), h.make_node("Squeeze", ["e"], ["cond"]),
             h.make_node("If", ["cond"], ["y"], then_branch=branch(1), else_branch=branch(2))]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 6])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], [c([1], "one"), c([2], "two"), c([4], "four")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("make", [_batch_reshape_through_where, _batch_times_heads, _if_on_a_batch_free_size],
                         ids=["reshape_through_where", "batch_times_heads", "if"])
def test_sizes_computed_beside_a_dynamic_batch_map(make, tmp_path):
    """A Reshape target computed from the batch through Where (check said the layer's input shape was
    unknown); heads folded into the batch (sizes at batch + 1 are 2 (N + 1), not N + 2); an If on a size
    the batch does not touch, which stayed digital and left the layers behind it unmapped. All map (the
    values at the batch and at batch + 1 give the shapes), and the program still follows the batch."""
    path = tmp_path / "m.onnx"
    onnx.save(make(), str(path))
    code, out, err = _cli("check", str(path), "--target", "isaac", "--format", "json")
    assert code == 0 and json.loads(out)["results"][0]["figures"]["crossbars"] == 1, out + err
    for n in (1, 3):
        np.save(tmp_path / "x.npy", np.random.default_rng(n).standard_normal((n, 4, 6)).astype(np.float32))
        code, out, err = _cli("run", str(path), "--target", "isaac", "--input", str(tmp_path / "x.npy"),
                              "--batch", "2", "--format", "json")
        assert code == 0, err
        assert json.loads(out)["comparison"]["y"]["relative_error"] < 1e-6


@pytest.mark.parametrize("past, new", [(0, 5), (3, 2), (4, 1)])
def test_group_query_attention_output_shape_for_a_prompt(tmp_path, past, new):
    """com.microsoft GroupQueryAttention (onnxruntime-genai's LLM exports) has no ONNX shape inference;
    run on zeros to learn it, its sequence lengths must agree with the query and the past, which zeros
    do for one new token only: a prompt's o_proj MatMul after it was refused (unknown shape, exit 1)."""
    heads, kv_heads, head = 2, 1, 8
    rng = np.random.default_rng(past)
    # the lengths as onnxruntime-genai computes them from the attention mask
    nodes = [h.make_node("ReduceSum", ["mask", "one"], ["len64"], keepdims=0),
             h.make_node("Sub", ["len64", "one"], ["last64"]),
             h.make_node("Cast", ["last64"], ["seqlens"], to=T.INT32),
             h.make_node("Shape", ["mask"], ["mask_shape"], start=1, end=2),
             h.make_node("Squeeze", ["mask_shape"], ["total64"]),
             h.make_node("Cast", ["total64"], ["total"], to=T.INT32),
             h.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "seqlens", "total"], ["a", "pk2", "pv2"],
                         domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads),
             h.make_node("MatMul", ["a", "W"], ["y"])]
    inputs = [h.make_tensor_value_info("q", T.FLOAT, [1, new, heads * head]),
              h.make_tensor_value_info("k", T.FLOAT, [1, new, kv_heads * head]),
              h.make_tensor_value_info("v", T.FLOAT, [1, new, kv_heads * head]),
              h.make_tensor_value_info("pk", T.FLOAT, [1, kv_heads, past, head]),
              h.make_tensor_value_info("pv", T.FLOAT, [1, kv_heads, past, head]),
              h.make_tensor_value_info("mask", T.INT64, [1, past + new])]
    graph = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info("y", T.FLOAT, [1, new, 12])],
                         [nh.from_array(rng.normal(size=(heads * head, 12)).astype(np.float32), "W"),
                          nh.from_array(np.array([1], np.int64), "one")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(tmp_path / "gqa.onnx"))
    feeds = {x.name: rng.normal(size=[d.dim_value for d in x.type.tensor_type.shape.dim]).astype(np.float32)
             for x in inputs[:5]}
    feeds["mask"] = np.ones((1, past + new), np.int64)
    np.savez(tmp_path / "in.npz", **feeds)
    code, out, err = _cli("run", str(tmp_path / "gqa.onnx"), "-t", "isaac", "-i", str(tmp_path / "in.npz"),
                          "--format", "json")
    assert code == 0, err
    assert json.loads(out)["comparison"]["y"]["relative_error"] < 1e-5
    # a stored 0 reads as a dynamic size (exporters write it so): an empty past is given as such
    empty = [f"--input-shape={x}:1,{kv_heads},0,{head}" for x in ("pk", "pv")] if past == 0 else []
    code, out, _ = _cli("check", str(tmp_path / "gqa.onnx"), "-t", "isaac", "--format", "json", *empty)
    assert code == 0 and json.loads(out)["results"][0]["figures"]["crossbars"] > 0
    code, _, err = _cli("check", str(tmp_path / "gqa.onnx"), "-t", "isaac", f"--input-shape=pk:0,{kv_heads},0,{head}")
    assert code == 2 and "the first at least 1" in err       # a batch of 0: nothing to cost, nothing to run
