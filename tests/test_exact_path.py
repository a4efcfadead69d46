"""The exact integer path of lossless layers (acompile/sim/exact.py, conv.py): float32 GEMMs split
along K so that every partial sum stays exact, equal bit for bit to the reference kernel."""

import numpy as np
import pytest

import models
from acompile.mapping import AnalogLayer
from acompile.sim import exact
from acompile.target import load_target
from helpers import compiled, simulate
from models import _Builder


def _lossless(target="isaac", **more):
    t = load_target(target)
    worst = t["crossbar.rows"] * (2 ** t["dac.bits"] - 1) * (2 ** t["crossbar.cell_bits"] - 1)
    return t.with_overrides({"adc.bits": int(np.ceil(np.log2(worst + 1))), **more})


def _odd_conv():
    """Conv 6->8, 3x3, stride (2, 1), asymmetric pads, dilation (1, 2), 2 groups, then a 1x1 Conv
    (the unpatched path) and a strided 1x1 Conv, on [2, 6, 11, 10]."""
    b = _Builder(3)
    h = b.op("Relu", [b.conv("input", 6, 8, 3, stride=(2, 1), pad=[1, 2, 0, 1], dilation=(1, 2), group=2)])
    h = b.op("Relu", [b.conv(h, 8, 8, 1)])
    b.conv(h, 8, 4, 1, stride=2, out="output")
    return b.model("odd_conv", [("input", [2, 6, 11, 10])], [("output", [2, 4, 3, 5])])


def _wide_linear(k=6144):
    """One Gemm with K large enough that 8-bit codes need several exact chunks."""
    b = _Builder(4)
    b.gemm("input", k, 5, out="output")
    return b.model("wide_linear", [("input", [2, k])], [("output", [2, 5])])


def _spy(monkeypatch):
    calls = []
    real = exact.matmul

    def matmul(a, b, chunks, *args):
        calls.append(chunks)
        return real(a, b, chunks, *args)
    monkeypatch.setattr(exact, "matmul", matmul)
    return calls


@pytest.mark.parametrize("target", ["isaac", "prime"])   # 16-bit codes: float64 products; 6-bit: float32
def test_exact_conv_path_equals_the_reference_kernel(monkeypatch, target):
    model = _odd_conv()
    feeds = models.random_inputs(model, batch=2)
    comp = compiled(model, _lossless(target))
    calls = _spy(monkeypatch)
    fast = simulate(comp, feeds, mode="quantized", path="fast")
    assert len(calls) >= 4                   # three Conv layers, the first with 2 groups
    monkeypatch.undo()
    ref = simulate(comp, feeds, mode="quantized", path="reference")
    for a, b in zip(fast, ref):
        np.testing.assert_array_equal(a, b)


def test_a_layer_needing_several_chunks_equals_the_reference_kernel(monkeypatch):
    model = _wide_linear()
    feeds = {"input": (np.random.default_rng(5).standard_normal((2, 6144)) * 3).astype(np.float32)}
    comp = compiled(model, _lossless("isaac", **{"precision.weight_bits": 8, "precision.input_bits": 8}))
    calls = _spy(monkeypatch)
    (fast,) = simulate(comp, feeds, mode="quantized", path="fast")
    assert len(calls) == 1 and len(calls[0]) >= 2
    monkeypatch.undo()
    (ref,) = simulate(comp, feeds, mode="quantized", path="reference")
    np.testing.assert_array_equal(fast, ref)


def test_the_exact_path_is_taken_only_when_the_adc_is_lossless(monkeypatch):
    model = _odd_conv()
    feeds = models.random_inputs(model, batch=2)
    calls = _spy(monkeypatch)
    for target, used in ((_lossless("isaac"), True), (load_target("isaac").with_overrides({"adc.bits": 6}), False)):
        comp = compiled(model, target)
        calls.clear()
        simulate(comp, feeds, mode="quantized", path="fast")
        assert bool(calls) == used


