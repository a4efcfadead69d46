"""The fast executor of an analog layer's matrix-vector product (docs/analog.md).

Stacked float32 GEMMs over row blocks (several input cycles per GEMM row when the cells
hold integer levels), the ADC applied in place on cache-sized read blocks, shift-and-add
by a small matmul, an exact integer shortcut when the ADC is lossless, and large calls
spread over worker threads with one single-threaded BLAS each.
In quantised mode it agrees bit for bit with :mod:`acompile.sim.reference`: every read
current is an integer carried exactly in float32, every ADC code is an integer, and codes
are summed exactly before the single final multiplication by the ADC step.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

from ..errors import InvalidDataError
from ..numerics.adc import adc_codes, make_adc
from ..numerics.dac import cycle_weights, fill_chunks
from ..numerics.encoding import EncodedWeights, float_weights
from ..numerics.noise import ColumnErrors, NoiseSpec, generator, read_noise_sigma
from ..numerics.normals import add_normal
from ..numerics.product import cell_leak, check_cells, coefficients, finish, prepare, reads_exactly
from ..numerics.spec import F32_EXACT, F64_EXACT, AnalogSpec
from .exact import plan as exact_plan
from .exact import product as exact_product

# Blocking: one read block is (T * vector chunk) x (column chunk) values, kept small
# enough to stay in cache while the ADC runs over it in place.
_STACKED_ROWS = 1024  # at most this many (cycle, vector) rows per GEMM
# 2^18 float32 (1 MiB, the L2 cache of the 2-core benchmark machine) measured fastest on the
# 4096x4096 lossy layer: 2^20 spent 10-20% more on the ADC's passes, 2^16 more on small GEMMs.
_BLOCK_ELEMS = 1 << 18  # read-block and converted-cell-block size, in elements
_PARALLEL_FLOPS = 2e8  # below this much GEMM work a call runs serially


def _plan(v: int, t: int, p_data: int, cpc: int, rows: int,
          ref: int | None) -> list[tuple[int, int, int, int]]:
    """Tasks (v0, v1, p0, p1) of the fast path, vector chunk major.

    A task is T*(v1-v0) stacked (cycle, vector) rows by a chunk of whole channels' columns
    (the offset scheme's reference column is a task of its own), sized to stay in cache.
    """
    vc = max(1, min(v, _STACKED_ROWS // t))
    pc = min(_BLOCK_ELEMS // (t * vc), _BLOCK_ELEMS // min(rows, 1 << 12))
    pc = max(cpc, pc // cpc * cpc)
    ranges = [(p0, min(p_data, p0 + pc)) for p0 in range(0, p_data, pc)]
    if ref is not None:
        ranges.append((ref, ref + 1))
    return [(v0, min(v, v0 + vc), p0, p1) for v0 in range(0, v, vc) for p0, p1 in ranges]


def _scratch(store: dict, name: str, size: int, dtype) -> np.ndarray:
    """A reusable flat buffer of at least `size` elements (fresh memory is slow to fault in)."""
    buf = store.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = store[name] = np.empty(size, dtype=dtype)
    return buf[:size]


def _packing(spec: AnalogSpec, t: int) -> tuple[int, float]:
    """(f, base): input cycles that share one GEMM row when the cells hold integer levels.

    Every read is then an integer in [0, rows * (2^d - 1) * (2^cb - 1)], below base (a power
    of two), so the inputs of f cycles weighted base^j read Σ_j base^j I_j at once; f is the
    most cycles for which that sum, hence every partial sum, stays exact in the read dtype.
    """
    top = float(spec.rows * spec.max_chunk * spec.max_level)
    base = 2.0 ** math.ceil(math.log2(top + 1))
    exact = F32_EXACT if spec.read_dtype == np.float32 else F64_EXACT
    f = 1
    while f < t and top * (base ** (f + 1) - 1) / (base - 1) < exact:
        f += 1
    return f, base


def _unpack(packed: np.ndarray, out: np.ndarray, f: int, base: float) -> None:
    """Write the reads I_j of packed = Σ_j base^j I_j (G * m, pc) into the j-th of f slabs of
    out (f * G * m, pc); destroys packed. Exact: powers of two scale, floor and subtract
    integers within the read dtype's exact range."""
    dt = out.dtype.type
    fields = out.reshape(f, packed.shape[0], packed.shape[1])
    rem = packed
    for j in range(f - 1, 0, -1):
        hi, low = fields[j], fields[j - 1]
        np.multiply(rem, dt(base ** -j), out=hi)
        np.floor(hi, out=hi)
        np.multiply(hi, dt(base ** j), out=low)
        np.subtract(rem, low, out=low if j == 1 else rem)


def _task_reads(x: np.ndarray, g: np.ndarray, spec: AnalogSpec, signed: bool, task, store: dict,
                ref: int | None = None, gain: np.ndarray | None = None, levels: bool = False,
                leak: float = 0.0):
    """Yield (r, I) for row block r = 0, 1, ... of one task: I = chunks @ g[rows of r, p0:p1].

    I is (T * (v1-v0), p1-p0), row t*(v1-v0) + v holding vector v0+v at cycle t; it lives
    in `store`'s scratch memory and is overwritten by the next block. ``gain`` (row blocks,
    P, read dtype) multiplies each column's read; with ``ref`` (analog offset subtraction)
    each channel's top slice is then read less the reference column ``ref``. When g is the
    encoding's levels (``levels``: checked integers up to 2^cb - 1), several cycles share
    each GEMM row (:func:`_packing`), which halves the GEMM work or better; ``leak`` (g_min in
    level units) then adds leak * Σ x over the block's rows to each of its reads, before the gain.
    """
    v0, v1, p0, p1 = task
    k = x.shape[1]
    dt = spec.read_dtype
    rows = spec.rows
    t, m = spec.cycles(signed), v1 - v0
    f, base = _packing(spec, t) if levels else (1, 1.0)
    groups = -(-t // f)
    if store.get("chunks of") != (v0, v1, f, leak):  # tasks come vector chunk major: reuse
        xc = _scratch(store, "chunks", t * m * k, dt).reshape(t * m, k)
        fill_chunks(x[v0:v1], spec, signed, xc.reshape(t, m, k))
        xp = xc
        if f > 1:  # group q's input: Σ_j base^j chunk of cycle q + j*G, small integers (exact)
            xp = _scratch(store, "packed chunks", groups * m * k, dt).reshape(groups * m, k)
            np.copyto(xp, xc[:groups * m])
            for j in range(1, f):
                part = xc[j * groups * m:(j + 1) * groups * m]
                xp[:len(part)] += part * dt(base ** j)
        sums = None
        if leak:  # each (cycle, vector)'s input sum over each row block: small integers (exact)
            sums = np.add.reduceat(xc, np.arange(0, k, rows), axis=1) if k else np.zeros((t * m, 0), dt)
            sums *= dt(leak)
        store["chunks of"], store["chunks view"] = (v0, v1, f, leak), (xc, xp, sums)
    xc, xp, sums = store["chunks view"]
    pc = p1 - p0
    out = _scratch(store, "read", groups * f * m * pc, dt).reshape(groups * f * m, pc)
    packed = out if f == 1 else _scratch(store, "packed read", groups * m * pc, dt).reshape(groups * m, pc)
    reads = out[:t * m]  # cycle c at rows c*m: field c // G of group c % G; rows past it are empty
    for r in range(spec.row_blocks(k)):
        k0, k1 = r * rows, min(k, (r + 1) * rows)
        if g.dtype == dt:
            gb = g[k0:k1, p0:p1]
        else:  # levels (uint8) or cells of another dtype: convert one row block at a time
            gb = _scratch(store, "cells", (k1 - k0) * pc, dt).reshape(k1 - k0, pc)
            np.copyto(gb, g[k0:k1, p0:p1])
        np.matmul(xp[:, k0:k1], gb, out=packed)
        if f > 1:
            _unpack(packed, out, f, base)
        if leak:
            reads += sums[:, r:r + 1]
        if gain is not None:
            reads *= gain[r, p0:p1]
        if ref is not None:
            i_ref = xc[:, k0:k1] @ g[k0:k1, ref].astype(dt)
            if leak:
                i_ref += sums[:, r]
            if gain is not None:
                i_ref *= gain[r, ref]
            reads[:, spec.slices - 1::spec.columns_per_channel] -= i_ref[:, None]
        yield r, reads


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS (created once, after numpy loaded it), which lets the fast path
    run one single-threaded BLAS per worker thread; None without threadpoolctl (the path then runs serially
    on threaded BLAS). Imported here, by the first call large enough to want it: 2 ms a calibrating compile
    need not pay."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController().select(user_api="blas")


_parallel_lock = threading.Lock()  # one parallel call at a time: BLAS limits are process-wide


def _run_tasks(work, tasks: list, flops: float) -> list:
    """work(index, task, scratch) for every task, results in task order.

    Large calls run in worker threads, one per BLAS thread the process allows, each
    with a single-threaded BLAS: no synchronisation inside the small GEMMs, and the ADC's
    elementwise work runs in parallel too. Every task writes its own slice of the output.
    """
    ctl = _blas_controller() if flops >= _PARALLEL_FLOPS and len(tasks) > 1 else None
    workers = min(len(tasks), max((lib["num_threads"] for lib in ctl.info()), default=1)) if ctl else 1
    if workers <= 1:
        store: dict = {}
        return [work(i, task, store) for i, task in enumerate(tasks)]
    local = threading.local()

    def run(i):
        if not hasattr(local, "store"):
            local.store = {}
        return work(i, tasks[i], local.store)

    from concurrent.futures import ThreadPoolExecutor   # here: a call too small for threads never imports it
    with _parallel_lock, ctl.limit(limits=1), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(len(tasks))))


