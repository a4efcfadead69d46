"""Analog numerics (acompile/numerics/, the executors in acompile/sim/fast.py and
acompile/sim/reference.py) against docs/analog.md: encoding, the exact lossless product,
fast path == slow reference bit for bit, calibration, non-idealities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acompile.errors import AcompileError, InvalidDataError, InvalidTargetError
from acompile.numerics import (AnalogSpec, EncodedWeights, NoiseSpec, adc_step, cycle_weights,
                               decode_weights, encode_weights, input_chunks, input_scale, integer_form,
                               program_cells, quantize_inputs, quantize_weights, quantize_with_scales, scaled,
                               weight_scales)
from acompile.sim.fast import mvm, observe_full_scale
from acompile.sim.reference import mvm_reference


def spec_of(weight_bits=8, input_bits=8, dac_bits=1, cell_bits=2, adc_bits=8, rows=16,
            signed_weights="differential"):
    return AnalogSpec(weight_bits, input_bits, dac_bits, cell_bits, adc_bits, rows, signed_weights)


def random_weights(rng, spec, n, k):
    qmax = (1 << (spec.weight_bits - 1)) - 1
    lo = -qmax if spec.differential else -qmax - 1
    return rng.integers(lo, qmax + 1, size=(n, k))


def random_inputs(rng, spec, signed, v, k):
    bx = spec.input_bits
    lo, hi = (-(1 << (bx - 1)), (1 << (bx - 1)) - 1) if signed else (0, (1 << bx) - 1)
    return rng.integers(lo, hi + 1, size=(v, k))


def exact(x, q):
    return (np.asarray(x, np.int64) @ np.asarray(q, np.int64).T).astype(np.float64)


def explicit_currents(x, enc, spec, signed):
    """Every ideal read current, by a plain loop (calibration oracle)."""
    chunks = input_chunks(x, spec, signed).astype(np.int64)
    k = x.shape[1]
    out = []
    for r in range(spec.row_blocks(k)):
        rows = slice(r * spec.rows, (r + 1) * spec.rows)
        for t in range(chunks.shape[0]):
            out.append((chunks[t][:, rows] @ enc.levels[rows].astype(np.int64)).ravel())
    return np.concatenate(out)


# --------------------------------------------------------------------------- quantisation


def test_spec_derived_quantities():
    s = spec_of(weight_bits=8, dac_bits=1, cell_bits=2, adc_bits=8, rows=128)
    assert (s.magnitude_bits, s.slices, s.columns_per_channel) == (7, 4, 8)
    assert s.worst_case_full_scale == 128 * 1 * 3 and not s.adc_lossless
    assert s.physical_columns(10) == 80 and s.cycles(True) == 8 and s.cycles(False) == 8
    o = spec_of(weight_bits=8, cell_bits=3, adc_bits=12, signed_weights="offset")
    assert (o.magnitude_bits, o.slices, o.offset, o.physical_columns(10)) == (8, 3, 128, 31)
    assert o.adc_lossless
    # Signed inputs stream their sign bit alone (docs/analog.md deviation).
    assert spec_of(input_bits=8, dac_bits=2).cycles(True) == 5
    assert cycle_weights(spec_of(input_bits=8, dac_bits=3), True) == [1, 8, 64, -128]
    assert cycle_weights(spec_of(input_bits=8, dac_bits=3), False) == [1, 8, 64]
    with pytest.raises(InvalidTargetError):
        spec_of(cell_bits=9)
    with pytest.raises(InvalidTargetError):
        spec_of(signed_weights="twos")


def test_quantize_weights_per_channel_and_zero_channel():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -3.0]])
    q, s = quantize_weights(w, 8)
    assert q.dtype == np.int32 and s.dtype == np.float64
    np.testing.assert_allclose(s, [1.0 / 127, 1.0, 3.0 / 127])
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0]
    assert q[2].tolist() == [127, 64, -127]
    assert np.abs(q).max() <= 127
    np.testing.assert_allclose(q * s[:, None], w, atol=s.max() / 2)


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_quantising_with_the_rows_own_scales_needs_no_clipping(bits):
    """own_scales skips the clip: with s_w from the rows themselves it changes nothing, ties included."""
    rng = np.random.default_rng(bits)
    w = rng.standard_normal((40, 50)) * rng.uniform(1e-6, 1e6, (40, 1))
    w[0] = np.linspace(-1.0, 1.0, 50)                   # exact multiples of s_w and ties at half a step
    w[1] = 0.0
    for rows in (w, w.astype(np.float32)):
        s_w = weight_scales(rows, bits)
        np.testing.assert_array_equal(quantize_with_scales(rows, s_w, bits, own_scales=True),
                                      quantize_with_scales(rows, s_w, bits))


@pytest.mark.parametrize("shape, axis, low, high, kind", [((64, 3, 3, 3), 0, -127, 128, np.int8),
                                                          ((100, 48), 1, -255, 256, np.int16),
                                                          ((48, 100), 0, -128, 128, np.int8)])
def test_integer_form_gives_a_dequantized_weight_back_bit_for_bit(shape, axis, low, high, kind):
    """A weight that is integers times one scale per output channel (DequantizeLinear's product, int8,
    or int16 for uint8 with a zero point) is found on its axis and rebuilt exactly."""
    rng = np.random.default_rng(1)
    q = rng.integers(low, high, shape)
    s = rng.uniform(1e-3, 1e-1, shape[axis]).astype(np.float32)
    w = scaled(q, s, axis, np.float32)
    ints, scales, found = integer_form(w, s.astype(np.float64))
    assert found == axis and ints.dtype == kind and scales.dtype == np.float32
    assert np.array_equal(ints, q) and scaled(ints, scales, found, np.float32).tobytes() == w.tobytes()


@pytest.mark.parametrize("dtype, zero, per_tensor", [(np.int8, 0, False), (np.uint8, 128, False),
                                                      (np.int16, 3, True), (np.uint8, 0, True)])
def test_a_folding_record_gives_integer_forms_answer_without_dividing(dtype, zero, per_tensor):
    """integer_form with the record folding left (FoldedIntegers) returns what dividing the weight back
    returns, byte for byte; a record whose scales are not the ones asked for is not used."""
    from acompile.numerics.folded import FoldedIntegers
    from acompile.onnx_exec import dequantize_linear
    rng = np.random.default_rng(4)
    info = np.iinfo(dtype)
    x = rng.integers(max(info.min, -300), min(info.max, 300) + 1, (32, 3, 3, 3)).astype(dtype)
    s = np.full(1, 0.04, np.float32) if per_tensor else rng.uniform(1e-3, 1e-1, 32).astype(np.float32)
    zp = np.full(s.size, zero, dtype)
    w = dequantize_linear(x, s if s.size > 1 else s[0], zp if s.size > 1 else zp[0], 0)
    known = FoldedIntegers(x, zp, s, 0)
    layer_scales = np.broadcast_to(s, 32).astype(np.float64)
    plain, fast = integer_form(w, layer_scales), integer_form(w, layer_scales, known)
    assert fast[0].dtype == plain[0].dtype and fast[0].tobytes() == plain[0].tobytes()
    assert fast[1].tobytes() == plain[1].tobytes() and fast[2] == plain[2] == 0
    assert known.largest == int(np.abs(x.astype(np.int64) - zero).max()) and known.finite()
    other = layer_scales * 2
    assert integer_form(w, other, known) == integer_form(w, other) is None


def test_a_folding_record_knows_when_products_overflow():
    """Integers times a finite scale can pass float32's largest value: not finite then."""
    from acompile.numerics.folded import FoldedIntegers
    x = np.array([[1, -127]], np.int8)
    with np.errstate(over="ignore"):
        assert not np.all(np.isfinite(np.multiply(x, np.float32(3e37), dtype=np.float32)))
    assert not FoldedIntegers(x, None, np.full(1, 3e37, np.float32), 0).finite()
    assert FoldedIntegers(x[:, :1], None, np.full(1, 3e37, np.float32), 0).finite()


