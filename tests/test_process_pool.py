"""acompile.process_pool: a worker per core, each worker's BLAS on one thread, the caller's own back after."""

import pytest

from acompile import process_pool
from helpers import blas_threads

pytest.importorskip("threadpoolctl")


def _started() -> None:
    global STARTED
    STARTED = True


STARTED = False


def _was_started(_=None) -> bool:
    return STARTED


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_run_their_blas_on_one_thread_and_their_initializer(method):
    """Forked workers inherit the limit the caller holds while the pool lives; spawned ones set it as they
    start; either way the initializer runs in each, and the caller's thread count comes back."""
    import numpy  # noqa: F401 -- BLAS loaded in the caller, as in check and sweep
    before = blas_threads()
    with process_pool.process_pool(2, _started, method) as pool:
        assert list(pool.map(blas_threads, range(3))) == [1, 1, 1]
        assert all(pool.map(_was_started, range(2)))
    assert blas_threads() == before and not STARTED
