"""Control flow (If, Loop, Scan) that cannot be folded or unrolled runs digitally with its sub-graphs
through onnxruntime: check, compile, cost, program files and simulation agree with onnxruntime. (What is
unrolled, and the crossbars its iterations share: tests/passes/test_unroll_control.py.)"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper

import acompile
from acompile.check import check_model
from acompile.cli import main as cli_main
from acompile.limits import Limits
from helpers import compiled, ort_outputs, simulate

OPSET = 17


def _model(nodes, inputs, outputs, inits=()):
    graph = h.make_graph(nodes, "cf", inputs, outputs, list(inits))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def if_with_convs() -> onnx.ModelProto:
    """y = conv_a(x) if sum(x) > 0 else conv_b(x): the condition depends on the data; each branch reads x
    and its own weight from the enclosing graph."""
    rng = np.random.default_rng(0)
    out = h.make_tensor_value_info("y", T.FLOAT, [1, 4, 6, 6])

    def branch(w, name):
        return h.make_graph([h.make_node("Conv", ["x", w], [f"{name}_y"], pads=[1, 1, 1, 1])], name, [],
                            [h.make_tensor_value_info(f"{name}_y", T.FLOAT, [1, 4, 6, 6])])
    nodes = [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             h.make_node("Greater", ["s", "zero"], ["c"]),
             h.make_node("If", ["c"], ["y"], then_branch=branch("wa", "then"), else_branch=branch("wb", "else"))]
    inits = [_const("zero", np.float32(0)), _const("wa", rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
             _const("wb", rng.normal(size=(4, 3, 3, 3)).astype(np.float32))]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 6, 6])], [out], inits)


def loop_matmul(trip=5, dynamic=False) -> onnx.ModelProto:
    """acc <- acc @ W + x, M times (M a constant, or a graph input when ``dynamic``)."""
    rng = np.random.default_rng(1)
    body = h.make_graph(
        [h.make_node("MatMul", ["acc_in", "W"], ["p"]), h.make_node("Add", ["p", "x"], ["acc_out"]),
         h.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("acc_in", T.FLOAT, [1, 8])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("acc_out", T.FLOAT, [1, 8])])
    inputs = [h.make_tensor_value_info("x", T.FLOAT, [1, 8])]
    inits = [_const("W", (rng.normal(size=(8, 8)) * 0.3).astype(np.float32)), _const("cond", np.bool_(True))]
    if dynamic:
        inputs.append(h.make_tensor_value_info("M", T.INT64, []))
    else:
        inits.append(_const("M", np.int64(trip)))
    nodes = [h.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)]
    return _model(nodes, inputs, [h.make_tensor_value_info("y", T.FLOAT, [1, 8])], inits)


def scan_cumsum() -> onnx.ModelProto:
    """Running sum over a sequence of 7 steps: final state and every partial sum."""
    body = h.make_graph(
        [h.make_node("Add", ["s_in", "v"], ["s_out"]), h.make_node("Identity", ["s_out"], ["scan_out"])], "body",
        [h.make_tensor_value_info("s_in", T.FLOAT, [4]), h.make_tensor_value_info("v", T.FLOAT, [4])],
        [h.make_tensor_value_info("s_out", T.FLOAT, [4]), h.make_tensor_value_info("scan_out", T.FLOAT, [4])])
    nodes = [h.make_node("Scan", ["init", "seq"], ["final", "partial"], body=body, num_scan_inputs=1)]
    return _model(nodes, [h.make_tensor_value_info("init", T.FLOAT, [4]),
                          h.make_tensor_value_info("seq", T.FLOAT, [7, 4])],
                  [h.make_tensor_value_info("final", T.FLOAT, [4]),
                   h.make_tensor_value_info("partial", T.FLOAT, [7, 4])])


def loop_with_nested_if(dynamic=False) -> onnx.ModelProto:
    """A Loop (3 iterations, or a graph input's count when ``dynamic``) whose body holds an If on the
    iteration number; the If's branches read ``scale``, a value of the outermost graph, two scopes up.
    Unrolled, each iteration's If has a constant condition and is inlined."""
    then_g = h.make_graph([h.make_node("Mul", ["a_in", "scale"], ["t_y"])], "then", [],
                          [h.make_tensor_value_info("t_y", T.FLOAT, [1, 4])])
    else_g = h.make_graph([h.make_node("Add", ["a_in", "scale"], ["e_y"])], "else", [],
                          [h.make_tensor_value_info("e_y", T.FLOAT, [1, 4])])
    body = h.make_graph(
        [h.make_node("Mod", ["i", "two"], ["r"]), h.make_node("Equal", ["r", "zero"], ["even"]),
         h.make_node("If", ["even"], ["a_out"], then_branch=then_g, else_branch=else_g),
         h.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("a_in", T.FLOAT, [1, 4])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("a_out", T.FLOAT, [1, 4])])
    nodes = [h.make_node("Relu", ["x"], ["scale"]),
             h.make_node("Loop", ["M", "", "x"], ["y"], body=body)]
    inits = [_const("two", np.int64(2)), _const("zero", np.int64(0))] + ([] if dynamic else [_const("M", np.int64(3))])
    inputs = [h.make_tensor_value_info("x", T.FLOAT, [1, 4])] + \
        ([h.make_tensor_value_info("M", T.INT64, [])] if dynamic else [])
    return _model(nodes, inputs, [h.make_tensor_value_info("y", T.FLOAT, [1, 4])], inits)


def _feeds(model, rng):
    out = {}
    for i in model.graph.input:
        if i.name in {t.name for t in model.graph.initializer}:
            continue
        if i.type.tensor_type.elem_type == T.INT64:
            out[i.name] = np.array(4, np.int64)
        else:
            shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
            out[i.name] = rng.normal(size=shape).astype(np.float32)
    return out


def _close(got, want):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * (1 + np.abs(w).max()))


