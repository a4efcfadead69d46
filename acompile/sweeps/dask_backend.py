"""Sweeps and checks on a Dask distributed cluster (``--scheduler tcp://HOST:8786``).

Work travels as bytes: each task carries the model, data and resolved target,
so workers need no shared file system, only ``pip install "acompile[distributed]"``.
Results stream back as they finish; a task whose worker dies is resubmitted
(``retries``) to another worker. Start a cluster with ``dask scheduler`` on one
machine and ``dask worker tcp://HOST:8786`` on each of the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError, clean

RETRIES = 3    # a point is lost only if this many workers die while running it


def _client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--scheduler needs the Dask distributed package",
                         hint='pip install "acompile[distributed]"') from None
    try:
        return Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise UsageError(f"cannot reach the Dask scheduler at {clean(address)} ({type(e).__name__})",
                         hint="start one with 'dask scheduler' and give its tcp://HOST:PORT") from None


def run_on_cluster(tasks: list[dict], address: str) -> Iterator[tuple[int, dict]]:
    """(index, measured columns) for each task, in the order they finish on the cluster."""
    from distributed import as_completed
    from .run import run_row
    if not tasks:
        return
    client = _client(address)
    try:
        shared = {}
        for key in ("model", "data", "labels"):       # each distinct blob travels once, not once per task
            for blob in {id(t[key]): t[key] for t in tasks if t.get(key) is not None}.values():
                shared[id(blob)] = client.scatter(blob, broadcast=False, hash=True)
        futures = {}
        for i, task in enumerate(tasks):
            sent = {k: (shared[id(v)] if k in ("model", "data", "labels") and v is not None else v)
                    for k, v in task.items()}
            futures[client.submit(run_row, sent, retries=RETRIES, pure=False)] = i
        with client.as_current():
            done = as_completed(list(futures))
        for fut in done:
            i = futures[fut]
            try:
                result = fut.result()
            except Exception as e:     # every retry failed (workers kept dying)
                result = {"status": f"error: the cluster could not run this row: {clean(str(e), 200)}"}
            yield i, result
    finally:
        client.close()


def _check_bytes(blob: bytes, name: str, job, settings) -> dict:
    """Worker side of ``check --scheduler``: the model arrives as bytes."""
    import tempfile
    from dataclasses import replace
    from ..check.verdict import check_pair
    with tempfile.TemporaryDirectory(prefix="acompile-check-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(blob)
        return check_pair(replace(job, path=str(path)), settings)


def run_checks_on_cluster(jobs: list, settings, address: str) -> list[dict]:
    """``acompile check`` on the cluster: results in ``jobs`` order, as the local pool gives them.

    Pairs known to fail before checking (unreadable files, ...) are answered here, as locally.
    """
    from ..check.verdict import _error, check_pair
    from ..errors import EXIT_INTERNAL
    client = _client(address)
    try:
        pending = []
        for job in jobs:
            blob = None
            if job.error is None and job.path is not None:
                try:
                    blob = Path(job.path).read_bytes()
                except OSError:
                    blob = None
            pending.append(None if blob is None else client.submit(_check_bytes, blob, Path(job.path).name, job,
                                                                   settings, retries=RETRIES, pure=False))
        results = []
        for job, fut in zip(jobs, pending):
            if fut is None:
                results.append(check_pair(job, settings))
                continue
            try:
                results.append(fut.result())
            except Exception as e:
                results.append(_error(job, "internal", EXIT_INTERNAL,
                                      f"{job.model}: the cluster could not check it: {type(e).__name__}"))
        return results
    finally:
        client.close()
