"""Where a command's time went, for ``-v``: each compile step, each file written (its time, size and thread),
and the process as a whole (wall time since it started, CPU time of all its threads and of the process it
forked to write the device file's cells, peak memory).

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
    """The peak resident memory of the process, or of a child it waited for where that was larger (a forked
    writer's counts the memory it shares with this process); None where the platform does not say (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024    # bytes on macOS, KiB elsewhere


def private_bytes() -> int | None:
    """The memory this process holds of its own (pages no other process shares: a forked process's copies
    of what it wrote, and what it allocated since), None where the system does not say (not Linux)."""
    try:
        with open("/proc/self/smaps_rollup", "rb") as f:
            fields = dict(line.split(b":", 1) for line in f if line.startswith(b"Private_"))
        return sum(int(v.split()[0]) for v in fields.values()) * 1024     # kB
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Written:
    """One writer's files, how long it took and where: "main" (the main thread), "writer" (a writer thread,
    while the main thread calibrated, when it did) or "process" (a forked process, likewise)."""
    files: list[str]
    seconds: float
    where: str


@dataclass
class Timings:
    """A compile's files, timed as they are written (the writer threads add to it too), and the wall time
    of the process when the first step began."""
    entries: list[Written] = field(default_factory=list)
    before_steps_s: float | None = None
    forked_private_bytes: int | None = None     # the forked writer's own memory, as it ended
    # whether a forked writer reads its own memory as it ends (-v): /proc/self/smaps_rollup, 1.7 ms of the int8
    # ResNet-50's writer, every compile waits for otherwise
    account_memory: bool = False

    def timed(self, files: list[str], where: str, fn, *args):
        """``fn(*args)`` run ``where`` (see :class:`Written`), its time recorded under ``files`` (None: the file
        names it returns)."""
        start = time.perf_counter()
        result = fn(*args)
        files = list(files) if files is not None else list(result)
        self.entries.append(Written(files, time.perf_counter() - start, where))
        return result


def profile(steps_s: dict[str, float], timings: Timings, out: Path) -> dict:
    """The whole account as JSON (units in the key names); file sizes are read from ``out``."""
    from ..isolated import reap_ended
    reap_ended(wait=True)       # the forked writer of the device file's cells: its CPU time counted
    user, system, child_user, child_system = os.times()[:4]
    files = []
    for w in timings.entries:
        sizes = [(out / name).stat().st_size for name in w.files if (out / name).is_file()]
        files.append({"files": w.files, "time_s": w.seconds, "bytes": sum(sizes), "thread": w.where})
    steps = [{"step": step, "time_s": seconds} for step, seconds in steps_s.items()]     # a list: JSON keeps the order
    return {"steps": steps, "steps_total_s": sum(steps_s.values()), "writes": files,
            "process": {"wall_s": process_wall_s(), "before_steps_s": timings.before_steps_s,
                        "cpu_user_s": user + child_user, "cpu_system_s": system + child_system,
                        "peak_rss_bytes": peak_rss_bytes(), "forked_writer_private_bytes": timings.forked_private_bytes}}


def print_profile(p: dict, stream=None) -> None:
    """The account for people: a line per step, per writer and for the process, on stderr."""
    stream = stream or sys.stderr

    def line(label: str, seconds: float, rest: str = "") -> None:
        print(f"  {label:<28} {duration(seconds * 1e9):>9}{rest}", file=stream)

    for step in p["steps"]:
        line(step["step"], step["time_s"])
    line("steps in all", p["steps_total_s"])
    for w in p["writes"]:
        where = {"writer": ", on a writer thread", "process": ", in a forked process"}.get(w["thread"], "")
        line("write", w["time_s"], f" {si(w['bytes'], 'B'):>9}  {', '.join(w['files'])}{where}")
    proc = p["process"]
    parts = [f"{duration((proc['cpu_user_s'] + proc['cpu_system_s']) * 1e9)} CPU "
             f"(user {duration(proc['cpu_user_s'] * 1e9)}, system {duration(proc['cpu_system_s'] * 1e9)})"]
    if proc["before_steps_s"] is not None:
        parts.append(f"{duration(proc['before_steps_s'] * 1e9)} before the first step (interpreter, imports, target)")
    if proc["peak_rss_bytes"] is not None:
        parts.append(f"peak RSS {si(proc['peak_rss_bytes'], 'B')}")
    if proc.get("forked_writer_private_bytes") is not None:
        parts.append(f"the forked writer's own memory {si(proc['forked_writer_private_bytes'], 'B')}")
    wall = proc["wall_s"]
    print(f"  {'process':<28} {duration(wall * 1e9) if wall is not None else 'wall ?':>9}  " + "; ".join(parts),
          file=stream)