def test_a_folding_record_answers_from_the_integers_type_where_that_decides():
    """A model's 8-bit integers on 16-bit weights: their type alone says they are finite times finite scales,
    within the weight bits and int8 -- no integer is read (a ResNet-50's 25 M); where the type does not
    decide, the integers do."""
    from acompile.numerics.folded import FoldedIntegers

    class Unread(np.ndarray):
        def min(self, *args, **kwargs):
            raise AssertionError("an integer was read")
        max = min

    x = np.array([[3, -128], [7, 127]], np.int8)
    scales = np.full(2, 0.5, np.float32)
    unread = FoldedIntegers(x.view(Unread), None, scales, 0)
    assert unread.bound == 128 and unread.within(32767) and unread.finite()
    assert unread.differences().dtype == np.int8 and np.array_equal(unread.differences(), x)
    known = FoldedIntegers(x, None, scales, 0)
    assert known.within(128) and not known.within(127) and known.largest == 128
    small = np.array([[3, 100]], np.uint8)      # uint8 may need int16; these values do not
    assert FoldedIntegers(small, None, scales[:1], 0).differences().dtype == np.int8
    wide = FoldedIntegers(np.array([[3, 200]], np.uint8), np.full(1, 1, np.uint8), scales[:1], 0)
    assert wide.bound == 254 and wide.differences().dtype == np.int16 and wide.within(199) and not wide.within(198)


@pytest.mark.parametrize("dtype, zero, axis, per_tensor", [(np.int8, 0, 0, False), (np.uint8, 128, 0, False),
                                                          (np.uint8, 7, 1, False), (np.int16, -300, 1, True),
                                                          (np.int8, None, 0, True), (np.uint8, 9, 0, "zero")])
