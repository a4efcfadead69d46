"""Calls in forked children (acompile/isolated.py): what comes back from them, when a compile forks its
device file's cells beside itself, and that it writes the same bytes either way."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import acompile
from acompile import isolated
from acompile.cli import main

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "mlp.onnx"


def _pid_and(value):
    return os.getpid(), value


def _raise_no_space():
    raise OSError(errno.ENOSPC, "No space left on device", "device.acdev")


def test_a_forked_call_returns_its_value_from_another_process():
    pid, value = isolated.fork_call(_pid_and, {"a": [1, 2]}).result()
    assert pid != os.getpid() and value == {"a": [1, 2]}


def _streams():
    return [os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_forked_child_writes_nothing_to_its_parents_streams():
    """Its standard streams are the null device: a caller reading the parent's output gets its end when the
    parent ends, not once the child has let go of its memory."""
    assert isolated.fork_call(_streams).result() == [os.devnull] * 3


def test_what_a_forked_call_raises_is_raised_again():
    with pytest.raises(OSError) as caught:
        isolated.fork_call(_raise_no_space).result()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == "device.acdev"


def test_a_child_that_dies_or_is_cancelled_is_crashed():
    assert isolated.fork_call(len, [1, 2]).result() == 2
    dying = isolated.fork_call(lambda: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(isolated.Crashed, match="SIGKILL"):
        dying.result()
    sleeping = isolated.fork_call(time.sleep, 60)
    begin = time.monotonic()
    sleeping.cancel()
    with pytest.raises(isolated.Crashed):
        sleeping.result()
    assert time.monotonic() - begin < 10
    with pytest.raises(ProcessLookupError):
        os.kill(sleeping.pid, 0)    # reaped, not a zombie


def test_beside_forks_only_a_process_without_other_threads():
    """Another thread might hold a lock as the process forks: no fork then. Threads marked as ending soon
    are waited for instead."""
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert isolated.beside(_pid_and, 1, what="test") is None
    finally:
        release.set()
        other.join()
    alone = sys.platform == "linux" and isolated._one_thread(1.0)    # the thread just joined gone; pytest's?
    short = isolated.ends_soon(threading.Thread(target=time.sleep, args=(0.2,)))
    short.start()
    child = isolated.beside(_pid_and, 1, what="test")
    assert not short.is_alive()
    assert (child is not None) == alone
    if child is not None:
        assert child.result()[1] == 1


def test_compile_in_a_fresh_process_forks_its_cells_and_writes_the_same_bytes(tmp_path, monkeypatch, capsys):
    """The command line forks the device file's cells (Linux), and for a model below FORKED_CONSTANTS_WEIGHTS
    program.npz after them; a compile that cannot fork writes both on a thread; both write the same files,
    byte for byte."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACOMPILE_", "PYTHON"))}
    env["PYTHONPATH"] = str(Path(acompile.__file__).resolve().parents[1])
    command = ("import sys; import acompile.cli.compile as c; c.FORKED_CELLS_WEIGHTS = 0     # the sample is small\n"
               "from acompile.cli import entry_point; sys.argv[0] = 'acompile'; entry_point()")
    done = subprocess.run([sys.executable, "-c", command, "compile", str(SAMPLE), "-t", "isaac", "-o",
                           str(tmp_path / "forked"), "-q", "-v", "--format", "json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    profile = json.loads(done.stdout)["profile"]
    threads = {f: w["thread"] for w in profile["writes"] for f in w["files"]}
    assert threads["device.acdev"] == threads["program.npz"] == ("process" if sys.platform == "linux" else "writer")
    if sys.platform == "linux":     # what the forked writer held of its own, which the peak RSS leaves out
        assert profile["process"]["forked_writer_private_bytes"] > 0
    monkeypatch.setattr(isolated, "beside", lambda *args, what: None)
    assert main(["compile", str(SAMPLE), "-t", "isaac", "-o", str(tmp_path / "threaded"), "-q", "-v",
                 "--format", "json"]) == 0
    profile = json.loads(capsys.readouterr().out)["profile"]
    threads = {f: w["thread"] for w in profile["writes"] for f in w["files"]}
    assert threads["device.acdev"] == threads["program.npz"] == "writer"
    assert profile["process"]["forked_writer_private_bytes"] is None
    names = sorted(p.name for p in (tmp_path / "forked").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "threaded").iterdir()) and "device.acdev" in names
    for name in names:
        assert (tmp_path / "forked" / name).read_bytes() == (tmp_path / "threaded" / name).read_bytes(), name


def test_a_forked_writers_error_is_the_compiles(tmp_path, monkeypatch, capsys):
    """What the cells' process raises ends the compile as it would on a thread (a full disk: exit 2, one
    line), and leaves no output behind."""
    from acompile.backends import device
    from acompile.cli import compile as cli_compile
    monkeypatch.setattr(cli_compile, "FORKED_CELLS_WEIGHTS", 0)
    monkeypatch.setattr(isolated, "beside", lambda call, *args, what: isolated.fork_call(call, *args, what=what))
    monkeypatch.setattr(device, "write_cells", lambda *args: _raise_no_space())
    assert main(["compile", str(SAMPLE), "-t", "isaac", "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_a_failed_compile_ends_its_cells_process(tmp_path, monkeypatch):
    """The main thread fails while the cells are still being written: their process is ended and reaped, and
    the temporary output goes, without waiting for it."""
    from acompile.backends import device, report
    from acompile.cli import compile as cli_compile
    children = []

    def fork(call, *args, what):
        children.append(isolated.fork_call(call, *args, what=what))
        return children[-1]

    monkeypatch.setattr(isolated, "beside", fork)
    monkeypatch.setattr(cli_compile, "FORKED_CELLS_WEIGHTS", 0)
    monkeypatch.setattr(device, "write_cells", lambda *args: time.sleep(60))
    monkeypatch.setattr(report, "build_report", lambda compiled: 1 / 0)
    begin = time.monotonic()
    assert main(["compile", str(SAMPLE), "-t", "isaac", "-o", str(tmp_path / "out"), "-q"]) == 3
    assert time.monotonic() - begin < 30 and len(children) == 1 and os.listdir(tmp_path) == []
    with pytest.raises(ProcessLookupError):
        os.kill(children[0].pid, 0)


def test_a_mapping_that_fails_its_check_ends_the_cells_process_started_before_it(tmp_path, monkeypatch, capsys):
    """The cells' process starts as the mapping is final and the compile checks the mapping meanwhile: a broken
    one ends the compile as an internal error naming it, the process ended and no output left."""
    from acompile.cli import compile as cli_compile
    from acompile.mapping import BrokenMapping, Mapping
    children = []

    def fork(call, *args, what):
        children.append(isolated.fork_call(call, *args, what=what))
        return children[-1]

    def broken(self):
        assert children, "the mapping is checked once the cells' process has started"
        raise BrokenMapping("internal error, broken mapping: a test's")

    monkeypatch.delenv("ACOMPILE_VERIFY_EACH_PASS", raising=False)     # the compile's own check, once
    monkeypatch.setattr(isolated, "beside", fork)
    monkeypatch.setattr(cli_compile, "FORKED_CELLS_WEIGHTS", 0)
    monkeypatch.setattr(Mapping, "verify", broken)
    assert main(["compile", str(SAMPLE), "-t", "isaac", "-o", str(tmp_path / "out"), "-q"]) == 3
    assert "broken mapping: a test's" in capsys.readouterr().err
    assert len(children) == 1 and os.listdir(tmp_path) == []
    with pytest.raises(ProcessLookupError):
        os.kill(children[0].pid, 0)


def test_a_small_models_cells_are_written_on_a_thread(tmp_path, monkeypatch):
    """Below FORKED_CELLS_WEIGHTS weights a forked process costs the compile more than it saves."""
    from acompile.cli import compile as cli_compile
    asked = []
    monkeypatch.setattr(isolated, "beside", lambda *args, what: asked.append(what))
    assert main(["compile", str(SAMPLE), "-t", "isaac", "-o", str(tmp_path / "small"), "-q"]) == 0
    assert asked == []
    monkeypatch.setattr(cli_compile, "FORKED_CELLS_WEIGHTS", 1)
    assert main(["compile", str(SAMPLE), "-t", "isaac", "-o", str(tmp_path / "forked"), "-q"]) == 0
    assert asked == ["device file's cells"]


@pytest.mark.skipif(sys.platform != "linux", reason="beside forks on Linux only")
def test_a_compile_the_system_refuses_to_fork_writes_its_cells_on_a_thread(tmp_path, monkeypatch, capsys):
    """A limit on processes (EAGAIN) is no reason to fail: the cells are written on a thread instead."""
    from acompile.cli import compile as cli_compile
    forks = []

    def refuse():
        forks.append(1)
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(cli_compile, "FORKED_CELLS_WEIGHTS", 0)
    monkeypatch.setattr(isolated, "_one_thread", lambda settle_s: True)
    monkeypatch.setattr(os, "fork", refuse)
    before = len(os.listdir(f"/proc/{os.getpid()}/fd"))
    assert main(["compile", str(SAMPLE), "-t", "isaac", "-o", str(tmp_path / "out"), "-q", "-v",
                 "--format", "json"]) == 0
    profile = json.loads(capsys.readouterr().out)["profile"]
    assert forks == [1] and {f: w["thread"] for w in profile["writes"] for f in w["files"]}["device.acdev"] == "writer"
    assert len(os.listdir(f"/proc/{os.getpid()}/fd")) == before      # the pipe made for the child is closed