def _exact_product(x: np.ndarray, enc: EncodedWeights, spec: AnalogSpec) -> np.ndarray:
    """q_x @ q_w^T exactly, as float64: float32 GEMMs over the K chunks of :func:`.exact.plan`."""
    qf = float_weights(enc, spec)[0]
    chunks = exact_plan(enc, qf, int(np.abs(x).max()) if x.size else 0)
    if chunks is None:  # products alone leave float32's exact range
        return x.astype(np.float64) @ qf.T.astype(np.float64)
    return np.ascontiguousarray(exact_product(x.astype(np.float32), qf, chunks), dtype=np.float64)


def mvm(x_q: np.ndarray, enc: EncodedWeights, spec: AnalogSpec, signed: bool, *,
        full_scale: float | None = None, cells: np.ndarray | None = None,
        noise: NoiseSpec | None = None, rng=None, columns: ColumnErrors | None = None,
        exact_shortcut: bool = True) -> np.ndarray:
    """Integer layer output y_int (V, N), float64, for quantised inputs x_q (V, K). Fast path.

    full_scale: the ADC's F (None: worst case). cells: effective conductances from
    program_cells (None: the levels, g_min's leak added to every read when noise has one).
    noise: read-time effects (read and kT/C noise, ADC offset and gain error). columns: the
    chip's column gains and ADC offsets, from ``numerics.noise.column_errors``. Read noise: rng
    draws one seed per task (integers(0, 2^63, size=tasks), tasks in _plan order); a task's own
    generator then adds σ * N(0, 1) to each row block's (T * vectors, columns) reads with
    ``numerics.normals.add_normal``, σ from ``read_noise_sigma``. With analog offset
    subtraction the reference column is read with every task, less each top slice, and is
    never converted.
    When the ADC is lossless and nothing is noisy, exact_shortcut returns q_x @ q_w^T
    directly, which is what the full computation gives.
    """
    x, info = prepare(x_q, enc, spec, signed)
    cells = check_cells(cells, enc, noise)
    leak = cell_leak(cells, spec, noise)
    exact = reads_exactly(cells, leak, noise)
    adc = make_adc(spec, full_scale, noise, exact_reads=exact)
    lossless = adc.step == 1.0 and spec.max_code >= spec.worst_case_full_scale
    if exact_shortcut and lossless and exact:
        return _exact_product(x, enc, spec)
    if not info["canonical"]:
        raise InvalidDataError("the fast path needs the canonical column layout of encode_weights",
                               hint="use acompile.sim.reference.mvm_reference for other layouts")
    v, k = x.shape
    n, cpc, t = info["n_out"], spec.columns_per_channel, spec.cycles(signed)
    nb = spec.row_blocks(k)
    p_data = n * cpc
    analog_ref = info["ref"] if spec.analog_offset else None
    tasks = _plan(v, t, p_data, cpc, spec.rows, None if spec.analog_offset else info["ref"])
    g = enc.levels if cells is None else cells

    noise_sigma = read_noise_sigma(spec, noise, full_scale)
    seeds = [None] * len(tasks)
    if noise_sigma:
        seeds = generator(rng, "read noise").integers(0, 2**63, size=len(tasks)).tolist()
    gain = own = None
    if columns is not None:
        gain = None if columns.gain is None else columns.gain.astype(spec.read_dtype)
        own = None if columns.offset_lsb is None else columns.offset_lsb.astype(spec.read_dtype)

    cyc = np.array(cycle_weights(spec, signed))
    acc_dt = np.float32 if nb * spec.max_code < F32_EXACT else np.float64
    sum_f32 = acc_dt == np.float32 and np.abs(cyc).sum() * nb * spec.max_code < F32_EXACT
    cyc_acc = cyc.astype(np.float32) if sum_f32 else cyc
    coef = coefficients(spec)
    y = np.zeros((v, n))
    ref = np.zeros(v)
    flip = enc.flip

    def work(index, task, store):
        v0, v1, p0, p1 = task
        gen = None if seeds[index] is None else np.random.default_rng(seeds[index])
        acc = None
        for r, i in _task_reads(x, g, spec, signed, task, store, analog_ref, gain, levels=cells is None,
                                leak=leak):
            if gen is not None:
                add_normal(i, noise_sigma, gen)
            adc_codes(i, adc, None if own is None else own[r, p0:p1])
            if flip is not None and flip[r, p0:p1].any():     # flipped columns enter negated
                i[:, flip[r, p0:p1]] *= -1
            if r == 0:
                acc = _scratch(store, "acc", i.size, acc_dt).reshape(i.shape)
                np.copyto(acc, i)
            else:
                np.add(acc, i, out=acc)
        m = v1 - v0
        per_col = cyc_acc @ acc.reshape(t, m * (p1 - p0))  # Σ_t w_t Σ_r code, exact
        if p0 == p_data:  # the reference column
            ref[v0:v1] = per_col
        else:  # shift and add each channel's slices and signs
            per_col = per_col.astype(np.float64).reshape(m, (p1 - p0) // cpc, cpc)
            y[v0:v1, p0 // cpc: p1 // cpc] = per_col @ coef

    _run_tasks(work, tasks, flops=2.0 * t * v * k * enc.levels.shape[1])
    if spec.reference_column and not spec.analog_offset:
        y -= spec.offset * ref[:, None]
    return finish(y, adc.step, x, enc, spec, info)


def observe_full_scale(x_q: np.ndarray, enc: EncodedWeights, spec: AnalogSpec, signed: bool,
                       percentile: float) -> float:
    """Calibrated ADC full scale: the percentile of every ideal read current I.

    Every (vector, row block, cycle, physical column) read counts, zeros and the reference
    column included; with analog offset subtraction, the magnitudes of what the ADCs see
    (top slices less the reference, no reference column). The percentile interpolates
    linearly between order statistics, as numpy.percentile does; the result is at least 1.
    """
    q = float(percentile)
    if not 0 <= q <= 100:
        raise InvalidDataError(f"percentile {percentile!r}: expected a value in [0, 100]")
    x, info = prepare(x_q, enc, spec, signed)
    if x.size == 0:
        return 1.0
    v, k = x.shape
    p = enc.levels.shape[1]
    t = spec.cycles(signed)
    analog_ref = info["ref"] if spec.analog_offset else None
    if analog_ref is not None and not info["canonical"]:
        raise InvalidDataError("analog offset subtraction needs the canonical column layout of encode_weights")
    if analog_ref is None:
        tasks = _plan(v, t, p, 1, spec.rows, None)
    else:
        tasks = _plan(v, t, p - 1, spec.columns_per_channel, spec.rows, None)

    def work(index, task, store):
        counts = np.zeros(0, dtype=np.int64)
        for _, i in _task_reads(x, enc.levels, spec, signed, task, store, analog_ref, levels=True):
            whole = _scratch(store, "whole", i.size, np.intp)
            # exact: I is an integer
            np.copyto(whole.reshape(i.shape), i if analog_ref is None else np.abs(i), casting="unsafe")
            c = np.bincount(whole)
            if c.size > counts.size:
                c[: counts.size] += counts
                counts = c
            else:
                counts[: c.size] += c
        return counts

    parts = _run_tasks(work, tasks, flops=2.0 * t * v * k * p)
    counts = np.zeros(max(c.size for c in parts), dtype=np.int64)  # nothing is read beyond them
    for c in parts:
        counts[: c.size] += c
    cum = np.cumsum(counts)
    h = (cum[-1] - 1) * q / 100.0
    lo = math.floor(h)
    a = int(np.searchsorted(cum, lo, side="right"))
    b = int(np.searchsorted(cum, min(lo + 1, cum[-1] - 1), side="right"))
    return max(1.0, a + (h - lo) * (b - a))
