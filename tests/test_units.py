"""The one number formatter (acompile/units.py): SI prefixes, thousands separators, plurals, never
an exponent."""

import math

import pytest

from acompile.units import count, decimal, duration, energy, percent, si


@pytest.mark.parametrize("value, text", [
    (2.5e6, "2.5 µJ"), (2.56338e6, "2.56 µJ"), (999.7e3, "1 µJ"), (395.3, "395 pJ"), (0, "0 pJ"),
    (29.8e3, "29.8 nJ"), (-3e4, "-30 nJ"), (1.2e20, "120,000,000 J"), (1e-5, "0.00001 pJ"),
])
def test_energy_in_pj(value, text):
    assert energy(value) == text


@pytest.mark.parametrize("value, text", [(2.53e6, "2.53 ms"), (849e3, "849 µs"), (2.7e3, "2.7 µs"),
                                         (0.5, "500 ps"), (3.39e9, "3.39 s")])
def test_duration_in_ns(value, text):
    assert duration(value) == text


def test_si_with_plain_unit():
    assert si(1234.0, "B") == "1.23 kB"
    assert si(0.5, "V") == "500 mV"
    assert si(math.inf, "J") == "∞ J"


@pytest.mark.parametrize("value, text", [(12345678, "12,300,000"), (593400.0, "593,000"), (9.996, "10"),
                                         (0.0001234, "0.000123"), (0.27, "0.27"), (1.0, "1"), (0, "0"),
                                         (math.nan, "n/a")])
def test_decimal_never_writes_exponents(value, text):
    assert decimal(value) == text


def test_counts_and_plurals():
    assert count(1, "tile") == "1 tile"
    assert count(11, "crossbar") == "11 crossbars"
    assert count(0, "chip") == "0 chips"
    assert count(1200, "weight") == "1,200 weights"
    assert count(2, "copy", "copies") == "2 copies"
    assert count(1234567) == "1,234,567"
    assert count(8192.0) == "8,192"


def test_percent():
    assert percent(0.515) == "51.5%" and percent(0.12345, 2) == "12.35%"


def test_no_exponent_over_a_wide_range():
    for e in range(-15, 22):
        for mantissa in (1.0, 2.345, 9.9996):
            v = mantissa * 10.0 ** e
            for text in (energy(v), duration(v), decimal(v), si(v, "B")):
                assert "e+" not in text and "e-" not in text, (v, text)
