"""The cells of ``levels.bin``: each row stripe of a weight matrix quantised, encoded and packed block by
block, vectorised over the stripe.

The bytes are, by definition, ``pack_levels`` applied to each block of
``numerics.encode_weights(q_w).levels`` (flip marks included; docs/formats.md); here they come
straight from the weights' magnitudes where a channel's slices fill whole bytes, so a ResNet-50's
25 M weights pack in a fraction of a second.
"""

from __future__ import annotations

import functools
from collections import namedtuple

import numpy as np

from .. import numerics
from ..numerics.encoding import pack_levels


TRANSPOSE_TILE_BYTES = 1 << 15    # of magnitudes transposed at once (_transposed)

Stripe = namedtuple("Stripe", ("row_start", "rows", "col_starts", "cols", "count"), defaults=(1,))
Stripe.__doc__ = """``count`` row blocks of a matrix, ``rows`` rows each from ``row_start`` on, laid out alike: the first
physical column and width of each of their blocks, in the mapping's order (lists). Row blocks alike are
encoded together: a narrow layer's row block is a few thousand weights, fewer than one numpy pass costs."""


def stripe_cells(task) -> tuple[Stripe, list[int], list, np.ndarray | None]:
    """(the stripe, its blocks' packed sizes, arrays holding their packed cells in order, flip marks) of one
    :class:`Stripe`, its row blocks one after the other; the flip marks (count * P,) only for the "flipped"
    scheme (each row block flips as the whole matrix does).

    The stripe's weights are quantised and, when every channel's slices fill whole bytes, packed
    straight from the magnitudes (:func:`_packed_rows`); a run of such blocks side by side is
    reordered block-major in one copy. Blocks that do not start and end on a byte boundary (the
    offset scheme's reference column, odd cell widths) are packed from their cell levels
    (:func:`_levels`) by ``pack_levels``. Either way the bytes are those of ``pack_levels`` applied
    to the block of ``numerics.encode_weights(q_w).levels``.
    """
    w, s_w, layer, stripe = task
    spec = layer.spec
    cb = spec.cell_bits
    r0, rows, starts, widths, count = stripe
    height = rows * count
    # (N, height); a matrix of integers is the model's own q_w already (device._model_integers), read in its own
    # type: an int8 model's cells come straight from its int8 weights, not from a copy widened to int32
    q = w[:, r0:r0 + height] if w.dtype.kind == "i" else layer.quantize(w[:, r0:r0 + height], s_w)
    # Flip marks are column sums of cells: read from the packed bytes when cells do not straddle them.
    packed = _packed_rows(q, spec) if not spec.flipped or 8 % cb == 0 else None
    data_cols = w.shape[0] * spec.columns_per_channel if packed is not None else 0
    levels = _levels(q, spec, 0, spec.physical_columns(w.shape[0])) if packed is None else None
    flip = _flip(packed, levels, q, spec, count) if spec.flipped else None      # (count, P)

    runs = []   # per run of blocks: (count, its bytes in one row block)
    for i, j, aligned in _runs(tuple(starts), tuple(widths), data_cols, cb):
        if aligned:
            a, per = starts[i] * cb // 8, widths[i] * cb // 8
            run = packed[:, a:a + (j - i) * per].reshape(count, rows, j - i, per).transpose(0, 2, 1, 3)
            runs.append((np.ascontiguousarray(run).reshape(count, -1), [rows * per] * (j - i)))
            continue
        c0, c1 = starts[i], starts[i] + widths[i]
        cells = levels[:, c0:c1] if levels is not None else _levels(q, spec, c0, c1)
        if flip is not None and levels is None:
            cells.reshape(count, rows, -1)[...] ^= flip[:, None, c0:c1].astype(np.uint8) * np.uint8(spec.max_level)
        run = [pack_levels(cells[k * rows:(k + 1) * rows], cb) for k in range(count)]
        runs.append((run, [len(run[0])]))
    sizes = [size for _, run_sizes in runs for size in run_sizes] * count
    pieces = [runs[0][0].reshape(-1)] if len(runs) == 1 and isinstance(runs[0][0], np.ndarray) else \
        [run[k] for k in range(count) for run, _ in runs]
    return stripe, sizes, pieces, flip.reshape(-1) if flip is not None else None


