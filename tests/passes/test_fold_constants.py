"""fold_constants: weight sub-graphs and static Shape computations become constants, within a budget."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from acompile.errors import InvalidModelError, LimitError
from acompile.frontend.load import load_model_proto
from acompile.limits import Limits
from acompile.passes.fold_constants import fold_constants
from frontend_passes import check_pass, run, state_of, tiny_model, weights


def test_weight_subgraph_folds_to_one_initializer():
    w = weights()
    model = tiny_model(
        [helper.make_node("Constant", [], ["w_flat"], value=helper.make_tensor(
            "w", 1, [24], w(24).tolist())),
         helper.make_node("Reshape", ["w_flat", "shape"], ["w_t"]),
         helper.make_node("Transpose", ["w_t"], ["w_kn"], perm=[1, 0]),
         helper.make_node("Cast", ["w_kn"], ["w_cast"], to=1),
         helper.make_node("MatMul", ["x", "w_cast"], ["y"])],
        [("x", (2, 4))], [("y", (2, 6))], {"shape": np.array([6, 4], np.int64)})
    state = check_pass(model, fold_constants)
    assert [n.op_type for n in state.graph.nodes] == ["MatMul"]
    assert state.graph.constants[state.graph.nodes[0].inputs[1]].shape == (4, 6)
    assert "shape" not in state.graph.constants       # pruned: nothing reads it any more
    assert state.facts == {"folded"}


def test_shape_of_a_static_tensor_folds():
    model = tiny_model(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("Shape", ["r"], ["s"]),
         helper.make_node("Concat", ["s", "minus1"], ["s2"], axis=0),
         helper.make_node("Reshape", ["r", "s2"], ["y"])],
        [("x", (2, 3))], [("y", (2, 3, 1))], {"minus1": np.array([-1], np.int64)})
    state = check_pass(model, fold_constants)
    assert [n.op_type for n in state.graph.nodes] == ["Relu", "Reshape"]
    assert state.graph.constants[state.graph.nodes[1].inputs[1]].tolist() == [2, 3, -1]


def test_folding_past_the_budget_is_refused_before_allocating():
    model = tiny_model(
        [helper.make_node("ConstantOfShape", ["big"], ["c"]),
         helper.make_node("Add", ["x", "c"], ["y"])],
        [("x", (1024, 1024))], [("y", (1024, 1024))], {"big": np.array([1024, 1024], np.int64)})
    state = state_of(load_model_proto(model), Limits(fold_budget_bytes=1024))
    with pytest.raises(LimitError, match="budget"):
        run(state, fold_constants)


def test_a_chain_of_computed_reshape_targets_folds_in_one_pass(monkeypatch):
    """Each Reshape's target is computed from the previous Reshape's shape through Equal and Where, which
    ONNX's data propagation does not follow: every link waited for the one before it to get its shape, one
    round of the fold loop per link (247 rounds for a 12-layer GPT-2). Now one ordered pass follows them."""
    from acompile.passes import fold_constants as fc
    links, nodes, prev = 12, [], "x"
    for i in range(links):
        nodes += [helper.make_node("Relu", [prev], [f"a{i}"]), helper.make_node("Shape", [f"a{i}"], [f"s{i}"]),
                  helper.make_node("Equal", [f"s{i}", "zeros"], [f"e{i}"]),
                  helper.make_node("Where", [f"e{i}", "ones", f"s{i}"], [f"t{i}"]),
                  helper.make_node("Reshape", [f"a{i}", f"t{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    model = tiny_model(nodes, [("x", (2, 12))], [("y", (2, 12))],
                       {"zeros": np.zeros(2, np.int64), "ones": np.ones(2, np.int64)})
    rounds = []
    real = fc._fold_once
    monkeypatch.setattr(fc, "_fold_once", lambda g, limits: rounds.append(1) or real(g, limits))
    state = check_pass(model, fold_constants)
    assert len(rounds) <= 4, f"{len(rounds)} rounds for {links} links"
    reshapes = [n for n in state.graph.nodes if n.op_type == "Reshape"]
    assert len(reshapes) == links and all(state.graph.is_constant(n.inputs[1]) for n in reshapes)
    assert all(state.graph.static_shape(n.outputs[0]) == (2, 12) for n in reshapes)


def _dequantize_model(x, scale, zero, attrs: dict, opset: int) -> onnx.ModelProto:
    """y = DequantizeLinear(x, scale[, zero]) + an input of y's shape, every operand a constant."""
    names = ["q", "s"] + (["z"] if zero is not None else [])
    values = {"q": x, "s": scale, **({"z": zero} if zero is not None else {})}
    out_type = helper.np_dtype_to_tensor_dtype(scale.dtype)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", names, ["w"], **attrs), helper.make_node("Add", ["w", "a"], ["y"])],
        "dq", [helper.make_tensor_value_info("a", out_type, list(x.shape))],
        [helper.make_tensor_value_info("y", out_type, list(x.shape))],
        [numpy_helper.from_array(v, n) for n, v in values.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.mark.parametrize("dtype,axis,block,zero,scale_type,opset", [
    (np.int8, 0, 0, "zeros", np.float32, 13), (np.int8, 1, 0, None, np.float32, 13),
    (np.uint8, 1, 0, "random", np.float32, 13), (np.uint8, 0, 0, "random", np.float16, 19),
    (np.int8, -1, 0, "random", np.float32, 13), (np.int16, 0, 0, "random", np.float32, 21),
    (np.uint16, 1, 0, None, np.float32, 21), (np.int32, 0, 0, "zeros", np.float32, 13),
    (np.int32, -1, 0, None, np.float32, 13), (np.int8, 1, 4, "random", np.float32, 21),
    (np.uint8, None, 0, "random", np.float32, 13)])
def test_dequantized_weights_fold_in_numpy_as_onnxruntime_computes_them(dtype, axis, block, zero, scale_type, opset,
                                                                         monkeypatch):
    """A quantized model's constant DequantizeLinear (every integer type of 16 bits or fewer, int32 biases;
    per tensor, per axis, blocked; with or without a zero point) folds without onnxruntime, to its bits."""
    import onnxruntime as ort
    import acompile.passes.fold_constants as fc

    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    bound = 1 << 20 if zero == "random" else 1 << 31     # a difference of int32s must not overflow
    lo, hi = max(info.min, -bound), min(info.max, bound - 1)
    # per tensor: the default axis 1 is not read (a 1-D bias has none)
    x = rng.integers(lo, hi, size=(6, 8, 3) if axis is not None else (10,), endpoint=True).astype(dtype)
    if axis is None:
        shape = []
    elif block:
        shape = list(x.shape)
        shape[axis] = -(-shape[axis] // block)
    else:
        shape = [x.shape[axis]]
    scale = (rng.random(shape) * 0.02 + 1e-3).astype(scale_type)
    zeros = None if zero is None else np.zeros(shape, dtype) if zero == "zeros" else \
        rng.integers(lo // 2, hi // 2, size=shape).astype(dtype)
    attrs = {} if axis is None else {"axis": axis, **({"block_size": block} if block else {})}
    model = _dequantize_model(x, scale, zeros, attrs, opset)
    a = np.zeros(x.shape, scale_type)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]

    def refused(*args, **kwargs):
        raise AssertionError("folded through onnxruntime")

    monkeypatch.setattr(fc, "run_node", refused)
    state = run(state_of(load_model_proto(model)), fold_constants)
    (node,) = state.graph.nodes
    folded = state.graph.constants[node.inputs[0]]
    assert folded.dtype == want.dtype
    np.testing.assert_array_equal(folded, want)


@pytest.mark.parametrize("scale,zero", [(np.ones(5, np.float32), None),          # 5 scales for 4 rows
                                        (np.ones(4, np.float32), np.array(1, np.int8))])   # one zero point for 4
def test_a_dequantize_whose_scale_does_not_fit_is_still_refused_as_onnxruntime_says(scale, zero):
    x = np.ones((4, 3), np.int8)
    model = _dequantize_model(x, scale, zero, {"axis": 0}, 13)
    with pytest.raises(InvalidModelError, match="DequantizeLinear cannot be evaluated"):
        run(state_of(load_model_proto(model)), fold_constants)
