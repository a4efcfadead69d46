"""fold_affine: BatchNormalization and per-channel Mul/Div/Add/Sub fold into the analog layer before them."""

import numpy as np
import onnx
from onnx import helper

from acompile.frontend.load import load_model
from acompile.ir import Graph, is_linear
from acompile.passes.fold_affine import _private, _shared_buffers, fold_affine
from frontend_passes import check_pass, prerequisites, run, state_of, tiny_model, weights


def test_batchnorm_folds_into_conv():
    w = weights()
    model = tiny_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], epsilon=1e-3)],
        [("x", (1, 2, 5, 5))], [("y", (1, 3, 5, 5))],
        {"w": w(3, 2, 3, 3), "gamma": w(3), "beta": w(3), "mean": w(3), "var": np.abs(w(3)) + 0.5})
    g = check_pass(model, fold_affine).graph
    (conv,) = g.nodes
    assert conv.op_type == "Conv" and conv.outputs == ["y"] and len(conv.inputs) == 3
    assert conv.meta["folded"] == ["BatchNormalization"]


def test_matmul_add_mul_fold_into_one_linear_layer():
    w = weights()
    model = tiny_model(
        [helper.make_node("MatMul", ["x", "w"], ["m"]),
         helper.make_node("Add", ["b", "m"], ["a"]),
         helper.make_node("Div", ["a", "s"], ["y"])],
        [("x", (2, 4))], [("y", (2, 3))], {"w": w(4, 3), "b": w(3), "s": np.array([2, -4, 0.5], np.float32)})
    g = check_pass(model, fold_affine).graph
    assert len(g.nodes) == 1 and is_linear(g.nodes[0]) and g.nodes[0].meta["folded"] == ["Add", "Div"]


def test_shared_weights_are_copied_before_folding_and_grouped_conv_transpose_scales_per_channel():
    w = weights()
    model = tiny_model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["c1"], group=2),
         helper.make_node("ConvTranspose", ["x", "w"], ["y2"], group=2),
         helper.make_node("Mul", ["c1", "s"], ["y1"])],
        [("x", (1, 4, 3, 3))], [("y1", (1, 6, 5, 5)), ("y2", (1, 6, 5, 5))],
        {"w": w(4, 3, 3, 3), "s": w(1, 6, 1, 1)})
    g = check_pass(model, fold_affine).graph
    assert [n.op_type for n in g.nodes] == ["ConvTranspose", "ConvTranspose"]
    assert g.nodes[0].inputs[1] != g.nodes[1].inputs[1]


def test_what_is_not_per_channel_or_divides_by_zero_stays():
    w = weights()
    model = tiny_model(
        [helper.make_node("Gemm", ["x", "w"], ["g"]),
         helper.make_node("Div", ["g", "zero"], ["d"]),
         helper.make_node("Mul", ["d", "full"], ["y"])],
        [("x", (2, 4))], [("y", (2, 3))], {"w": w(4, 3), "zero": np.array([1, 0, 1], np.float32),
                                          "full": w(2, 3)})
    g = check_pass(model, fold_affine).graph
    assert [n.op_type for n in g.nodes] == ["Linear", "Div", "Mul"]


def test_weights_read_from_the_file_scale_in_place_with_the_same_values(tmp_path):
    # weights over the skeleton's 4 KiB come from the lean reader's own buffers: scaled where they lie
    w = weights()
    conv_w, gamma, var = w(16, 8, 3, 3), w(16), np.abs(w(16)) + 0.5
    model = tiny_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], epsilon=1e-3)],
        [("x", (1, 8, 5, 5))], [("y", (1, 16, 5, 5))],
        {"w": conv_w, "gamma": gamma, "beta": w(16), "mean": w(16), "var": var})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    state = run(state_of(load_model(path)), *prerequisites(fold_affine))
    before = state.graph.constants["w"]
    assert not before.flags.writeable     # as the reader hands it over
    run(state, fold_affine)
    (conv,) = state.graph.nodes
    after = state.graph.constants[conv.inputs[1]]
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-3)
    expected = (conv_w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    assert after is before and np.array_equal(after, expected)


def test_a_buffer_other_constants_read_is_never_scaled_in_place():
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    g = Graph(name="g", nodes=[], inputs=[], outputs=[], tensors={}, opset=17,
              constants={"a": base, "b": base[:2], "c": np.ones(3, np.float32),
                         "d": np.frombuffer(b"\0" * 12, np.float32)})
    shared = _shared_buffers(g)
    assert not _private(base, shared) and not _private(g.constants["b"], shared)
    assert _private(g.constants["c"], shared)
    assert not _private(g.constants["d"], shared)           # over immutable bytes: copied, never unlocked
    assert not _private(np.ones(3, np.float64), shared)     # the result is float32: a new array anyway


def test_a_weight_folded_twice_is_rounded_to_float32_once():
    """BatchNormalization, then Mul: one per-channel scale, their product in float64, applied once."""
    w = weights()
    conv_w, gamma, var, s = w(64, 8, 3, 3), w(64), np.abs(w(64)) + 0.5, w(1, 64, 1, 1)
    model = tiny_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], epsilon=1e-3),
         helper.make_node("Mul", ["n", "s"], ["y"])],
        [("x", (1, 8, 5, 5))], [("y", (1, 64, 5, 5))],
        {"w": conv_w, "gamma": gamma, "beta": w(64), "mean": w(64), "var": var, "s": s})
    g = check_pass(model, fold_affine).graph
    (conv,) = g.nodes
    assert conv.meta["folded"] == ["BatchNormalization", "Mul"]
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-3) * s.reshape(-1).astype(np.float64)
    expected = (conv_w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    assert np.array_equal(g.constants[conv.inputs[1]], expected)
