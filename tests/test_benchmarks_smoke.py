"""Smoke test of the benchmark harness (benchmarks/run.py --quick): it runs, covers every figure,
and writes its JSON. Slow (about half a minute); the full benchmark is not part of any test run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmark_quick_run(tmp_path):
    out = tmp_path / "results.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "-o", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(out.read_text())
    figures = {r["figure"] for r in doc["rows"]}
    peak_rss = {"compile_rss", "compile_rss_small"}     # by model size: a ratio over 50 MB, a cap below
    assert figures | peak_rss == set(doc["goals"]) and figures & peak_rss, figures
    for row in doc["rows"]:
        assert row["acompile"] > 0 and row["reference"] > 0 and row["ratio"] > 0, row
    assert "| figure | model |" in p.stdout and doc["table_markdown"] in p.stdout
    for row in doc["rows"]:     # interleaved runs give a spread of ratios around the median's
        if row["figure"] in ("compile", "check"):
            lo, hi = row["ratio_spread"]
            assert 0 < lo <= hi, row
    # one `compile -v --format json` per model says where the time went
    assert set(doc["compile_profiles"]) == {r["model"] for r in doc["rows"] if r["figure"] == "compile"}
    assert doc["compile_profile_markdown"] in p.stdout


@pytest.mark.slow
def test_calibration_samples_quick_run():
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "calibration_samples.py"), "--quick"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith("| digits")]
    assert len(rows) == 2 * 2 * 2, p.stdout      # each target, 1 and 8 samples, printed as they come and in the table
    assert all(row.count("%") >= 2 for row in rows)


def test_the_compile_profile_counts_each_file_once():
    """program.npz has a column of its own wherever it was written: a quantized model's, written on the main
    thread, is not counted again among the main thread's other files."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import compile_profile
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    writes = [{"files": ["program.npz"], "time_s": 0.02, "thread": "main", "bytes": 1},
              {"files": ["program.json", "target.toml"], "time_s": 0.03, "thread": "main", "bytes": 1},
              {"files": ["device.acdev"], "time_s": 0.1, "thread": "process", "bytes": 1}]
    profile = {"steps": [{"step": "load", "time_s": 0.01}], "steps_total_s": 0.01, "writes": writes,
               "process": {"wall_s": 0.3, "before_steps_s": 0.1, "cpu_user_s": 0.3, "cpu_system_s": 0.1}}
    row = compile_profile.markdown({"m": profile}).splitlines()[-1].split(" | ")
    assert row[5:8] == ["20 ms (main)", "100 ms", "30 ms"], row


def test_the_device_row_counts_every_cell_of_the_layout(tmp_path):
    """The device file's floor is its cells at cell_bits each, read from the layout table the file holds."""
    import importlib.util

    import models
    from acompile.backends.device import write_device
    from helpers import compiled
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
        bench = sys.modules["bench_run"] = importlib.util.module_from_spec(spec)     # its dataclasses look it up
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        sys.modules.pop("bench_run", None)
    comp = compiled(models.grouped_conv(), "isaac", replicate="auto")
    write_device(tmp_path / "device.acdev", comp, "0" * 64)
    row = bench.device_row("m", tmp_path / "device.acdev")
    bits = {layer.index: layer.spec.cell_bits for layer in comp.mapping.layers}
    assert row.reference == sum(b.rows * b.cols * bits[b.layer] for b in comp.mapping.blocks) / 8
    assert row.acompile == (tmp_path / "device.acdev").stat().st_size > row.reference
