"""Conv layers on the fast path: NCHW in, one GEMM per group over chunks of patches.

The input is laid out channel-major and padded, [C, B, *padded spatial] (:func:`padded`);
:func:`patches` gathers the patches of a span of images from it into [C, *K, b, *O], whose
rows follow the vectors' K order (c, k1, k2, ...), so that each group's product is one
GEMM, W_g (N, K_g) @ patches (K_g, b·pixels), with no reordering copy; a 1x1, stride-1,
unpadded Conv multiplies the laid-out input itself. :func:`nchw` views a (N, b·pixels)
result in the output's NCHW order, to be written there in one pass.

:func:`spread` runs the spans on worker threads, one per core, each with its own scratch
memory and a single-threaded GEMM: gathering, the products and writing the outputs all run
side by side (numpy and onnxruntime release the GIL), where one multi-threaded GEMM per
span would leave the copies around it on one core.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..mapping import ConvGeometry
from .vectors import fill_border, gather, interior, padded_shape

_CHUNK_ELEMS = 1 << 22  # patch elements per span of images (at least one image)
_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_POOLS: dict[int, ThreadPoolExecutor] = {}    # process id -> its worker threads


def _pool() -> ThreadPoolExecutor:
    """This process's worker threads. A forked child starts its own and leaves its parent's pool alone:
    those threads do not exist in the child, and tearing the pool down there (or in an at-fork hook,
    while another thread may hold its locks) can block for ever."""
    pool = _POOLS.get(os.getpid())
    if pool is None:
        pool = _POOLS[os.getpid()] = ThreadPoolExecutor(_WORKERS, thread_name_prefix="acompile-conv")
    return pool


def spread(work, items: list) -> None:
    """work(worker, item, single) for every item, the items dealt to the workers in turn.

    ``worker`` numbers the thread (scratch names carry it); ``single`` says that other workers
    run beside it (then its GEMMs take one core). An exception in any worker, or an interrupt
    of the caller, stops the others after their current item, then reaches the caller.
    """
    workers = min(_WORKERS, len(items))
    if workers <= 1:
        for item in items:
            work(0, item, False)
        return
    stop = threading.Event()

    def run(w):
        try:
            for item in items[w::workers]:
                if stop.is_set():
                    return
                work(w, item, True)
        except BaseException:
            stop.set()
            raise

    futures = [_pool().submit(run, w) for w in range(workers)]
    try:
        for future in futures:
            future.result()
    except BaseException:
        stop.set()
        raise


def spans(geo: ConvGeometry) -> list[tuple[int, int]]:
    """Spans of images (b0, b1) whose patches stay near ``_CHUNK_ELEMS``, at least one per worker."""
    batch = geo.input_shape[0]
    per_image = geo.input_shape[1] * math.prod(geo.kernel) * math.prod(geo.output_shape[2:])
    step = max(1, min(-(-batch // _WORKERS), _CHUNK_ELEMS // max(1, per_image)))
    return [(b0, min(batch, b0 + step)) for b0 in range(0, batch, step)]


def padded(sim, name: str, geo: ConvGeometry, batch: int, fill) -> tuple[np.ndarray, tuple[slice, ...]]:
    """A float32 [C, batch, *padded spatial] buffer (``sim.scratch`` ``name``) whose padding holds
    ``fill``, and the index of its interior, where the caller writes the input."""
    shape = (geo.input_shape[1], batch) + padded_shape(geo)
    buf = sim.scratch(name, math.prod(shape), np.float32)[:math.prod(shape)].reshape(shape)
    fill_border(buf, geo, fill)
    return buf, (slice(None), slice(None)) + interior(geo)


def pointwise(geo: ConvGeometry) -> bool:
    """Whether every output pixel reads exactly its own input pixel (no patches needed)."""
    return (math.prod(geo.kernel) == 1 and not any(geo.pads) and all(s == 1 for s in geo.strides)
            and tuple(geo.input_shape[2:]) == tuple(geo.output_shape[2:]))


def patches(sim, geo: ConvGeometry, groups: int, part: np.ndarray, worker: int) -> np.ndarray:
    """The patches (groups, K_g, b·pixels) of the padded channel-major input ``part`` [C, b, *padded]
    of b images, in worker ``worker``'s scratch memory (until its next span)."""
    channels, b = part.shape[:2]
    kernel, out_sp = tuple(geo.kernel), tuple(geo.output_shape[2:])
    m = b * math.prod(out_sp)
    if pointwise(geo):
        cols = part.reshape(channels, m)
    else:
        size = channels * math.prod(kernel) * m
        buf = sim.scratch(f"patches {worker}", size, np.float32)[:size]
        cols = gather(part, geo, buf.reshape((channels,) + kernel + (b,) + out_sp))
    return cols.reshape(groups, -1, m)


def nchw(result: np.ndarray, images: int) -> np.ndarray:
    """A GEMM result (N, images·pixels) viewed as (images, N, pixels)."""
    return result.reshape(result.shape[0], images, -1).transpose(1, 0, 2)
