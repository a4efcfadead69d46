"""The hardware formulas (acompile/hardware.py), each derived again from first principles for
every shipped target: by counting digits, columns, converters and conversions one at a time,
and by running the numerics that use them (encoding, the DAC's chunks)."""

from __future__ import annotations

import numpy as np
import pytest

from acompile import hardware
from acompile.numerics import AnalogSpec, cycle_weights, encode_weights, input_chunks
from acompile.target import load_target
from acompile.target.read import shipped_targets

TARGETS = shipped_targets()


def spec_of(t) -> AnalogSpec:
    return AnalogSpec(weight_bits=t["precision.weight_bits"], input_bits=t["precision.input_bits"],
                      dac_bits=t["dac.bits"], cell_bits=t["crossbar.cell_bits"], adc_bits=t["adc.bits"],
                      rows=t["crossbar.rows"], signed_weights=t["crossbar.signed_weights"],
                      input_encoding=t["dac.input_encoding"], offset_subtraction=t["crossbar.offset_subtraction"])


def digits(bits: int, digit_bits: int) -> int:
    """How many digit_bits-bit digits write a bits-bit number: take digits off until none is left."""
    n = 0
    while bits > 0:
        bits -= digit_bits
        n += 1
    return n


@pytest.fixture(params=TARGETS)
def target(request):
    return load_target(request.param)


def test_every_shipped_target_is_checked():
    assert {"isaac", "puma", "prime", "hermes", "ecram"} <= set(TARGETS)


def test_slices_hold_the_largest_magnitude(target):
    spec = spec_of(target)
    differential = spec.signed_weights == "differential"
    # differential stores |w| <= 2^(Bw-1) - 1 on each side; offset stores w + 2^(Bw-1) < 2^Bw
    largest = (1 << (spec.weight_bits - 1)) - 1 if differential else (1 << spec.weight_bits) - 1
    bm = hardware.magnitude_bits(spec.weight_bits, differential)
    assert bm == largest.bit_length()
    s = hardware.slices(bm, spec.cell_bits)
    assert s == digits(bm, spec.cell_bits) == spec.slices
    assert (1 << (spec.cell_bits * s)) > largest >= (1 << (spec.cell_bits * (s - 1)))
    # the encoding writes exactly that many slices
    qmax = (1 << (spec.weight_bits - 1)) - 1
    enc = encode_weights(np.array([[qmax, -qmax]]), spec)
    assert len(set(enc.col_slice[enc.col_out >= 0].tolist())) == s


@pytest.mark.parametrize("n_out", [1, 3, 64])
def test_physical_columns_count_every_column_the_encoding_writes(target, n_out):
    spec = spec_of(target)
    differential = spec.signed_weights == "differential"
    s = hardware.slices(hardware.magnitude_bits(spec.weight_bits, differential), spec.cell_bits)
    per_channel = s * (2 if differential else 1)          # one column per slice, per sign
    # the offset scheme's unit column, unless the offset term comes from the input sum (isaac)
    reference = 0 if differential or spec.offset_subtraction == "input_sum" else 1
    p = hardware.physical_columns(n_out, s, differential, reference == 1)
    assert p == n_out * per_channel + reference == spec.physical_columns(n_out)
    assert hardware.columns_per_weight(s, differential) == per_channel
    enc = encode_weights(np.zeros((n_out, 2), np.int32), spec)
    assert enc.levels.shape[1] == p
    assert int((enc.col_out < 0).sum()) == reference


@pytest.mark.parametrize("signed", [False, True])
def test_input_cycles_are_the_chunks_the_dac_streams(target, signed):
    spec = spec_of(target)
    bx, d = spec.input_bits, spec.dac_bits
    if not signed:
        want = digits(bx, d)                               # every bit in d-bit chunks
    elif spec.input_encoding == "sign_magnitude":
        want = 2 * digits(bx - 1, d)                       # the magnitude, once per sign phase
    else:
        want = digits(bx - 1, d) + 1                       # the low bits, then the sign bit alone
    t = hardware.input_cycles(bx, d, signed, spec.input_encoding)
    assert t == want == spec.cycles(signed) == len(cycle_weights(spec, signed))
    # every value of the input range streams in t chunks of at most d bits, and the cycle
    # weights rebuild it exactly
    lo, hi = (-(1 << (bx - 1)) + (spec.input_encoding == "sign_magnitude"), (1 << (bx - 1)) - 1) if signed \
        else (0, (1 << bx) - 1)
    x = np.arange(lo, hi + 1, dtype=np.int64)[:, None]
    chunks = input_chunks(x, spec, signed)
    assert chunks.shape[0] == t
    assert int(chunks.max()) <= (1 << d) - 1
    rebuilt = np.tensordot(np.array(cycle_weights(spec, signed)), chunks.astype(np.float64), axes=1)
    np.testing.assert_array_equal(rebuilt, x)