def test_a_weight_held_as_its_integers_reads_as_dequantize_linear_computes_it(dtype, zero, axis, per_tensor):
    """DequantizedWeight: np.asarray, a slice of rows, the transpose, min, max and flat[i] give exactly what
    DequantizeLinear's float32 output gives; shape, dtype and size without computing it."""
    from acompile.numerics.folded import DequantizedWeight, integers_of
    from acompile.onnx_exec import dequantize_linear
    rng = np.random.default_rng(6)
    info = np.iinfo(dtype)
    x = rng.integers(max(info.min, -2000), min(info.max, 2000) + 1, (12, 20)).astype(dtype)
    n = x.shape[axis]
    s = np.float32(0.037) if per_tensor is True else rng.uniform(-0.1, 0.1, n).astype(np.float32)   # negative too
    zp = None if zero is None else (np.asarray(zero, dtype) if per_tensor else
                                    rng.integers(max(info.min, zero - 5), zero + 5, n).astype(dtype))
    # one zero point for every channel's scale: not a DequantizeLinear's form, but a ConvInteger's weight can be
    expected = dequantize_linear(x, s, np.full(n, zero, dtype) if per_tensor == "zero" else zp, axis)
    w = integers_of(x, s, zp, axis, DequantizedWeight)
    assert isinstance(w, DequantizedWeight) and w.shape == x.shape and w.dtype == np.float32 and w.size == x.size
    assert np.asarray(w).tobytes() == expected.tobytes() and w.tobytes() == expected.tobytes()
    assert w[3:9].tobytes() == expected[3:9].tobytes() and np.array_equal(w[2, 5:7], expected[2, 5:7])
    assert np.asarray(w.T).tobytes() == np.ascontiguousarray(expected.T).tobytes()
    assert w.min() == expected.min() and w.max() == expected.max()
    assert all(w.flat[i] == expected.flat[i] for i in (0, 7, x.size - 1))
    assert w.astype(np.float32, copy=False) is w and np.array_equal(w.astype(np.float64), expected)
    assert w.contiguous() is w and w.T.contiguous().ints.flags.c_contiguous


def test_a_weight_held_as_its_integers_has_nothing_to_write_in_place():
    from acompile.numerics.folded import DequantizedWeight
    w = DequantizedWeight(np.ones((2, 3), np.int8), None, np.ones(1, np.float32), 0)
    for name in ("fill", "put", "sort", "setflags", "resize"):
        with pytest.raises(AttributeError):
            getattr(w, name)


def test_whole_multiples_gives_the_integers_acompiles_own_quantisation_gives():
    """The float32 path for a quantized model's weights (checked whole multiples of their scales, within
    1e-3 of one, in range) and the float64 one of quantize_with_scales agree on every integer."""
    from acompile.numerics.quantise import whole_multiples
    rng = np.random.default_rng(5)
    q = rng.integers(-127, 128, (64, 300))
    s = rng.uniform(1e-4, 1e2, 64).astype(np.float32)
    w = scaled(q, s, 0, np.float32)
    near = (w.astype(np.float64) + rng.uniform(-9e-4, 9e-4, w.shape) * s[:, None]).astype(np.float32)
    for rows in (w, near, w[:, 7:140]):
        got = whole_multiples(rows, s.astype(np.float64))
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, quantize_with_scales(rows, s.astype(np.float64), 8))
    np.testing.assert_array_equal(whole_multiples(w, s.astype(np.float64)), q)


def test_integer_form_refuses_what_it_cannot_rebuild_exactly():
    rng = np.random.default_rng(2)
    s = rng.uniform(1e-3, 1e-1, 16).astype(np.float32)
    w = scaled(rng.integers(-127, 128, (16, 40)), s, 0, np.float32)
    off = w.copy()
    off[3, 7] = np.nextafter(off[3, 7], np.float32(np.inf))     # one ulp away from a multiple
    zero = np.zeros((16, 40), np.float32)
    zero[0, 0] = -0.0                                           # its sign would be lost
    wide = scaled(np.full((16, 40), 40000), s, 0, np.float32)   # integers beyond int16
    floats = rng.standard_normal((16, 40)).astype(np.float32)
    for bad in (off, zero, wide, floats, w[:, :16].T.copy()[:0]):
        assert integer_form(bad, s) is None
    assert integer_form(w.astype(np.int32), s) is None          # not a float constant
    assert integer_form(w, s[:8]) is None                       # no axis of that length


def test_input_quantisation_clips_signed_and_unsigned():
    s = input_scale(2.0, 8, signed=True)
    assert s == 2.0 / 127 and input_scale(2.0, 8, signed=False) == 2.0 / 255
    assert input_scale(0.0, 8, signed=True) == 1.0
    x = np.array([-5.0, -2.0, -1.0, 0.0, 1.0, 2.0, 5.0])
    q = quantize_inputs(x, s, 8, signed=True)
    assert q.dtype == np.int32 and q.tolist() == [-127, -127, -64, 0, 64, 127, 127]
    qu = quantize_inputs(x, 2.0 / 255, 8, signed=False)
    assert qu.tolist() == [0, 0, 0, 0, 128, 255, 255]
    with pytest.raises(InvalidDataError):
        quantize_inputs(np.array([np.nan]), s, 8, signed=True)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits,dac", [(8, 1), (8, 3), (7, 2), (5, 8), (4, 4)])
def test_input_chunks_recombine_to_the_input(signed, bits, dac):
    spec = spec_of(input_bits=bits, dac_bits=dac)
    x = random_inputs(np.random.default_rng(1), spec, signed, 6, 9)
    x[0, :2] = [-(1 << (bits - 1)), (1 << (bits - 1)) - 1] if signed else [0, (1 << bits) - 1]
    chunks = input_chunks(x, spec, signed)
    assert chunks.shape == (spec.cycles(signed), 6, 9) and chunks.dtype == np.uint8
    assert chunks.max() <= spec.max_chunk
    if signed:
        assert chunks[-1].max() <= 1  # the sign cycle carries one bit
    back = np.tensordot(np.array(cycle_weights(spec, signed)), chunks.astype(np.int64), axes=1)
    assert np.array_equal(back, x)
    with pytest.raises(InvalidDataError):
        input_chunks(x + (1 << bits), spec, signed)


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("scheme", ["differential", "offset"])
@pytest.mark.parametrize("weight_bits,cell_bits", [(8, 1), (8, 2), (8, 3), (8, 4), (8, 8), (5, 3),
                                                   (2, 1), (12, 8), (16, 4)])
