"""The pass manager and the mapping it builds: pass order and contracts, timings, the IR + mapping dump,
Mapping.verify catching broken mappings, to_dict/from_dict, and the loaders rebuilding a whole mapping."""

import copy
import dataclasses
import json

import numpy as np
import pytest

import models
from acompile import numerics
from acompile.backends.device import write_device
from acompile.backends.device_reader import DeviceReader
from acompile.backends.program import write_program
from acompile.backends.program_reader import load_program
from acompile.compiler import FRONTEND, MAPPING, Options, pipeline, run_pipeline
from acompile.errors import InvalidDataError, UnsupportedError
from acompile.jsonio import dumps_json
from acompile.mapping import BrokenMapping, Mapping, layer_matrix
from acompile.passes.base import check_order
from acompile.target import load_target
from helpers import compiled

MODELS = ["mlp", "small_cnn", "grouped_conv", "depthwise_conv", "conv_transpose_grouped", "transformer_block"]


def test_the_pipeline_is_ordered_by_its_contracts():
    names = [p.name for p in pipeline()]
    assert names == ["model_scales", "fold_constants", "unroll_control", "unroll_recurrent", "ml_linear",
                     "contrib_fused", "contrib_attention", "stft_conv", "gemm_to_linear", "fold_affine",
                     "explicit_bias", "classify", "unmapped_linear", "lower_analog", "choose_precision",
                     "apply_model_scales", "partition", "pack", "replicate", "place", "insert_boundaries",
                     "contiguous_weights", "calibrate"]
    assert pipeline(with_calibration=False) == [*FRONTEND, *MAPPING]
    check_order(pipeline())
    swapped = list(pipeline())
    at = names.index("pack")
    swapped[at - 1], swapped[at] = swapped[at], swapped[at - 1]
    with pytest.raises(RuntimeError, match="pack needs"):
        check_order(swapped)


def test_every_pass_is_timed_and_dumped_with_the_mapping(tmp_path, monkeypatch):
    monkeypatch.setenv("ACOMPILE_DUMP_IR", str(tmp_path))
    comp = compiled(models.small_cnn(), "isaac")
    assert list(comp.timings_s) == ["load"] + [p.name for p in pipeline()]
    dumps = sorted(p.name for p in tmp_path.iterdir())
    number = {p.name: f"{i:02d}_{p.name}" for i, p in enumerate(pipeline(), start=2)}     # 01 is the load
    assert dumps[:2] == ["02_model_scales.txt", "03_fold_constants.txt"]
    assert f"{number['unmapped_linear']}.mapping.json" not in dumps and f"{number['lower_analog']}.mapping.json" in dumps
    last = Mapping.from_dict(json.loads((tmp_path / f"{number['calibrate']}.mapping.json").read_text()))
    assert last == comp.mapping
    assert "CrossbarRead" in (tmp_path / f"{number['insert_boundaries']}.txt").read_text()


@pytest.mark.parametrize("each_pass", ["0", "1"])
def test_the_graph_is_checked_as_loaded_and_after_the_last_pass_or_after_every_pass(monkeypatch, each_pass):
    """The loader checks the graph it read; a compile checks it again once its passes are done, or after every
    pass with ACOMPILE_VERIFY_EACH_PASS=1 (the tests), which names the pass that broke it."""
    from acompile.ir import Graph
    monkeypatch.setenv("ACOMPILE_VERIFY_EACH_PASS", each_pass)
    calls = []
    check = Graph.verify
    monkeypatch.setattr(Graph, "verify", lambda self: (calls.append(1), check(self))[1])
    run_pipeline(models.small_cnn(), load_target("isaac"), Options())
    assert len(calls) == (2 if each_pass == "0" else 1 + len(pipeline(True)))


def test_unsupported_nodes_stop_the_compile_after_classify():
    with pytest.raises(UnsupportedError) as e:
        compiled(models.unsupported_op_model())
    assert e.value.problems
    t = load_target("isaac")
    stopped = run_pipeline(models.unsupported_op_model(), t, Options(), stop_on_problems=False)
    assert stopped.problems and stopped.mapping is None and stopped.cost == {}
    assert list(stopped.timings_s)[-1] == "explicit_bias"
    costed = run_pipeline(models.unsupported_op_model(), t, Options(allow_unsupported=True), with_calibration=False)
    assert costed.problems and costed.cost["digital"] and "calibrate" not in costed.timings_s


