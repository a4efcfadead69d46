"""Interrupt safety: compile stopped by SIGINT, SIGTERM, SIGHUP, SIGQUIT or SIGKILL at varied points.

A few-MB MLP (built at test time) takes a second or two to compile. Each run
starts from an OUT that holds a previous compile (or no OUT at all), and is
signalled either after a fixed delay (imports, mapping, calibration) or just as
the temporary output folder appears (mid-write). Afterwards OUT is, byte for
byte, either the previous one, absent (only where there was none), or the
complete new output -- never half-written. SIGINT, SIGTERM, SIGHUP and SIGQUIT leave no
``.OUT.acompile-tmp-*`` or ``.OUT.acompile-old-*`` folder behind; SIGKILL may,
but OUT is intact.

Every other run writes the device file's cells in a forked process, as a compile of a large model
does on Linux: its parent ends it on an interrupt, and it ends with a parent that is killed.

The default run signals at a few points of the matrix (each signal, mid-write and
during the work); ``-m slow`` runs the whole matrix and a sweep of delays.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import acompile
import bad_inputs as bi

# children import the same acompile as this process (the checkout, or wherever it is installed)
SOURCE = Path(acompile.__file__).resolve().parents[1]
TEMP_MARKERS = (".OUT.acompile-tmp-", ".OUT.acompile-old-")
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL,
           "SIGHUP": signal.SIGHUP, "SIGQUIT": signal.SIGQUIT}
EXPECTED_RC = {signal.SIGINT: {130, -signal.SIGINT}, signal.SIGTERM: {143, -signal.SIGTERM},
               signal.SIGKILL: {-signal.SIGKILL}, signal.SIGHUP: {129, -signal.SIGHUP},
               signal.SIGQUIT: {131, -signal.SIGQUIT}}


def _files(folder: Path) -> dict[str, str] | None:
    if not folder.exists():
        return None
    assert folder.is_dir() and not folder.is_symlink()
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _env(folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACOMPILE_", "PYTHON"))}
    env.update(PYTHONPATH=str(SOURCE), HOME=str(folder), TMPDIR=str(folder), PYTHONDONTWRITEBYTECODE="1")
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The big model, a previous OUT (of another model) and the reference output of the big model."""
    root = tmp_path_factory.mktemp("interrupt")
    big = root / "big.onnx"
    big.write_bytes(bi.big_mlp_model(width=1024, depth=3).SerializeToString())
    small = root / "small.onnx"
    small.write_bytes(bi.mlp_model().SerializeToString())
    # through the same entry point as the interrupted runs (a process, not main() in this one), both at once
    def compile_into(model, out):
        subprocess.run([sys.executable, "-m", "acompile", "compile", str(model), "-t", "isaac", "-o", str(root / out),
                        "-q"], env=_env(root), check=True, timeout=120)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(compile_into, (small, big), ("previous", "reference")))
    return {"big": big, "previous": root / "previous", "reference": _files(root / "reference"),
            "previous_files": _files(root / "previous")}


# the command line with the device file's cells written in a forked process, as on Linux for models of
# FORKED_CELLS_WEIGHTS weights and more (this one has fewer)
FORKING = ("import sys; import acompile.cli.compile as c; c.FORKED_CELLS_WEIGHTS = 0\n"
           "from acompile.cli import entry_point; sys.argv[0] = 'acompile'; entry_point()")