def test_adcs_and_cycle_time_by_assigning_columns_to_converters(target):
    cols, per_adc = target["crossbar.cols"], target["adc.columns_per_adc"]
    adcs = 0
    while adcs * per_adc < cols:                            # add converters until every column has one
        adcs += 1
    assert hardware.adcs_per_crossbar(cols, per_adc) == adcs
    t_read, t_adc = target["crossbar.read_latency_ns"], target["adc.conversion_ns"]
    for used in sorted({1, adcs, cols // 2 or 1, cols}):
        # columns handed out to the ADCs in turn; each ADC converts its columns one after another
        load = [0] * adcs
        for c in range(used):
            load[c % adcs] += 1
        assert hardware.cycle_time_ns(t_read, used, adcs, t_adc) == pytest.approx(t_read + max(load) * t_adc)


def test_peak_throughput_counts_every_mac_of_every_crossbar(target):
    spec = spec_of(target)
    rows, cols = target["crossbar.rows"], target["crossbar.cols"]
    crossbars = (target["organisation.crossbars_per_core"] * target["organisation.cores_per_tile"]
                 * target["organisation.tiles_per_chip"])
    per_weight = spec.columns_per_channel
    adcs = hardware.adcs_per_crossbar(cols, target["adc.columns_per_adc"])
    cycle = hardware.cycle_time_ns(target["crossbar.read_latency_ns"], cols, adcs, target["adc.conversion_ns"])
    t = spec.cycles(True)
    macs = hardware.macs_per_crossbar_cycle(rows, cols, per_weight)
    assert macs == pytest.approx(rows * (cols / per_weight))
    assert hardware.weights_per_crossbar(rows, cols, per_weight) == rows * (cols // per_weight)
    # one vector takes t cycles; in that time every crossbar does rows x (cols / columns per weight) MACs
    ops_per_ns = crossbars * 2 * macs / (t * cycle)
    assert hardware.peak_tops(crossbars, macs, t, cycle) == pytest.approx(ops_per_ns / 1e3)


def test_row_blocks_cover_k_rows(target):
    rows = target["crossbar.rows"]
    for k in (1, rows - 1, rows, rows + 1, 5 * rows + 3):
        blocks = hardware.row_blocks(k, rows)
        assert (blocks - 1) * rows < k <= blocks * rows


def test_pipelined_cycle_is_the_slowest_stage_and_the_fill_the_rest(target):
    cols, t_read = target["crossbar.cols"], target["crossbar.read_latency_ns"]
    adcs = hardware.adcs_per_crossbar(cols, target["adc.columns_per_adc"])
    t_adc, t_sh = target["adc.conversion_ns"], target["adc.sample_hold_ns"]
    # the conversions of one read: each ADC converts its share of the columns in turn
    convert = -(-cols // adcs) * t_adc
    stages = [t_read, t_sh, convert]
    assert hardware.cycle_time_ns(t_read, cols, adcs, t_adc, t_sh, pipelined=False) == pytest.approx(sum(stages))
    assert hardware.cycle_time_ns(t_read, cols, adcs, t_adc, t_sh, pipelined=True) == pytest.approx(max(stages))
    # n reads through a pipeline take the first read's whole path, then one slowest stage per read
    n = 7
    pipelined = hardware.cycle_time_ns(t_read, cols, adcs, t_adc, t_sh, True)
    fill = hardware.pipeline_fill_ns(t_read, cols, adcs, t_adc, t_sh, True)
    assert n * pipelined + fill == pytest.approx(sum(stages) + (n - 1) * max(stages))
    assert hardware.pipeline_fill_ns(t_read, cols, adcs, t_adc, t_sh, False) == 0


def test_summary_uses_the_formulas_the_reports_use(target):
    s = target.summary()
    spec = spec_of(target)
    assert s["input_cycles"] == spec.cycles(False) and s["input_cycles_signed"] == spec.cycles(True)
    cols = target["crossbar.cols"]
    adcs = hardware.adcs_per_crossbar(cols, target["adc.columns_per_adc"])
    assert s["cycle_ns"] == pytest.approx(hardware.cycle_time_ns(
        target["crossbar.read_latency_ns"], cols, adcs, target["adc.conversion_ns"], target["adc.sample_hold_ns"],
        target["adc.pipelined"]))
    assert s["peak_tops_signed_inputs"] <= s["peak_tops"]