@pytest.mark.parametrize("target", ["isaac", "puma", "prime", "hermes"])
@pytest.mark.parametrize("name", MODELS)
def test_blocks_fit_and_tile_every_matrix_exactly(name, target):
    comp = compiled(models.ALL_SMALL[name](), target)
    t = load_target(target)
    rows, cols = t.crossbar.rows, t.crossbar.cols
    mapping = comp.mapping
    for layer in mapping.layers:
        for mi, m in enumerate(layer.matrices):
            cover = np.zeros((m.k_in, m.physical_cols), np.int32)
            for b in (mapping.blocks[i] for i in layer.blocks if mapping.blocks[i].matrix == mi):
                assert 0 < b.rows <= rows and 0 < b.cols <= cols
                cover[b.row_start:b.row_start + b.rows, b.col_start:b.col_start + b.cols] += 1
            assert np.all(cover == 1), "every cell of the matrix is in exactly one block"
    for on_bar in mapping.held():
        used = np.zeros((rows, cols), np.int32)
        for b in (mapping.blocks[i] for i in on_bar):
            used[b.row_offset:b.row_offset + b.rows, b.col_offset:b.col_offset + b.cols] += 1
        assert used.max() <= 1
    mapping.verify()


def _break(what: str):
    def damage(m: Mapping) -> None:
        if what == "lost_block":
            m.layers[0].blocks.pop()
        elif what == "uncovered_row":
            m.blocks.rows[0] -= 1
        elif what == "cell_in_two_blocks":
            m.layers[0].blocks.append(len(m.blocks))
            m.blocks = m.blocks.concat(m.blocks.take([0]))
        elif what == "wrong_physical_columns":
            m.layers[0].matrices[0].physical_cols += 1
        elif what == "overlap":
            b = m.held()[0][1]
            m.blocks.row_offset[b] = m.blocks.col_offset[b] = 0
        elif what == "outside_crossbar":
            m.crossbars.rows_used[0] = m.crossbars.cols_used[0] = m.fabric.rows + 1
            m.blocks.row_offset[m.held()[0][0]] = m.fabric.rows
        elif what == "missing_crossbar":
            m.blocks.crossbar[m.held()[0][0]] = len(m.crossbars)
        elif what == "slot_outside_core":
            m.crossbars.slot[0] = m.fabric.crossbars_per_core
        elif what == "wrong_chip_count":
            m.chips_needed += 1
        elif what == "missing_replica":
            m.layers[0].replication += 1
    return damage


BREAKS = ["lost_block", "uncovered_row", "cell_in_two_blocks", "wrong_physical_columns", "overlap", "outside_crossbar",
          "missing_crossbar", "slot_outside_core", "wrong_chip_count", "missing_replica"]


@pytest.fixture(scope="module")
def puma_mapping():
    """A packed mapping with crossbars holding several blocks (puma shares crossbars between layers)."""
    mapping = compiled(models.mlp((16, 8, 8, 4)), "puma").mapping
    assert len(mapping.held()[0]) > 1
    return mapping


@pytest.mark.parametrize("what", BREAKS)
def test_verify_names_what_is_broken(puma_mapping, what):
    m = copy.deepcopy(puma_mapping)
    m.verify()
    _break(what)(m)
    with pytest.raises(BrokenMapping, match="internal error, broken mapping"):
        m.verify()


def test_mappings_survive_to_dict_and_from_dict():
    for comp in (compiled(models.grouped_conv(), "hermes"), compiled(models.small_cnn(), "isaac", replicate="auto")):
        data = json.loads(dumps_json(comp.mapping.to_dict()))
        back = Mapping.from_dict(data)
        assert back == comp.mapping
        back.verify()


