"""Process pools of a worker per core (``check --jobs``, ``sweep --jobs``), each worker's BLAS on one thread.

A worker per core leaves no core for a worker's own BLAS threads (nor for the simulator's worker threads,
one per BLAS thread): they only contended for the cores and spun while idle, and a 6-point sweep with data
ran at 12 points/s on 2 cores, 26 with one BLAS thread a worker. On Linux the workers are forked (they
inherit the caller's imports) and inherit the limit the caller holds while the pool lives: set inside a
forked worker, OpenBLAS first waits about 60 ms for the parent's threads, which the worker does not have.
Elsewhere they are spawned and set it as they start.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor


def one_blas_thread():
    """BLAS on one thread until the returned context is left (threadpoolctl; nothing without it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


@contextlib.contextmanager
def process_pool(workers: int, initializer=None, method: str | None = None):
    """A ``ProcessPoolExecutor`` of ``workers`` processes, ``initializer()`` run in each as it starts;
    shut down on leaving, the tasks not yet started cancelled (Ctrl-C, SIGTERM, an error). ``method``:
    "fork" or "spawn" (default: fork on Linux, where it is safe and cheap)."""
    method = method or ("fork" if sys.platform.startswith("linux") else "spawn")
    with one_blas_thread():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                                   initializer=_start, initargs=(initializer, method != "fork"))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _start(initializer, limit: bool) -> None:
    if limit:       # a spawned worker: its own BLAS, with its own thread count until now
        one_blas_thread()
    if initializer is not None:
        initializer()
