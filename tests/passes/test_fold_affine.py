"""fold_affine: BatchNormalization and per-channel Mul/Div/Add/Sub fold into the analog layer before them."""

import numpy as np
import onnx
from onnx import helper

from acompile.frontend.load import load_model, load_model_proto
from acompile.ir import Graph, Node, is_linear
from acompile.passes.fold_affine import PendingScale, _by_channel, _private, _shared_buffers, fold_affine
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


def test_weights_read_from_the_file_scale_into_arrays_of_their_own_with_the_same_values(tmp_path):
    # weights over the skeleton's 4 KiB are views of the file's read-only mapping: the scaled weight is a new
    # array (the file never changes)
    w = weights()
    conv_w, gamma, var = w(16, 8, 3, 3), w(16), np.abs(w(16)) + 0.5
    model = tiny_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], epsilon=1e-3)],
        [("x", (1, 8, 5, 5))], [("y", (1, 16, 5, 5))],
        {"w": conv_w, "gamma": gamma, "beta": w(16), "mean": w(16), "var": var})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    saved = path.read_bytes()
    state = run(state_of(load_model(path)), *prerequisites(fold_affine))
    before = state.graph.constants["w"]
    assert not before.flags.writeable     # as the reader hands it over
    run(state, fold_affine)
    (conv,) = state.graph.nodes
    after = state.graph.constants[conv.inputs[1]]
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-3)
    expected = (conv_w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    assert after is not before and after.flags.writeable and np.array_equal(after, expected)
    assert path.read_bytes() == saved


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


def test_a_check_keeps_the_scale_beside_the_weight_and_knows_when_its_product_overflows():
    """check (weights_read false) leaves the weight as the model holds it and keeps the folded scale: the
    scaled weight's finiteness, all the mapping reads of it, is what the product's would be."""
    w = weights()
    conv_w = w(4, 2, 3, 3)
    conv_w[0, 0, 0, 0] = 3e38          # channel 0: the largest weight, under a small scale
    model = tiny_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Mul", ["c", "s"], ["y"])],
        [("x", (1, 2, 5, 5))], [("y", (1, 4, 5, 5))], {"w": conv_w, "s": np.array(
            [0.5, 4.0, -2.0, 1.0], np.float32).reshape(1, 4, 1, 1)})
    state = run(state_of(load_model_proto(model)), *prerequisites(fold_affine))
    state.weights_read = False
    run(state, fold_affine)
    (conv,) = state.graph.nodes
    assert np.array_equal(state.graph.constants[conv.inputs[1]], conv_w)
    pending = state.pending_scales[conv.inputs[1]]
    assert pending.finite(conv_w, lambda a: bool(np.isfinite(a).all()))     # 3e38 * 0.5; the others stay small
    compiled = run(state_of(load_model_proto(model)), *prerequisites(fold_affine), fold_affine).graph
    assert np.isfinite(compiled.constants[compiled.nodes[0].inputs[1]]).all()


def test_pending_scale_finiteness_is_the_products():
    """PendingScale.finite against the scaled weight itself, over scales of at most 1, larger scales that fit,
    one channel that overflows, NaN and infinite scales and weights, and a grouped ConvTranspose's layout."""
    rng = np.random.default_rng(3)
    conv = Node("c", "Conv", ["x", "w"], ["y"])
    convt = Node("t", "ConvTranspose", ["x", "w"], ["y"], attrs={"group": 2})
    cases = []
    for node, shape, n in ((conv, (4, 3, 2, 2), 4), (convt, (4, 3, 2, 2), 6)):
        base = rng.standard_normal(shape).astype(np.float32)
        big = base.copy()
        big.flat[0] = 2e38
        scales = [rng.uniform(-1, 1, n), rng.uniform(1, 8, n), np.full(n, 1e30), np.r_[np.full(n - 1, 0.5), 2.0],
                  np.r_[np.nan, np.ones(n - 1)], np.r_[np.inf, np.ones(n - 1)]]
        cases += [(node, weight, s) for weight in (base, big) for s in scales]
        nan_w = base.copy()
        nan_w.flat[5] = np.nan
        cases.append((node, nan_w, np.ones(n)))
    for i, (node, weight, s) in enumerate(cases):
        shape, by_channel = _by_channel(node, weight, s)
        with np.errstate(over="ignore", invalid="ignore"):
            want = bool(np.isfinite((weight.reshape(shape).astype(np.float64) * by_channel).astype(np.float32)).all())
        assert PendingScale(node, s).finite(weight, lambda a: bool(np.isfinite(a).all())) == want, i


def test_a_quantized_models_weight_is_scaled_in_check_too():
    """A weight behind a DequantizeLinear keeps its integers for the checks after the fold; a scale folded into
    it must reach them, so check scales it as compile does (no PendingScale), and both see the same layers."""
    from acompile.compiler import Options, run_pipeline
    from acompile.target import load_target
    w = weights()
    q = np.clip(np.round(w(4, 2, 3, 3) * 40), -127, 127).astype(np.int8)
    stats = {"gamma": w(4) + 2, "beta": w(4), "mean": w(4), "var": np.abs(w(4)) + 0.5}
    model = tiny_model(
        [helper.make_node("DequantizeLinear", ["q", "s"], ["wf"], axis=0),
         helper.make_node("Conv", ["x", "wf"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", *stats], ["y"])],
        [("x", (1, 2, 5, 5))], [("y", (1, 4, 5, 5))],
        {"q": q, "s": np.full(4, 0.025, np.float32), **stats})
    state = run(state_of(load_model_proto(model)), *prerequisites(fold_affine))
    state.weights_read = False
    run(state, fold_affine)
    assert state.pending_scales == {}
    target = load_target("isaac")
    checked = run_pipeline(model, target, Options(), with_calibration=False, stop_on_problems=False)
    compiled = run_pipeline(model, target, Options())
    assert checked.cost["totals"] == compiled.cost["totals"]
    kept = [[x.model_quant is None for x in c.mapping.layers] for c in (checked, compiled)]
    assert kept[0] == kept[1]
