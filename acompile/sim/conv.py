"""Conv layers on the fast path: NCHW in, one GEMM per group over chunks of patches.

The input is laid out channel-major and padded, [C, B, *padded spatial] (:func:`padded`);
:func:`patches` gathers the patches of a span of images from it into [C, *K, b, *O], whose
rows follow the vectors' K order (c, k1, k2, ...), so that each group's product is one
GEMM, W_g (N, K_g) @ patches (K_g, b·pixels), with no reordering copy; a 1x1, stride-1,
unpadded Conv multiplies the laid-out input itself. :func:`nchw` views a (N, b·pixels)
result in the output's NCHW order, to be written there in one pass. Layers with large images
(:func:`direct`) instead run one GEMM per image, (N, K_g) @ (K_g, pixels), straight into the
output (a pointwise Conv reads the image itself). :func:`ideal` is the ideal-mode Conv: the
bias, then the Add and Relu that ``chain.fuse_epilogue`` hands it, applied by each worker to
the part it has just written.

:func:`spread` runs the spans on worker threads, one per core, each with its own scratch
memory and a single-threaded GEMM: gathering, the products and writing the outputs all run
side by side (numpy and onnxruntime release the GIL), where one multi-threaded GEMM per
span would leave the copies around it on one core.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from ..limits import usable_cores
from ..mapping import AnalogLayer, ConvGeometry
from . import gemm
from .vectors import fill_border, gather, interior, padded_shape

_CHUNK_ELEMS = 1 << 22  # patch elements per span of images (at least one image)
# from this many output pixels per image, one GEMM per image writing the output in place beats one per
# span followed by a reordering copy (ResNet-50's 56x56 and 28x28 stages, measured on 2 cores)
_DIRECT_PIXELS = 512
_SPANS_PER_WORKER = 4   # small enough for a late worker to catch up, large enough for efficient GEMMs
_WORKERS = usable_cores()


_POOLS: dict = {}    # process id -> its worker threads (a ThreadPoolExecutor)


def _pool():
    """This process's worker threads. A forked child starts its own and leaves its parent's pool alone:
    those threads do not exist in the child, and tearing the pool down there (or in an at-fork hook,
    while another thread may hold its locks) can block for ever. concurrent.futures is imported by the
    first call: a simulation that never spreads a convolution (a transformer's calibration) never pays it."""
    pool = _POOLS.get(os.getpid())
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor
        pool = _POOLS[os.getpid()] = ThreadPoolExecutor(_WORKERS, thread_name_prefix="acompile-conv")
    return pool


def spread(work, items: list) -> None:
    """work(worker, item, single) for every item, each worker taking the next item when it is free.

    ``worker`` numbers the thread (scratch names carry it); ``single`` says that other workers
    run beside it (then its GEMMs take one core). Items are taken, not dealt in advance, so that a
    worker slowed by another process on its core holds up a few items, not half of them. An
    exception in any worker, or an interrupt of the caller, stops the others after their current
    item, then reaches the caller.
    """
    workers = min(_WORKERS, len(items))
    if workers <= 1:
        for item in items:
            work(0, item, False)
        return
    stop = threading.Event()
    queue = iter(items)
    lock = threading.Lock()

    def run(w):
        try:
            while not stop.is_set():
                with lock:
                    item = next(queue, None)
                if item is None:
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
    """Spans of images (b0, b1) whose patches stay near ``_CHUNK_ELEMS``, ``_SPANS_PER_WORKER`` per
    worker when the batch allows."""
    batch = geo.input_shape[0]
    per_image = geo.input_shape[1] * math.prod(geo.kernel) * math.prod(geo.output_shape[2:])
    step = max(1, min(-(-batch // (_WORKERS * _SPANS_PER_WORKER)), _CHUNK_ELEMS // max(1, per_image)))
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


def direct(geo: ConvGeometry) -> bool:
    """Whether each image's products go straight into the output (:func:`image_patches`)."""
    return math.prod(geo.output_shape[2:]) >= _DIRECT_PIXELS


def image_patches(sim, geo: ConvGeometry, groups: int, x: np.ndarray, image: int, worker: int) -> np.ndarray:
    """The patches (groups, K_g, pixels) of one image of the NCHW input ``x``: the image itself for a
    pointwise Conv, else gathered from a padded copy in worker ``worker``'s scratch memory."""
    if pointwise(geo):
        return x[image].reshape(groups, -1, math.prod(geo.output_shape[2:]))
    part, inner = padded(sim, f"conv input {worker}", geo, 1, 0.0)
    part[inner] = x[image:image + 1].swapaxes(0, 1)
    return patches(sim, geo, groups, part, worker)


def nchw(result: np.ndarray, images: int) -> np.ndarray:
    """A GEMM result (N, images·pixels) viewed as (images, N, pixels)."""
    return result.reshape(result.shape[0], images, -1).transpose(1, 0, 2)


def group_bias(bias: np.ndarray, groups: int, n_out: int) -> np.ndarray:
    """The bias as (groups, N, 1), to add to a group's (images, N, pixels) outputs."""
    return np.broadcast_to(np.asarray(bias).reshape(-1), (groups * n_out,)).reshape(groups, n_out, 1)


def ideal(sim, layer: AnalogLayer, x: np.ndarray, bias: np.ndarray, geo: ConvGeometry, after: tuple = (),
          operands=()) -> tuple[np.ndarray, bool]:
    """Ideal-mode Conv with its bias, as float32 GEMMs over patches, written in the output's layout:
    the same products as the vector path (im2col -> GEMM -> from_vectors, which calibration's
    captures use), summed by a differently shaped GEMM: equal up to float32 rounding.
    The nodes ``after`` it (chain.FusedChain.epilogue) run on each part as it is written when numpy
    computes them as onnxruntime does (float32 operands of the output's shape): then the second
    value returned is True, else the caller runs them.
    """
    groups, n_out = layer.groups, layer.matrices[0].n_out
    y = sim.take((x.shape[0], groups * n_out) + tuple(geo.output_shape[2:]))
    yv = y.reshape(x.shape[0], groups, n_out, -1)
    b = group_bias(bias, groups, n_out)
    weights = [sim.weights.float_matrix(layer, g).astype(np.float32, copy=False) for g in range(groups)]
    inline = inline_epilogue(after, operands, y)
    parts = [None if o is None else o.reshape(yv.shape) for o in inline or ()]     # [] when not inline
    # as onnxruntime's Conv for run's reference (gemm.follows_model): a product per image (the image's
    # pixels set the kernel's blocks of K when they are few), on one thread
    as_onnxruntime = gemm.follows_model(layer)
    whole = direct(geo) or as_onnxruntime

    def work(worker, span, single):
        b0, b1 = span
        single = single or as_onnxruntime
        if whole:           # one image at a time, each product written in place: no reordering copy
            for i in range(b0, b1):
                cols = image_patches(sim, geo, groups, x, i, worker)
                for g in range(groups):
                    gemm.matmul(weights[g], cols[g], yv[i, g], single, as_onnxruntime)
            dst = yv[b0:b1]
            np.add(dst, b, out=dst, dtype=np.result_type(y, b), casting="unsafe")
            epilogue(after, dst, [None if o is None else o[b0:b1] for o in parts])
            return
        part, inner = padded(sim, f"conv input {worker}", geo, b1 - b0, 0.0)
        part[inner] = x[b0:b1].swapaxes(0, 1)
        cols = patches(sim, geo, groups, part, worker)
        size = n_out * cols.shape[2]
        for g in range(groups):
            r = gemm.matmul(weights[g], cols[g], sim.scratch(f"conv product {worker}", size, np.float32)[:size]
                            .reshape(n_out, -1), single, as_onnxruntime)
            dst = yv[b0:b1, g]
            np.add(nchw(r, b1 - b0), b[g], out=dst, dtype=np.result_type(y, b), casting="unsafe")
            epilogue(after, dst, [None if o is None else o[b0:b1, g] for o in parts])

    spread(work, spans(geo))
    return y, inline is not None


def epilogue(after: tuple, dst: np.ndarray, others: list) -> None:
    """The nodes ``after`` a chain applied to ``dst`` in place, ``others`` their operands' matching parts
    (None for Relu); nothing when the list is empty (not inline)."""
    for (node, slot), other in zip(after, others):
        if other is None:       # Relu as onnxruntime computes it: NaN and -0.0 kept
            np.maximum(_ZERO, dst, out=dst)
        elif slot == 0:
            np.add(dst, other, out=dst)
        else:
            np.add(other, dst, out=dst)


_ZERO = np.float32(0.0)


def inline_epilogue(after: tuple, operands, y: np.ndarray) -> list | None:
    """Per node ``after`` the chain, its other operand (None for Relu), when all of them are float32
    arrays of y's shape (no broadcasting, no type promotion); else None."""
    rest, out = iter(operands), []
    for node, _ in after:
        if node.op_type == "Relu":
            out.append(None)
            continue
        other = next(rest)
        if not isinstance(other, np.ndarray) or other.dtype != np.float32 or other.shape != y.shape:
            return None
        out.append(other)
    return out


def transposed_products(sim, layer: AnalogLayer, x: np.ndarray) -> np.ndarray:
    """A quantized model's ideal-mode ConvTranspose before its col2im: the [B·pixels, G, N] products as
    onnxruntime's ConvTranspose computes them for run's reference (gemm.follows_model): per image and
    group, W_g^T (N, K_g, its weight read transposed) times the image's channels (K_g, pixels), on one
    thread; vectors.col2im then adds the kernel's positions in onnxruntime's order."""
    groups, n = layer.groups, layer.matrices[0].n_out
    batch, channels = x.shape[:2]
    pixels, k = math.prod(x.shape[2:]), channels // groups
    out = np.empty((batch, pixels, groups, n), np.float32)
    weights = [np.ascontiguousarray(sim.weights.float_matrix(layer, g).T, dtype=np.float32).T for g in range(groups)]
    for i in range(batch):
        image = np.ascontiguousarray(x[i], dtype=np.float32).reshape(channels, pixels)
        for g in range(groups):
            out[i, :, g, :] = gemm.matmul(weights[g], image[g * k:(g + 1) * k], single=True, as_onnxruntime=True).T
    return out.reshape(batch * pixels, groups, n)
