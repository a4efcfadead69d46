"""Weight encoding (docs/analog.md, Signed weights and bit slices): integer weights to
cell levels in the canonical column layout the device file stores, the column maps
that say what each physical column holds, and the inverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidDataError
from .spec import AnalogSpec


@dataclass(frozen=True, eq=False)
class EncodedWeights:
    """Cell levels of one layer and what each physical column holds.

    ``levels[k, p]`` is the level of the cell at matrix row k, physical column p.
    Canonical column order (docs/analog.md): channel-major, then sign (+1, -1;
    differential only), then slice; the offset scheme's reference column is last.
    Treat it as immutable: validated layout and decoded weights are cached on it.
    """

    levels: np.ndarray  # uint8 (K, P)
    col_out: np.ndarray  # int32 (P,): output channel, -1 for the reference column
    col_slice: np.ndarray  # int8 (P,)
    col_sign: np.ndarray  # int8 (P,): +1/-1 differential, +1 offset data, 0 reference
    flip: np.ndarray | None = None  # bool (row blocks, P): stored as max_level - level ("flipped" scheme)
    # Derived data (column index, float weights) computed on first use; not part of the value.
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)


def _spec_key(spec: AnalogSpec) -> tuple:
    return (spec.weight_bits, spec.cell_bits, spec.signed_weights, spec.reference_level)


def _uint_dtype(bits: int) -> type:
    return np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32


def encode_weights(q_w: np.ndarray, spec: AnalogSpec) -> EncodedWeights:
    """Encode integer weights q_w (N, K) into cell levels (K, P), canonical column order."""
    q = np.asarray(q_w)
    if q.ndim != 2:
        raise InvalidDataError(f"integer weights must be 2-D (N, K), got shape {q.shape}")
    if q.dtype.kind not in "iu":
        if q.dtype.kind != "f" or not np.all(q == np.rint(q)):
            raise InvalidDataError(f"weights to encode must be integers, got dtype {q.dtype}")
    n, k = q.shape
    qmax = (1 << (spec.weight_bits - 1)) - 1
    lo = -qmax if spec.differential else -qmax - 1
    if q.size and (q.min() < lo or q.max() > qmax):
        raise InvalidDataError(f"integer weights span [{q.min()}, {q.max()}], outside the "
                               f"{spec.weight_bits}-bit range [{lo}, {qmax}] of {spec.signed_weights}")
    mag_t = _uint_dtype(spec.magnitude_bits)
    qt = np.ascontiguousarray(q.T, dtype=np.int32)  # (K, N): cells are written row by row
    if spec.differential:
        mags = [np.maximum(qt, 0).astype(mag_t), np.maximum(-qt, 0).astype(mag_t)]
    else:
        mags = [(qt + spec.offset).astype(mag_t)]
    n_slices, cb, cpc = spec.slices, spec.cell_bits, spec.columns_per_channel
    p = spec.physical_columns(n)
    levels = np.empty((k, p), dtype=np.uint8)
    data = levels[:, : n * cpc].reshape(k, n, len(mags), n_slices)
    assert np.may_share_memory(data, levels)  # a view: writes land in levels
    for si, mag in enumerate(mags):
        for j in range(n_slices):
            data[:, :, si, j] = (mag >> (j * cb)) & spec.max_level
    col_out = np.repeat(np.arange(n, dtype=np.int32), cpc)
    col_sign = np.tile(np.repeat(np.array(spec.signs, dtype=np.int8), n_slices), n)
    col_slice = np.tile(np.arange(n_slices, dtype=np.int8), n * len(mags))
    if spec.reference_column:
        levels[:, -1] = spec.reference_level
        col_out = np.append(col_out, np.int32(-1))
        col_sign = np.append(col_sign, np.int8(0))
        col_slice = np.append(col_slice, np.int8(0))
    flip = _flip(levels, spec) if spec.flipped else None
    enc = EncodedWeights(levels, col_out, col_slice, col_sign, flip)
    # Keep the weights (compactly) for the lossless shortcut; a decoded encoding rebuilds them.
    enc._cache[("q", _spec_key(spec))] = q.astype(np.int8 if spec.weight_bits <= 8 else np.int32)
    return enc


def _flip(levels: np.ndarray, spec: AnalogSpec) -> np.ndarray:
    """Flip, in place, every (row block, column) whose levels sum to more than half their maximum;
    return the marks (row blocks, P). Afterwards a column of a block of b rows holds at most
    floor(b * max_level / 2), so its read never exceeds F_worst of the flipped scheme."""
    k, p = levels.shape
    marks = np.zeros((spec.row_blocks(k), p), dtype=bool)
    acc = np.int32 if spec.rows * spec.max_level < 2 ** 31 else np.int64   # a block's column sum fits
    full = k // spec.rows
    if full and p:
        sums = levels[:full * spec.rows].reshape(full, spec.rows, p).sum(axis=1, dtype=acc)
        marks[:full] = sums > spec.rows * spec.max_level // 2
    if full * spec.rows < k and p:
        tail = levels[full * spec.rows:]
        marks[full] = tail.sum(axis=0, dtype=acc) > tail.shape[0] * spec.max_level // 2
    _complement(levels, marks, spec)
    return marks


def _complement(levels: np.ndarray, marks: np.ndarray, spec: AnalogSpec) -> None:
    """levels = max_level - levels, in place, in the (row block, column) cells marks selects.

    Levels are at most max_level = 2^cb - 1, so max_level - level is level XOR max_level: one
    pass over the array with a per-(block, column) mask broadcast over the block's rows."""
    k, p = levels.shape
    if not levels.size:
        return
    mask = marks.astype(np.uint8) * np.uint8(spec.max_level)      # (row blocks, P)
    full = k // spec.rows
    if full:
        view = levels[:full * spec.rows].reshape(full, spec.rows, p)
        assert np.may_share_memory(view, levels)  # a view: writes land in levels
        view ^= mask[:full, None, :]
    if full * spec.rows < k:
        levels[full * spec.rows:] ^= mask[full]