def _compile_and_signal(setup, folder: Path, sig, trigger: str, delay: float, with_previous: bool,
                        forked: bool = False):
    """Start compile into folder/OUT (with ``forked``, its cells written in a forked process), send ``sig``
    per ``trigger``; return (rc, stderr, signalled)."""
    folder.mkdir(parents=True)
    if with_previous:
        shutil.copytree(setup["previous"], folder / "OUT")
    env = _env(folder)
    command = ["-c", FORKING] if forked else ["-m", "acompile"]
    proc = subprocess.Popen([sys.executable, *command, "compile", str(setup["big"]), "-t", "isaac",
                             "-o", "OUT", "-q"], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    start = time.monotonic()
    signalled = False
    try:
        if trigger == "delay":
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                signalled = True
        else:   # "write": as soon as the temporary output folder exists, then ``delay`` more
            while proc.poll() is None and time.monotonic() - start < 60:
                if any(n.startswith(".OUT.acompile-tmp-") for n in os.listdir(folder)):
                    if delay:
                        time.sleep(delay)
                    if proc.poll() is None:
                        proc.send_signal(sig)
                        signalled = True
                    break
                time.sleep(0.0005)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode("utf-8", "replace"), signalled


def _check_outcome(setup, folder: Path, sig, rc: int, err: str, signalled: bool, with_previous: bool, what: str):
    out = _files(folder / "OUT")
    allowed = [setup["reference"]] + ([setup["previous_files"]] if with_previous else [None])
    assert out in allowed, f"{what}: OUT is half-written or foreign: {sorted(out or {})} (rc {rc}, {err[-500:]!r})"
    if not signalled:
        assert rc == 0, f"{what}: finished before the signal with rc {rc}: {err[-1000:]}"
        assert out == setup["reference"]
        return
    assert rc in EXPECTED_RC[sig] | {0}, f"{what}: exit {rc}: {err[-2000:]}"
    if rc != 0 and out == setup["reference"]:
        pass    # the signal arrived during the final renames: delivered after them, OUT complete and new
    left = [n for n in os.listdir(folder) if n.startswith(TEMP_MARKERS)]
    if sig != signal.SIGKILL:
        assert not left, f"{what}: temporary folders left behind: {left}"
        if rc in (129, 130, 131, 143):
            assert err.strip().splitlines()[-1] in ("acompile: interrupted", "acompile: terminated"), err[-500:]


# (signal, trigger, delay, OUT existed before): fixed delays land in imports/mapping/calibration,
# "write" ones at and shortly after the moment the temporary folder appears.
MATRIX = [(s, t, d, prev) for s in SIGNALS
          for t, d in (("delay", 0.6), ("delay", 1.0), ("write", 0.0), ("write", 0.02), ("write", 0.08))
          for prev in (True,)]
MATRIX += [("SIGINT", "write", 0.01, False), ("SIGKILL", "write", 0.01, False), ("SIGTERM", "delay", 0.8, False)]
SAMPLE = [("SIGINT", "write", 0.0, True), ("SIGTERM", "delay", 0.6, True), ("SIGKILL", "write", 0.02, True),
          ("SIGINT", "write", 0.01, False), ("SIGHUP", "write", 0.0, True), ("SIGQUIT", "delay", 0.6, True)]
assert set(SAMPLE) <= set(MATRIX)


@pytest.mark.parametrize("points", [pytest.param(SAMPLE, id="sample"),
                                    pytest.param(MATRIX, id="matrix", marks=pytest.mark.slow)])
def test_interrupted_compile_leaves_out_whole(setup, tmp_path, points):
    """Each point, two at a time (each run is its own process), every other one with its device file's cells
    written in a forked process."""
    def one(i, case):
        name, trigger, delay, prev = case
        folder = tmp_path / f"{i:02d}_{name}_{trigger}_{delay}_{'prev' if prev else 'none'}"
        rc, err, signalled = _compile_and_signal(setup, folder, SIGNALS[name], trigger, delay, prev, i % 2 == 0)
        return case, folder, rc, err, signalled

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda ic: one(*ic), enumerate(points)))
    hit = 0
    for (name, trigger, delay, prev), folder, rc, err, signalled in results:
        what = f"{name} {trigger} +{delay}s {'with' if prev else 'without'} previous OUT"
        _check_outcome(setup, folder, SIGNALS[name], rc, err, signalled, prev, what)
        hit += signalled
    assert hit >= len(points) // 2, f"only {hit} of {len(points)} runs were actually interrupted"


def test_sigterm_and_sigint_in_process_clean_up(tmp_path, monkeypatch):
    """The cleanup path itself, deterministically: an interrupt raised while writing removes the temp folder."""
    from acompile.files import atomic_folder
    previous = tmp_path / "OUT"
    previous.mkdir()
    (previous / "report.json").write_text("{}")
    for exc in (KeyboardInterrupt, SystemExit):
        with pytest.raises(exc):
            with atomic_folder(previous) as tmp:
                (tmp / "program.json").write_text("half")
                raise exc()
        assert sorted(os.listdir(tmp_path)) == ["OUT"]
        assert os.listdir(previous) == ["report.json"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_between_the_two_renames_waits_until_both_are_done(tmp_path, monkeypatch, sig):
    """Deterministically at the worst moment: OUT moved aside, the new one not yet in place."""
    from acompile.cli.app import on_sigterm
    from acompile.files import Interrupted, atomic_folder
    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "report.json").write_text("old")
    real_rename = os.rename
    calls = []

    def rename(a, b):
        real_rename(a, b)
        calls.append(b)
        if len(calls) == 1:
            os.kill(os.getpid(), sig)      # OUT is now in .OUT.acompile-old-*/previous

    monkeypatch.setattr(os, "rename", rename)
    try:
        with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else Interrupted):
            with atomic_folder(out) as tmp:
                (tmp / "report.json").write_text("new")
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    assert len(calls) == 2
    assert (out / "report.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["OUT"]


@pytest.mark.slow
def test_interrupt_fuzz_many_delays(setup, tmp_path):
    """The longer version: 30 evenly spread delays per signal."""
    cases = [(name, "delay", 0.3 + 0.05 * k, True) for name in SIGNALS for k in range(30)]

    def one(i, case):
        name, trigger, delay, prev = case
        folder = tmp_path / f"{i:03d}"
        return (case, folder, *_compile_and_signal(setup, folder, SIGNALS[name], trigger, delay, prev, i % 2 == 0))

    with ThreadPoolExecutor(2) as pool:
        for (name, trigger, delay, prev), folder, rc, err, signalled in pool.map(lambda ic: one(*ic),
                                                                                 enumerate(cases)):
            _check_outcome(setup, folder, SIGNALS[name], rc, err, signalled, prev, f"{name} +{delay:.2f}s")