@functools.lru_cache(maxsize=256)
def _runs(starts: tuple, widths: tuple, data_cols: int, cb: int) -> tuple:
    """Spans (i, j, aligned) of a stripe's blocks in order: a run of equal, adjacent blocks that all start and
    end on a byte boundary within the ``data_cols`` packed columns (aligned), packed block-major in one copy, or
    a single block. Cached: a matrix's row stripes have the same blocks."""
    def aligned(i: int) -> bool:
        return starts[i] + widths[i] <= data_cols and starts[i] * cb % 8 == 0 and widths[i] * cb % 8 == 0

    out, i = [], 0
    while i < len(starts):
        j = i + 1
        if aligned(i):
            while j < len(starts) and aligned(j) and widths[j] == widths[i] and starts[j] == starts[j - 1] + widths[i]:
                j += 1
        out.append((i, j, aligned(i)))
        i = j
    return tuple(out)


def _flip(packed: np.ndarray | None, levels: np.ndarray | None, q: np.ndarray, spec: numerics.AnalogSpec,
          count: int) -> np.ndarray:
    """The "flipped" scheme on ``count`` row blocks of a stripe: mark every column of each whose levels sum to
    more than half their maximum (as ``numerics.encode_weights`` does), complement its cells in place in
    ``packed`` (data columns) or ``levels`` (every column); return the marks (count, P)."""
    rows, cb, top = q.shape[1] // count, spec.cell_bits, spec.max_level
    limit = rows * top // 2
    if levels is not None:
        blocks = levels.reshape(count, rows, -1)
        marks = blocks.sum(axis=1, dtype=np.int64) > limit
        blocks ^= marks[:, None, :].astype(np.uint8) * np.uint8(top)
        return marks
    per = 8 // cb
    data = _column_sums(packed, cb, count).reshape(count, -1, per) > limit      # (count, bytes, cells per byte)
    blocks = packed.reshape(count, rows, -1)
    blocks ^= (data * (top << (cb * np.arange(per)))).sum(axis=2).astype(np.uint8)[:, None, :]
    marks = data.reshape(count, -1)
    if spec.reference_column:       # the reference column: every cell at the reference level
        marks = np.concatenate([marks, np.full((count, 1), rows * spec.reference_level > limit)], axis=1)
    return marks


def _column_sums(packed: np.ndarray, cb: int, count: int = 1) -> np.ndarray:
    """Sum over the rows of each of ``count`` equal row blocks of every cell column of packed rows (rows, B) of
    cb-bit cells (cb divides 8): (count, B * 8/cb) int64, column c being field c % (8/cb) of byte c // (8/cb).

    The bytes are read as 64-bit words: a shift and a mask put one field of every byte in its own
    byte lane, and up to 255 // max_level rows add up in those lanes without carrying over.
    """
    height, nbytes = packed.shape
    rows, per, top = height // count, 8 // cb, (1 << cb) - 1
    if per == 1:
        return packed.reshape(count, rows, nbytes).sum(axis=1, dtype=np.int64)
    if nbytes % 8:
        packed = np.pad(packed, ((0, 0), (0, -nbytes % 8)))
    words = packed.view("<u8").reshape(count, rows, -1)
    chunk = 255 // top
    lanes = np.uint64(int.from_bytes(bytes([top]) * 8, "little"))
    field = np.empty((count, min(chunk, rows), words.shape[2]), words.dtype)
    sums = np.zeros((count, words.shape[2] * 8, per), np.int64)
    for f in range(per):
        for r in range(0, rows, chunk):
            part = field[:, :min(chunk, rows - r)]
            np.right_shift(words[:, r:r + chunk], np.uint64(f * cb), out=part)
            np.bitwise_and(part, lanes, out=part)
            sums[:, :, f] += part.sum(axis=1, dtype=np.uint64).astype("<u8").view(np.uint8)
    return sums[:, :nbytes].reshape(count, -1)


