"""Per-layer error attribution (issue 12, item 8): ``simulate --per-layer`` and ``run --per-layer``
give each analog layer's own error, and ``compile`` warns when a layer's ADC is far from lossless."""

from __future__ import annotations

import json

import numpy as np

from acompile.cli import main

X = "samples/digits_test_x.npy"


def _json(capsys, argv) -> dict:
    capsys.readouterr()
    assert main([*argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_per_layer_figures_in_quantized_and_noisy_mode(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", "samples/digits.onnx", "-t", "hermes", "-o", str(out), "-q",
                 "--calibration", "samples/digits_calib.npy"]) == 0
    s = _json(capsys, ["simulate", str(out), "-i", X, "--mode", "noisy", "--per-layer"])
    layers = s["per_layer"]
    assert [e["layer"] for e in layers] == ["fc1", "fc2", "logits"]
    for e in layers:
        q, n = e["quantized"], e["noisy"]
        assert q["adc_conversions"] > 0 and 0 <= q["adc_clipped"] <= q["adc_conversions"]
        assert q["snr_db"] > n["snr_db"]                   # the device's noise costs accuracy
        assert np.isclose(q["effective_bits"], (q["snr_db"] - 1.76) / 6.02)
        assert np.isclose(q["relative_error"], 10 ** (-q["snr_db"] / 20))
    # quantized mode reports the quantized figures only
    assert "noisy" not in _json(capsys, ["simulate", str(out), "-i", X, "--mode", "quantized",
                                         "--per-layer"])["per_layer"][0]


def test_a_lossless_adc_gives_only_the_quantisation_error(tmp_path, capsys):
    wide = tmp_path / "wide.toml"       # isaac with a 9-bit ADC: every column value converts exactly
    wide.write_text('schema_version = 1\nname = "wide"\nextends = "isaac"\n\n[adc]\nbits = 9\n')
    s = _json(capsys, ["run", "samples/digits.onnx", "-t", str(wide), "-i", X, "--mode", "quantized",
                       "--per-layer"])
    for e in s["per_layer"]:
        assert e["quantized"]["adc_clipped"] == 0
        assert e["quantized"]["snr_db"] > 60                # 16-bit weights and inputs, exact conversions


def test_compile_warns_once_per_layer_whose_adc_is_far_from_lossless(tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    # puma: 16-bit offset-encoded weights over 8-bit ADCs (isaac's flipped encoding is exact)
    assert main(["compile", "samples/digits.onnx", "-t", "puma", "-o", str(out), "--emit", "report"]) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if line.startswith("acompile: warning: layer ")]
    assert len(warned) == 3 and "effective bits" in warned[0]
    report = json.loads((out / "report.json").read_text())
    assert len(report["warnings"]) == 3
    quiet = tmp_path / "hermes"
    assert main(["compile", "samples/digits.onnx", "-t", "hermes", "-o", str(quiet), "--emit", "report",
                 "--calibration", "samples/digits_calib.npy"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_inputs_beyond_the_calibrated_range_are_counted_and_named(tmp_path, capsys):
    """Calibrated on a tenth of the inputs' scale, every layer clips inputs: counted per layer, and the
    text names the layers and what to do; calibrated on the inputs themselves, none clips."""
    x = np.load(X)[:16]
    np.save(tmp_path / "small.npy", x * 0.1)
    np.save(tmp_path / "x.npy", x)
    run = ["run", "samples/digits.onnx", "-t", "isaac", "-i", str(tmp_path / "x.npy"), "--mode", "quantized",
           "--per-layer", "--calibration"]
    small = _json(capsys, [*run, str(tmp_path / "small.npy")])["per_layer"]
    assert all(0 < e["quantized"]["inputs_clipped"] <= e["quantized"]["inputs"] for e in small)
    same = _json(capsys, [*run, str(tmp_path / "x.npy")])["per_layer"]
    assert all(e["quantized"]["inputs_clipped"] == 0 for e in same)
    capsys.readouterr()
    assert main([*run, str(tmp_path / "small.npy")]) == 0
    note = [line for line in capsys.readouterr().out.splitlines() if "clip inputs" in line]
    assert len(note) == 1 and "3 layer(s)" in note[0] and "--calibration" in note[0]
