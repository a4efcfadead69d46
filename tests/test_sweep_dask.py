"""Sweeps and checks on a real Dask cluster (a scheduler and two worker processes on 127.0.0.1)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

import acompile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "samples" / "digits.onnx"
X, Y = ROOT / "samples" / "digits_test_x.npy", ROOT / "samples" / "digits_test_y.npy"


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as c:
        yield c.scheduler_address


def test_cluster_table_is_identical_to_a_local_run(cluster, tmp_path):
    settings = {"adc.bits": [6, 8]}
    local = acompile.sweep(DIGITS, "isaac", settings, jobs=1, output=tmp_path / "local")
    remote = acompile.sweep(DIGITS, "isaac", settings, scheduler=cluster, output=tmp_path / "remote")
    assert remote == local and all(r["status"] == "ok" for r in remote)
    for name in ("results.csv", "results.json", "pareto.svg", "sweep.md"):
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_failed_rows_are_identical_on_the_cluster(cluster, tmp_path):
    """Error statuses name the model as given, not the worker's temporary folder."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(DIGITS.read_bytes()[:3000])
    local = acompile.sweep([broken, DIGITS], "isaac", {"adc.bits": [6]}, jobs=2, output=tmp_path / "local")
    remote = acompile.sweep([broken, DIGITS], "isaac", {"adc.bits": [6]}, scheduler=cluster,
                            output=tmp_path / "remote")
    assert remote == local and local[0]["status"].startswith("error: broken.onnx: ")
    assert (tmp_path / "remote" / "results.csv").read_bytes() == (tmp_path / "local" / "results.csv").read_bytes()


@pytest.mark.slow
def test_check_on_the_cluster_matches_local(cluster):
    def check(*extra):
        r = subprocess.run([sys.executable, "-m", "acompile", "check", ROOT / "samples", "-t", "isaac",
                            "--format", "json", *extra], capture_output=True, text=True)
        import json
        doc = json.loads(r.stdout)
        doc.pop("elapsed_s")
        return r.returncode, doc
    assert check("--scheduler", cluster) == check()


@pytest.mark.slow
def test_sweep_with_data_through_the_cli_and_a_killed_worker(tmp_path):
    """`dask scheduler` / `dask worker` as documented; one worker is killed mid-sweep and its rows rerun."""
    port = 8786 + os.getpid() % 500
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "5"}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--dashboard-address", ":0"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(3)
        workers = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                     "--nworkers", "1", "--no-nanny"], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True) for _ in range(2)]
        procs += workers
        time.sleep(4)
        args = ["sweep", DIGITS, "--target", "isaac", "--set", "adc.bits=4:9", "--data", X, "--labels", Y,
                "--mode", "noisy", "--set", "noise.read_sigma=0.0,0.02"]
        run = subprocess.Popen([sys.executable, "-m", "acompile", *map(str, args), "--scheduler", address, "-o",
                                tmp_path / "remote"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        points = tmp_path / "remote" / "points"
        deadline = time.monotonic() + 180
        while run.poll() is None and time.monotonic() < deadline and not (points.is_dir() and any(points.iterdir())):
            time.sleep(0.05)        # kill as soon as the first row is back: most rows are still to run
        assert run.poll() is None, "the sweep ended before a worker could be killed"
        os.killpg(workers[0].pid, signal.SIGKILL)       # mid-sweep: its rows go to the other worker
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        local = subprocess.run([sys.executable, "-m", "acompile", *map(str, args), "-j", "1", "-o",
                                tmp_path / "local"], capture_output=True, text=True)
        assert local.returncode == 0, local.stderr
        assert (tmp_path / "remote" / "results.csv").read_bytes() == (tmp_path / "local" / "results.csv").read_bytes()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