def _magnitudes(q: np.ndarray, spec: numerics.AnalogSpec, dtype) -> np.ndarray:
    """(rows, N, signs) stored magnitudes of q (N, rows, any signed integer type): max(±q, 0) (differential) or
    q + offset (computed in ``dtype``, whose integers wrap around: the sum itself always fits).

    Each is computed where q lies and transposed once, in the stored type: numpy transposes 2-, 4- and 8-byte
    integers faster than it converts while it transposes (an int8 ResNet-50's 16-bit magnitudes 24 -> 13 ms),
    and :func:`_transposed` a few channels at a time.
    """
    n, rows = q.shape
    dt = np.dtype(dtype).newbyteorder("<")
    out = np.empty((rows, n, 2 if spec.differential else 1), dt)
    if spec.differential and dt.kind == "u" and dt.itemsize <= 4:
        # Both signs as one little-endian integer twice as wide, |q| in the half of q's sign (two strided
        # writes of the interleaved signs cost three times as much).
        wide = q.astype(f"<i{2 * dt.itemsize}")
        negative = wide >> (16 * dt.itemsize - 1)      # -1 where q < 0, else 0
        wide ^= negative
        wide -= negative
        wide <<= negative & (8 * dt.itemsize)
        _transposed(wide, out.reshape(rows, 2 * n).view(wide.dtype))
    elif spec.differential:
        signs = np.stack([np.maximum(q, 0), np.maximum(np.negative(q, dtype=np.int64), 0)], axis=-1)
        np.copyto(out, signs.astype(dt).transpose(1, 0, 2))
    else:
        stored = q.astype(dt)
        stored += dt.type(spec.offset)
        _transposed(stored, out[:, :, 0])
    return out


def _transposed(a: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = a.T`` for a (N, rows), TRANSPOSE_TILE_BYTES of ``a`` at a time: numpy transposes a whole
    matrix in strided passes that leave the first-level cache (16-bit magnitudes of 2048 channels by 128 rows:
    0.6 -> 0.37 ns a weight in tiles of 128 channels; 32 KiB tiles were the quickest for 2-, 4- and 8-byte
    magnitudes of 64 to 256 rows)."""
    step = max(1, TRANSPOSE_TILE_BYTES // max(1, a.shape[1] * a.itemsize))
    for c in range(0, a.shape[0], step):
        np.copyto(out[:, c:c + step], a[c:c + step].T)


def _packed_rows(q: np.ndarray, spec: numerics.AnalogSpec) -> np.ndarray | None:
    """The data columns of a stripe as ``pack_levels`` lays them out, or None.

    In the canonical column order a channel's sign group is S consecutive cells holding bits
    ``[j*cb, (j+1)*cb)`` of its magnitude, and cells pack least significant bits first, so when
    ``S*cb`` is a multiple of 8 the packed row is every (channel, sign) magnitude as a
    little-endian ``S*cb/8``-byte integer. q is (N, height); the result is (height, N*signs*S*cb/8),
    a fresh array.
    """
    bits = spec.slices * spec.cell_bits
    if bits % 8 or bits > 64:
        return None
    nb = bits // 8
    height = q.shape[1]
    mags = _magnitudes(q, spec, f"<u{nb if nb in (1, 2, 4, 8) else 8}")
    if nb in (1, 2, 4, 8):
        return mags.view(np.uint8).reshape(height, -1)
    wide = mags.view(np.uint8)
    return wide.reshape(wide.shape[:2] + (-1, 8))[..., :nb].reshape(height, -1)


def _levels(q: np.ndarray, spec: numerics.AnalogSpec, c0: int, c1: int) -> np.ndarray:
    """Cell levels (rows, c1-c0) of physical columns [c0, c1) of a row stripe, canonical order
    (as ``numerics.encode_weights`` lays them out, the offset scheme's reference column last),
    before any flipping; a fresh array."""
    cpc, n_slices = spec.columns_per_channel, spec.slices
    p = np.arange(c0, c1)
    data = p < q.shape[0] * cpc
    out = np.full((q.shape[1], c1 - c0), spec.reference_level, np.uint8)   # the reference column's level
    if data.any():
        pd = p[data]
        channel, within = pd // cpc, pd % cpc
        lo = int(channel[0])
        mags = _magnitudes(q[lo:int(channel[-1]) + 1], spec, np.int64)
        shift = (within % n_slices) * spec.cell_bits
        out[:, data] = (mags[:, channel - lo, within // n_slices] >> shift) & spec.max_level
    return out