def test_encode_decode_roundtrip_and_one_cell_per_slice_and_sign(scheme, weight_bits, cell_bits):
    spec = spec_of(weight_bits=weight_bits, cell_bits=cell_bits, signed_weights=scheme)
    rng = np.random.default_rng(weight_bits * 10 + cell_bits)
    n, k = 7, 13
    q = random_weights(rng, spec, n, k)
    q[0, 0], q[-1, -1] = q.min(initial=0), (1 << (weight_bits - 1)) - 1  # the extremes
    enc = encode_weights(q, spec)
    p = spec.physical_columns(n)
    assert enc.levels.shape == (k, p) and enc.levels.dtype == np.uint8
    assert enc.col_out.dtype == np.int32 and enc.col_slice.dtype == np.int8
    assert enc.col_sign.dtype == np.int8
    assert enc.levels.max() <= spec.max_level
    assert np.array_equal(decode_weights(enc, spec, n), q)

    # Each (channel, sign, slice) has exactly one column; the offset reference is last.
    data = enc.col_out >= 0
    keys = set(zip(enc.col_out[data].tolist(), enc.col_sign[data].tolist(),
                   enc.col_slice[data].tolist()))
    assert len(keys) == data.sum() == n * spec.columns_per_channel
    assert keys == {(c, s, j) for c in range(n) for s in spec.signs for j in range(spec.slices)}
    if scheme == "offset":
        assert enc.col_out[-1] == -1 and enc.col_sign[-1] == 0 and np.all(enc.levels[:, -1] == 1)
    else:
        assert data.all()
    # Per weight: each slice cell holds its bits of the stored magnitude; differential puts
    # the whole magnitude on one sign and zeros on the other.
    stored = {1: np.maximum(q, 0), -1: np.maximum(-q, 0)} if scheme == "differential" \
        else {1: q + spec.offset}
    for s, mag in stored.items():
        for j in range(spec.slices):
            cols = np.flatnonzero(data & (enc.col_sign == s) & (enc.col_slice == j))
            assert np.array_equal(enc.col_out[cols], np.arange(n))
            want = (mag >> (j * cell_bits)) & spec.max_level
            assert np.array_equal(enc.levels[:, cols].T, want)


def test_encode_rejects_out_of_range_weights_and_decode_checks_metadata():
    spec = spec_of(weight_bits=4)
    with pytest.raises(InvalidDataError):
        encode_weights(np.array([[8]]), spec)
    with pytest.raises(InvalidDataError):
        encode_weights(np.array([[-8]]), spec)  # differential is symmetric
    encode_weights(np.array([[-8]]), spec_of(weight_bits=4, signed_weights="offset"))
    enc = encode_weights(np.array([[3, -2], [1, 0]]), spec)
    dup = EncodedWeights(enc.levels, enc.col_out, np.zeros_like(enc.col_slice), enc.col_sign)
    with pytest.raises(InvalidDataError, match="held by"):
        decode_weights(dup, spec, 2)
    with pytest.raises(InvalidDataError):
        decode_weights(enc, spec, 3)
    too_high = EncodedWeights(enc.levels + 4, enc.col_out, enc.col_slice, enc.col_sign)
    with pytest.raises(InvalidDataError, match="exceeds"):
        decode_weights(too_high, spec, 2)
    assert issubclass(InvalidDataError, AcompileError)


def test_encode_is_vectorised_for_large_layers():
    import time
    spec = spec_of(weight_bits=8, cell_bits=2)
    q = random_weights(np.random.default_rng(0), spec, 1024, 2048)
    start = time.perf_counter()
    enc = encode_weights(q, spec)
    assert time.perf_counter() - start < 5.0
    assert np.array_equal(decode_weights(enc, spec, 1024), q)


# --------------------------------------------------------------------------- exact arithmetic