def _split_by_cumulative_sums(qf, limit):
    """The chunks by definition: greedy longest runs of k whose cumulative |q_w| stays within ``limit``."""
    cum = np.cumsum(np.abs(qf), axis=1, dtype=np.float64)
    chunks, k0, base = [], 0, np.zeros(qf.shape[0])
    while k0 < qf.shape[1]:
        fits = int(np.searchsorted((cum[:, k0:] - base[:, None]).max(axis=0), limit, side="right"))
        if fits == 0:
            return None
        chunks.append((k0, k0 + fits))
        k0 += fits
        base = cum[:, k0 - 1]
    return tuple(chunks)


def test_k_chunks_are_the_greedy_longest_ones_in_either_layout():
    rng = np.random.default_rng(1)
    for shape, limit in (((7, 3000), 65793), ((64, 513), 5000), ((3, 40), 127), ((5, 9), 10 ** 9), ((4, 6), 100)):
        q = rng.integers(-127, 128, shape).astype(np.float32)
        want = _split_by_cumulative_sums(q, limit)
        assert exact._split(q, limit) == want and exact._split(np.asfortranarray(q), limit) == want, shape
    assert exact._split(np.full((2, 3), 200, np.float32), 150) is None


def test_matmul_is_exact_over_chunks_and_beyond_float32():
    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, (7, 3000)).astype(np.float32)
    x = rng.integers(0, 256, (5, 3000)).astype(np.float32)
    want = x.astype(np.int64) @ q.astype(np.int64).T
    enc = type("Enc", (), {})()              # plans are cached per encoding object
    chunks = exact.plan(enc, q, 255)
    assert len(chunks) >= 2 and chunks[0][0] == 0 and chunks[-1][1] == 3000
    for k0, k1 in chunks:                    # each chunk keeps max|x| * sum|w| below 2^24
        assert 255 * np.abs(q[:, k0:k1]).sum(axis=1).max() < 2 ** 24
    assert np.array_equal(exact.matmul(x, q.T, chunks), want)
    big = np.full((2, 4), 2 ** 20, np.float32)
    assert exact.plan(enc, big, 2 ** 5) is None          # one product alone reaches 2^25: float64
    assert np.array_equal(exact.matmul(big, big.T, None), np.full((2, 2), 4 * 2.0 ** 40))


def test_codes_equal_quantize_inputs_and_report_the_peak():
    from acompile.numerics.quantise import quantize_inputs
    x = np.random.default_rng(2).standard_normal((40, 3000)).astype(np.float32)
    out = np.empty_like(x)
    peak = exact.codes(x, out, 0.01, 8, True, 0)
    want = quantize_inputs(x, 0.01, 8, True)
    assert np.array_equal(out, want) and peak == np.abs(want).max()
    assert exact.pad_code(0.01, 8, False, 124) == 124


