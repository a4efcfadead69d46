"""--set KEY=VALUE on compile, run, simulate and check: typed, validated like a target file, recorded."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acompile.errors import InvalidTargetError, UsageError
from acompile.target import apply_overrides, load_target, parse_settings

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "samples" / "digits.onnx"


def acompile(*args):
    return subprocess.run([sys.executable, "-m", "acompile", *map(str, args)], capture_output=True, text=True)


def test_values_are_typed_like_toml_and_bare_words_are_strings():
    got = parse_settings(["adc.bits=6", "noise.read_sigma=0.02", "crossbar.share_between_layers=true",
                          "adc.range=calibrated", 'crossbar.device="PCM"', "adc.bits=7"])
    assert got == {"adc.bits": 7, "noise.read_sigma": 0.02, "crossbar.share_between_layers": True,
                   "adc.range": "calibrated", "crossbar.device": "PCM"}


def test_unknown_key_is_named_with_did_you_mean():
    with pytest.raises(UsageError) as e:
        parse_settings(["adc.bitz=6"])
    assert "adc.bitz" in str(e.value) and "adc.bits" in str(e.value)
    with pytest.raises(UsageError):
        parse_settings(["adc.bits"])


def test_bad_values_and_broken_cross_field_rules_name_the_field():
    isaac = load_target("isaac")
    with pytest.raises(InvalidTargetError, match="adc.bits"):
        apply_overrides(isaac, {"adc.bits": 99})
    with pytest.raises(InvalidTargetError, match="adc.columns_per_adc"):
        apply_overrides(isaac, {"adc.columns_per_adc": 512})     # more than crossbar.cols
    assert apply_overrides(isaac, {"core.components.sample_hold.count": 2}).overrides == (
        ("core.components.sample_hold.count", 2),)


def test_compile_records_every_override_and_bad_ones_exit_2(tmp_path, capsys):
    from acompile.cli import main
    assert main(["compile", str(DIGITS), "-t", "isaac", "--set", "adc.bits=6", "--set", "adc.range=calibrated",
                 "-o", str(tmp_path / "out"), "-q", "--emit", "report"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["target"]["overrides"] == {"adc.bits": 6, "adc.range": "calibrated"}
    capsys.readouterr()
    assert main(["compile", str(DIGITS), "-t", "isaac", "--set", "adc.bitz=6", "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'adc.bits'" in err and len(err.splitlines()) == 1
    assert main(["compile", str(DIGITS), "-t", "isaac", "--set", "adc.bits=99", "-o", str(tmp_path / "bad")]) == 2
    assert "adc.bits" in capsys.readouterr().err
    bad = acompile("compile", DIGITS, "-t", "isaac", "--set", "adc.columns_per_adc=512", "-o", tmp_path / "bad")
    assert bad.returncode == 2 and "adc.columns_per_adc" in bad.stderr     # the real command, once


@pytest.mark.slow
def test_check_and_run_take_set(tmp_path):
    r = acompile("check", DIGITS, "-t", "isaac", "--set", "adc.bits=6", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["settings"]["overrides"] == {"adc.bits": 6}
    x, y = ROOT / "samples" / "digits_test_x.npy", ROOT / "samples" / "digits_test_y.npy"
    r = acompile("run", DIGITS, "-t", "isaac", "--set", "noise.read_sigma=0.05", "--mode", "noisy", "-i", x,
                 "--labels", y, "--format", "json")
    assert r.returncode == 0, r.stderr
