"""Mapping passes: partition, sign/slice encoding, packing, placement and boundary nodes."""

import numpy as np
import pytest

import models
from acompile.backends.device import DeviceReader, write_device
from acompile.backends.program import write_program
from acompile.compiler import dumps_json
from acompile.passes.boundaries import CHAIN
from acompile.passes.lower import layer_matrix
from acompile.sim import analog
from acompile.target import load_target
from helpers import compiled

MODELS = ["mlp", "small_cnn", "grouped_conv", "depthwise_conv", "conv_transpose_grouped", "transformer_block"]


@pytest.mark.parametrize("target", ["isaac", "puma", "prime", "hermes"])
@pytest.mark.parametrize("name", MODELS)
def test_blocks_fit_and_tile_every_matrix_exactly(name, target):
    comp = compiled(models.ALL_SMALL[name](), target)
    t = load_target(target)
    rows, cols = t["crossbar.rows"], t["crossbar.cols"]
    mapping = comp.mapping
    for layer in mapping.layers:
        for mi, m in enumerate(layer.matrices):
            cover = np.zeros((m.k_in, m.physical_cols), np.int32)
            for b in (mapping.blocks[i] for i in layer.blocks if mapping.blocks[i].matrix == mi):
                assert 0 < b.rows <= rows and 0 < b.cols <= cols
                cover[b.row_start:b.row_start + b.rows, b.col_start:b.col_start + b.cols] += 1
            assert np.all(cover == 1), "every cell of the matrix is in exactly one block"
    # blocks sharing a crossbar never overlap, and fit it
    for bar in mapping.crossbars:
        used = np.zeros((rows, cols), np.int32)
        for b in (mapping.blocks[i] for i in bar.blocks):
            used[b.row_offset:b.row_offset + b.rows, b.col_offset:b.col_offset + b.cols] += 1
        assert used.max() <= 1


def test_layers_share_crossbars_only_when_the_target_allows():
    isaac = compiled(models.mlp((16, 8, 8, 4)), "isaac").mapping
    puma = compiled(models.mlp((16, 8, 8, 4)), "puma").mapping
    layers_per_bar = lambda m: [len({m.blocks[b].layer for b in bar.blocks}) for bar in m.crossbars]
    assert max(layers_per_bar(isaac)) == 1
    assert load_target("puma")["crossbar.share_between_layers"] and max(layers_per_bar(puma)) > 1
    assert len(puma.crossbars) < len(isaac.crossbars)


def test_placement_follows_the_organisation():
    t = load_target("isaac")
    per_core = t["organisation.crossbars_per_core"]
    per_tile = per_core * t["organisation.cores_per_tile"]
    mapping = compiled(models.small_cnn(), t).mapping
    for bar in mapping.crossbars:
        assert bar.tile * per_tile + bar.core * per_core + bar.slot == bar.index
    assert mapping.chips_needed == 1 and mapping.tiles_used == -(-len(mapping.crossbars) // per_tile)


def test_a_model_too_large_for_one_chip_reports_chips():
    t = load_target("isaac").with_overrides({"organisation.tiles_per_chip": 1, "organisation.cores_per_tile": 1,
                                             "organisation.crossbars_per_core": 2, "network.tiles_per_router": 1})
    comp = compiled(models.small_cnn(), t)
    assert comp.mapping.chips_needed > 1
    assert comp.cost["totals"]["chips"] == comp.mapping.chips_needed and not comp.cost["totals"]["fits_one_chip"]


def test_boundary_chain_replaces_every_analog_node():
    comp = compiled(models.small_cnn())
    for layer in comp.mapping.layers:
        chain = [n.op_type for n in comp.graph.nodes if n.meta.get("layer") == layer.index]
        assert chain == list(CHAIN)
    assert not any(n.op_type in ("Conv", "Linear") for n in comp.graph.nodes)


@pytest.mark.parametrize("target", ["isaac", "puma", "prime"])
def test_every_weight_lands_in_one_cell_per_slice_and_sign(tmp_path, target):
    """Write the device file, read it back, and decode the cells to the quantised weights."""
    comp = compiled(models.grouped_conv(), target)
    sha = write_program(tmp_path, comp, dumps_json)
    write_device(tmp_path / "device.acdev", comp, sha, dumps_json)
    reader = DeviceReader(tmp_path / "device.acdev", comp.mapping, program_sha256=sha)
    for layer in comp.mapping.layers:
        for g, m in enumerate(layer.matrices):
            q_w, s_w = analog.quantize_weights(layer_matrix(comp.graph.constants, layer, g), layer.spec.weight_bits)
            enc = reader.encoded(layer, g)
            np.testing.assert_array_equal(analog.decode_weights(enc.enc, layer.spec, m.n_out), q_w)
            np.testing.assert_array_equal(enc.weight_scale, s_w)


def test_replication_balances_the_pipeline_within_the_chips_used(tmp_path):
    from acompile.simulation import load_compiled, simulate as run_folder
    from acompile.cli import main
    plain = compiled(models.small_cnn(), "isaac")
    rep = compiled(models.small_cnn(), "isaac", replicate="auto")
    p, r = plain.cost["totals"], rep.cost["totals"]
    assert r["chips"] == p["chips"] == 1 and r["crossbars"] > p["crossbars"]
    assert r["energy_total_pj"] == p["energy_total_pj"] and r["adc_conversions"] == p["adc_conversions"]
    assert r["slowest_stage_ns"] < p["slowest_stage_ns"] and r["throughput_inferences_per_s"] > p["throughput_inferences_per_s"]
    assert max(l.replication for l in rep.mapping.layers) > 1
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