@pytest.mark.parametrize("replicate", ["none", "auto"])
def test_the_loaders_rebuild_the_whole_mapping(tmp_path, replicate):
    comp = compiled(models.small_cnn(), "isaac", replicate=replicate)
    sha = write_program(tmp_path, comp, dumps_json)
    write_device(tmp_path / "device.acdev", comp, sha)
    _, mapping, loaded_sha = load_program(tmp_path)
    assert mapping.layers == [_without_blocks(layer) for layer in comp.mapping.layers] and not mapping.blocks
    DeviceReader(tmp_path / "device.acdev", mapping, program_sha256=loaded_sha)
    assert mapping == comp.mapping


def _without_blocks(layer):
    out = copy.copy(layer)
    out.blocks = []
    return out


def test_a_device_header_that_does_not_hold_together_is_refused(tmp_path):
    comp = compiled(models.mlp((16, 8, 8, 4)), "puma")
    sha = write_program(tmp_path, comp, dumps_json)
    broken = dataclasses.replace(comp, mapping=copy.deepcopy(comp.mapping))
    broken.mapping.crossbars.slot[0] = 99          # written as is: the writer does not verify
    write_device(tmp_path / "device.acdev", broken, sha)
    _, mapping, _ = load_program(tmp_path)
    with pytest.raises(InvalidDataError, match="does not hold together"):
        DeviceReader(tmp_path / "device.acdev", mapping, program_sha256=sha)


@pytest.mark.parametrize("target", ["isaac", "puma", "prime"])
def test_every_weight_lands_in_one_cell_per_slice_and_sign(tmp_path, target):
    """Write the device file, read it back, and decode the cells to the quantised weights."""
    comp = compiled(models.grouped_conv(), target)
    sha = write_program(tmp_path, comp, dumps_json)
    write_device(tmp_path / "device.acdev", comp, sha)
    reader = DeviceReader(tmp_path / "device.acdev", comp.mapping, program_sha256=sha)
    for layer in comp.mapping.layers:
        for g, m in enumerate(layer.matrices):
            q_w, s_w = numerics.quantize_weights(layer_matrix(comp.graph.constants, layer, g), layer.spec.weight_bits)
            enc = reader.encoded(layer, g)
            np.testing.assert_array_equal(numerics.decode_weights(enc.enc, layer.spec, m.n_out), q_w)
            np.testing.assert_array_equal(enc.weight_scale, s_w)


def test_replication_balances_the_pipeline_within_the_chips_used(tmp_path):
    from acompile.cli import main
    from acompile.simulation import load_compiled, simulate as run_folder
    plain = compiled(models.small_cnn(), "isaac")
    rep = compiled(models.small_cnn(), "isaac", replicate="auto")
    p, r = plain.cost["totals"], rep.cost["totals"]
    assert r["chips"] == p["chips"] == 1 and r["crossbars"] > p["crossbars"]
    # copies split the vectors: the events and their energy are unchanged; static energy follows the
    # tiles held and the (shorter) latency
    dynamic = [t["energy_total_pj"] - t["energy_pj"]["static"] for t in (p, r)]
    assert dynamic[0] == pytest.approx(dynamic[1]) and r["adc_conversions"] == p["adc_conversions"]
    assert r["energy_pj"]["static"] == pytest.approx(r["held_power_mw"] * r["latency_ns"])
    assert r["slowest_stage_ns"] < p["slowest_stage_ns"]
    assert r["throughput_inferences_per_s"] > p["throughput_inferences_per_s"]
    assert max(layer.replication for layer in rep.mapping.layers) > 1
    for layer in rep.mapping.layers:
        assert layer.replication <= layer.n_vec
        copies = [rep.mapping.blocks[b].replica for b in layer.blocks]
        assert sorted(set(copies)) == list(range(layer.replication))
    model = tmp_path / "m.onnx"
    model.write_bytes(models.small_cnn().SerializeToString())
    for name, extra in (("plain", []), ("rep", ["--replicate", "auto"])):
        assert main(["compile", str(model), "-t", "isaac", "-o", str(tmp_path / name), "-q", *extra]) == 0
    feeds = models.random_inputs(models.small_cnn(), batch=1)
    outs = [run_folder(load_compiled(tmp_path / n, "quantized"), feeds, mode="quantized") for n in ("plain", "rep")]
    np.testing.assert_array_equal(outs[0]["output"], outs[1]["output"])