@pytest.mark.parametrize("scheme", ["differential", "offset"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("dac_bits", [1, 2, 3, 8])
def test_lossless_adc_equals_integer_product(scheme, signed, dac_bits):
    rows = 10  # K = 37 is not a multiple of rows
    cell_bits = 3
    f_worst = rows * ((1 << dac_bits) - 1) * ((1 << cell_bits) - 1)
    spec = spec_of(weight_bits=7, input_bits=8, dac_bits=dac_bits, cell_bits=cell_bits,
                   adc_bits=int(np.ceil(np.log2(f_worst + 1))), rows=rows, signed_weights=scheme)
    assert spec.adc_lossless
    rng = np.random.default_rng(dac_bits)
    q = random_weights(rng, spec, 5, 37)
    x = random_inputs(rng, spec, signed, 4, 37)
    want = exact(x, q)
    enc = encode_weights(q, spec)
    for got in (mvm(x, enc, spec, signed), mvm(x, enc, spec, signed, exact_shortcut=False),
                mvm_reference(x, enc, spec, signed)):
        assert got.dtype == np.float64 and np.array_equal(got, want)
    # A calibrated full scale below 2^B - 1 keeps Δ = 1: still lossless.
    assert np.array_equal(mvm(x, enc, spec, signed, full_scale=3.0, exact_shortcut=False), want)


def test_lossless_shortcut_splits_k_beyond_float32_exact_range():
    spec = spec_of(weight_bits=12, input_bits=12, dac_bits=1, cell_bits=4, adc_bits=16, rows=64)
    rng = np.random.default_rng(3)
    q = np.full((3, 1500), 2047)
    q[1] = -2047
    q[2] = random_weights(rng, spec, 1, 1500)
    x = np.full((2, 1500), 2047)
    x[1] = random_inputs(rng, spec, True, 1, 1500)
    enc = encode_weights(q, spec)
    assert np.array_equal(mvm(x, enc, spec, True), exact(x, q))  # |y| ~ 6e9 > 2^24


@pytest.mark.parametrize("exact_shortcut", [True, False])
def test_extreme_values_offset_scheme_and_twos_complement_inputs(exact_shortcut):
    spec = spec_of(weight_bits=8, input_bits=8, dac_bits=2, cell_bits=3, adc_bits=12, rows=16,
                   signed_weights="offset")
    q = np.array([[-128] * 40, [127] * 40, [0] * 40])
    x = np.array([[-128] * 40, [127] * 40, [-1] * 40])
    enc = encode_weights(q, spec)
    got = mvm(x, enc, spec, True, exact_shortcut=exact_shortcut)
    assert np.array_equal(got, exact(x, q))
    assert np.array_equal(mvm_reference(x, enc, spec, True), exact(x, q))


def test_decoded_encoding_serves_the_shortcut():
    """An encoding rebuilt from its arrays (as from a device file) decodes its weights."""
    spec = spec_of(weight_bits=6, cell_bits=2, adc_bits=10, rows=8, signed_weights="offset")
    rng = np.random.default_rng(4)
    q = random_weights(rng, spec, 4, 20)
    enc = encode_weights(q, spec)
    bare = EncodedWeights(enc.levels.copy(), enc.col_out, enc.col_slice, enc.col_sign)
    x = random_inputs(rng, spec, False, 3, 20)
    assert np.array_equal(mvm(x, bare, spec, False), exact(x, q))


def test_reference_handles_any_column_order_and_fast_path_refuses_it():
    spec = spec_of(weight_bits=5, cell_bits=2, adc_bits=10, rows=8, signed_weights="offset")
    rng = np.random.default_rng(5)
    q = random_weights(rng, spec, 3, 11)
    enc = encode_weights(q, spec)
    perm = rng.permutation(enc.levels.shape[1])
    shuffled = EncodedWeights(enc.levels[:, perm], enc.col_out[perm], enc.col_slice[perm],
                              enc.col_sign[perm])
    x = random_inputs(rng, spec, True, 2, 11)
    assert np.array_equal(decode_weights(shuffled, spec, 3), q)
    assert np.array_equal(mvm_reference(x, shuffled, spec, True), exact(x, q))
    assert np.array_equal(mvm(x, shuffled, spec, True), exact(x, q))  # shortcut: layout-free
    with pytest.raises(InvalidDataError, match="canonical"):
        mvm(x, shuffled, spec, True, exact_shortcut=False)


@pytest.mark.parametrize("scheme", ["differential", "offset"])
def test_lossy_adc_fast_equals_reference_bit_for_bit(scheme):
    spec = spec_of(weight_bits=8, input_bits=8, dac_bits=2, cell_bits=2, adc_bits=5, rows=16,
                   signed_weights=scheme)
    assert not spec.adc_lossless
    rng = np.random.default_rng(6)
    q = random_weights(rng, spec, 9, 50)
    x = random_inputs(rng, spec, True, 5, 50)
    enc = encode_weights(q, spec)
    fast, ref = mvm(x, enc, spec, True), mvm_reference(x, enc, spec, True)
    assert np.array_equal(fast, ref)
    assert not np.array_equal(fast, exact(x, q))  # the ADC did lose information
    # Worst-case F never clips: each read is off by at most Δ/2, times its digital weight.
    per_read = adc_step(spec) / 2 * np.abs(cycle_weights(spec, True)).sum()
    bound = spec.row_blocks(50) * per_read * len(spec.signs) * sum(
        2 ** (j * spec.cell_bits) for j in range(spec.slices))
    if scheme == "offset":
        bound += spec.row_blocks(50) * per_read * spec.offset
    assert np.abs(fast - exact(x, q)).max() <= bound


@settings(max_examples=150, deadline=None)
@given(data=st.data(), weight_bits=st.integers(2, 10), input_bits=st.integers(2, 9),
       dac_bits=st.integers(1, 4), cell_bits=st.integers(1, 5), adc_bits=st.integers(1, 10),
       rows=st.integers(1, 40), scheme=st.sampled_from(["differential", "offset"]),
       signed=st.booleans(), calibrated=st.booleans())
def test_fast_equals_reference_for_random_specs(data, weight_bits, input_bits, dac_bits, cell_bits,
                                                adc_bits, rows, scheme, signed, calibrated):
    spec = AnalogSpec(weight_bits, input_bits, dac_bits, cell_bits, adc_bits, rows, scheme)
    v, n, k = (data.draw(st.integers(1, hi)) for hi in (4, 6, 70))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    q = random_weights(rng, spec, n, k)
    x = random_inputs(rng, spec, signed, v, k)
    enc = encode_weights(q, spec)
    fs = None
    if calibrated:
        fs = observe_full_scale(x, enc, spec, signed, data.draw(st.floats(50, 100)))
    fast = mvm(x, enc, spec, signed, full_scale=fs, exact_shortcut=False)
    ref = mvm_reference(x, enc, spec, signed, full_scale=fs)
    assert np.array_equal(fast, ref)
    if adc_step(spec, fs) == 1.0 and spec.adc_lossless:
        assert np.array_equal(fast, exact(x, q))
        assert np.array_equal(mvm(x, enc, spec, signed, full_scale=fs), fast)


@pytest.mark.parametrize("parallel", [False, True])
def test_fast_path_blocks_many_vectors_and_columns(monkeypatch, parallel):
    """Shrink the fast path's blocks so vectors and columns split into many tasks, run
    serially or in worker threads: same bits, and the same read noise for a seed."""
    import acompile.sim.fast as fast
    monkeypatch.setattr(fast, "_STACKED_ROWS", 24)
    monkeypatch.setattr(fast, "_BLOCK_ELEMS", 200)
    monkeypatch.setattr(fast, "_PARALLEL_FLOPS", 0 if parallel else float("inf"))
    spec = spec_of(weight_bits=6, input_bits=6, dac_bits=2, cell_bits=2, adc_bits=4, rows=7,
                   signed_weights="offset")
    rng = np.random.default_rng(7)
    q = random_weights(rng, spec, 11, 30)
    x = random_inputs(rng, spec, True, 19, 30)
    enc = encode_weights(q, spec)
    assert np.array_equal(mvm(x, enc, spec, True), mvm_reference(x, enc, spec, True))
    f = observe_full_scale(x, enc, spec, True, 90.0)
    assert f == pytest.approx(float(np.percentile(explicit_currents(x, enc, spec, True), 90.0)))
    noise = NoiseSpec(read_sigma=0.01)
    noisy = mvm(x, enc, spec, True, noise=noise, rng=np.random.default_rng(1))
    monkeypatch.setattr(fast, "_PARALLEL_FLOPS", float("inf") if parallel else 0)
    assert np.array_equal(mvm(x, enc, spec, True, noise=noise, rng=np.random.default_rng(1)), noisy)


@pytest.mark.parametrize("dac_bits, rows, want_f", [(1, 128, 2), (2, 7, 4), (4, 256, 1)])
def test_integer_levels_read_several_cycles_per_gemm_exactly(dac_bits, rows, want_f):
    """Cycles packed into one GEMM row (base^j apart) come back out exact: the lossy ADC, read
    noise on integer levels and calibration agree with unpacked reads, with padded groups too."""
    import acompile.sim.fast as fast
    spec = spec_of(weight_bits=8, input_bits=8, dac_bits=dac_bits, cell_bits=2, adc_bits=6, rows=rows)
    t = spec.cycles(True)
    f, base = fast._packing(spec, t)
    assert f == want_f and base > rows * spec.max_chunk * spec.max_level
    assert f == 1 or t % f or dac_bits == 1                     # (2, 7): T = 5 cycles in groups of 4
    rng = np.random.default_rng(4)
    q = random_weights(rng, spec, 7, 300)
    x = random_inputs(rng, spec, True, 9, 300)
    x[0] = (1 << (spec.input_bits - 1)) - 1                     # full-scale reads in every cycle
    enc = encode_weights(q, spec)
    cells = enc.levels.astype(np.float32)                       # float cells: read one cycle at a time
    noise = NoiseSpec(read_sigma=0.01)
    got = mvm(x, enc, spec, True, exact_shortcut=False)
    assert np.array_equal(got, mvm_reference(x, enc, spec, True))
    assert np.array_equal(got, mvm(x, enc, spec, True, cells=cells, exact_shortcut=False))
    assert observe_full_scale(x, enc, spec, True, 97.0) == pytest.approx(
        float(np.percentile(explicit_currents(x, enc, spec, True), 97.0)))
    noisy = mvm(x, enc, spec, True, noise=noise, rng=3)
    assert np.array_equal(noisy, mvm(x, enc, spec, True, cells=cells, noise=noise, rng=3))


def test_wide_converters_switch_to_float64_where_float32_would_round():
    # F_worst = 300 * 255 * 255 > 2^24: reads are carried in float64.
    spec = spec_of(weight_bits=10, input_bits=10, dac_bits=8, cell_bits=8, adc_bits=12, rows=300)
    assert spec.read_dtype == np.float64
    rng = np.random.default_rng(10)
    q = random_weights(rng, spec, 3, 650)
    x = random_inputs(rng, spec, True, 2, 650)
    enc = encode_weights(q, spec)
    assert np.array_equal(mvm(x, enc, spec, True), mvm_reference(x, enc, spec, True))
    # 300 row blocks of a 16-bit ADC: code sums over row blocks are kept in float64.
    spec = spec_of(weight_bits=8, input_bits=8, dac_bits=1, cell_bits=2, adc_bits=16, rows=1)
    q = random_weights(rng, spec, 3, 300)
    x = random_inputs(rng, spec, False, 2, 300)
    enc = encode_weights(q, spec)
    lossless = mvm(x, enc, spec, False, exact_shortcut=False)
    assert np.array_equal(lossless, exact(x, q))
    lossy = mvm(x, enc, spec, False, full_scale=1e6, exact_shortcut=False)
    assert np.array_equal(lossy, mvm_reference(x, enc, spec, False, full_scale=1e6))
    assert not np.array_equal(lossy, lossless)


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("scheme", ["differential", "offset"])
@pytest.mark.parametrize("percentile", [0.0, 50.0, 99.0, 99.9, 100.0])
def test_calibrated_full_scale_is_the_percentile_of_read_currents(scheme, percentile):
    spec = spec_of(weight_bits=6, input_bits=6, dac_bits=2, cell_bits=3, adc_bits=4, rows=9,
                   signed_weights=scheme)
    rng = np.random.default_rng(8)
    q = random_weights(rng, spec, 5, 25)
    x = random_inputs(rng, spec, False, 6, 25)
    enc = encode_weights(q, spec)
    f = observe_full_scale(x, enc, spec, False, percentile)
    want = max(1.0, float(np.percentile(explicit_currents(x, enc, spec, False), percentile)))
    assert f == pytest.approx(want, rel=1e-12)
    assert f <= spec.worst_case_full_scale
    # Calibration trades clipping for resolution: a finer step than the worst case.
    if percentile == 99.0:
        assert adc_step(spec, f) < adc_step(spec)
        assert np.array_equal(mvm(x, enc, spec, False, full_scale=f),
                              mvm_reference(x, enc, spec, False, full_scale=f))


def test_calibration_of_zero_inputs_is_at_least_one():
    spec = spec_of()
    enc = encode_weights(np.ones((2, 5), dtype=int), spec)
    assert observe_full_scale(np.zeros((3, 5), dtype=int), enc, spec, True, 99.0) == 1.0


def test_adc_step():
    spec = spec_of(dac_bits=1, cell_bits=2, adc_bits=8, rows=128)
    assert adc_step(spec) == pytest.approx(384 / 255)
    assert adc_step(spec, 100.0) == 1.0  # more codes than the range needs: count unit currents
    assert adc_step(spec, 510.0) == 2.0
    with pytest.raises(InvalidDataError):
        adc_step(spec, 0.0)


# --------------------------------------------------------------------------- non-idealities


def noisy_setup(seed=9, scheme="differential"):
    spec = spec_of(weight_bits=6, input_bits=6, dac_bits=2, cell_bits=2, adc_bits=8, rows=16,
                   signed_weights=scheme)
    rng = np.random.default_rng(seed)
    q = random_weights(rng, spec, 6, 40)
    x = random_inputs(rng, spec, True, 5, 40)
    return spec, q, x, encode_weights(q, spec)


def test_ideal_noise_spec_changes_nothing():
    spec, q, x, enc = noisy_setup()
    noise = NoiseSpec()
    assert noise.is_ideal
    cells = program_cells(enc.levels, spec, noise, None)
    assert cells.dtype == np.float32 and np.array_equal(cells, enc.levels)
    want = mvm_reference(x, enc, spec, True)
    assert np.array_equal(mvm(x, enc, spec, True, cells=cells, noise=noise), want)
    assert np.array_equal(mvm_reference(x, enc, spec, True, cells=cells, noise=noise), want)


@pytest.mark.parametrize("scheme", ["differential", "offset"])
def test_noise_is_reproducible_with_a_seed_and_varies_with_another(scheme):
    spec, q, x, enc = noisy_setup(scheme=scheme)
    noise = NoiseSpec(programming_sigma=0.03, read_sigma=0.001, stuck_at_zero_rate=0.003,
                      drift_nu_mean=0.05, drift_nu_std=0.01, drift_time_s=100.0,
                      drift_compensation=True)
    assert not noise.is_ideal

    def run(seed, path):
        rng = np.random.default_rng(seed)
        cells = program_cells(enc.levels, spec, noise, rng)
        return path(x, enc, spec, True, cells=cells, noise=noise, rng=rng)

    for path in (mvm, mvm_reference):
        a, b, c = run(1, path), run(1, path), run(2, path)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
    ideal = exact(x, q)
    for seed in (1, 2):  # noisy but recognisably the same product, on either path
        for path in (mvm, mvm_reference):
            got = run(seed, path)
            assert not np.array_equal(got, ideal)
            assert np.corrcoef(got.ravel(), ideal.ravel())[0, 1] > 0.9
    with pytest.raises(InvalidDataError, match="Generator"):
        program_cells(enc.levels, spec, noise, None)
    with pytest.raises(InvalidDataError, match="cells"):
        mvm(x, enc, spec, True, noise=noise, rng=np.random.default_rng(0))


def test_read_noise_alone_needs_no_cells_and_is_seeded():
    spec, q, x, enc = noisy_setup()
    noise = NoiseSpec(read_sigma=0.01)
    a = mvm(x, enc, spec, True, noise=noise, rng=np.random.default_rng(3))
    b = mvm(x, enc, spec, True, noise=noise, rng=np.random.default_rng(3))
    assert np.array_equal(a, b) and not np.array_equal(a, exact(x, q))
    with pytest.raises(InvalidDataError, match="Generator"):
        mvm(x, enc, spec, True, noise=noise)


def test_read_noise_has_the_same_statistics_on_both_paths():
    spec = spec_of(weight_bits=8, input_bits=8, dac_bits=2, cell_bits=2, adc_bits=6, rows=32,
                   signed_weights="offset")
    rng = np.random.default_rng(11)
    q, x = random_weights(rng, spec, 20, 100), random_inputs(rng, spec, True, 10, 100)
    enc = encode_weights(q, spec)
    clean = mvm(x, enc, spec, True)
    noise = NoiseSpec(read_sigma=0.01)
    errs = {path: np.array([path(x, enc, spec, True, noise=noise, rng=seed) - clean
                            for seed in range(40)]) for path in (mvm, mvm_reference)}
    sf, sr = errs[mvm].std(), errs[mvm_reference].std()
    assert sf > 0 and abs(sf / sr - 1) < 0.15


def test_g_min_leaks_current_through_every_cell():
    spec, q, x, enc = noisy_setup(scheme="offset")
    noise = NoiseSpec(g_min_us=0.1, g_max_us=1.0)  # on/off ratio 10
    cells = program_cells(enc.levels, spec, noise, None)  # deterministic: no rng needed
    leak = 0.1 / (0.9 / 3)
    np.testing.assert_allclose(cells, enc.levels + leak, rtol=1e-6)
    ideal = mvm_reference(x, enc, spec, True)
    fast = mvm(x, enc, spec, True, cells=cells, noise=noise)
    assert not np.array_equal(fast, ideal)
    np.testing.assert_allclose(fast, mvm_reference(x, enc, spec, True, cells=cells, noise=noise),
                               rtol=0, atol=1e-9 * np.abs(fast).max())
    # Differential columns leak alike on both signs: with a lossless ADC the leak cancels.
    spec, q, x, enc = noisy_setup(scheme="differential")
    cells = program_cells(enc.levels, spec, noise, None)
    assert np.array_equal(mvm(x, enc, spec, True, cells=cells, noise=noise), exact(x, q))


def test_stuck_at_rates_give_the_expected_fraction():
    spec = spec_of(cell_bits=2)
    levels = np.full((300, 200), 1, dtype=np.uint8)
    noise = NoiseSpec(stuck_at_zero_rate=0.05, stuck_at_max_rate=0.02)
    cells = program_cells(levels, spec, noise, np.random.default_rng(0))
    frac0, frac_max = np.mean(cells == 0), np.mean(cells == spec.max_level)
    assert abs(frac0 - 0.05) < 0.005 and abs(frac_max - 0.02) < 0.003
    assert np.all((cells == 0) | (cells == 1) | (cells == spec.max_level))


def test_programming_noise_scale_and_drift_compensation():
    spec = spec_of(cell_bits=2)
    levels = np.random.default_rng(0).integers(0, 4, size=(200, 300)).astype(np.uint8)
    cells = program_cells(levels, spec, NoiseSpec(programming_sigma=0.02), np.random.default_rng(1))
    resid = (cells - levels)[levels > 0]
    assert abs(resid.std() - 0.02 * 3) < 0.003 and abs(resid.mean()) < 0.003
    drift = NoiseSpec(drift_nu_mean=0.1, drift_time_s=1e4)
    np.testing.assert_allclose(program_cells(levels, spec, drift, None), levels * 1e4**-0.1,
                               rtol=1e-5)
    comp = NoiseSpec(drift_nu_mean=0.1, drift_time_s=1e4, drift_compensation=True)
    np.testing.assert_allclose(program_cells(levels, spec, comp, None), levels, rtol=1e-5)


@pytest.mark.parametrize("scheme", ["differential", "offset"])
def test_adc_offset_and_gain_error_shift_the_codes(scheme):
    spec, q, x, enc = noisy_setup(scheme=scheme)
    base = mvm_reference(x, enc, spec, True)
    for noise in (NoiseSpec(adc_offset_lsb=0.7), NoiseSpec(adc_gain_error=0.05)):
        fast = mvm(x, enc, spec, True, noise=noise)
        assert np.array_equal(fast, mvm_reference(x, enc, spec, True, noise=noise))
        # A common offset cancels between differential columns (lossless ADC, no clipping).
        cancels = scheme == "differential" and noise.adc_offset_lsb
        assert np.array_equal(fast, base) == bool(cancels)


def test_noise_spec_validation():
    with pytest.raises(InvalidTargetError):
        NoiseSpec(g_min_us=1.0, g_max_us=0.5)
    with pytest.raises(InvalidTargetError):
        NoiseSpec(stuck_at_zero_rate=0.7, stuck_at_max_rate=0.5)
    with pytest.raises(InvalidTargetError):
        NoiseSpec(read_sigma=-0.1)


@pytest.mark.parametrize("dac_bits, adc_bits", [(1, 8), (3, 6), (8, 8), (2, 16)])
def test_sign_magnitude_inputs_agree_and_are_exact_when_lossless(dac_bits, adc_bits):
    rng = np.random.default_rng(dac_bits)
    spec = AnalogSpec(weight_bits=8, input_bits=8, dac_bits=dac_bits, cell_bits=2, adc_bits=adc_bits, rows=32,
                      signed_weights="differential", input_encoding="sign_magnitude")
    q_w = rng.integers(-127, 128, size=(6, 70)).astype(np.int32)
    x_q = rng.integers(-127, 128, size=(5, 70)).astype(np.int32)
    enc = encode_weights(q_w, spec)
    fast = mvm(x_q, enc, spec, True, exact_shortcut=False)
    assert np.array_equal(fast, mvm_reference(x_q, enc, spec, True))
    assert spec.cycles(True) == 2 * -(-7 // dac_bits) == len(cycle_weights(spec, True))
    if spec.adc_lossless:
        assert np.array_equal(fast, x_q.astype(np.int64) @ q_w.astype(np.int64).T)
