"""acompile sweep: the table, the Pareto front, resuming, repeats, notes on parameters that cost nothing."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import acompile
from acompile.errors import UsageError
from acompile.sweeps.points import parse_axes, points

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "samples" / "digits.onnx"
X, Y = ROOT / "samples" / "digits_test_x.npy", ROOT / "samples" / "digits_test_y.npy"


def test_axes_lists_ranges_and_cross_product():
    axes = parse_axes(["adc.bits=4:9:2", "adc.range=worst_case,calibrated"])
    assert axes == {"adc.bits": [4, 6, 8], "adc.range": ["worst_case", "calibrated"]}
    assert points(axes)[:2] == [{"adc.bits": 4, "adc.range": "worst_case"}, {"adc.bits": 4, "adc.range": "calibrated"}]
    with pytest.raises(UsageError, match="adc.bitz"):
        parse_axes(["adc.bitz=4,5"])
    with pytest.raises(UsageError):
        parse_axes(["adc.bits=9:4"])


def test_done_when_sweep_over_adc_bits(tmp_path, capsys):
    """The issue's command: table, Pareto plot, energy moves with the bits, accuracy at 8 >= at 4."""
    out = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-m", "acompile", "sweep", DIGITS, "--target", "isaac", "--set",
                        "adc.bits=4,6,8", "--data", X, "--labels", Y, "--mode", "quantized", "-o", out, "-j", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["adc.bits"] for r in rows] == ["4", "6", "8"]
    assert {"model", "target", "crossbars", "chips", "energy_pj", "latency_ns", "throughput_inferences_per_s",
            "area_mm2", "tops_per_w", "accuracy", "rel_error", "status", "seed"} <= set(rows[0])
    energy = [float(r["energy_pj"]) for r in rows]
    assert energy[0] < energy[1] < energy[2]
    assert float(rows[2]["accuracy"]) >= float(rows[0]["accuracy"])
    assert all(r["status"] == "ok" for r in rows) and any(r["pareto_energy"] == "true" for r in rows)
    assert "<svg" in (out / "pareto.svg").read_text() and "Pareto" in (out / "sweep.md").read_text()
    doc = json.loads((out / "results.json").read_text())
    assert doc["columns"][2] == "adc.bits" and len(doc["rows"]) == 3
    # a row reruns alone: `acompile run --set adc.bits=6 --seed S` (in-process here; the slow test runs more)
    from acompile.cli import main
    capsys.readouterr()
    assert main(["run", str(DIGITS), "-t", "isaac", "--set", "adc.bits=6", "--seed", rows[1]["seed"], "--mode",
                 "quantized", "-i", str(X), "--labels", str(Y), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)["comparison"]["logits"]["top1_accuracy_simulated"]
    assert got == pytest.approx(float(rows[1]["accuracy"]))
    # resume: a second run computes nothing and writes the same bytes
    before = (out / "results.csv").read_bytes()
    cached = sorted((out / "points").iterdir())
    assert len(cached) == 3
    first = cached[0].stat().st_mtime_ns
    rows2 = acompile.sweep([DIGITS], "isaac", {"adc.bits": [4, 6, 8]}, data=X, labels=Y, mode="quantized",
                           output=out)
    assert cached[0].stat().st_mtime_ns == first and (out / "results.csv").read_bytes() == before
    assert [r["accuracy"] for r in rows2] == [float(r["accuracy"]) for r in rows]


def test_api_jobs_repeats_and_notes(tmp_path):
    notes = []
    one = acompile.sweep(DIGITS, "isaac", ["crossbar.share_between_layers=false,true", "noise.read_sigma=0.0,0.1"],
                         jobs=1, on_note=notes.append)
    two = acompile.sweep(DIGITS, "isaac", ["crossbar.share_between_layers=false,true", "noise.read_sigma=0.0,0.1"],
                         jobs=2)
    assert one == two and len(one) == 4 and all(r["accuracy"] is None for r in one)
    assert any(n.startswith("noise.read_sigma") for n in notes)
    fixed = tmp_path / "fixed.toml"
    fixed.write_text('schema_version = 1\nname = "fixed"\nextends = "isaac"\n[scaling.adc]\nenergy = "fixed"\n'
                     'area = "fixed"\nconversion = "fixed"\n')
    notes = []
    acompile.sweep(DIGITS, str(fixed), {"adc.bits": [6, 8]}, on_note=notes.append)
    assert notes and "no scaling rule" in notes[0]


def test_failed_rows_name_files_as_given_wherever_they_ran(tmp_path):
    """A row's status names the model and data as the user named them, never the worker's temporary folder
    (it differed from run to run, so --jobs N and --scheduler tables differed on failed rows)."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(DIGITS.read_bytes()[:3000])
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"junk")
    one = acompile.sweep([broken, DIGITS], "isaac", {"adc.bits": [4, 6]}, jobs=1)
    two = acompile.sweep([broken, DIGITS], "isaac", {"adc.bits": [4, 6]}, jobs=2)
    failed = ("error: broken.onnx: not a valid ONNX protobuf (DecodeError) (is the file truncated or not an "
              ".onnx model?)")
    assert one == two and [r["status"] for r in one] == [failed, failed, "ok", "ok"]
    data = acompile.sweep(DIGITS, "isaac", {"adc.bits": [4]}, data=junk, jobs=1)
    assert data[0]["status"].startswith("error: junk.npy: ")
    assert not any("acompile-sweep-" in r["status"] for r in one + data)


def test_repeats_give_independent_noisy_instances():
    rows = acompile.sweep(DIGITS, "isaac", {"noise.read_sigma": [0.05]}, data=X, labels=Y, mode="noisy",
                          repeats=2, jobs=1)
    assert [r["repeat"] for r in rows] == [0, 1] and rows[0]["seed"] != rows[1]["seed"]
    assert rows[0]["rel_error"] != rows[1]["rel_error"]


def test_incompatible_points_get_a_status():
    rows = acompile.sweep(DIGITS, "isaac", {"adc.columns_per_adc": [128, 256]}, jobs=1)
    assert rows[0]["status"] == "ok" and rows[1]["status"].startswith("incompatible: ")
    assert rows[1]["pareto_energy"] is None


@pytest.mark.slow
def test_any_row_reruns_alone_with_run_set_seed(tmp_path):
    rows = acompile.sweep(DIGITS, "isaac", {"adc.bits": [6], "noise.read_sigma": [0.01]}, data=X, labels=Y,
                          mode="noisy", repeats=2, jobs=1)
    for row in rows:
        again = subprocess.run([sys.executable, "-m", "acompile", "run", DIGITS, "-t", "isaac", "--set",
                                "adc.bits=6", "--set", "noise.read_sigma=0.01", "--seed", str(row["seed"]), "--mode",
                                "noisy", "-i", X, "--labels", Y, "--format", "json"], capture_output=True, text=True)
        got = json.loads(again.stdout)["comparison"]["logits"]
        assert got["top1_accuracy_simulated"] == pytest.approx(row["accuracy"])
        assert got["relative_error"] == pytest.approx(row["rel_error"])


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    from acompile.cli import main
    assert main(["sweep", str(DIGITS), "-t", "isaac", "--set", "adc.bitz=4,6", "-o", str(tmp_path / "s")]) == 2
    assert "did you mean 'adc.bits'" in capsys.readouterr().err
    assert main(["sweep", str(DIGITS), "-t", "isaac", "--set", "noise.read_sigma=0.0:0.1", "-o", str(tmp_path / "s")]) == 2
    assert main(["sweep", str(DIGITS), "-t", "isaac", "--labels", str(Y), "-o", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()


def test_api_gives_a_dataframe_when_pandas_is_installed():
    pytest.importorskip("pandas")
    frame = acompile.sweep(DIGITS, "isaac", {"adc.bits": [6, 8]}, frame=True)
    assert list(frame["adc.bits"]) == [6, 8] and frame["energy_pj"].is_monotonic_increasing


def test_each_model_has_its_own_pareto_fronts():
    """A big model's points are no alternative to a small model's: compared across models, none of the
    big one's rows would be on a front."""
    from acompile.sweeps.pareto import mark, svg

    def row(model, energy, area, accuracy):
        return {"model": model, "status": "ok", "energy_pj": energy, "area_mm2": area, "accuracy": accuracy}
    rows = [row("small", 1.0, 1.0, 0.9), row("small", 2.0, 2.0, 0.95), row("small", 3.0, 3.0, 0.93),
            row("big", 10.0, 10.0, 0.8), row("big", 20.0, 20.0, 0.85), row("big", 30.0, 30.0, 0.84)]
    mark(rows, with_data=True)
    assert [r["pareto_energy"] for r in rows] == [True, True, False, True, True, False]
    assert [r["pareto_area"] for r in rows] == [r["pareto_energy"] for r in rows]
    plot = svg(rows, True, "two models")
    assert "Pareto front: small" in plot and "Pareto front: big" in plot


def _blas_threads(task) -> dict:
    """A sweep row that reports the BLAS threads of the process it runs in."""
    from helpers import blas_threads
    return {"threads": blas_threads()}


def test_pool_workers_run_their_blas_on_one_thread(monkeypatch):
    """The pool runs a worker per core: each worker's BLAS takes one thread (its own threads, and the
    simulator's worker threads, one per BLAS thread, oversubscribed the cores), and this process gets its
    own thread count back once the pool is gone."""
    pytest.importorskip("threadpoolctl")
    from acompile.sweeps import engine
    monkeypatch.setattr(engine, "run_row", _blas_threads)
    before = _blas_threads(None)["threads"]
    assert sorted(r["threads"] for _, r in engine.run_local([{}, {}, {}], jobs=2)) == [1, 1, 1]
    assert _blas_threads(None)["threads"] == before
