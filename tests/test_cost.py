"""Cost figures traced by hand: counts derived here from first principles, times the target's figures."""

import math

import models
from acompile.cost import Cost, LayerCost, Totals, cost_model
from acompile.target import load_target
from helpers import compiled


def test_one_linear_layer_by_hand():
    t = load_target("isaac")
    k, n, batch = 784, 128, 2
    comp = compiled(models.mlp((k, n)), t, batch=batch)
    layer = comp.cost["layers"][0]
    c = layer["counts"]
    rows, cols = t["crossbar.rows"], t["crossbar.cols"]
    slices = math.ceil(t["precision.weight_bits"] / t["crossbar.cell_bits"])      # offset scheme: Bm = Bw
    # isaac subtracts the offset term from the input sum: no reference column
    physical = n * slices + (0 if t["crossbar.offset_subtraction"] == "input_sum" else 1)
    row_blocks, col_blocks = math.ceil(k / rows), math.ceil(physical / cols)
    cycles = t["precision.input_bits"]                                             # 1-bit DAC, signed input
    assert (layer["row_blocks"], layer["col_blocks"], layer["physical_columns"]) == (row_blocks, col_blocks, physical)
    assert c["input_vectors"] == batch and c["cycles_per_vector"] == cycles
    assert c["dac_conversions"] == batch * cycles * k * col_blocks
    assert c["adc_conversions"] == batch * cycles * physical * row_blocks
    assert c["array_reads"] == batch * cycles * row_blocks * col_blocks
    assert c["shift_adds"] == c["adc_conversions"]
    assert c["macs"] == batch * k * n
    e = layer["energy_pj"]
    assert e["dac"] == c["dac_conversions"] * t["dac.energy_pj"]
    assert e["adc"] == c["adc_conversions"] * t["adc.energy_pj"]
    assert e["array"] == c["array_reads"] * t["crossbar.read_energy_pj"]
    assert e["shift_add"] == c["shift_adds"] * t["shift_add.energy_pj"]
    stages = (t["crossbar.read_latency_ns"], t["adc.sample_hold_ns"],
              math.ceil(cols / math.ceil(cols / t["adc.columns_per_adc"])) * t["adc.conversion_ns"])
    t_cycle = max(stages) if t["adc.pipelined"] else sum(stages)       # isaac: pipelined
    assert math.isclose(layer["cycle_time_ns"], t_cycle)
    assert layer["latency_ns"] >= batch * cycles * t_cycle


def test_totals_add_up_and_carry_units():
    comp = compiled(models.small_cnn(), "puma")
    totals = comp.cost["totals"]
    parts = sum(totals["energy_pj"].values())
    assert math.isclose(parts, totals["energy_total_pj"])
    per_layer = sum(x["energy_total_pj"] for x in comp.cost["layers"] + comp.cost["digital"])
    assert math.isclose(per_layer + totals["energy_pj"]["static"], parts)
    assert 0 < totals["utilisation"] <= 1 and 0 < totals["analog_mac_fraction"] <= 1
    assert math.isclose(totals["tops_per_w"], totals["ops"] / totals["energy_total_pj"])
    for key in ("latency_ns", "energy_total_pj", "area_tiles_mm2", "area_chip_mm2"):
        assert key in totals
    assert totals["throughput_inferences_per_s"] > 0 and totals["latency_ns"] >= totals["slowest_stage_ns"]


def test_energy_grows_with_batch():
    one = compiled(models.mlp(), batch=1).cost["totals"]
    four = compiled(models.mlp(), batch=4).cost["totals"]
    assert four["adc_conversions"] == 4 * one["adc_conversions"]


def test_the_report_dict_is_made_from_typed_records():
    comp = compiled(models.small_cnn(), "isaac")
    cost = cost_model(comp.graph, comp.mapping, comp.target)
    assert isinstance(cost, Cost) and isinstance(cost.totals, Totals)
    assert all(isinstance(x, LayerCost) for x in cost.layers) and len(cost.layers) == len(comp.mapping.layers)
    assert cost.to_dict() == comp.cost
    first = cost.layers[0]
    assert first.counts.adc_conversions == comp.cost["layers"][0]["counts"]["adc_conversions"]
    assert cost.totals.energy_total_pj == sum(cost.totals.energy_pj.values())
    assert set(comp.cost["layers"][0]) >= {"kind", "energy_total_pj", "utilisation", "counts", "tiles"}


def test_the_cost_is_the_same_whether_the_mapping_is_checked_once_or_after_every_pass(monkeypatch):
    """The command line's default checks the mapping once, after the last pass; the tests after every pass.
    Neither changes the mapping the cost model sums over."""
    costs = []
    for each in ("0", "1"):
        monkeypatch.setenv("ACOMPILE_VERIFY_EACH_PASS", each)
        comp = compiled(models.small_cnn(), "isaac")
        assert comp.cost == cost_model(comp.graph, comp.mapping, comp.target).to_dict()
        costs.append(comp.cost)
    assert costs[0] == costs[1]


def _attention_model(layout: str):
    """ONNX Attention-23 on [B, S, hidden] (heads from attributes) or [B, H, S, head] inputs."""
    import onnx
    from onnx import TensorProto, helper
    b, h, sq, skv, dh = 2, 4, 8, 6, 16
    if layout == "3d":
        q, k = [b, sq, h * dh], [b, skv, h * dh]
        attrs = {"q_num_heads": h, "kv_num_heads": h}
    else:
        q, k = [b, h, sq, dh], [b, h, skv, dh]
        attrs = {}
    g = helper.make_graph([helper.make_node("Attention", ["q", "k", "v"], ["y"], **attrs)], "att",
                          [helper.make_tensor_value_info("q", TensorProto.FLOAT, q),
                           helper.make_tensor_value_info("k", TensorProto.FLOAT, k),
                           helper.make_tensor_value_info("v", TensorProto.FLOAT, k)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    return model, 2 * b * sq * skv * 2 * h * dh + 5 * b * h * sq * skv


def test_attention_counts_its_two_products_and_softmax():
    import pytest
    for layout in ("3d", "4d"):
        model, ops = _attention_model(layout)
        comp = compiled(model, "isaac")
        (node,) = [d for d in comp.cost["digital"] if d["op_type"] == "Attention"]
        assert node["counts"]["digital_ops"] == pytest.approx(ops), layout
