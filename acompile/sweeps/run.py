"""One row of a sweep, computed from plain data: compile the model for the point, then simulate.

:func:`run_row` takes and returns JSON-ready data (model, data and labels as
bytes, the target as resolved data), so it runs the same in this process, a
local worker process or on a Dask worker with no shared file system. It never
raises for a point the hardware cannot take: that is a row with a status.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

from ..errors import EXIT_UNMAPPABLE, AcompileError, clean

COST_COLUMNS = ("crossbars", "chips", "energy_pj", "latency_ns", "throughput_inferences_per_s", "area_mm2",
                "tops_per_w")
DATA_COLUMNS = ("accuracy", "rel_error")


def _finite(x):
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _costs(totals: dict) -> dict:
    return {"crossbars": int(totals["crossbars"]), "chips": int(totals["chips"]),
            "energy_pj": _finite(totals["energy_total_pj"]), "latency_ns": _finite(totals["latency_ns"]),
            "throughput_inferences_per_s": _finite(totals["throughput_inferences_per_s"]),
            "area_mm2": _finite(totals["area_chips_mm2"]), "tops_per_w": _finite(totals["tops_per_w"])}


def _arrays(blob: bytes, suffix: str, names: list[str], tmp: Path, name: str = "") -> dict:
    from ..calibrate import load_arrays
    path = tmp / "data" / name if name else tmp / f"data{suffix}"     # a folder of its own: no clash with the model
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(blob)
    return load_arrays(path, names, what="--data")


def _measure(task: dict, compiled, model_path: Path, tmp: Path, seed: int) -> dict:
    """accuracy (with labels) and rel_error against onnxruntime, of the first output by name."""
    import numpy as np
    from ..compiler import Options, compile_model
    from ..frontend.input_shapes import data_shapes, input_dims
    from ..sim.runtime import Simulator, WeightsFromGraph
    from ..simulation import compare, noise_from_target, reference_outputs
    feeds = _arrays(task["data"], task["data_suffix"], list(compiled.graph.inputs), tmp,
                    task.get("data_name", ""))
    shapes = data_shapes(input_dims(model_path), feeds, whole=True)
    if shapes:      # compiled again at the data's shape, as `run` does (the cost stays per --batch)
        compiled = compile_model(str(model_path), compiled.target, Options(batch=task["batch"], seed=seed,
                                                                           input_shapes=shapes))
    mode = task["mode"]
    noise = noise_from_target(compiled.target) if mode == "noisy" else None
    sim = Simulator(compiled.graph, compiled.mapping, WeightsFromGraph(compiled.graph, compiled.mapping),
                    mode=mode, noise=noise, seed=seed)
    results = sim.run(feeds)
    labels = np.load(io.BytesIO(task["labels"]), allow_pickle=False) if task.get("labels") else None
    comparison = compare(results, reference_outputs(model_path, feeds), labels)
    first = comparison[sorted(comparison)[0]] if comparison else {}
    return {"accuracy": _finite(first.get("top1_accuracy_simulated")),
            "rel_error": _finite(first.get("relative_error"))}


def _unplaced(text: str, tmp: str) -> str:
    """``text`` without the row's temporary folder: a file there is named as the user named it, so a
    row's status is the same whichever process, machine or temporary folder computed it."""
    for folder in {os.path.realpath(tmp), tmp}:
        for inner in (f"{folder}{os.sep}data{os.sep}", f"{folder}{os.sep}", folder):
            text = text.replace(inner, "" if inner.endswith(os.sep) else ".")
    return text


def _status(e: BaseException, tmp: str) -> str:
    if isinstance(e, AcompileError):
        kind = "incompatible" if e.exit_code == EXIT_UNMAPPABLE or e.code == "invalid_target" else "error"
        return f"{kind}: {clean(_unplaced(e.one_line(), tmp), 300)}"
    if isinstance(e, MemoryError):
        return "error: out of memory"
    return f"error: internal: {type(e).__name__}: {clean(_unplaced(str(e), tmp), 200)}"   # a bug


def run_row(task: dict) -> dict:
    """The measured columns of one row: costs, accuracy, rel_error, status (the sweep goes on)."""
    out: dict = {c: None for c in COST_COLUMNS + DATA_COLUMNS}
    try:
        with tempfile.TemporaryDirectory(prefix="acompile-sweep-") as tmp:
            try:
                out.update(_run(task, Path(tmp)))
                out["status"] = "ok"
            except Exception as e:
                out["status"] = _status(e, tmp)
    except OSError as e:      # no room for the temporary folder
        out["status"] = f"error: internal: {type(e).__name__}: {clean(str(e), 200)}"
    return out


def _run(task: dict, tmp: Path) -> dict:
    from ..compiler import Options, compile_model
    from ..target import Target
    from ..target.overrides import apply_overrides
    base = task["target"]
    target = Target.from_data(base["data"], None, tuple(base["chain"]))
    target = apply_overrides(target, task["overrides"])
    model_path = tmp / task["model_name"]
    model_path.write_bytes(task["model"])
    compiled = compile_model(str(model_path), target, Options(batch=task["batch"], seed=task["seed"]))
    row = _costs(compiled.cost["totals"])
    if task.get("data") is not None:
        row.update(_measure(task, compiled, model_path, tmp, task["seed"]))
    return row
