"""Where a command's time went, for ``-v``: each compile step, each file written (its time, size and thread),
and the process as a whole (wall time since it started, CPU time of all its threads, peak memory).

Wall time since the process started is what a user waits for and what the benchmarks compare; the
steps alone leave out the interpreter's start and the imports, which on small models are most of it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..units import duration, si


def process_wall_s() -> float | None:
    """Seconds since this process started (Linux: from /proc, to 10 ms), None where the system does not say."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()    # the command name may hold spaces and parentheses
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))    # field 22: start time, in ticks
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss_bytes() -> int | None:
    """The process's peak resident memory, None where the platform does not say (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024    # bytes on macOS, KiB elsewhere


@dataclass
class Written:
    """One writer's files, how long it took and on which thread."""
    files: list[str]
    seconds: float
    background: bool        # on a writer thread (while the main thread calibrated, when it did)
    waiting_s: float = 0.0  # of ``seconds``, waiting for another writer's result
    waiting_for: str = ""   # that result


@dataclass
class Timings:
    """A compile's files, timed as they are written (the writer threads add to it too), and the wall time
    of the process when the first step began."""
    entries: list[Written] = field(default_factory=list)
    before_steps_s: float | None = None
    waited: dict[str, tuple[float, str]] = field(default_factory=dict)     # file -> (seconds, waiting for what)

    def timed(self, files: list[str], background: bool, fn, *args):
        """``fn(*args)``, its time recorded under ``files`` (None: the file names it returns)."""
        start = time.perf_counter()
        result = fn(*args)
        files = list(files) if files is not None else list(result)
        waited, what = self.waited.get(files[0], (0.0, ""))
        self.entries.append(Written(files, time.perf_counter() - start, background, waited, what))
        return result

    def waiting(self, file: str, fn, what: str):
        """``fn`` for the writer of ``file``, its time counted as that writer waiting for ``what``."""
        def wait(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.waited[file] = (self.waited.get(file, (0.0, ""))[0] + time.perf_counter() - start, what)
        return wait


def profile(steps_s: dict[str, float], timings: Timings, out: Path) -> dict:
    """The whole account as JSON (units in the key names); file sizes are read from ``out``."""
    user, system = os.times()[:2]
    files = []
    for w in timings.entries:
        sizes = [(out / name).stat().st_size for name in w.files if (out / name).is_file()]
        files.append({"files": w.files, "time_s": w.seconds, "waiting_s": w.waiting_s, "waiting_for": w.waiting_for,
                      "bytes": sum(sizes), "thread": "writer" if w.background else "main"})
    steps = [{"step": step, "time_s": seconds} for step, seconds in steps_s.items()]     # a list: JSON keeps the order
    return {"steps": steps, "steps_total_s": sum(steps_s.values()), "writes": files,
            "process": {"wall_s": process_wall_s(), "before_steps_s": timings.before_steps_s, "cpu_user_s": user,
                        "cpu_system_s": system, "peak_rss_bytes": peak_rss_bytes()}}


def print_profile(p: dict, stream=None) -> None:
    """The account for people: a line per step, per writer and for the process, on stderr."""
    stream = stream or sys.stderr

    def line(label: str, seconds: float, rest: str = "") -> None:
        print(f"  {label:<28} {duration(seconds * 1e9):>9}{rest}", file=stream)

    for step in p["steps"]:
        line(step["step"], step["time_s"])
    line("steps in all", p["steps_total_s"])
    for w in p["writes"]:
        where = ", on a writer thread" if w["thread"] == "writer" else ""
        if w["waiting_s"] >= 0.0005:
            where += f", {duration(w['waiting_s'] * 1e9)} of it waiting for {w['waiting_for']}"
        line("write", w["time_s"], f" {si(w['bytes'], 'B'):>9}  {', '.join(w['files'])}{where}")
    proc = p["process"]
    parts = [f"{duration((proc['cpu_user_s'] + proc['cpu_system_s']) * 1e9)} CPU "
             f"(user {duration(proc['cpu_user_s'] * 1e9)}, system {duration(proc['cpu_system_s'] * 1e9)})"]
    if proc["before_steps_s"] is not None:
        parts.append(f"{duration(proc['before_steps_s'] * 1e9)} before the first step (interpreter, imports, target)")
    if proc["peak_rss_bytes"] is not None:
        parts.append(f"peak RSS {si(proc['peak_rss_bytes'], 'B')}")
    wall = proc["wall_s"]
    print(f"  {'process':<28} {duration(wall * 1e9) if wall is not None else 'wall ?':>9}  " + "; ".join(parts),
          file=stream)
