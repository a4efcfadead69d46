"""Scaling rules: ADC, DAC and array figures follow bits and array size when the target is resolved."""

import pytest

from acompile.target import load_target, shipped_targets
from acompile.target.scaling import _LAWS, RULE_FIELDS, RULES, connected


def test_adc_energy_follows_walden_and_sar_time_and_area():
    isaac = load_target("isaac")
    assert isaac["scaling.adc.energy"] == "walden" and "Walden" in isaac["scaling.adc.source"]
    four, nine = isaac.with_overrides({"adc.bits": 4}), isaac.with_overrides({"adc.bits": 9})
    assert four.adc.energy_pj == pytest.approx(isaac.adc.energy_pj / 16)       # x2 per bit
    assert nine.adc.energy_pj == pytest.approx(isaac.adc.energy_pj * 2)
    assert four.adc.conversion_ns == pytest.approx(isaac.adc.conversion_ns * 4 / 8)   # one SAR step per bit
    assert four.adc.area_um2 == pytest.approx(isaac.adc.area_um2 / 16)


def test_resolving_again_changes_nothing_and_pinned_figures_stay():
    isaac = load_target("isaac")
    there_and_back = isaac.with_overrides({"adc.bits": 6}).with_overrides({"adc.bits": 8})
    assert there_and_back.adc.energy_pj == pytest.approx(isaac.adc.energy_pj)
    pinned = isaac.with_overrides({"adc.bits": 6, "adc.energy_pj": 5.0})
    assert pinned.adc.energy_pj == 5.0 and pinned["scaling.adc.at_bits"] == 6


def test_array_and_dac_rules():
    isaac = load_target("isaac")
    big = isaac.with_overrides({"crossbar.rows": 256, "crossbar.cols": 256})
    assert big.crossbar.read_energy_pj == pytest.approx(isaac.crossbar.read_energy_pj * 4)
    assert big.crossbar.read_latency_ns == pytest.approx(isaac.crossbar.read_latency_ns * 2)
    assert isaac.with_overrides({"dac.bits": 2}).dac.energy_pj == pytest.approx(isaac.dac.energy_pj * 2)


def test_a_rule_without_its_anchor_is_an_error():
    from acompile.errors import InvalidTargetError
    with pytest.raises(InvalidTargetError, match="scaling.adc.at_bits"):
        load_target("isaac").with_overrides({"scaling.adc.at_bits": 0})


def test_cost_of_a_compile_follows_the_adc_bits():
    import acompile
    isaac = load_target("isaac")
    e = [acompile.compile_model("samples/digits.onnx", isaac.with_overrides({"adc.bits": b})).cost["totals"]
         ["energy_pj"]["adc"] for b in (8, 9)]
    assert e[1] == pytest.approx(2 * e[0])


@pytest.mark.parametrize("name", shipped_targets())
def test_every_shipped_target_has_cited_rules(name):
    t = load_target(name)
    if name == "ecram":     # extends isaac and keeps its converters
        return
    assert connected(t.data, "adc.bits") and t["scaling.adc.source"]
    assert connected(t.data, "crossbar.rows") and t["scaling.crossbar.source"]


def test_every_rule_choice_is_a_law_and_every_rule_field_is_applied():
    assert all(choice in _LAWS for _path, _doc, choices in RULE_FIELDS for choice in choices)
    assert {f"scaling.{path}" for path, _doc, _c in RULE_FIELDS} == {rule for rule, *_ in RULES}
