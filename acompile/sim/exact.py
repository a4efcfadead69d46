"""The exact integer product of a layer whose ADC is lossless (docs/analog.md, the exact shortcut).

With a lossless ADC and ideal reads every code sum a crossbar forms is recovered exactly,
so a layer's integer output is q_x @ q_w^T. Both factors are small integers, and a float32
GEMM computes their product exactly while every partial sum stays below 2^24: each partial
sum a GEMM forms (in whatever order it adds) is a sum of some terms x_k·w_nk, so it is at
most max|q_x| · Σ_k |q_w[n, k]| in magnitude. :func:`plan` splits K into the fewest
chunks that keep that bound below 2^24 for every output n; :func:`matmul` runs one float32
GEMM per chunk and adds the chunks in float64 (exact below 2^53, which
``numerics.product.check_exact`` guarantees). The result is the integer product itself,
whatever the shapes, so every caller agrees bit for bit with the reference kernel.
:func:`codes` quantises the inputs straight into float32 codes, a cache-sized block at a time.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from ..errors import InvalidDataError
from ..numerics.adc import adc_step
from ..numerics.encoding import EncodedWeights, float_weights
from ..numerics.product import check_exact
from ..numerics.quantise import input_range, quantize_inputs
from ..numerics.spec import F32_EXACT
from . import gemm

_BLOCK = 1 << 17            # elements quantised at a time: the float64 temporaries stay in cache
_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()    # encoding -> {(weights id, max|x|): plan}


def applies(sim, layer) -> bool:
    """Whether the simulator's fused chain computes ``layer``'s q_x @ q_w^T here (fast.mvm's exact shortcut):
    a lossless ADC read ideally, nothing captured, and inputs whose codes float32 holds."""
    spec = layer.spec
    return (sim.mode != "ideal" and not sim.noisy and sim.capture is None and spec.adc_lossless
            and adc_step(spec, layer.adc_full_scale or None) == 1.0 and spec.input_bits < 24)


def layer_codes(layer, x: np.ndarray, out: np.ndarray) -> int:
    """x quantised as ``layer``'s DAC sees it, into ``out`` as float32 codes (:func:`codes`); max |code|."""
    return codes(x, out, layer.input_scale, layer.spec.input_bits, layer.input_signed, layer.input_offset)


def layer_weights(sim, layer, group: int, xmax: int) -> tuple[np.ndarray, tuple | None]:
    """(q_w float32 (N, K), its exact K chunks for inputs up to xmax: :func:`plan`) of one group."""
    enc = sim.weights.encoded(layer, group).enc
    qf = float_weights(enc, layer.spec)[0]
    check_exact(layer.spec, qf.shape[1], layer.input_signed)
    return qf, plan(enc, qf, xmax)


def codes(x: np.ndarray, out: np.ndarray, scale: float, bits: int, signed: bool, offset: int) -> int:
    """Write ``quantize_inputs(x, ...)`` into ``out`` (same shape, float32: the codes exactly), a
    cache-sized block of x's leading axis at a time; return the largest |code|.

    The same float64 operations as quantize_inputs (x / s_x, rint, + offset, clip), so the same
    codes; raises NotFinite (an InvalidDataError), as it does, when x holds a NaN or an infinity. x is read once:
    the range of each block is taken on its rounded values while they are in cache (division and
    rounding never decrease, so they bound the block's codes as x's own extremes would), and a block
    is clipped only when they leave the range, which changes nothing else.
    """
    if x.size == 0:
        return 0
    lo, hi = input_range(bits, signed)
    rows = max(1, _BLOCK // (x.size // x.shape[0]))
    buf = np.empty((min(rows, x.shape[0]),) + x.shape[1:])
    largest = 0.0
    for r0 in range(0, x.shape[0], rows):
        q = buf[:min(rows, x.shape[0] - r0)]
        np.divide(x[r0:r0 + rows], float(scale), out=q, dtype=np.float64)
        np.rint(q, out=q)
        if offset:
            q += offset
        q_max, q_min = float(q.max()), float(q.min())
        if not (math.isfinite(q_max) and math.isfinite(q_min)):
            raise NotFinite("inputs contain NaN or infinity")      # as quantize_inputs says it
        if q_max > hi or q_min < lo:
            np.clip(q, lo, hi, out=q)
        largest = max(largest, min(q_max, hi), -max(q_min, lo))
        out[r0:r0 + rows] = q
    return int(largest)


class NotFinite(InvalidDataError):
    """The inputs :func:`codes` quantises hold a NaN or an infinity."""


def code_bound(bits: int, signed: bool) -> int:
    """The largest |code| quantize_inputs can give (a bound on every input, with any offset)."""
    lo, hi = input_range(bits, signed)
    return max(-lo, hi)


def pad_code(scale: float, bits: int, signed: bool, offset: int) -> int:
    """The code of a zero input (what a Conv's padding reads once quantised)."""
    return int(quantize_inputs(np.zeros(1, np.float32), scale, bits, signed, offset)[0])


def plan(enc: EncodedWeights, qf: np.ndarray, xmax: int) -> tuple[tuple[int, int], ...] | None:
    """K chunks (k0, k1) of the weights qf (N, K) whose products with inputs of magnitude at most
    ``xmax`` are exact in float32 (every partial sum below 2^24); None when a single product
    already leaves float32's exact range. Cached per encoding and ``xmax``.
    """
    k = qf.shape[1]
    if xmax == 0 or k == 0 or qf.shape[0] == 0:
        return ((0, k),)
    cache = _plans.setdefault(enc, {})
    key = (id(qf), xmax)
    if key not in cache:
        cache[key] = _split(qf, int((F32_EXACT - 1) // xmax))
    return cache[key]


_SPLIT_BLOCK = 64      # weight rows summed at once while a chunk grows


def _split(qf: np.ndarray, limit: int) -> tuple[tuple[int, int], ...] | None:
    """The fewest consecutive K chunks whose sum over k of |q_w[n, k]| stays at most ``limit`` for every n
    (greedy, longest first: a sub-range of a fitting chunk fits); None when one k alone passes it.

    The sums are kept for every n at once, in float64 (integers, exact), and grow by whole blocks of weight
    rows while the block's end still fits (the sums only grow, so every row inside it fits too); the block
    where a chunk ends is walked a row at a time. A cumulative sum over the whole matrix took 2-6 s for an
    8192 x 8192 layer (numpy's accumulate is no vector loop).
    """
    k = qf.shape[1]
    rows = np.abs(qf.T)                     # (K, N): contiguous rows when qf is laid out as decoded
    running = np.zeros(qf.shape[0])
    chunks, k0, i = [], 0, 0
    while i < k:
        block = rows[i:i + _SPLIT_BLOCK]
        total = running + block.sum(axis=0, dtype=np.float64)
        if total.max(initial=0.0) <= limit:
            running, i = total, i + len(block)
            continue
        for row in block:
            np.add(running, row, out=running)
            if running.max() > limit:
                running[:] = row
                if i == k0 or running.max() > limit:        # the row alone does not fit
                    return None
                chunks.append((k0, i))
                k0 = i
            i += 1
    chunks.append((k0, k))
    return tuple(chunks)


def matmul(a: np.ndarray, b: np.ndarray, chunks: tuple[tuple[int, int], ...] | None,
           out: np.ndarray | None = None, single: bool = False) -> np.ndarray:
    """a @ b for integer-valued float32 a (M, K) and b (K, N) split along K by ``chunks`` (:func:`plan`):
    float32 (in ``out`` when given) for a single chunk, float64 for several, exact either way;
    float64 GEMM for chunks None. ``single``: as for :func:`.gemm.matmul`."""
    if chunks is None:
        return a.astype(np.float64) @ b.astype(np.float64)
    if len(chunks) == 1:
        return gemm.matmul(a, b, out, single)
    y = None
    for k0, k1 in chunks:
        part = gemm.matmul(a[:, k0:k1], b[k0:k1], out, single)
        if y is None:
            y = part.astype(np.float64)
        else:
            y += part
    return y


_THREADED_ROWS = 256        # a GEMM with this many rows keeps every core busy either way round


def product(x: np.ndarray, qf: np.ndarray, chunks: tuple[tuple[int, int], ...] | None) -> np.ndarray:
    """x (V, K) @ qf.T exactly, (V, N) (a view of the result when transposed), by :func:`matmul`.

    With fewer than _THREADED_ROWS vectors, the larger of V and N is the GEMM's row dimension, which
    the GEMM threads over best; otherwise V is, and the result is C-contiguous: what follows (the
    dequantisation) then reads it in order rather than across a transpose, which cost more than the
    GEMM gained (a transformer block at batch 16: 205 -> 150 ms). The values are exact either way."""
    if qf.shape[0] >= x.shape[0] and x.shape[0] < _THREADED_ROWS:
        return matmul(qf, x.T, chunks).T
    return matmul(x, qf.T, chunks)
