"""Numbers a hardware team can sign off (issue 12): static power is charged, throughput does not
depend on the batch, ISAAC's headline figures come out of its component figures, and no report
beats its target's derived peak efficiency."""

from __future__ import annotations

import glob
import json
import subprocess
import sys

import pytest

from acompile import compile_model
from acompile.compiler import Options
from acompile.target import load_target
from acompile.target.read import shipped_targets

SAMPLES = sorted(glob.glob("samples/*.onnx"))


def totals(model: str, target, batch: int = 1) -> dict:
    return compile_model(model, target, Options(batch=batch)).cost["totals"]


def test_static_energy_is_the_held_power_times_the_latency():
    t = load_target("isaac")
    tot = totals("samples/mlp.onnx", t)
    # by hand from targets/isaac.toml: per core sample & hold 0.01 + registers 1.24 + 0.23 mW, 12 cores;
    # per tile eDRAM bus 7 + 2 sigmoids 0.52 + shift-add 0.05 + max pool 0.4 + output register 1.68 mW
    tile_mw = 12 * (0.01 + 1.24 + 0.23) + 7.0 + 2 * 0.26 + 0.05 + 0.4 + 1.68
    assert t.summary()["tile_held_power_mw"] == pytest.approx(tile_mw)
    assert tot["held_power_mw"] == pytest.approx(tot["tiles"] * tile_mw)
    assert tot["energy_pj"]["static"] == pytest.approx(tot["held_power_mw"] * tot["latency_ns"])   # mW x ns = pJ
    assert tot["energy_pj"]["static"] > 0


def test_static_power_is_charged_whenever_a_target_declares_it():
    for name in shipped_targets():
        t = load_target(name)
        s = t.summary()
        tot = totals("samples/mlp.onnx", t)
        declared = s["tile_held_power_mw"] > 0 or s["chip_held_power_mw"] > 0
        assert (tot["energy_pj"]["static"] > 0) == declared, name


def test_average_power_at_the_throughput():
    tot = totals("samples/mlp.onnx", load_target("isaac"))
    dynamic = tot["energy_total_pj"] - tot["energy_pj"]["static"]
    assert tot["average_power_mw"] == pytest.approx(dynamic / tot["slowest_stage_ns"] + tot["held_power_mw"])
    assert tot["energy_per_sample_pj"] == pytest.approx(tot["energy_total_pj"] / tot["batch"])


@pytest.mark.parametrize("name", ["isaac", "puma"])
def test_throughput_does_not_depend_on_the_batch(name):
    t = load_target(name)
    one, four = totals("samples/mlp.onnx", t, 1), totals("samples/mlp.onnx", t, 4)
    assert four["batch"] == 4 and one["batch"] == 1
    assert four["throughput_inferences_per_s"] == pytest.approx(one["throughput_inferences_per_s"], rel=1e-9)
    # a model whose batch is fixed in the file is one sample whatever --batch says
    fixed = totals("samples/resblock.onnx", t, 4)
    assert fixed["batch"] == 1


def test_isaac_summary_reproduces_the_paper_from_component_figures():
    s = load_target("isaac").summary()
    assert s["cycle_ns"] == pytest.approx(100.0)          # read and conversions pipelined: the slower stage
    assert s["tops_per_w"] == pytest.approx(0.644, rel=0.03)
    assert s["tops_per_mm2"] == pytest.approx(0.479, rel=0.03)


def test_isaac_summary_json_carries_the_same_figures():
    out = subprocess.run([sys.executable, "-m", "acompile", "targets", "show", "isaac", "--summary",
                          "--format", "json"], capture_output=True, text=True, check=True).stdout
    s = json.loads(out)["summary"]
    assert s["tops_per_w"] == pytest.approx(0.644, rel=0.03)
    assert s["tops_per_mm2"] == pytest.approx(0.479, rel=0.03)


def _bound(name: str, model: str) -> None:
    t = load_target(name)
    s = t.summary()
    tot = totals(model, t)
    assert tot["tops_per_w"] <= s["tops_per_w_events"], (name, model)
    if name == "isaac":                                     # its powers and energies agree (one 100 ns cycle)
        assert tot["tops_per_w"] <= s["tops_per_w"], (name, model)


@pytest.mark.parametrize("name", ["isaac", "prime"])
def test_the_mlp_does_not_beat_the_derived_peak(name):
    _bound(name, "samples/mlp.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("name", shipped_targets())
@pytest.mark.parametrize("model", SAMPLES)
def test_no_report_beats_the_derived_peak(name, model):
    _bound(name, model)


def test_idle_components_are_charged_over_the_pipeline_period():
    """docs/cost.md, Idle power: the MLP on isaac, stage 1856 ns (fc1), every layer busy 16 x 100 ns."""
    from acompile.target.overrides import apply_overrides
    base = load_target("isaac")
    plain = compile_model("samples/mlp.onnx", base, Options()).cost
    assert all("static" not in x["energy_pj"] for x in plain["layers"])       # default 0: nothing changes
    idle = apply_overrides(base, {"crossbar.idle_power_mw": 0.01, "adc.idle_power_mw": 0.1,
                                  "dac.idle_power_mw": 0.001})
    cost = compile_model("samples/mlp.onnx", idle, Options()).cost
    per_bar = 0.01 + 1 * 0.1 + 128 * 0.001                                    # 1 ADC, 128 DACs per crossbar
    by_hand = {"fc1": per_bar * 56 * 256, "fc2": per_bar * 4 * 256, "output": per_bar * 1 * 256}
    assert {x["name"]: x["energy_pj"]["static"] for x in cost["layers"]} == pytest.approx(by_hand)
    t, p = cost["totals"], plain["totals"]
    assert t["energy_pj"]["static"] == pytest.approx(p["energy_pj"]["static"] + 3716.608)
    assert t["average_power_mw"] == pytest.approx(p["average_power_mw"] + 3716.608 / t["slowest_stage_ns"])


def test_the_encoding_digital_additions_are_counted():
    """isaac: input_sum offset and flipped columns: K input adds, N offset subtractions, R x N corrections."""
    cost = compile_model("samples/mlp.onnx", load_target("isaac"), Options()).cost
    fc1 = next(x for x in cost["layers"] if x["name"] == "fc1")
    assert fc1["counts"]["encoding_ops"] == 784 + 128 + 7 * 128
    add_pj = float(load_target("isaac").digital_op("Add")["energy_pj"])
    assert fc1["energy_pj"]["digital"] == pytest.approx(
        (fc1["counts"]["digital_ops"] + fc1["counts"]["encoding_ops"]) * add_pj)
    prime = compile_model("samples/mlp.onnx", load_target("prime"), Options()).cost   # differential: none
    assert all(x["counts"]["encoding_ops"] == 0 for x in prime["layers"])
