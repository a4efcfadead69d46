"""mapped.onnx: the mapped program as ONNX that onnx.checker (and so Netron) accepts, one chain of
acompile-domain nodes per analog layer, the totals in metadata_props, weights only when asked."""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import pytest

import models
from acompile.backends.mapped_onnx import DOMAIN_VERSION, SMALL_CONSTANT, mapped_model
from acompile.backends.report import build_report
from acompile.cli.app import main
from acompile.compiler import compile_model
from acompile.target import load_target

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CHAIN = ["ToVectors", "DAC", "CrossbarRead", "ADC", "ShiftAdd", "Accumulate", "Dequantize", "FromVectors"]


@pytest.fixture(scope="module", params=[("cnn", "isaac"), ("resblock", "puma"), ("mlp", "isaac")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def compiled(request):
    name, target = request.param
    c = compile_model(str(SAMPLES / f"{name}.onnx"), load_target(target))
    return c, build_report(c)


def test_checker_accepts_it_and_it_round_trips(compiled, tmp_path):
    c, report = compiled
    model = mapped_model(c, report)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, tmp_path / "mapped.onnx")
    again = onnx.load(tmp_path / "mapped.onnx")
    onnx.checker.check_model(str(tmp_path / "mapped.onnx"))
    assert again.SerializeToString() == model.SerializeToString()
    assert {o.domain: o.version for o in again.opset_import}["acompile"] == DOMAIN_VERSION


def test_one_chain_per_analog_layer(compiled):
    c, report = compiled
    model = mapped_model(c, report)
    chains = defaultdict(list)
    for node in model.graph.node:
        if node.domain == "acompile":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            chains[attrs["layer"].decode()].append((node.op_type, attrs))
    assert list(chains) == [x["name"] for x in report["layers"]]
    for name, chain in chains.items():
        assert [op for op, _ in chain] == CHAIN * (len(chain) // len(CHAIN))
        read = next(a for op, a in chain if op == "CrossbarRead")
        entry = next(x for x in report["layers"] if x["name"] == name)
        assert read["layer_crossbars"] == entry["counts"]["crossbars"]
        assert read["cost_energy_pj"] == pytest.approx(entry["energy_total_pj"], rel=1e-6)
        assert read["crossbars"] and read["blocks"] >= 1
        adc = next(a for op, a in chain if op == "ADC")
        assert adc["bits"] >= 1 and adc["full_scale"] > 0
    digital = [n.op_type for n in model.graph.node if n.domain == ""]
    assert digital == [n.op_type for n in c.graph.nodes if not n.domain]


def test_totals_in_metadata_and_no_weights_by_default(compiled):
    c, report = compiled
    model = mapped_model(c, report)
    meta = {p.key: p.value for p in model.metadata_props}
    assert float(meta["acompile.totals.energy_total_pj"]) == pytest.approx(report["totals"]["energy_total_pj"])
    assert int(meta["acompile.totals.crossbars"]) == report["totals"]["crossbars"]
    assert json.loads(meta["acompile.totals.energy_pj"]).keys() == report["totals"]["energy_pj"].keys()
    assert all(np.prod(t.dims) <= SMALL_CONSTANT for t in model.graph.initializer)
    heavy = mapped_model(c, report, with_weights=True)
    onnx.checker.check_model(heavy)
    weights = {layer.weight for layer in c.mapping.layers}
    assert weights <= {t.name for t in heavy.graph.initializer}
    assert model.ByteSize() < heavy.ByteSize()


def test_compile_writes_it_and_emit_picks_the_variant(tmp_path):
    out = tmp_path / "out"
    assert main(["compile", str(SAMPLES / "cnn.onnx"), "-t", "isaac", "-o", str(out), "-q",
                 "--emit", "mapped-with-weights"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mapped.onnx"]
    model = onnx.load(out / "mapped.onnx")
    assert len(model.graph.initializer) >= 3
    assert main(["compile", str(SAMPLES / "cnn.onnx"), "-t", "isaac", "-o", str(out), "-q",
                 "--emit", "mapped,mapped-with-weights"]) == 2


@pytest.mark.parametrize("dims, note", [
    (["N", 16], "input scales come from 8 seeded standard-normal samples per input"),     # dynamic batch
    ([3, 16], "input scales come from 3 seeded standard-normal samples per input"),      # one batch of its size
    ([1, 16], "input scales come from 1 seeded standard-normal sample per input"),
])
def test_the_report_says_how_many_default_samples_calibrated_it(dims, note):
    model = models.mlp()
    for vi in (model.graph.input[0], model.graph.output[0]):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        if isinstance(dims[0], str):
            dim.dim_param = dims[0]
        else:
            dim.dim_value = dims[0]
    report = build_report(compile_model(model, load_target("isaac")))
    assert note in report["calibration_note"] and "pass --calibration DATA" in report["calibration_note"]


def test_the_report_says_no_layer_needed_calibration():
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    report = build_report(compile_model(model, load_target("isaac")))
    assert report["calibration_note"] == "No calibration data given, and no analog layer needs it"


@pytest.mark.parametrize("rows", [4, 32])      # under and over SMALL_CONSTANT elements
@pytest.mark.parametrize("with_weights", [False, True])
def test_a_weight_that_is_also_a_graph_output_stays_in_it(rows, with_weights):
    from onnx import TensorProto, helper, numpy_helper
    w = np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, rows])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]),
                               helper.make_tensor_value_info("W", TensorProto.FLOAT, [rows, 4])],
                              [numpy_helper.from_array(w, "W")])
    c = compile_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), load_target("isaac"))
    m = mapped_model(c, build_report(c), with_weights)
    onnx.checker.check_model(m)
    assert [o.name for o in m.graph.output] == ["y", "W"]
    stored = {t.name for t in m.graph.initializer}
    assert ("W" in stored) == (with_weights or w.size <= SMALL_CONSTANT)
    assert ("W" in {i.name for i in m.graph.input}) == ("W" not in stored)


def test_a_constant_a_node_reads_twice_is_stored_once():
    """An exporter's Slice(x, one, end, one): the same initializer as starts and axes (torch's dynamo export)."""
    from onnx import TensorProto, helper, numpy_helper
    w = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["m"]),
                               helper.make_node("Slice", ["m", "one", "end", "one"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([1]), "one"),
                               numpy_helper.from_array(np.array([3]), "end")])
    c = compile_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), load_target("isaac"))
    m = mapped_model(c, build_report(c))
    onnx.checker.check_model(m)
    assert [t.name for t in m.graph.initializer].count("one") == 1