def unflipped_levels(enc: EncodedWeights, spec: AnalogSpec) -> np.ndarray:
    """The levels before flipping (the plain offset encoding); the levels themselves when not flipped."""
    if enc.flip is None:
        return enc.levels
    levels = enc.levels.copy()
    _complement(levels, np.asarray(enc.flip, dtype=bool), spec)
    return levels


def column_layout(enc: EncodedWeights, spec: AnalogSpec) -> dict:
    """Validate column metadata; return n_out, col (N, signs, S) index, ref column, canonical.

    Every (channel, sign, slice) must own exactly one physical column; the offset scheme
    needs exactly one reference column (col_out -1, sign 0, slice 0), differential none.
    """
    key = ("layout", _spec_key(spec))
    if key in enc._cache:
        return enc._cache[key]
    levels = np.asarray(enc.levels)
    if levels.ndim != 2 or levels.dtype != np.uint8:
        raise InvalidDataError(f"levels must be a 2-D uint8 array, got {levels.dtype} {levels.shape}")
    if levels.size and levels.max() > spec.max_level:
        raise InvalidDataError(f"cell level {levels.max()} exceeds {spec.max_level}, the "
                               f"largest level of a {spec.cell_bits}-bit cell")
    p = levels.shape[1]
    if spec.flipped != (enc.flip is not None) or (
            enc.flip is not None and np.shape(enc.flip) != (spec.row_blocks(levels.shape[0]), p)):
        raise InvalidDataError(f"flip marks {None if enc.flip is None else np.shape(enc.flip)} do not fit "
                               f"the {spec.signed_weights} scheme over {levels.shape} levels")
    out, sl, sg = (np.asarray(a).astype(np.int64) for a in (enc.col_out, enc.col_slice, enc.col_sign))
    if not out.shape == sl.shape == sg.shape == (p,):
        raise InvalidDataError(f"column metadata lengths {out.shape}, {sl.shape}, {sg.shape} "
                               f"do not match {p} physical columns")
    is_ref = out < 0
    n_ref = int(is_ref.sum())
    want_ref = 1 if spec.reference_column else 0
    if n_ref != want_ref:
        raise InvalidDataError(f"{n_ref} reference columns (col_out < 0); the "
                               f"{spec.signed_weights} scheme has {want_ref}")
    ref = None
    if n_ref:
        ref = int(np.flatnonzero(is_ref)[0])
        if out[ref] != -1 or sl[ref] != 0 or sg[ref] != 0:
            raise InvalidDataError(f"reference column {ref} must have col_out -1, slice 0, sign 0")
    cpc, n_slices, signs = spec.columns_per_channel, spec.slices, spec.signs
    data = ~is_ref
    n_data = p - n_ref
    if n_data % cpc:
        raise InvalidDataError(f"{n_data} data columns is not a multiple of the "
                               f"{cpc} columns per channel of this spec")
    n_out = n_data // cpc
    d_out, d_sl, d_sg = out[data], sl[data], sg[data]
    sign_idx = np.where(d_sg == 1, 0, 1) if spec.differential else np.zeros_like(d_sg)
    bad = ((d_out >= n_out) | (d_sl < 0) | (d_sl >= n_slices)
           | ~np.isin(d_sg, np.array(signs)))
    if np.any(bad):
        q = int(np.flatnonzero(data)[np.argmax(bad)])
        raise InvalidDataError(f"column {q}: output {out[q]}, slice {sl[q]}, sign {sg[q]} is not "
                               f"valid for {n_out} channels, {n_slices} slices, signs {signs}")
    slot = (d_out * len(signs) + sign_idx) * n_slices + d_sl
    counts = np.bincount(slot, minlength=n_data)
    if np.any(counts != 1):
        s = int(np.argmax(counts != 1))
        raise InvalidDataError(f"(channel {s // cpc}, sign {signs[(s % cpc) // n_slices]}, slice "
                               f"{s % n_slices}) is held by {counts[s]} columns; expected exactly 1")
    col = np.empty(n_data, dtype=np.int64)
    col[slot] = np.flatnonzero(data)
    canonical = bool(np.array_equal(col, np.arange(n_data)) and (ref is None or ref == p - 1))
    info = {"n_out": n_out, "col": col.reshape(n_out, len(signs), n_slices), "ref": ref,
            "canonical": canonical}
    enc._cache[key] = info
    return info


