"""The charge-domain target (jia2020) and the Mythic M1076: schema fields, summaries, compiling,
and the simulator's charge-domain non-idealities and analog offset subtraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acompile.calibrate import load_arrays
from acompile.compiler import Options, compile_model
from acompile.numerics import AnalogSpec, NoiseSpec, encode_weights
from acompile.numerics.noise import ColumnErrors, column_errors, ktc_sigma
from acompile.sim.fast import mvm, observe_full_scale
from acompile.sim.reference import mvm_reference
from acompile.sim.runtime import Simulator, WeightsFromGraph
from acompile.simulation import noise_from_target
from acompile.target import load_target, shipped_dir, validate_file
from acompile.target.derived import published

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
NEW = ["jia2020", "m1076"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _variant(tmp_path: Path, base: str, name: str, body: str) -> Path:
    """A target file extending a shipped one, with ``body`` (TOML tables) changed."""
    return _write(tmp_path / f"{name}.toml", f'schema_version = 1\nname = "{name}"\nextends = "{base}"\n{body}')


# --- the files ---------------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
def test_new_targets_validate(name):
    assert validate_file(shipped_dir() / f"{name}.toml") == []


def test_jia2020_describes_a_charge_domain_macro():
    t = load_target("jia2020")
    assert (t.crossbar.storage, t.crossbar.compute, t.dac.kind, t.dac.bits) == ("digital", "charge", "none", 1)
    assert (t.crossbar.rows, t.crossbar.cols, t.crossbar.cell_bits, t.adc.bits) == (2304, 256, 1, 8)
    assert t.noise.programming_sigma == 0 and t.noise.column_gain_sigma > 0


def test_jia2020_summary_rebuilds_the_papers_figures_from_components():
    s, p = load_target("jia2020").summary(), published(load_target("jia2020").data)
    assert p["scale"] == pytest.approx(1 / 64) and p["scope"] == "macro"
    # throughput and energy efficiency come from the parts (Table I, the 1.35 us cycle): 0.3 % apart
    assert s["peak_tops"] == pytest.approx(0.874 / 64, rel=0.001)
    assert s["tops_per_w"] == pytest.approx(400 / 64, rel=0.005)
    assert s["peak_tops"] == pytest.approx(p["peak_tops"], rel=0.001)
    assert s["tops_per_w"] == pytest.approx(p["tops_per_w"], rel=0.005)
    # area: Fig. 11's itemised 3.407 mm2 plus the derived 0.235 mm2 remainder (by construction)
    assert s["chip_area_mm2"] == pytest.approx(3.642, rel=0.001)
    assert s["tops_per_mm2"] == pytest.approx(0.24 / 64, rel=0.002)


def test_m1076_summary_gives_the_products_tops_watts_and_capacity():
    t = load_target("m1076")
    s, p = t.summary(), published(t.data)
    assert s["peak_tops"] == pytest.approx(25.0, rel=0.001) == p["peak_tops"]
    assert 3.0 <= s["chip_power_w"] <= 4.0 and s["chip_power_w"] == pytest.approx(p["power_w"], rel=0.001)
    assert 79e6 < s["weights_per_chip"] <= 80e6           # "up to 80M weights"
    assert s["tops_per_mm2"] is None                       # no die area is published
    assert t.crossbar.offset_subtraction == "analog"


def test_published_figures_at_the_files_own_precision_are_not_scaled():
    p = published(load_target("hermes").data)
    assert p["scale"] == 1 and p["tops_per_w"] == 9.76 and p["scope"] == "chip"


def test_summary_text_says_how_the_papers_figures_were_scaled(capsys):
    from acompile.cli.targets import cmd_show
    import io
    out = io.StringIO()
    assert cmd_show("jia2020", summary=True, out=out) == 0
    assert "1b x 1b figures scaled to 8b x 8b" in out.getvalue() and "macro only" in out.getvalue()
    out = io.StringIO()
    cmd_show("m1076", summary=True, out=out)
    assert "3.5 W" in out.getvalue()


# --- rules between the new fields ----------------------------------------------

@pytest.mark.parametrize("body, field, words", [
    ("[noise]\nprogramming_sigma = 0.01\n", "noise.programming_sigma", "store bits"),
    ("[crossbar]\ng_min_us = 0.1\n", "crossbar.g_min_us", "store bits"),
    ("[noise]\nstuck_at_zero_rate = 0.01\n", "noise.stuck_at_zero_rate", "store bits"),
    ("[dac]\nbits = 2\n", "dac.bits", "dac.kind"),
    ('[crossbar]\ncompute = "current"\n', "crossbar.unit_capacitance_ff", "current"),
    ("[crossbar]\nfull_scale_mv = 0.0\n", "crossbar.full_scale_mv", "kT/C"),
])
def test_charge_domain_rules(tmp_path, body, field, words):
    problems = validate_file(_variant(tmp_path, "jia2020", "bad", body))
    assert [p.field for p in problems] == [field]
    assert words in problems[0].message + problems[0].hint


def test_analog_offset_subtraction_needs_the_offset_scheme(tmp_path):
    body = '[crossbar]\noffset_subtraction = "analog"\n'
    assert validate_file(_variant(tmp_path, "isaac", "ok", body)) == []
    problems = validate_file(_variant(tmp_path, "hermes", "bad", body))
    assert [p.field for p in problems] == ["crossbar.offset_subtraction"]
    problems = validate_file(_variant(tmp_path, "m1076", "bad1", "[adc]\nbits = 1\n"))
    assert [p.field for p in problems] == ["adc.bits"] and "sign bit" in problems[0].hint


def test_old_targets_keep_todays_behaviour():
    for name in ("isaac", "puma", "prime", "hermes", "ecram"):
        t = load_target(name)
        assert (t.crossbar.storage, t.crossbar.compute, t.dac.kind) == ("analog", "current", "dac")
        assert t.crossbar.offset_subtraction != "analog"
        noise = noise_from_target(t)
        assert noise.ktc_sigma == 0 and noise.column_gain_sigma == 0 and noise.adc_offset_sigma_lsb == 0


def test_ktc_sigma_of_jia2020():
    # sqrt(k T / (2304 x 2 fF)) = 30.0 uV, of 850 mV
    assert ktc_sigma(300.0, 2304, 2.0, 850.0) == pytest.approx(30.0e-6 / 0.85, rel=0.005)
    assert noise_from_target(load_target("jia2020")).ktc_sigma == pytest.approx(3.53e-5, rel=0.01)
    assert ktc_sigma(300.0, 2304, 0.0, 0.0) == 0.0


# --- the kernels: analog offset subtraction, column gains, ADC offsets, kT/C ---------------

def _setup(weight_bits=8, cell_bits=8, adc_bits=8, rows=64, k=150, n=12, v=40, subtraction="analog", seed=0):
    spec = AnalogSpec(weight_bits, 8, 1, cell_bits, adc_bits, rows, "offset", offset_subtraction=subtraction)
    rng = np.random.default_rng(seed)
    qmax = (1 << (weight_bits - 1)) - 1
    q = rng.integers(-qmax - 1, qmax + 1, size=(n, k))
    x = rng.integers(-128, 128, size=(v, k))
    return spec, q, x, encode_weights(q, spec)


def _exact(x, q):
    return x.astype(np.float64) @ q.T.astype(np.float64)


@pytest.mark.parametrize("weight_bits, cell_bits", [(8, 8), (8, 2), (6, 1)])
def test_analog_offset_subtraction_is_exact_when_lossless_and_paths_agree(weight_bits, cell_bits):
    spec, q, x, enc = _setup(weight_bits, cell_bits, adc_bits=24)
    assert spec.reference_level == 1 << (weight_bits - 1 - (spec.slices - 1) * cell_bits)
    assert np.all(enc.levels[:, -1] == spec.reference_level)
    want = _exact(x, q)
    assert np.array_equal(mvm(x, enc, spec, True, exact_shortcut=False), want)
    assert np.array_equal(mvm_reference(x, enc, spec, True), want)


@pytest.mark.parametrize("weight_bits, cell_bits", [(8, 8), (8, 2)])
def test_analog_offset_subtraction_lossy_adc_fast_equals_reference(weight_bits, cell_bits):
    spec, q, x, enc = _setup(weight_bits, cell_bits, adc_bits=6)
    assert spec.min_code == -31 and spec.max_code == 31
    full = observe_full_scale(x, enc, spec, True, 99.0)
    a = mvm(x, enc, spec, True, full_scale=full)
    assert np.array_equal(a, mvm_reference(x, enc, spec, True, full_scale=full))


def test_analog_subtraction_spends_the_adc_on_the_signed_part():
    """The same 8-bit ADC, calibrated alike: subtracting the offset first is far more accurate."""
    errors = {}
    for how in ("digital", "analog"):
        spec, q, x, enc = _setup(subtraction=how, rows=128, k=128)
        x = np.abs(x)            # post-ReLU inputs: the offset current is large
        full = observe_full_scale(x, enc, spec, False, 99.99)
        got = mvm(x, enc, spec, False, full_scale=full)
        errors[how] = np.abs(got - _exact(x, q)).mean() / np.abs(_exact(x, q)).mean()
    assert errors["analog"] < errors["digital"] / 5


def test_column_errors_are_drawn_per_column_and_per_adc():
    spec, _, _, enc = _setup(rows=64, k=150)
    noise = NoiseSpec(column_gain_sigma=0.01, adc_offset_sigma_lsb=0.3, columns_per_adc=4)
    cols = column_errors(spec, noise, enc.levels.shape, np.random.default_rng(0))
    p = enc.levels.shape[1]
    assert cols.gain.shape == cols.offset_lsb.shape == (3, p)            # 3 row blocks of 64
    assert cols.gain.std() == pytest.approx(0.01, rel=0.3) and cols.gain.mean() == pytest.approx(1, abs=0.01)
    assert np.all(cols.offset_lsb[:, 0:4] == cols.offset_lsb[:, [0]])   # one ADC serves 4 columns
    assert not np.all(cols.offset_lsb[:, 4] == cols.offset_lsb[:, 0])
    again = column_errors(spec, noise, enc.levels.shape, np.random.default_rng(0))
    assert np.array_equal(again.gain, cols.gain) and np.array_equal(again.offset_lsb, cols.offset_lsb)
    assert column_errors(spec, NoiseSpec(), enc.levels.shape, None) is None


@pytest.mark.parametrize("subtraction", ["digital", "analog"])
def test_column_gains_and_adc_offsets_fast_equals_reference_bit_for_bit(subtraction):
    """Exact cells (SRAM bits): the static column errors are elementwise, so the paths agree exactly."""
    spec, q, x, enc = _setup(cell_bits=1, subtraction=subtraction)
    noise = NoiseSpec(column_gain_sigma=0.02, adc_offset_sigma_lsb=0.4)
    cols = column_errors(spec, noise, enc.levels.shape, np.random.default_rng(5))
    full = observe_full_scale(x, enc, spec, True, 99.9)
    a = mvm(x, enc, spec, True, full_scale=full, noise=noise, columns=cols)
    assert np.array_equal(a, mvm_reference(x, enc, spec, True, full_scale=full, noise=noise, columns=cols))
    assert not np.array_equal(a, mvm(x, enc, spec, True, full_scale=full))


def test_a_column_gain_scales_that_columns_read():
    spec, q, x, enc = _setup(adc_bits=24, rows=256, k=100, subtraction="digital")
    gain = np.ones((1, enc.levels.shape[1]))
    gain[0, 0] = 2.0                                     # channel 0's only column (8-bit cells)
    got = mvm(x, enc, spec, True, noise=NoiseSpec(column_gain_sigma=0.1), columns=ColumnErrors(gain=gain))
    want = _exact(x, q)
    stored = (x.astype(np.float64) @ (q[0] + 128).astype(np.float64))   # what column 0 holds
    np.testing.assert_array_equal(got[:, 0], want[:, 0] + stored)
    np.testing.assert_array_equal(got[:, 1:], want[:, 1:])


def test_ktc_noise_varies_per_read_and_is_seeded():
    spec, q, x, enc = _setup(cell_bits=1, subtraction="digital")
    noise = NoiseSpec(ktc_sigma=0.002)
    xx = np.concatenate([x[:1]] * 20)                    # the same input, 20 times
    for path in (mvm, mvm_reference):
        a = path(xx, enc, spec, True, noise=noise, rng=np.random.default_rng(1))
        assert len({row.tobytes() for row in a}) > 1      # per read: the same input, other outputs
        assert np.array_equal(a, path(xx, enc, spec, True, noise=noise, rng=np.random.default_rng(1)))
        assert not np.array_equal(a, path(xx, enc, spec, True, noise=noise, rng=np.random.default_rng(2)))


def test_ktc_noise_is_on_the_physical_swing_not_the_calibrated_range():
    """Read noise scales with the ADC range in use; kT/C, a voltage on the column, does not."""
    spec, q, x, enc = _setup(cell_bits=1, adc_bits=16, subtraction="digital")
    from acompile.numerics.noise import read_noise_sigma
    ktc, read = NoiseSpec(ktc_sigma=1e-3), NoiseSpec(read_sigma=1e-3)
    assert read_noise_sigma(spec, ktc, 10.0) == read_noise_sigma(spec, ktc, None) == \
        pytest.approx(1e-3 * spec.worst_case_full_scale)
    assert read_noise_sigma(spec, read, 10.0) == pytest.approx(1e-2)
    assert read_noise_sigma(spec, NoiseSpec(read_sigma=3e-3, ktc_sigma=4e-3), None) == \
        pytest.approx(5e-3 * spec.worst_case_full_scale, rel=0.01)


# --- compiling and simulating on the targets --------------------------------------------

@pytest.fixture(scope="module")
def digits():
    x = np.load(SAMPLES / "digits_test_x.npy")
    y = np.load(SAMPLES / "digits_test_y.npy")
    return x, y, load_arrays(SAMPLES / "digits_calib.npy", ["input"])


def _compile_digits(target, digits):
    x, _, calib = digits
    return compile_model(str(SAMPLES / "digits.onnx"), target,
                         Options(batch=len(x), calibration=calib, calibration_name="digits_calib.npy"))


def _run(comp, target, x, mode="noisy", seed=0, path="fast", instance=0):
    sim = Simulator(comp.graph, comp.mapping, WeightsFromGraph(comp.graph, comp.mapping), mode=mode,
                    noise=noise_from_target(target), seed=seed, path=path, instance=instance)
    return sim.run({"input": x})[comp.graph.outputs[0]]


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("sample", ["cnn", "mlp", "resblock", "digits"])
def test_every_sample_compiles(name, sample):
    comp = compile_model(str(SAMPLES / f"{sample}.onnx"), load_target(name), Options())
    assert comp.mapping.layers and all(layer.spec.offset_subtraction == load_target(name).crossbar.offset_subtraction
                                       for layer in comp.mapping.layers)


def test_m1076_runs_8_bit_digits_accurately_with_analog_subtraction(tmp_path, digits):
    x, y, _ = digits
    accuracy = {}
    for how in ("analog", "digital"):
        path = _variant(tmp_path, "m1076", f"m_{how}", f'[crossbar]\noffset_subtraction = "{how}"\n')
        target = load_target(path)
        comp = _compile_digits(target, digits)
        accuracy[how] = float(np.mean(np.argmax(_run(comp, target, x, "quantized"), axis=1) == y))
    assert accuracy["analog"] >= 0.95      # the float model: 97.5 %
    assert accuracy["digital"] < 0.5       # the ADC spans the 128 x sum(x) offset too


def test_mismatch_on_the_charge_domain_target_moves_the_error(tmp_path, digits):
    """Noisy mode on jia2020 with only capacitor mismatch: more mismatch, larger error."""
    x = digits[0][:120]
    errors = []
    for sigma in (0.0, 0.02, 0.2):
        body = f"[noise]\ncolumn_gain_sigma = {sigma}\nadc_offset_sigma_lsb = 0.0\n[crossbar]\nunit_capacitance_ff = 0.0\nfull_scale_mv = 0.0\n"
        target = load_target(_variant(tmp_path, "jia2020", f"jia_{sigma}", body))
        comp = _compile_digits(target, digits)
        clean = _run(comp, target, x, "quantized")
        errors.append(float(np.abs(_run(comp, target, x) - clean).mean()))
    assert errors[0] == 0.0 < errors[1] < errors[2]


def test_ktc_alone_on_the_charge_domain_target_varies_per_read_and_is_seeded(tmp_path, digits):
    x = np.repeat(digits[0][:10], 4, axis=0)          # each image four times in one batch
    body = ("[noise]\ncolumn_gain_sigma = 0.0\nadc_offset_sigma_lsb = 0.0\n"
            "[crossbar]\nunit_capacitance_ff = 0.001\n")   # 1000x smaller: kT/C about 3.6 counts of 2304
    target = load_target(_variant(tmp_path, "jia2020", "jia_ktc", body))
    noise = noise_from_target(target)
    assert noise.ktc_sigma > 1e-3 and noise.column_gain_sigma == 0 and noise.adc_offset_sigma_lsb == 0
    comp = _compile_digits(target, digits)
    out = _run(comp, target, x).reshape(10, 4, -1)
    assert any(not np.array_equal(img[0], img[i]) for img in out for i in range(1, 4))
    assert np.array_equal(out.reshape(40, -1), _run(comp, target, x))
    assert not np.array_equal(out.reshape(40, -1), _run(comp, target, x, seed=1))


def test_jia2020_noisy_mode_is_seeded_and_the_reference_path_agrees_without_ktc(tmp_path, digits):
    x = digits[0][:60]
    body = "[crossbar]\nunit_capacitance_ff = 0.0\nfull_scale_mv = 0.0\n"   # static errors only
    target = load_target(_variant(tmp_path, "jia2020", "jia_static", body))
    comp = _compile_digits(target, digits)
    fast = _run(comp, target, x)
    assert np.array_equal(fast, _run(comp, target, x, path="reference"))
    assert np.array_equal(fast, _run(comp, target, x))
    assert np.array_equal(fast, _run(comp, target, x, seed=3))            # static errors: --seed keeps the chip
    assert not np.array_equal(fast, _run(comp, target, x, instance=1))    # another chip instance draws anew


def test_m1076_device_file_keeps_the_reference_level_and_simulates_alike(tmp_path, digits):
    """The folder a user compiles: device.acdev holds the reference column at level 128, and
    simulating it gives the in-process result."""
    import subprocess
    import sys
    from acompile.simulation import load_compiled, simulate
    out = tmp_path / "m1076"
    subprocess.run([sys.executable, "-m", "acompile", "compile", str(SAMPLES / "digits.onnx"), "--target", "m1076",
                    "--calibration", str(SAMPLES / "digits_calib.npy"), "-o", str(out), "-q"], check=True)
    loaded = load_compiled(out, "quantized")
    enc = loaded.weights.encoded(loaded.mapping.layers[0], 0).enc
    assert np.all(enc.levels[:, -1] == 128)
    x, y, _ = digits
    logits = next(iter(simulate(loaded, {"input": x}, mode="quantized").values()))
    assert np.mean(np.argmax(logits, axis=1) == y) >= 0.95
