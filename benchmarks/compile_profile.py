"""Where a compile's time goes: one more ``acompile compile -v --format json`` process per model, after
the timed runs, and its own account (``profile``: the process's wall and CPU time, the part before the
first step, each step, each file written and on which thread) as a table.

The timed runs say whether a goal is met; this says why not, measured in the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def compile_profile(model: Path, out: Path, target: str, env: dict, cwd: Path) -> dict:
    """The ``profile`` object of one compile of ``model`` into ``out`` (replaced)."""
    argv = [sys.executable, "-m", "acompile", "compile", str(model), "--target", target, "-o", str(out),
            "-q", "-v", "--format", "json"]
    p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(cwd), check=False)
    if p.returncode != 0:
        raise RuntimeError(f"compile -v failed ({p.returncode}): {p.stderr[-400:]}")
    return json.loads(p.stdout)["profile"]


def _t(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _writer(profile: dict, name: str) -> str:
    """How long the writer of file ``name`` took, "(main)" after it where the main thread wrote it and
    "(forked)" where program.npz was written by the cells' forked process."""
    for w in profile["writes"]:
        if name in w["files"]:
            where = {"main": " (main)", "process": " (forked)" if name == "program.npz" else ""}
            return _t(w["time_s"]) + where.get(w["thread"], "")
    return "-"


OWN_COLUMNS = {"program.npz", "device.acdev"}       # files with a column of their own


def summary(profile: dict) -> dict:
    """The figures of one row: seconds (and bytes written) by part of the compile."""
    steps = {s["step"]: s["time_s"] for s in profile["steps"]}
    proc = profile["process"]
    main_writes = sum(w["time_s"] for w in profile["writes"]
                      if w["thread"] == "main" and not OWN_COLUMNS & set(w["files"]))
    return {"wall_s": proc["wall_s"], "before_steps_s": proc["before_steps_s"],
            "steps_s": profile["steps_total_s"], "calibrate_s": steps.get("calibrate", 0.0),
            "main_thread_writes_s": main_writes, "cpu_s": proc["cpu_user_s"] + proc["cpu_system_s"],
            "written_bytes": sum(w["bytes"] for w in profile["writes"])}


def markdown(profiles: dict[str, dict]) -> str:
    """One row per model: the process, what precedes the first step, the steps (calibration among
    them), program.npz's writer (a thread while calibration runs, the cells' forked process after them for
    a model under 4 M weights, the main thread when there is nothing to calibrate) and the device file's (a forked process where it is safe to fork; its header added on the main
    thread), the other files, written after calibration on the main thread, CPU time of all threads and of
    the forked process, and bytes written."""
    head = ("model", "process", "before the first step", "steps", "of which calibrate",
            "program.npz", "device.acdev (writer)", "other files (main)", "CPU, all threads", "written")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, p in profiles.items():
        s = summary(p)
        lines.append(f"| {name} | {_t(s['wall_s'])} | {_t(s['before_steps_s'])} | {_t(s['steps_s'])} | "
                     f"{_t(s['calibrate_s'])} | {_writer(p, 'program.npz')} | {_writer(p, 'device.acdev')} | "
                     f"{_t(s['main_thread_writes_s'])} | {_t(s['cpu_s'])} | {s['written_bytes'] / 1e6:.1f} MB |")
    return "\n".join(lines)
