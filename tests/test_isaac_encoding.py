"""ISAAC's encoding (issue 12, item 6): signed_weights = "flipped" complements a block's column when its
levels sum past half their range, so isaac's 8-bit ADC is exact; offset_subtraction = "input_sum" has no
reference column and subtracts 2^(Bw-1)·Σx digitally. Both executors agree bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from acompile import compile_model
from acompile.cli import main
from acompile.compiler import Options
from acompile.numerics import AnalogSpec, decode_weights, encode_weights, quantize_weights
from acompile.sim import fast, reference
from acompile.target import apply_overrides, load_target

RNG = np.random.default_rng(7)


def _spec(adc_bits: int, how: str, scheme: str = "offset") -> AnalogSpec:
    return AnalogSpec(16, 16, 1, 2, adc_bits, 128, scheme, offset_subtraction=how)


def test_mlp_fc1_on_isaac_takes_56_crossbars_not_63():
    isaac = load_target("isaac")
    assert isaac.crossbar.offset_subtraction == "input_sum"
    assert isaac.crossbar.signed_weights == "flipped"
    fc1 = compile_model("samples/mlp.onnx", isaac, Options()).cost["layers"][0]
    # 784 x 128, 8 slices of 2-bit cells: 7 row blocks x 1024 / 128 = 8 column blocks
    assert (fc1["physical_columns"], fc1["row_blocks"], fc1["col_blocks"], fc1["counts"]["crossbars"]) == \
        (1024, 7, 8, 56)
    column = apply_overrides(isaac, {"crossbar.offset_subtraction": "digital"})
    fc1 = compile_model("samples/mlp.onnx", column, Options()).cost["layers"][0]
    assert (fc1["physical_columns"], fc1["counts"]["crossbars"]) == (1025, 63)    # the reference column spills


@pytest.mark.parametrize("adc_bits", [6, 8, 9])
@pytest.mark.parametrize("signed", [False, True])
def test_fast_and_reference_agree_and_lossless_is_the_integer_product(adc_bits, signed):
    spec = _spec(adc_bits, "input_sum")
    q, _ = quantize_weights(RNG.standard_normal((12, 300)), 16)
    enc = encode_weights(q, spec)
    assert enc.levels.shape == (300, 12 * 8) and int((enc.col_out < 0).sum()) == 0
    np.testing.assert_array_equal(decode_weights(enc, spec, 12), q)
    lo = -32767 if signed else 0
    x = RNG.integers(lo, 32768, (9, 300))
    y_fast = fast.mvm(x, enc, spec, signed)
    y_ref = reference.mvm_reference(x, enc, spec, signed)
    np.testing.assert_array_equal(y_fast, y_ref)
    if adc_bits == 9:                                       # 128 rows x 3 = 384 <= 511: lossless
        np.testing.assert_array_equal(y_fast, (x @ q.T).astype(np.float64))
    # no reference column to convert: the offset term is exact, so the error is at most the
    # reference-column scheme's
    y_col = fast.mvm(x, encode_weights(q, _spec(adc_bits, "digital")), _spec(adc_bits, "digital"), signed)
    exact = (x @ q.T).astype(np.float64)
    assert np.abs(y_fast - exact).max() <= np.abs(y_col - exact).max()


def test_the_device_file_round_trips_and_the_chain_steps_agree(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", "samples/digits.onnx", "-t", "isaac", "-o", str(out), "-q",
                 "--calibration", "samples/digits_calib.npy"]) == 0
    program = json.loads((out / "program.json").read_text())
    assert program["layers"][0]["spec"]["offset_subtraction"] == "input_sum"
    x = np.load("samples/digits_test_x.npy")[:50]
    np.save(tmp_path / "x.npy", x)
    results = []
    for path in ("fast", "reference"):
        r = tmp_path / f"{path}.npz"
        assert main(["simulate", str(out), "-i", str(tmp_path / "x.npy"), "--mode", "quantized", "--path", path,
                     "-r", str(r), "-q"]) == 0
        results.append(np.load(r)["logits"])
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("how", ["input_sum", "digital"])
@pytest.mark.parametrize("signed", [False, True])
def test_flipped_columns_make_the_8_bit_adc_exact(how, signed):
    spec = _spec(8, how, "flipped")
    assert spec.worst_case_full_scale == 192 and spec.adc_lossless          # 128 rows x 3 / 2 <= 255
    q, _ = quantize_weights(RNG.standard_normal((10, 300)), 16)
    enc = encode_weights(q, spec)
    assert enc.flip.shape == (3, enc.levels.shape[1]) and enc.flip.any() and not enc.flip.all()
    for r in range(3):                                                     # no column sums past half
        assert enc.levels[r * 128:(r + 1) * 128].sum(axis=0).max() <= enc.levels[r * 128:(r + 1) * 128].shape[0] * 3 // 2
    np.testing.assert_array_equal(decode_weights(enc, spec, 10), q)
    x = RNG.integers(-32767 if signed else 0, 32768, (6, 300))
    exact = (x @ q.T).astype(np.float64)
    # the full read -> ADC -> unflip -> shift-and-add path, not the lossless shortcut
    np.testing.assert_array_equal(fast.mvm(x, enc, spec, signed, exact_shortcut=False), exact)
    np.testing.assert_array_equal(reference.mvm_reference(x, enc, spec, signed), exact)
    # a lossy ADC: the two executors still agree bit for bit
    lossy = _spec(6, how, "flipped")
    enc6 = encode_weights(q, lossy)
    np.testing.assert_array_equal(fast.mvm(x, enc6, lossy, signed), reference.mvm_reference(x, enc6, lossy, signed))



@pytest.mark.parametrize("cell_bits,rows,k", [(2, 128, 300), (3, 7, 50), (1, 16, 16), (8, 5, 3)])
def test_vectorised_flip_matches_the_per_block_loop(cell_bits, rows, k):
    spec = AnalogSpec(8, 8, 1, cell_bits, 8, rows, "flipped")
    q, _ = quantize_weights(RNG.standard_normal((9, k)), 8)
    enc = encode_weights(q, spec)
    levels = encode_weights(q, AnalogSpec(8, 8, 1, cell_bits, 8, rows, "offset")).levels.copy()
    for r in range(enc.flip.shape[0]):                  # the definition, one row block at a time
        block = levels[r * rows:(r + 1) * rows]
        mark = block.sum(axis=0, dtype=np.int64) > block.shape[0] * spec.max_level // 2
        np.testing.assert_array_equal(enc.flip[r], mark)
        block[:, mark] = spec.max_level - block[:, mark]
    np.testing.assert_array_equal(enc.levels, levels)
    np.testing.assert_array_equal(decode_weights(enc, spec, 9), q)

def test_the_device_file_stores_the_flip_marks(tmp_path):
    from acompile.simulation import load_compiled, simulate
    out = tmp_path / "out"
    assert main(["compile", "samples/mlp.onnx", "-t", "isaac", "-o", str(out), "-q"]) == 0
    loaded = load_compiled(out, "quantized")
    c = compile_model("samples/mlp.onnx", "isaac", Options())
    from acompile.sim.runtime import WeightsFromGraph
    graph_weights = WeightsFromGraph(c.graph, c.mapping)
    for layer in loaded.mapping.layers:
        stored = loaded.weights.encoded(layer, 0).enc
        fresh = graph_weights.encoded(c.mapping.layers[layer.index], 0).enc
        np.testing.assert_array_equal(stored.flip, fresh.flip)
        np.testing.assert_array_equal(stored.levels, fresh.levels)
    x = {"input": RNG.standard_normal((3, 784)).astype(np.float32)}
    from acompile import simulate as simulate_compiled
    np.testing.assert_array_equal(simulate(loaded, x, mode="quantized")["output"],
                                  simulate_compiled(c, x, mode="quantized")["output"])


def test_digits_on_isaac_quantized_reaches_float_accuracy():
    from acompile.calibrate import load_arrays
    from acompile.sim.runtime import Simulator, WeightsFromGraph
    x, y = np.load("samples/digits_test_x.npy"), np.load("samples/digits_test_y.npy")
    c = compile_model("samples/digits.onnx", "isaac",
                      Options(batch=len(x), calibration=load_arrays("samples/digits_calib.npy", ["input"])))
    logits = Simulator(c.graph, c.mapping, WeightsFromGraph(c.graph, c.mapping), mode="quantized").run(
        {"input": x})[c.graph.outputs[0]]
    import onnxruntime as ort
    sess = ort.InferenceSession("samples/digits.onnx", providers=["CPUExecutionProvider"])
    float_acc = float(np.mean(np.argmax(sess.run(None, {"input": x})[0], axis=1) == y))
    assert float(np.mean(np.argmax(logits, axis=1) == y)) >= float_acc - 0.01
