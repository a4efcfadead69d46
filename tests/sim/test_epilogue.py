"""The Conv epilogue (sim/chain.py fuse_epilogue) of ideal mode and of quantized mode's exact path: the Add
and Relu after a Conv chain run inside it, with the values the unfused program computes on onnxruntime, bit
for bit."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import models
from acompile.ir import DOMAIN
from acompile.onnx_exec import run_node
from acompile.sim import chain, conv, runtime
from acompile.sim.runtime import Simulator, WeightsFromGraph
from helpers import compiled, ort_outputs


def _run(comp, feeds, fuse=True, monkeypatch=None):
    if not fuse:
        monkeypatch.setattr(runtime, "fuse_epilogue", lambda steps, keep, convs: steps)
    sim = Simulator(comp.graph, comp.mapping, WeightsFromGraph(comp.graph, comp.mapping), mode="ideal")
    out = sim.run(feeds)
    return sim, [out[o] for o in comp.graph.outputs]


def _bits(arrays):
    return [a.view(np.uint32) for a in arrays]


def test_relu_in_place_is_onnxruntimes_relu():
    x = np.array([np.nan, -np.nan, -0.0, 0.0, -1.5, 2.0, -np.inf, np.inf, 1e-45, -1e-45], np.float32)
    want = run_node("Relu", {}, [x], 1, 17)[0]
    got = x.copy()
    node = helper.make_node("Relu", ["a"], ["b"])
    conv.epilogue(((node, 0),), got, [None])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("direct", [False, True])
def test_residual_add_and_relu_join_the_conv_and_change_nothing(monkeypatch, direct):
    monkeypatch.setattr(conv, "_DIRECT_PIXELS", 1 if direct else 1 << 30)
    model = models.residual_block(channels=8)
    feeds = models.random_inputs(model, batch=1)
    comp = compiled(model)
    sim, fused = _run(comp, feeds)
    steps = sim._steps()
    chains = [s for s in steps if isinstance(s, chain.FusedChain)]
    assert [tuple(n.op_type for n in c.after) for c in chains] == [("Relu",), ("Add", "Relu")]
    assert not any(getattr(s, "op_type", None) in ("Add", "Relu") for s in steps)
    _, plain = _run(comp, feeds, fuse=False, monkeypatch=monkeypatch)
    assert [a.dtype for a in fused] == [np.float32]
    np.testing.assert_array_equal(_bits(fused), _bits(plain))
    for got, want in zip(fused, ort_outputs(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want).max()))


def _conv_add_model(other_shape, output_mid: bool = False) -> onnx.ModelProto:
    """Conv -> Add(·, other) -> Relu on [2, 4, 6, 6]; ``output_mid`` makes the Conv's output a graph output."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["other", "c"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 6, 6])]
    if output_mid:
        outputs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 4, 6, 6]))
    graph = helper.make_graph(nodes, "conv_add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 6, 6]),
                                                  helper.make_tensor_value_info("other", TensorProto.FLOAT, other_shape)],
                              outputs, [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("other_shape", [[2, 4, 6, 6], [1, 4, 1, 1]])
def test_an_add_on_the_left_or_broadcast_gives_the_unfused_values(monkeypatch, other_shape):
    model = _conv_add_model(other_shape)
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((2, 4, 6, 6)).astype(np.float32),
             "other": rng.standard_normal(other_shape).astype(np.float32)}
    comp = compiled(model)
    sim, fused = _run(comp, feeds)
    assert [tuple(n.op_type for n in s.after) for s in sim._steps() if isinstance(s, chain.FusedChain)] \
        == [("Add", "Relu")]
    _, plain = _run(comp, feeds, fuse=False, monkeypatch=monkeypatch)
    np.testing.assert_array_equal(_bits(fused), _bits(plain))
    np.testing.assert_allclose(fused[0], ort_outputs(model, feeds)[0], rtol=1e-4, atol=1e-5)


def test_a_value_the_graph_returns_is_not_fused_away():
    model = _conv_add_model([2, 4, 6, 6], output_mid=True)
    comp = compiled(model)
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((2, 4, 6, 6)).astype(np.float32),
             "other": rng.standard_normal((2, 4, 6, 6)).astype(np.float32)}
    sim, outs = _run(comp, feeds)
    assert all(not s.after for s in sim._steps() if isinstance(s, chain.FusedChain))
    for got, want in zip(outs, ort_outputs(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _quantized(comp, feeds, path="fast"):
    sim = Simulator(comp.graph, comp.mapping, WeightsFromGraph(comp.graph, comp.mapping), mode="quantized", path=path)
    out = sim.run(feeds)
    return sim, [out[o] for o in comp.graph.outputs]


def test_quantized_mode_runs_the_epilogue_in_the_exact_conv_path_only(monkeypatch):
    """On a lossless ADC (isaac's) the exact Conv path takes the Add and Relu after it: bit for bit the values
    of the unfused program and of the reference path. A lossy ADC's chains keep their digital nodes."""
    from acompile.target import apply_overrides, load_target, parse_settings
    model = models.residual_block(channels=8)
    feeds = models.random_inputs(model, batch=2)
    comp = compiled(model)
    sim, fused = _quantized(comp, feeds)
    steps = sim._steps()
    assert [tuple(n.op_type for n in c.after) for c in steps if isinstance(c, chain.FusedChain)] \
        == [("Relu",), ("Add", "Relu")]
    np.testing.assert_array_equal(_bits(fused), _bits(_quantized(comp, feeds, "reference")[1]))
    with monkeypatch.context() as m:
        m.setattr(runtime, "fuse_epilogue", lambda steps, keep, convs: steps)
        np.testing.assert_array_equal(_bits(fused), _bits(_quantized(comp, feeds)[1]))
    lossy = compiled(model, apply_overrides(load_target("isaac"), parse_settings(["adc.bits=4"])))
    steps = _quantized(lossy, feeds)[0]._steps()
    assert all(not s.after for s in steps if isinstance(s, chain.FusedChain))
    assert sum(getattr(s, "op_type", None) == "Relu" and s.domain != DOMAIN for s in steps) == 2