MODELS = {"if_convs": if_with_convs, "loop_const": loop_matmul, "loop_dynamic": lambda: loop_matmul(dynamic=True),
          "scan": scan_cumsum, "nested_if": loop_with_nested_if,
          "nested_if_dynamic": lambda: loop_with_nested_if(dynamic=True)}
DIGITAL = {"if_convs", "loop_dynamic", "nested_if_dynamic"}     # the others are unrolled
NO_UNROLLING = Limits(max_unrolled_nodes=1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ideal_simulation_matches_onnxruntime(name):
    model = MODELS[name]()
    comp = compiled(model)
    for seed in (0, 1):         # both branches of the data-dependent If (the sign of sum(x))
        feeds = _feeds(model, np.random.default_rng(seed))
        if name == "if_convs" and seed:
            feeds["x"] = -feeds["x"]
        _close(simulate(comp, feeds), ort_outputs(model, feeds))


def _digital(comp, op):
    return next(x for x in comp.cost["digital"] if x["op_type"] == op)


def test_loop_with_constant_trip_count_costs_every_iteration():
    five, one = (_digital(compiled(loop_matmul(n), limits=NO_UNROLLING), "Loop") for n in (5, 1))
    assert not five.get("estimated") and not one.get("estimated")
    assert five["counts"]["digital_ops"] == pytest.approx(5 * one["counts"]["digital_ops"])
    assert one["counts"]["digital_ops"] >= 2 * 8 * 8        # at least the MatMul of one iteration
    assert five["iterations"] == 5 and five["body_analog"][0] == "MatMul"   # W is constant: analog outside a body
    assert five["body_analog"][1:] == ["not unrolled: unrolling would copy 11 nodes; the limit is 1 "
                                       "(set ACOMPILE_MAX_UNROLLED_NODES to raise it)"]


def test_report_marks_the_iterations_the_estimate_and_why_it_was_not_unrolled(tmp_path, monkeypatch):
    monkeypatch.setenv("ACOMPILE_MAX_UNROLLED_NODES", "1")
    for name, want in (("loop_const", "Loop (body runs 5×; digital in the body: MatMul, not unrolled: unrolling "
                                      "would copy 11 nodes"),
                       ("loop_dynamic", "Loop (body runs ~1×, cost estimated; digital in the body: MatMul, "
                                        "not unrolled: its trip count is not a constant)")):
        path = tmp_path / f"{name}.onnx"
        onnx.save(MODELS[name](), path)
        assert cli_main(["compile", str(path), "--target", "isaac", "-q", "-o", str(tmp_path / name)]) == 0
        assert want in (tmp_path / name / "report.md").read_text()
        assert want in (tmp_path / name / "report.html").read_text()


def test_programs_with_sub_graphs_are_deterministic(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(loop_with_nested_if(dynamic=True), path)
    for out in ("a", "b"):
        assert cli_main(["compile", str(path), "--target", "isaac", "-q", "-o", str(tmp_path / out)]) == 0
    for name in ("program.json", "program.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_dynamic_trip_count_and_data_dependent_branch_are_estimates():
    assert _digital(compiled(loop_matmul(dynamic=True)), "Loop")["estimated"]
    assert _digital(compiled(if_with_convs()), "If")["estimated"]


def test_scan_costs_each_step_of_its_static_sequence():
    scan = _digital(compiled(scan_cumsum(), limits=NO_UNROLLING), "Scan")
    assert not scan.get("estimated") and scan["counts"]["digital_ops"] >= 7 * 4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_check_and_run_agree(name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    onnx.save(MODELS[name](), path)
    assert check_model(str(path), "isaac")["verdict"] in ("compatible", "compatible with digital fallback")
    out = tmp_path / "out"
    assert cli_main(["compile", str(path), "--target", "isaac", "-o", str(out)]) == 0
    ops = json.loads((out / "program.json").read_text())["ops"]
    flow = [op for op in ops if op["op"] in ("If", "Loop", "Scan")]
    assert bool(flow) == (name in DIGITAL)      # the static Loop and Scan are unrolled, their Ifs inlined
    assert all("graph" in v for op in flow for v in op["attrs"].values() if isinstance(v, dict))
    feeds = _feeds(onnx.load(path), np.random.default_rng(2))
    got = acompile.simulate(out, feeds, mode="ideal")
    _close([got[o.name] for o in onnx.load(path).graph.output], ort_outputs(onnx.load(path), feeds))


def test_mapped_onnx_keeps_the_sub_graphs_and_runs(tmp_path):
    model = loop_with_nested_if(dynamic=True)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert cli_main(["compile", str(path), "--target", "isaac", "-q", "-o", str(tmp_path / "out"),
                     "--emit", "mapped-with-weights"]) == 0
    mapped = onnx.load(tmp_path / "out" / "mapped.onnx")
    onnx.checker.check_model(mapped)
    feeds = _feeds(model, np.random.default_rng(3))
    _close(ort_outputs(mapped, feeds), ort_outputs(model, feeds))


def test_export_of_the_ir_keeps_control_flow_runnable():
    from acompile.frontend.export import to_onnx
    from acompile.frontend.load import load_model_proto
    model = loop_with_nested_if(dynamic=True)
    exported = to_onnx(load_model_proto(model))
    feeds = _feeds(model, np.random.default_rng(4))
    _close(ort_outputs(exported, feeds), ort_outputs(model, feeds))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["silero_vad", "silero_vad_ifless"])
def test_silero_runs_without_binding_its_sample_rate(name, tmp_path):
    """The If on the sample rate input runs digitally (with the whole network in its branches)."""
    import corpus
    model = str(corpus.path(name))      # skips without the cached wheel
    np.savez(tmp_path / "in.npz", **corpus.feeds(name, model_path=model))
    flags = corpus.shape_flags(name)
    for argv in (["check", model, "--target", "isaac", *flags],
                 ["run", model, "--target", "isaac", "--mode", "ideal", "--input", str(tmp_path / "in.npz"),
                  "--format", "json", *flags]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert cli_main(argv) == 0, argv[0]
    for c in json.loads(out.getvalue())["comparison"].values():
        assert c.get("compared") is False or c["relative_error"] <= 1e-3


def if_with_computed_pad() -> onnx.ModelProto:
    """An If whose branches pad x by amounts computed inside the body (a Transpose of a Constant, as
    torch's reflect padding exports them): ONNX shape inference cannot size the Pad, onnxruntime can."""
    rng = np.random.default_rng(0)

    def branch(name):
        pads = np.array([[0, 0], [0, 60]], np.int64)       # transposed and flattened: [0, 0, 0, 60]
        w = rng.normal(size=(64, 8)).astype(np.float32)
        nodes = [h.make_node("Constant", [], [f"{name}_p2"], value=numpy_helper.from_array(pads)),
                 h.make_node("Transpose", [f"{name}_p2"], [f"{name}_pt"]),
                 h.make_node("Constant", [], [f"{name}_flat"], value=numpy_helper.from_array(np.array([-1]))),
                 h.make_node("Reshape", [f"{name}_pt", f"{name}_flat"], [f"{name}_pads"]),
                 h.make_node("Pad", ["x", f"{name}_pads"], [f"{name}_xp"]),
                 h.make_node("Constant", [], [f"{name}_w"], value=numpy_helper.from_array(w)),
                 h.make_node("MatMul", [f"{name}_xp", f"{name}_w"], [f"{name}_y"])]
        return h.make_graph(nodes, name, [], [h.make_tensor_value_info(f"{name}_y", T.FLOAT, None)])
    nodes = [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             h.make_node("Greater", ["s", "zero"], ["c"]),
             h.make_node("If", ["c"], ["y"], then_branch=branch("then"), else_branch=branch("else"))]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                  [h.make_tensor_value_info("y", T.FLOAT, [1, 8])], [_const("zero", np.float32(0))])


def test_body_shapes_inference_cannot_settle_come_from_an_onnxruntime_probe():
    model = if_with_computed_pad()
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    pad = next(vi for vi in inferred.graph.node[2].attribute[0].g.value_info if vi.name.endswith("_xp"))
    assert not all(d.HasField("dim_value") for d in pad.type.tensor_type.shape.dim)    # ONNX leaves it open
    feeds = _feeds(model, np.random.default_rng(0))
    comp = compiled(model)
    _close(simulate(comp, feeds), ort_outputs(model, feeds))
    # the probe sizes the padded (1, 64) input: the body's MatMul costs 2 x 64 x 8 ops
    assert _digital(comp, "If")["counts"]["digital_ops"] >= 2 * 64 * 8


def loop_with_computed_pad(scan=False) -> onnx.ModelProto:
    """A Loop with a trip count from the data (or a Scan over 3 rows) whose body pads h by amounts
    computed inside it, then multiplies by a (64, 8) weight: ONNX inference cannot size the Pad, an
    onnxruntime probe of the body can."""
    w = np.random.default_rng(5).normal(size=(64, 8)).astype(np.float32) * 0.1
    nodes = [h.make_node("Constant", [], ["p2"], value=numpy_helper.from_array(np.array([[0, 0], [0, 56]]))),
             h.make_node("Transpose", ["p2"], ["pt"]),
             h.make_node("Constant", [], ["flat"], value=numpy_helper.from_array(np.array([-1]))),
             h.make_node("Reshape", ["pt", "flat"], ["pads"]), h.make_node("Pad", ["h_in", "pads"], ["hp"]),
             h.make_node("MatMul", ["hp", "W"], ["h_out"])]
    carried = [h.make_tensor_value_info("h_in", T.FLOAT, None)]
    outs = [h.make_tensor_value_info("h_out", T.FLOAT, None)]
    if scan:
        nodes.append(h.make_node("Add", ["h_out", "row"], ["h_next"]))
        body = h.make_graph(nodes, "body", carried + [h.make_tensor_value_info("row", T.FLOAT, None)],
                            [h.make_tensor_value_info("h_next", T.FLOAT, None)])
        flow = h.make_node("Scan", ["x", "rows"], ["y"], body=body, num_scan_inputs=1)
        inputs = [h.make_tensor_value_info("rows", T.FLOAT, [3, 1, 8])]
    else:
        nodes.append(h.make_node("Identity", ["cond_in"], ["cond_out"]))
        body = h.make_graph(nodes, "body", [h.make_tensor_value_info("i", T.INT64, []),
                                            h.make_tensor_value_info("cond_in", T.BOOL, [])] + carried,
                            [h.make_tensor_value_info("cond_out", T.BOOL, [])] + outs)
        flow = h.make_node("Loop", ["M", "", "x"], ["y"], body=body)
        inputs = [h.make_tensor_value_info("M", T.INT64, [])]
    return _model([flow], [h.make_tensor_value_info("x", T.FLOAT, [1, 8])] + inputs,
                  [h.make_tensor_value_info("y", T.FLOAT, [1, 8])], [_const("W", w)])


@pytest.mark.parametrize("scan", [False, True])
def test_loop_and_scan_bodies_are_probed_for_the_shapes_inference_leaves_open(scan):
    model = loop_with_computed_pad(scan)
    comp = compiled(model, limits=NO_UNROLLING)
    entry = _digital(comp, "Scan" if scan else "Loop")
    # the probe sizes the padded (1, 64) input: the body's MatMul costs 2 x 64 x 8 ops per iteration
    assert entry["counts"]["digital_ops"] >= entry["iterations"] * 2 * 64 * 8
    assert entry["iterations"] == (3 if scan else 1) and entry.get("estimated", False) is not scan
    feeds = _feeds(model, np.random.default_rng(6))
    _close(simulate(comp, feeds), ort_outputs(model, feeds))


INT64_MAX = np.iinfo(np.int64).max


def counted_loop(trip=10, stop=4, data_cond=False, symbolic=False) -> onnx.ModelProto:
    """tf2onnx's while_loop: acc <- acc @ W + x while ``t + 1 < stop`` and ``i + 1 < trip`` (``t`` a carried
    counter), W carried unchanged from an initializer, every acc stacked. ``trip`` None: no trip count;
    ``data_cond``: the loop also stops once sum(acc) reaches 1e9, which only the data can tell;
    ``symbolic``: the body declares W with a symbolic first dimension, as tf2onnx does (nakdimon)."""
    rng = np.random.default_rng(7)
    nodes = [h.make_node("Add", ["t_in", "one"], ["t_out"]), h.make_node("Less", ["t_out", "stop"], ["c1"]),
             h.make_node("Add", ["i", "one"], ["i1"]), h.make_node("Less", ["i1", "limit"], ["c2"]),
             h.make_node("And", ["c1", "c2"], ["c12"]),
             h.make_node("MatMul", ["acc_in", "W_in"], ["p"]), h.make_node("Add", ["p", "x"], ["acc_out"]),
             h.make_node("Identity", ["acc_out"], ["acc_scan"])]
    if data_cond:
        nodes += [h.make_node("ReduceSum", ["acc_out"], ["s"], keepdims=0),
                  h.make_node("Less", ["s", "big"], ["c3"]), h.make_node("And", ["c12", "c3"], ["cond_out"])]
    else:
        nodes.append(h.make_node("Identity", ["c12"], ["cond_out"]))
    body = h.make_graph(
        nodes, "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("t_in", T.INT64, []), h.make_tensor_value_info("acc_in", T.FLOAT, [1, 8]),
         h.make_tensor_value_info("W_in", T.FLOAT, ["unk", 8] if symbolic else [8, 8])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("t_out", T.INT64, []),
         h.make_tensor_value_info("acc_out", T.FLOAT, [1, 8]),
         h.make_tensor_value_info("W_in", T.FLOAT, ["unk", 8] if symbolic else [8, 8]),
         h.make_tensor_value_info("acc_scan", T.FLOAT, [1, 8])],
        [_const("one", np.int64(1)), _const("stop", np.int64(stop)), _const("big", np.float32(1e9))])
    inits = [_const("W", (rng.normal(size=(8, 8)) * 0.3).astype(np.float32)), _const("cond", np.bool_(True)),
             _const("t0", np.int64(0)), _const("limit", np.int64(INT64_MAX if trip is None else trip))]
    if trip is not None:
        inits.append(_const("M", np.int64(trip)))
    loop = h.make_node("Loop", ["M" if trip is not None else "", "cond", "t0", "x", "W"],
                       ["t_end", "y", "W_end", "ys"], body=body)
    outputs = [h.make_tensor_value_info("y", T.FLOAT, [1, 8]), h.make_tensor_value_info("ys", T.FLOAT, ["N", 1, 8])]
    return _model([loop], [h.make_tensor_value_info("x", T.FLOAT, [1, 8])], outputs, inits)


@pytest.mark.parametrize("trip, stop, runs, symbolic", [
    (10, 4, 4, False), (None, 4, 4, False), (INT64_MAX, 4, 4, False), (2, 4, 2, False), (10, 1, 1, False),
    (None, 4, 4, True)])
def test_a_loop_whose_condition_counts_unrolls_onto_one_set_of_crossbars(trip, stop, runs, symbolic):
    model = counted_loop(trip, stop, symbolic=symbolic)
    comp = compiled(model)
    assert not [n for n in comp.graph.nodes if n.op_type == "Loop"]
    (layer,) = comp.mapping.layers          # the carried W is one constant, read by every iteration
    assert layer.op_type == "Linear" and layer.uses == runs
    (cost,) = comp.cost["layers"]
    one = compiled(counted_loop(trip, 1)).cost["layers"][0]
    assert cost["counts"]["crossbars"] == one["counts"]["crossbars"]
    assert cost["counts"]["input_vectors"] == runs * one["counts"]["input_vectors"]
    feeds = _feeds(model, np.random.default_rng(8))
    _close(simulate(comp, feeds), ort_outputs(model, feeds))


@pytest.mark.parametrize("trip", [INT64_MAX, None, 10])
def test_a_counting_condition_is_costed_at_its_real_count(trip):
    entry = _digital(compiled(counted_loop(trip), limits=NO_UNROLLING), "Loop")
    assert entry["iterations"] == 4 and not entry.get("estimated")
    assert entry["body_analog"][0] == "MatMul"      # W is carried unchanged from a constant: a weight
    assert entry["body_analog"][-1].startswith("not unrolled: unrolling would copy")


@pytest.mark.parametrize("trip", [INT64_MAX, 10])
def test_a_condition_on_the_data_stays_digital_and_its_count_an_estimate(trip):
    model = counted_loop(trip, data_cond=True)
    comp = compiled(model)
    (loop,) = [n for n in comp.graph.nodes if n.op_type == "Loop"]
    assert loop.meta["unroll_reason"] == "its condition depends on the data"
    entry = _digital(comp, "Loop")
    assert entry["estimated"] and entry["iterations"] == (10 if trip == 10 else 1)   # INT64_MAX is no limit
    assert entry["body_analog"] == ["MatMul", "not unrolled: its condition depends on the data"]
    feeds = _feeds(model, np.random.default_rng(9))
    _close(simulate(comp, feeds), ort_outputs(model, feeds))


def test_a_loop_whose_initial_condition_is_false_runs_no_iteration():
    model = counted_loop(10)
    model.graph.initializer[1].CopyFrom(_const("cond", np.bool_(False)))
    comp = compiled(model)
    (loop,) = [n for n in comp.graph.nodes if n.op_type == "Loop"]
    assert loop.meta["unroll_reason"] == "it runs no iteration"
    assert _digital(comp, "Loop")["iterations"] == 0 and not _digital(comp, "Loop").get("estimated")
    feeds = _feeds(model, np.random.default_rng(10))
    (y, ys), (want_y, want_ys) = simulate(comp, feeds), ort_outputs(model, feeds)
    _close([y], [want_y])
    assert np.shape(ys) == np.shape(want_ys) == (0, 1, 8)


def _decoder_feeds(model, cached: bool, past: int, new: int, rng) -> dict:
    """Feeds for an Optimum merged decoder: every input by its name, past_* at ``past`` positions."""
    feeds = {"use_cache_branch": np.array([cached])}
    for vi in model.graph.input:
        name = vi.name
        if name == "input_ids":
            feeds[name] = rng.integers(0, 100, (1, new))
        elif name == "attention_mask":
            feeds[name] = np.ones((1, past + new), np.int64)
        elif name == "position_ids":
            feeds[name] = np.arange(past, past + new)[None]
        elif name == "encoder_hidden_states":
            feeds[name] = rng.normal(size=(1, 1500, 32)).astype(np.float32)     # Whisper's 30 s of frames
        elif name.startswith("past_key_values"):
            length = 1500 if ".encoder." in name else past
            feeds[name] = rng.normal(size=(1, 2, length, 16)).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", ["gpt2_merged_decoder", "whisper_merged_decoder"])
def test_an_optimum_merged_decoder_runs_either_branch(tmp_path, name):
    """Optimum's merged decoders (tests/data/README.md): one If on use_cache_branch, both branches spelling
    their values alike. onnx's data propagation left one branch's shapes on the other's values and outputs,
    which onnxruntime refused when acompile ran the If (check said compatible, run exit 2), and when it
    loaded mapped.onnx: the branches go to onnxruntime, and into mapped.onnx, without inference's shapes."""
    import onnxruntime as ort
    from pathlib import Path

    path = Path(__file__).parent / "data" / f"{name}.onnx"
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for cached, past, new in ((True, 5, 1), (False, 0, 6)):
        feeds = _decoder_feeds(model, cached, past, new, rng)
        np.savez(tmp_path / "in.npz", **feeds)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli_main(["run", str(path), "-t", "isaac", "-i", str(tmp_path / "in.npz"), "--format", "json"]) == 0
        assert max(c["relative_error"] for c in json.loads(out.getvalue())["comparison"].values()) < 1e-5
        shapes = [f"{key}:{','.join(map(str, value.shape))}" for key, value in feeds.items()]
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli_main(["compile", str(path), "-t", "isaac", "-o", str(tmp_path / f"out{past}"), "-q",
                             *(f"--input-shape={x}" for x in shapes)]) == 0
        ort.InferenceSession(str(tmp_path / f"out{past}" / "mapped.onnx"), providers=["CPUExecutionProvider"])