@pytest.mark.parametrize("signed, offset", [(True, 0), (False, 0), (False, 37)])
def test_codes_clip_only_the_blocks_that_leave_the_range(signed, offset):
    """Blocks of rows are quantised one at a time: rows far out of range (clipped) beside rows inside
    it give quantize_inputs' codes and its peak; a NaN or infinity in a later block is refused."""
    from acompile.errors import InvalidDataError
    from acompile.numerics.quantise import quantize_inputs
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3 * (exact._BLOCK // 64) + 5, 64)).astype(np.float32) * 0.3
    if not signed:
        x = np.abs(x)
    x[-2] *= 40                                   # only the last block leaves the 8-bit range
    out = np.empty_like(x)
    peak = exact.codes(x, out, 0.01, 8, signed, offset)
    want = quantize_inputs(x, 0.01, 8, signed, offset)
    assert np.array_equal(out, want) and peak == np.abs(want).max()
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[-1, 3] = bad
        with pytest.raises(InvalidDataError, match="NaN or infinity"):
            exact.codes(y, np.empty_like(y), 0.01, 8, signed, offset)


@pytest.mark.parametrize("vectors", [5, 255, 256, 700])
def test_product_is_exact_either_way_round(vectors):
    """Below _THREADED_ROWS vectors the GEMM may run as q_w @ x^T (a transposed view comes back), from
    there on as x @ q_w^T (C-contiguous): the values are the integer product either way."""
    rng = np.random.default_rng(vectors)
    q = rng.integers(-127, 128, (300, 96)).astype(np.float32)
    x = rng.integers(-127, 128, (vectors, 96)).astype(np.float32)
    enc = type("Enc", (), {})()
    y = exact.product(x, q, exact.plan(enc, q, 127))
    assert np.array_equal(y, x.astype(np.int64) @ q.astype(np.int64).T)
    if vectors >= exact._THREADED_ROWS:
        assert y.flags.c_contiguous


@pytest.mark.parametrize("target", ["lossless", "isaac"])
def test_a_nan_reaching_a_layer_makes_the_outputs_of_its_vectors_nan_in_every_path(target):
    """No DAC converts a NaN (a fully masked attention row makes one in the model itself): the vectors holding
    it give NaN, as the ideal product does, and every other output is what it would be without it."""
    model = _odd_conv()
    comp = compiled(model, _lossless("isaac") if target == "lossless" else "isaac")
    feeds = models.random_inputs(model, batch=2)
    clean = {k: v.copy() for k, v in feeds.items()}
    feeds["input"][1, 2, 3, 4] = np.nan
    ideal = simulate(comp, feeds)[0]
    for path in ("fast", "reference"):
        got, without = simulate(comp, feeds, "quantized", path)[0], simulate(comp, clean, "quantized", path)[0]
        assert np.array_equal(np.isnan(got), np.isnan(ideal)) and np.isnan(got[1]).any() and not np.isnan(got[0]).any()
        np.testing.assert_array_equal(got[~np.isnan(got)], without[~np.isnan(got)])


def test_the_exact_conv_path_finds_a_nan_in_its_codes(monkeypatch):
    """A Conv's input is read once, by the exact path's workers as they quantise it: a NaN there sends the
    layer to the vector path (None), with no pass over the whole input beforehand on the main thread."""
    from acompile.sim import chain
    model = _odd_conv()
    comp = compiled(model, _lossless("isaac"))
    feeds = models.random_inputs(model, batch=2)
    results = []
    real = chain._conv_exact
    monkeypatch.setattr(chain, "_conv_exact", lambda *args: results.append(real(*args)) or results[-1])
    simulate(comp, feeds, "quantized", "fast")
    assert results and all(y is not None for y, _ in results)
    results.clear()
    feeds["input"][1, 2, 3, 4] = np.nan
    simulate(comp, feeds, "quantized", "fast")
    assert results[0] == (None, False)
    with pytest.raises(exact.NotFinite, match="NaN or infinity"):
        exact.codes(np.array([1.0, np.inf], np.float32), np.empty(2, np.float32), 0.1, 8, False, 0)


def test_zero_points_on_the_exact_path_equal_the_reference_kernel(monkeypatch):
    """A quantized model's codes stream as x_q - q_min (input_offset, which padding reads too): the
    exact path subtracts offset * sum(q_w) as the chain's Dequantize step does."""
    model = _odd_conv()
    feeds = models.random_inputs(model, batch=2)
    comp = compiled(model, _lossless("prime"))
    monkeypatch.setattr(AnalogLayer, "input_offset", property(lambda layer: 5))
    calls = _spy(monkeypatch)
    fast = simulate(comp, feeds, mode="quantized", path="fast")
    assert calls
    for a, b in zip(fast, simulate(comp, feeds, mode="quantized", path="reference")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["conv_transpose_grouped", "transformer_block", "conv_1d", "depthwise_conv"])
def test_exact_vector_and_nchw_paths_equal_the_reference_kernel(name):
    model = models.ALL_SMALL[name]()
    comp = compiled(model, _lossless("prime"), batch=2)
    feeds = models.random_inputs(model, batch=2)
    for a, b in zip(simulate(comp, feeds, mode="quantized", path="fast"),
                    simulate(comp, feeds, mode="quantized", path="reference")):
        np.testing.assert_array_equal(a, b)