def decode_weights(enc: EncodedWeights, spec: AnalogSpec, n_out: int) -> np.ndarray:
    """Inverse of encode_weights: integer q_w (N, K), int32, laid out as the cells are (K-major: the transpose of
    a C-contiguous (K, N) array). Validates the encoding.

    The sum runs over the cells' own rows in int32 (weight_bits <= 24), one column gather (``np.take``: six times
    numpy's fancy indexing) per sign and slice: summing transposed int64 copies took 38 s for one 8192 x 8192
    layer.
    """
    info = column_layout(enc, spec)
    if info["n_out"] != n_out:
        raise InvalidDataError(f"the encoding holds {info['n_out']} output channels, expected {n_out}")
    levels = unflipped_levels(enc, spec)
    if info["ref"] is not None and np.any(levels[:, info["ref"]] != spec.reference_level):
        raise InvalidDataError(f"the reference column must hold level {spec.reference_level} in every row")
    k = levels.shape[0]
    rows = np.zeros((k, n_out), dtype=np.int32)           # q_w transposed
    part = np.empty_like(rows)
    col = info["col"]
    for si, sign in enumerate(spec.signs):
        for j in range(spec.slices):
            np.multiply(np.take(levels, col[:, si, j], axis=1), np.int32(sign << (j * spec.cell_bits)), out=part)
            rows += part
    rows -= np.int32(spec.offset)
    q = rows.T
    qmax = (1 << (spec.weight_bits - 1)) - 1
    lo = -qmax if spec.differential else -qmax - 1
    if q.size and (q.min() < lo or q.max() > qmax):
        raise InvalidDataError(f"decoded weights span [{q.min()}, {q.max()}], outside the "
                               f"{spec.weight_bits}-bit range [{lo}, {qmax}]")
    return q


def float_weights(enc: EncodedWeights, spec: AnalogSpec) -> tuple[np.ndarray, int]:
    """q_w as float32 (N, K) and max|q_w|, cached on the encoding (decoded if needed)."""
    key = ("qf32", _spec_key(spec))
    if key not in enc._cache:
        q = enc._cache.get(("q", _spec_key(spec)))
        if q is None:
            q = decode_weights(enc, spec, column_layout(enc, spec)["n_out"])
        qf = q.astype(np.float32)
        enc._cache[key] = (qf, int(np.abs(qf).max()) if qf.size else 0)
    return enc._cache[key]


@dataclass
class Encoded:
    """One matrix as programmed: cell levels, column maps and per-channel weight scales."""
    enc: EncodedWeights
    weight_scale: np.ndarray


def pack_levels(levels: np.ndarray, bits: int) -> bytes:
    """Pack unsigned values below 2^bits, ``bits`` bits each, little-endian bit order."""
    flat = np.ascontiguousarray(levels, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return flat.tobytes()
    if 8 % bits == 0:
        per = 8 // bits
        pad = (-flat.size) % per
        if pad:
            flat = np.concatenate([flat, np.zeros(pad, np.uint8)])
        groups = flat.reshape(-1, per).astype(np.uint8)
        out = np.zeros(groups.shape[0], np.uint8)
        for i in range(per):        # a handful of shifts, each over the whole array
            out |= groups[:, i] << np.uint8(i * bits)
        return out.tobytes()
    bitplanes = np.unpackbits(flat[:, None], axis=1, count=8, bitorder="little")[:, :bits]
    return np.packbits(bitplanes.reshape(-1), bitorder="little").tobytes()


def unpack_levels(data, bits: int, count: int) -> np.ndarray:
    """The first ``count`` values :func:`pack_levels` packed into ``data`` (bytes, or a uint8 array), as uint8."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw[:count].copy()
    if 8 % bits == 0:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        out = np.empty((raw.size, per), np.uint8)
        for i in range(per):
            out[:, i] = (raw >> np.uint8(i * bits)) & mask
        return out.reshape(-1)[:count]
    planes = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
    return np.packbits(planes, axis=1, bitorder="little").reshape(-1)


def packed_size(count: int, bits: int) -> int:
    """Bytes that :func:`pack_levels` gives for ``count`` values of ``bits`` bits."""
    return (count * bits + 7) // 8
