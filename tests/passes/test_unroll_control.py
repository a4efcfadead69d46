"""unroll_control: a Loop with a constant trip count and a condition that stays true, and a Scan with a
static sequence, become their iterations in the enclosing graph (onnxruntime agrees before and after the
pass); the analog layers of their bodies map onto crossbars shared by every iteration, whose cost
counts every use; what cannot be unrolled stays one digital node with its reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper

from acompile.check import check_model
from acompile.frontend.export import to_onnx
from acompile.frontend.load import load_model_proto
from acompile.limits import Limits
from acompile.passes.fold_constants import fold_constants
from acompile.passes.unroll_control import unroll_control
from frontend_passes import feeds_for, ort_run, run, state_of
from helpers import compiled, ort_outputs, simulate

OPSET = 17


def _vi(name, shape, elem=T.FLOAT):
    return h.make_tensor_value_info(name, elem, shape)


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    model = h.make_model(h.make_graph(nodes, "cf", inputs, outputs, list(inits)),
                         opset_imports=[h.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _w(seed, *shape, scale=0.4):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _loop_inputs(*carried):
    return [_vi("i", [], T.INT64), _vi("cond_in", [], T.BOOL), *carried]


def loop_conv(trip=3) -> onnx.ModelProto:
    """``trip`` iterations of h <- tanh(conv(h)) + x (weight and bias of the enclosing graph), a running
    sum of h (carried) and each step's channel means (a scan output)."""
    body = h.make_graph(
        [h.make_node("Conv", ["h_in", "W", "Bc"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Tanh", ["c"], ["t"]),
         h.make_node("Add", ["t", "x"], ["h_out"]), h.make_node("Add", ["acc_in", "h_out"], ["acc_out"]),
         h.make_node("ReduceMean", ["h_out"], ["m"], axes=[2, 3], keepdims=0),
         h.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        _loop_inputs(_vi("h_in", [1, 2, 5, 5]), _vi("acc_in", [1, 2, 5, 5])),
        [_vi("cond_out", [], T.BOOL), _vi("h_out", [1, 2, 5, 5]), _vi("acc_out", [1, 2, 5, 5]), _vi("m", [1, 2])])
    return _model([h.make_node("Loop", ["M", "", "x", "zeros"], ["h", "acc", "means"], body=body)],
                  [_vi("x", [1, 2, 5, 5])],
                  [_vi("h", [1, 2, 5, 5]), _vi("acc", [1, 2, 5, 5]), _vi("means", [trip, 1, 2])],
                  [_const("M", np.int64(trip)), _const("W", _w(0, 2, 2, 3, 3)), _const("Bc", _w(1, 2)),
                   _const("zeros", np.zeros((1, 2, 5, 5), np.float32))])


def loop_linear(trip=4) -> onnx.ModelProto:
    """h <- tanh(h @ W + b) + 0.1 i: the weight and bias are the body's own initializers (MatMul + Add: one
    linear layer), the iteration number enters the arithmetic; the condition is a constant true."""
    body = h.make_graph(
        [h.make_node("MatMul", ["h_in", "Wb"], ["p"]), h.make_node("Add", ["p", "bb"], ["q"]),
         h.make_node("Tanh", ["q"], ["t"]), h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT),
         h.make_node("Mul", ["fi", "tenth"], ["s"]), h.make_node("Add", ["t", "s"], ["h_out"]),
         h.make_node("Constant", [], ["cond_out"], value=_const("yes", np.bool_(True)))], "body",
        _loop_inputs(_vi("h_in", [2, 6])), [_vi("cond_out", [], T.BOOL), _vi("h_out", [2, 6]), _vi("t", [2, 6])],
        [_const("Wb", _w(2, 6, 6)), _const("bb", _w(3, 6)), _const("tenth", np.float32(0.1))])
    return _model([h.make_node("Loop", ["M", "go", "x"], ["y", "ts"], body=body)], [_vi("x", [2, 6])],
                  [_vi("y", [2, 6]), _vi("ts", [trip, 2, 6])],
                  [_const("M", np.int64(trip)), _const("go", np.bool_(True))])


def scan_rnn(steps=6, reverse=False, axis=0) -> onnx.ModelProto:
    """A simple RNN as a Scan: h <- tanh(x_t Wx + h Wh + b) over ``steps`` slices of x along ``axis``,
    every h stacked along the same axis (both directions reversed when ``reverse``)."""
    body = h.make_graph(
        [h.make_node("MatMul", ["x_t", "Wx"], ["a"]), h.make_node("MatMul", ["h_in", "Wh"], ["r"]),
         h.make_node("Add", ["a", "r"], ["s"]), h.make_node("Add", ["s", "b"], ["s2"]),
         h.make_node("Tanh", ["s2"], ["h_out"]), h.make_node("Identity", ["h_out"], ["y_t"])], "body",
        [_vi("h_in", [1, 4]), _vi("x_t", [1, 3])], [_vi("h_out", [1, 4]), _vi("y_t", [1, 4])])
    x_shape, y_shape = ([steps, 1, 3], [steps, 1, 4]) if axis == 0 else ([1, steps, 3], [1, steps, 4])
    scan = h.make_node("Scan", ["h0", "x"], ["h", "ys"], body=body, num_scan_inputs=1, scan_input_axes=[axis],
                       scan_output_axes=[axis], scan_input_directions=[int(reverse)],
                       scan_output_directions=[int(reverse)])
    return _model([scan], [_vi("h0", [1, 4]), _vi("x", x_shape)], [_vi("h", [1, 4]), _vi("ys", y_shape)],
                  [_const("Wx", _w(4, 3, 4)), _const("Wh", _w(5, 4, 4)), _const("b", _w(6, 4))])


def loop_until_negative(trip=4) -> onnx.ModelProto:
    """A Loop that stops once sum(h) <= 0: the condition depends on the data."""
    body = h.make_graph(
        [h.make_node("MatMul", ["h_in", "W"], ["h_out"]), h.make_node("ReduceSum", ["h_out"], ["s"], keepdims=0),
         h.make_node("Greater", ["s", "zero"], ["cond_out"])], "body",
        _loop_inputs(_vi("h_in", [1, 4])), [_vi("cond_out", [], T.BOOL), _vi("h_out", [1, 4])])
    return _model([h.make_node("Loop", ["M", "", "x"], ["y"], body=body)], [_vi("x", [1, 4])], [_vi("y", [1, 4])],
                  [_const("M", np.int64(trip)), _const("W", _w(7, 4, 4)), _const("zero", np.float32(0))])


def loop_growing(trip=3) -> onnx.ModelProto:
    """A Loop whose carried value grows by a row each iteration (a decoder's output)."""
    body = h.make_graph(
        [h.make_node("MatMul", ["x", "W"], ["row"]), h.make_node("Concat", ["acc_in", "row"], ["acc_out"], axis=0),
         h.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        _loop_inputs(_vi("acc_in", [None, 4])), [_vi("cond_out", [], T.BOOL), _vi("acc_out", [None, 4])])
    return _model([h.make_node("Loop", ["M", "", "x"], ["y"], body=body)], [_vi("x", [1, 4])],
                  [_vi("y", [trip + 1, 4])], [_const("M", np.int64(trip)), _const("W", _w(8, 4, 4))])


def nested_loops(outer=3, inner=2) -> onnx.ModelProto:
    """An outer Loop whose body runs an inner Loop (h <- tanh(h @ W), W of the outermost graph) and then
    adds x: ``outer x inner`` uses of W."""
    inner_body = h.make_graph(
        [h.make_node("MatMul", ["g_in", "W"], ["p"]), h.make_node("Tanh", ["p"], ["g_out"]),
         h.make_node("Identity", ["c_in"], ["c_out"])], "inner",
        [_vi("j", [], T.INT64), _vi("c_in", [], T.BOOL), _vi("g_in", [1, 5])],
        [_vi("c_out", [], T.BOOL), _vi("g_out", [1, 5])])
    outer_body = h.make_graph(
        [h.make_node("Loop", ["N", "", "h_in"], ["g"], body=inner_body), h.make_node("Add", ["g", "x"], ["h_out"]),
         h.make_node("Identity", ["cond_in"], ["cond_out"])], "outer",
        _loop_inputs(_vi("h_in", [1, 5])), [_vi("cond_out", [], T.BOOL), _vi("h_out", [1, 5])])
    return _model([h.make_node("Loop", ["M", "", "x"], ["y"], body=outer_body)], [_vi("x", [1, 5])],
                  [_vi("y", [1, 5])], [_const("M", np.int64(outer)), _const("N", np.int64(inner)),
                                       _const("W", _w(9, 5, 5))])


# name -> (model, {weight read in the body: how many iterations use it})
UNROLLED = {
    "loop_conv": (loop_conv, {"Conv": 3}),
    "loop_linear": (loop_linear, {"Linear": 4}),
    "scan_rnn": (scan_rnn, {"Linear": 6}),
    "scan_reverse": (lambda: scan_rnn(5, reverse=True), {"Linear": 5}),
    "scan_axis1": (lambda: scan_rnn(4, axis=1), {"Linear": 4}),
    "nested": (nested_loops, {"Linear": 6}),
}


def _close(got, want):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * (1 + np.abs(w).max()))


def _unrolled_state(model):
    """The state after fold_constants and unroll_control; onnxruntime agrees before and after the pass."""
    state = run(state_of(load_model_proto(model)), fold_constants)
    feeds = feeds_for(state.graph)
    before = ort_run(to_onnx(state.graph), feeds)
    run(state, unroll_control)
    _close(ort_run(to_onnx(state.graph), feeds), before)
    return state


@pytest.mark.parametrize("name", sorted(UNROLLED))
def test_the_iterations_compute_what_the_node_did(name):
    state = _unrolled_state(UNROLLED[name][0]())
    assert not [n for n in state.graph.nodes if n.op_type in ("Loop", "Scan")]
    assert "control_unrolled" in state.facts


@pytest.mark.parametrize("name", sorted(UNROLLED))
def test_every_iteration_uses_the_same_crossbars(name, tmp_path):
    make, uses = UNROLLED[name]
    model = make()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    verdict = check_model(str(path), "isaac")
    assert verdict["verdict"] in ("compatible", "compatible with digital fallback")
    assert not {"Loop", "Scan"} & set(verdict["digital_ops"])
    comp = compiled(model)
    feeds = {i.name: np.random.default_rng(1).normal(size=[d.dim_value for d in i.type.tensor_type.shape.dim])
             .astype(np.float32) for i in model.graph.input}
    _close(simulate(comp, feeds), ort_outputs(model, feeds))
    layers = comp.mapping.layers
    by_type = {}
    for layer in layers:
        by_type.setdefault(layer.op_type, []).append(layer)
    for op, count in uses.items():              # one layer per weight, used by every iteration
        assert by_type[op] and all(layer.uses == count for layer in by_type[op])
    weights = {layer.weight for layer in layers}
    assert len(weights) == len(layers)
    users = {}
    for n in comp.graph.nodes:
        if n.op_type == "ToVectors":
            users[n.meta["layer"]] = users.get(n.meta["layer"], 0) + 1
    assert all(users[layer.index] == layer.uses for layer in layers)
    for cost, layer in zip(comp.cost["layers"], layers):    # every use's vectors are counted
        assert cost["uses"] == layer.uses and cost["counts"]["input_vectors"] == layer.n_vec
        assert layer.n_vec % layer.uses == 0 and layer.n_vec // layer.uses >= 1
    assert not [x for x in comp.cost["digital"] if x["op_type"] in ("Loop", "Scan")]


def test_a_conv_in_a_loop_costs_every_iteration_on_one_set_of_crossbars():
    one, three = compiled(loop_conv(1)), compiled(loop_conv(3))
    (c1,), (c3,) = [x for x in one.cost["layers"]], [x for x in three.cost["layers"]]
    assert c3["counts"]["crossbars"] == c1["counts"]["crossbars"]
    assert c3["counts"]["input_vectors"] == 3 * c1["counts"]["input_vectors"] == 3 * 25
    assert c3["counts"]["macs"] == 3 * c1["counts"]["macs"]


@pytest.mark.parametrize("make, why", [
    (loop_until_negative, "its condition depends on the data"),
    (loop_growing, "changes shape between iterations"),
])
def test_what_cannot_be_unrolled_stays_digital_with_its_reason(make, why):
    model = make()
    comp = compiled(model)
    (loop,) = [n for n in comp.graph.nodes if n.op_type == "Loop"]
    assert why in loop.meta["unroll_reason"]
    (entry,) = [x for x in comp.cost["digital"] if x["op_type"] == "Loop"]
    assert entry["body_analog"][0] == "MatMul" and why in entry["body_analog"][-1]
    feeds = {"x": np.random.default_rng(2).normal(size=(1, 4)).astype(np.float32)}
    _close(simulate(comp, feeds), ort_outputs(model, feeds))


def test_a_loop_over_the_unrolling_limit_stays_digital():
    model = loop_conv(3)
    comp = compiled(model, limits=Limits(max_unrolled_nodes=10))
    (loop,) = [n for n in comp.graph.nodes if n.op_type == "Loop"]
    assert "the limit is 10 (set ACOMPILE_MAX_UNROLLED_NODES" in loop.meta["unroll_reason"]
    assert not comp.mapping.layers
    (entry,) = [x for x in comp.cost["digital"] if x["op_type"] == "Loop"]
    assert entry["iterations"] == 3 and not entry.get("estimated") and entry["body_analog"][0] == "Conv"
    feeds = {"x": np.random.default_rng(3).normal(size=(1, 2, 5, 5)).astype(np.float32)}
    _close(simulate(comp, feeds), ort_outputs(model, feeds))


def test_the_limit_counts_every_copy_in_the_graph_once():
    """Three outer iterations of (two inner copies of Linear + Tanh, the inner result, the Add) and the
    outer result: 19 nodes."""
    assert not [n for n in compiled(nested_loops(), limits=Limits(max_unrolled_nodes=19)).graph.nodes
                if n.op_type == "Loop"]
    left = [n for n in compiled(nested_loops(), limits=Limits(max_unrolled_nodes=18)).graph.nodes
            if n.op_type == "Loop"]
    assert len(left) == 1 and "would copy 19 nodes; the limit is 18" in left[0].meta["unroll_reason"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")     # torch.jit.script and the TorchScript exporter
def test_a_torch_scripted_for_loop_maps_its_linear_layer_once(tmp_path):
    torch = pytest.importorskip("torch")

    class Steps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x):
            h = torch.zeros(x.shape[0], 8)
            for i in range(x.shape[1]):
                h = torch.tanh(self.lin(x[:, i]) + h)
            return h
    torch.manual_seed(0)
    path = tmp_path / "steps.onnx"
    torch.onnx.export(torch.jit.script(Steps()), (torch.randn(2, 5, 8),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"])
    model = onnx.load(path)
    assert "Loop" in {n.op_type for n in model.graph.node}
    comp = compiled(model)
    (layer,) = comp.mapping.layers
    assert layer.op_type == "Linear" and layer.uses == 5 and layer.n_vec == 5 * 2
    feeds = {"x": np.random.default_rng(4).normal(size=(2, 5, 8)).astype(np.float32)}
    _close(simulate(comp, feeds), ort_outputs(model, feeds))


def test_a_shared_conv_layer_survives_the_program_and_device_files(tmp_path):
    import acompile
    from acompile.cli import main as cli_main
    model = loop_conv(3)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert cli_main(["compile", str(path), "--target", "isaac", "-q", "-o", str(tmp_path / "out")]) == 0
    feeds = {"x": np.random.default_rng(5).normal(size=(1, 2, 5, 5)).astype(np.float32)}
    got = acompile.simulate(tmp_path / "out", feeds, mode="ideal")
    _close([got[o.name] for o in model.graph.output], ort_outputs(model, feeds))
