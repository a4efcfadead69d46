"""Sweep throughput: points per second of a 24-point compile-only sweep (samples/digits.onnx on isaac,
adc.bits=4:9 x crossbar.rows=64,128 x crossbar.share_between_layers=false,true), on a local process pool
of 2 workers against a local Dask cluster of 2 worker processes (started beforehand, as a cluster is);
and of a 6-point sweep with data (adc.bits=4:9, each point compiled and simulated in quantized mode on
the sample's 360 test digits, accuracy against their labels) on the local pool. The median of 3 sweeps
each, every one into a fresh output folder (nothing cached).

    python benchmarks/sweep.py          # also run at the end of benchmarks/run.py

Prints one line and returns the figures as a dict (points per second, and whether the tables match).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 3
SETTINGS = {"adc.bits": list(range(4, 10)), "crossbar.rows": [64, 128], "crossbar.share_between_layers": [False, True]}
DATA_SETTINGS = {"adc.bits": list(range(4, 10))}


def _rate(run, folder: Path) -> tuple[float, list]:
    """Median points per second over RUNS sweeps, each into a fresh folder (nothing cached)."""
    rates, rows = [], []
    for i in range(RUNS):
        t = time.perf_counter()
        rows = run(folder / str(i))
        rates.append(len(rows) / (time.perf_counter() - t))
    return round(statistics.median(rates), 2), rows


def measure() -> dict:
    import acompile
    model = ROOT / "samples" / "digits.onnx"
    out: dict = {"points": 24, "runs": RUNS}
    with tempfile.TemporaryDirectory(prefix="acompile-bench-sweep-") as tmp:
        out["local_pool_points_per_s"], local = _rate(
            lambda o: acompile.sweep(model, "isaac", SETTINGS, jobs=2, output=o), Path(tmp) / "local")
        out["with_data_points"] = len(DATA_SETTINGS["adc.bits"])
        out["with_data_local_pool_points_per_s"], _ = _rate(
            lambda o: acompile.sweep(model, "isaac", DATA_SETTINGS, data=ROOT / "samples" / "digits_test_x.npy",
                                     labels=ROOT / "samples" / "digits_test_y.npy", jobs=2, output=o),
            Path(tmp) / "data")
        try:
            from distributed import LocalCluster
        except ImportError:
            out["dask_points_per_s"] = None
            return out
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, silence_logs=50) as cluster:
            address = cluster.scheduler_address
            out["dask_points_per_s"], remote = _rate(
                lambda o: acompile.sweep(model, "isaac", SETTINGS, scheduler=address, output=o), Path(tmp) / "dask")
        out["identical"] = remote == local
        for i, (a, b) in enumerate(zip(local, remote)):     # say where, so a difference can be chased
            if a != b:
                out["first_difference"] = {"row": i, **{c: [a.get(c), b.get(c)] for c in a | b if a.get(c) != b.get(c)}}
                break
    return out


def main() -> dict:
    got = measure()
    print(f"sweep (24 points, compile only, 2 workers): local pool {got['local_pool_points_per_s']} points/s, "
          f"Dask {got['dask_points_per_s']} points/s"
          + ("" if got.get("identical", True) else f" (TABLES DIFFER: {got.get('first_difference')})"))
    print(f"sweep ({got['with_data_points']} points, compiled and simulated on 360 test digits, 2 workers): "
          f"local pool {got['with_data_local_pool_points_per_s']} points/s")
    return got


if __name__ == "__main__":
    main()
