"""Running a sweep: rows to compute, the cache, where they run (here, a process pool, a Dask cluster),
progress, the Pareto marks and the files written.

The table depends only on the inputs: rows are put back in model x point x
repeat order whatever order they finish in, so ``--jobs 1``, ``--jobs N`` and
``--scheduler`` write the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from pathlib import Path

from ..errors import AcompileError, UsageError, clean
from ..files import atomic_file
from ..process_pool import process_pool
from ..safe_read import read_input
from ..target import apply_overrides, load_target
from ..target.overrides import split_setting
from ..target.scaling import SCALED_PARAMETERS, connected
from . import pareto, table
from .cache import Cache, row_key
from .points import parse_axes, points, rows as make_rows
from .run import COST_COLUMNS, DATA_COLUMNS, run_row

MODES = ("ideal", "quantized", "noisy")


def _read(path: str | Path, what: str) -> bytes:
    """A whole input file, within the size limit of its kind (models travel to workers as bytes)."""
    return read_input(path, what, "max_model_bytes" if what == "model" else "max_data_bytes")


def _sha(blob: bytes | None) -> str:
    return hashlib.sha256(blob).hexdigest() if blob is not None else ""


def run_local(tasks: list[dict], jobs: int) -> Iterator[tuple[int, dict]]:
    """(index, measured columns) as each task finishes; in this process when ``jobs`` is 1, else in a pool
    of processes (:func:`~acompile.process_pool.process_pool`: each worker's BLAS on one thread)."""
    if jobs <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            yield i, run_row(task)
        return
    from .. import compiler, simulation     # noqa: F401 -- imported once here, inherited by forked workers
    with process_pool(min(jobs, len(tasks))) as pool:   # on Ctrl-C or SIGTERM, start nothing more; rows cached stay
        futures = {pool.submit(run_row, task): i for i, task in enumerate(tasks)}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result()
            except Exception as e:   # the worker process died (killed, out of memory)
                yield futures[fut], {"status": f"error: the worker process failed: {type(e).__name__}"}


class Progress:
    """``points done/total, ETA`` on a terminal (stderr), nothing otherwise."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done = total, 0
        self.enabled = enabled and sys.stderr.isatty() and total > 0
        self.start = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        print(f"\r  sweep: {self.done}/{self.total} points, {elapsed:5.0f} s, ETA {eta:5.0f} s ",
              end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


def sweep(models, target, settings: dict[str, list] | list[str] | None = None, *, data=None, labels=None,
          mode: str | None = None, repeats: int = 1, seed: int = 0, batch: int = 1, jobs: int = 1,
          scheduler: str | None = None, output: str | Path | None = None, progress: bool = False,
          on_note: Callable[[str], None] | None = None) -> list[dict]:
    """Compile (and with ``data`` simulate) every model at every point; the table as a list of row dicts.

    ``settings`` maps dotted target keys to value lists ({"adc.bits": [4, 6, 8]}) or is a list of
    ``"KEY=V1,V2"`` / ``"KEY=LO:HI"`` strings. With ``output`` the folder gets results.csv,
    results.json, pareto.svg, sweep.md and the per-row cache that makes a rerun resume.
    """
    models = [models] if isinstance(models, (str, Path)) else list(models)
    if not models:
        raise UsageError("a sweep needs at least one model")
    axes = parse_axes(settings) if isinstance(settings, list) else {k: list(v) for k, v in (settings or {}).items()}
    for key in axes:
        split_setting(f"{key}=_")       # every key must be a target field (exit 2, did-you-mean)
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1 (got {repeats})")
    if data is None and labels is not None:
        raise UsageError("--labels needs --data")
    mode = (mode or "quantized") if data is not None else None
    if mode is not None and mode not in MODES:
        raise UsageError(f"unknown mode {clean(mode)!r}; expected one of {', '.join(MODES)}")
    base = load_target(target)
    blobs = [_read(m, "model") for m in models]
    shas = [_sha(b) for b in blobs]
    data_blob = _read(data, "data") if data is not None else None
    labels_blob = _read(labels, "labels") if labels is not None else None
    combos = points(axes)
    todo = make_rows(shas, combos, repeats, seed)
    options = {"batch": batch, "mode": mode, "labels": _sha(labels_blob)}
    cache = Cache(Path(output)) if output is not None else None
    resolved, invalid = {}, {}
    for p, combo in enumerate(combos):
        try:
            resolved[p] = json.dumps(apply_overrides(base, combo).data, sort_keys=True)
        except AcompileError as e:      # this point breaks a rule of the target: its rows say why
            resolved[p] = json.dumps(combo, sort_keys=True, default=str)
            invalid[p] = f"incompatible: {clean(e.one_line(), 300)}"
    target_doc = {"data": base.data, "chain": list(base.chain)}
    names = [clean(Path(m).name) for m in models]
    table_rows, tasks, where = [], [], []
    for row in todo:
        key = row_key(shas[row.model], resolved[row.point], options, _sha(data_blob), row.seed)
        head = {"model": names[row.model], "target": base.name, **combos[row.point], "repeat": row.repeat,
                "seed": row.seed, "_key": key}
        table_rows.append(head)
        got = {"status": invalid[row.point]} if row.point in invalid else (cache.get(key) if cache else None)
        if got is not None:
            head.update(got)
            continue
        tasks.append({"model_name": Path(models[row.model]).name, "model": blobs[row.model], "target": target_doc,
                      "overrides": combos[row.point], "batch": batch, "seed": row.seed, "mode": mode,
                      "data": data_blob, "data_suffix": Path(str(data)).suffix if data is not None else "",
                      "data_name": Path(str(data)).name if data is not None else "",
                      "labels": labels_blob})
        where.append(len(table_rows) - 1)
    bar = Progress(len(tasks), progress)
    try:
        if scheduler:
            from .dask_backend import run_on_cluster
            finished = run_on_cluster(tasks, scheduler)
        else:
            finished = run_local(tasks, jobs)
        for i, result in finished:
            row = table_rows[where[i]]
            row.update(result)
            if cache and not result["status"].startswith("error"):   # errors may pass: try them again
                cache.put(row["_key"], result)
            bar.step()
    finally:
        bar.close()
    for row in table_rows:
        row.pop("_key")
        for column in COST_COLUMNS + DATA_COLUMNS:     # rows that did not run have every column, empty
            row.setdefault(column, None)
    pareto.mark(table_rows, mode is not None)
    keys = list(axes)
    notes = _notes(table_rows, keys, base)
    for note in notes:
        if on_note:
            on_note(note)
    if output is not None:
        meta = {"target": base.name, "models": names, "axes": axes, "points": len(combos), "repeats": repeats,
                "mode": mode, "seed": seed, "batch": batch}
        _write(Path(output), table_rows, keys, meta, notes)
    return table_rows


def _notes(rows: list[dict], keys: list[str], base) -> list[str]:
    """Swept keys that moved no cost: say so, and whether a scaling rule could have connected them."""
    notes = []
    ok = [r for r in rows if r["status"] == "ok"]
    for key in keys:
        groups: dict[str, set] = {}
        for r in ok:
            rest = json.dumps([r["model"], r["repeat"]] + [r[k] for k in keys if k != key], default=str)
            groups.setdefault(rest, set()).add(tuple(r[c] for c in ("energy_pj", "latency_ns", "area_mm2")))
        values = {r[key] for r in ok}
        if len(values) > 1 and groups and all(len(g) == 1 for g in groups.values()):
            why = (f"no scaling rule of target {base.name!r} connects it to cost (see [scaling] in "
                   f"targets/README.md)" if key in SCALED_PARAMETERS and not connected(base.data, key)
                   else "the mapping and the cost model do not depend on it")
            notes.append(f"{key}: energy, latency and area are the same at every value: {why}.")
    return notes


def _write(folder: Path, rows: list[dict], keys: list[str], meta: dict, notes: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cols = table.columns(keys)
    title = f"{', '.join(meta['models'])} on {meta['target']}"
    files = {"results.csv": table.to_csv(rows, cols), "results.json": table.to_json(rows, cols, meta),
             "pareto.svg": pareto.svg(rows, meta["mode"] is not None, title, keys),
             "sweep.md": table.to_markdown(rows, keys, meta, notes)}
    for name, text in files.items():
        with atomic_file(folder / name) as tmp:
            Path(tmp).write_text(text, encoding="utf-8", newline="\n")
