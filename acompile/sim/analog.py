"""Analog crossbar numerics: the single owner of DESIGN §2 and §3 arithmetic.

``docs/analog.md`` is the specification this module implements. In short:

* quantisation of weights (per output channel) and inputs (per layer);
* encoding of signed integer weights into cell levels (differential or offset scheme,
  bit slices), the column layout the device file stores, and its inverse;
* bit-serial inputs (DAC cycles) and one analog read per (row block, cycle, column),
  converted by the ADC;
* device non-idealities: programmed conductances (``program_cells``), read noise and
  ADC offset/gain (``mvm``).

Two executors compute the same thing. ``mvm`` is the fast path (stacked float32 GEMMs
over row blocks, ADC applied in place, shift-and-add by a small matmul, plus an exact
integer shortcut when the ADC is lossless). ``mvm_reference`` is a plain loop over
(row block, cycle, slice, sign) written from the formula. In quantised mode (no noise)
the two agree bit for bit: every read current is an integer carried exactly in float32,
every ADC code is an integer, and codes are summed exactly in float64 before the single
final multiplication by the ADC step.
"""

from __future__ import annotations

import functools
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

try:  # optional: lets the fast path run one single-threaded BLAS per worker thread
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - then the fast path runs serially on threaded BLAS
    ThreadpoolController = None

from acompile.errors import InvalidDataError, InvalidTargetError, UnsupportedError

__all__ = [
    "SIGNED_WEIGHT_SCHEMES", "AnalogSpec", "quantize_weights", "weight_scales", "quantize_with_scales",
    "input_scale", "quantize_inputs", "input_cycles", "input_chunks", "EncodedWeights", "encode_weights",
    "decode_weights", "NoiseSpec", "program_cells", "adc_step", "observe_full_scale",
    "mvm", "mvm_reference",
]

SIGNED_WEIGHT_SCHEMES = ("differential", "offset")
INPUT_ENCODINGS = ("twos_complement", "sign_magnitude")

_F32_EXACT = 2.0**24  # float32 holds every integer of magnitude below this exactly
_F64_EXACT = 2.0**53  # same for float64

# Fast-path blocking: one read block is (T * vector chunk) x (column chunk) values, kept
# small enough to stay in cache while the ADC runs over it in place.
_STACKED_ROWS = 1024  # at most this many (cycle, vector) rows per GEMM
_BLOCK_ELEMS = 1 << 20  # read-block and converted-cell-block size, in elements
_PARALLEL_FLOPS = 2e8  # below this much GEMM work a call runs serially


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class AnalogSpec:
    """Converter and cell configuration of one analog layer (DESIGN §2)."""

    weight_bits: int  # Bw, signed weight precision
    input_bits: int  # Bx, input precision at the DAC
    dac_bits: int  # d, bits applied per cycle
    cell_bits: int  # cb, bits stored per cell
    adc_bits: int  # B_adc
    rows: int  # crossbar rows: the row-block size
    signed_weights: str  # "differential" | "offset"
    input_encoding: str = "twos_complement"  # signed inputs: "twos_complement" | "sign_magnitude"

    def __post_init__(self):
        for name, lo, hi in (("weight_bits", 2, 24), ("input_bits", 1, 24), ("dac_bits", 1, 16),
                             ("cell_bits", 1, 8), ("adc_bits", 1, 24), ("rows", 1, 1 << 20)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise InvalidTargetError(f"{name}={v!r}: expected an integer in [{lo}, {hi}]",
                                         where=f"AnalogSpec.{name}")
        if self.input_encoding not in INPUT_ENCODINGS:
            raise InvalidTargetError(f"input_encoding={self.input_encoding!r}: expected one of "
                                     f"{', '.join(INPUT_ENCODINGS)}", where="AnalogSpec.input_encoding")
        if self.signed_weights not in SIGNED_WEIGHT_SCHEMES:
            raise InvalidTargetError(
                f"signed_weights={self.signed_weights!r}: expected one of {SIGNED_WEIGHT_SCHEMES}",
                where="AnalogSpec.signed_weights")

    @property
    def differential(self) -> bool:
        return self.signed_weights == "differential"

    @property
    def magnitude_bits(self) -> int:
        """Bm: bits of the stored unsigned magnitude (Bw-1 differential, Bw offset)."""
        return self.weight_bits - 1 if self.differential else self.weight_bits

    @property
    def slices(self) -> int:
        """S = ceil(Bm / cell_bits)."""
        return -(-self.magnitude_bits // self.cell_bits)

    @property
    def signs(self) -> tuple[int, ...]:
        """Signs of a channel's column groups, in physical column order."""
        return (1, -1) if self.differential else (1,)

    @property
    def columns_per_channel(self) -> int:
        return len(self.signs) * self.slices

    @property
    def offset(self) -> int:
        """2^(Bw-1) for the offset scheme (added before storing), 0 for differential."""
        return 0 if self.differential else 1 << (self.weight_bits - 1)

    @property
    def max_level(self) -> int:
        return (1 << self.cell_bits) - 1

    @property
    def max_chunk(self) -> int:
        return (1 << self.dac_bits) - 1

    @property
    def max_code(self) -> int:
        return (1 << self.adc_bits) - 1

    @property
    def worst_case_full_scale(self) -> float:
        """F_worst = rows * (2^d - 1) * (2^cb - 1): the largest possible read current."""
        return float(self.rows * self.max_chunk * self.max_level)

    @property
    def adc_lossless(self) -> bool:
        """True when the ADC resolves every integer current of the worst-case range."""
        return self.max_code >= self.worst_case_full_scale

    @property
    def read_dtype(self) -> type:
        """float32 when every read current (and partial sum) is exact in it, else float64."""
        return np.float32 if self.worst_case_full_scale < _F32_EXACT else np.float64

    def physical_columns(self, n_out: int) -> int:
        """P: data columns of n_out channels plus the offset scheme's reference column."""
        return n_out * self.columns_per_channel + (0 if self.differential else 1)

    def row_blocks(self, k: int) -> int:
        return -(-k // self.rows)

    def cycles(self, signed: bool) -> int:
        """T: input cycles (docs/analog.md: a signed input streams its sign bit alone, or, in
        sign-magnitude, its positive and negative magnitudes in two phases)."""
        d = self.dac_bits
        if signed and self.input_encoding == "sign_magnitude":
            return 2 * -(-(self.input_bits - 1) // d)
        if signed:
            return -(-(self.input_bits - 1) // d) + 1
        return -(-self.input_bits // d)


# --------------------------------------------------------------------------- quantisation


def quantize_weights(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantisation of W (N, K) to `bits` bits.

    Returns q_w int32 (N, K) in [-(2^(bits-1)-1), 2^(bits-1)-1] and s_w float64 (N,),
    ``s_w[n] = max|W[n,:]| / (2^(bits-1)-1)``; an all-zero channel gets s_w = 1.
    """
    s_w = weight_scales(w, bits)
    return quantize_with_scales(w, s_w, bits), s_w


def weight_scales(w: np.ndarray, bits: int) -> np.ndarray:
    """s_w of :func:`quantize_weights`, float64 (N,), in one pass over W in its own dtype.

    ``max|w|`` of a row is ``max(max w, -min w)``; converting to float64 after the reduction
    gives the same numbers as converting first (the conversion is exact and monotonic), and a
    NaN or infinity anywhere shows in a row's max or min.
    """
    w = np.asarray(w)
    if w.ndim != 2:
        raise InvalidDataError(f"weights must be 2-D (N, K), got shape {w.shape}")
    if w.size:
        hi = w.max(axis=1).astype(np.float64)
        lo = w.min(axis=1).astype(np.float64)
        if not (np.all(np.isfinite(hi)) and np.all(np.isfinite(lo))):
            raise InvalidDataError("weights contain NaN or infinity")
        amax = np.maximum(hi, -lo)
    else:
        amax = np.zeros(w.shape[0])
    qmax = (1 << (bits - 1)) - 1
    if qmax < 1:
        raise InvalidTargetError(f"weight bits={bits}: need at least 2")
    return np.where(amax > 0, amax / qmax, 1.0)


def quantize_with_scales(w: np.ndarray, s_w: np.ndarray, bits: int) -> np.ndarray:
    """q_w of :func:`quantize_weights` for the scales s_w of the full rows: int32, same shape as w.

    Elementwise, so any set of W's columns (a row block) quantises on its own.
    """
    qmax = (1 << (bits - 1)) - 1
    q = np.array(w, dtype=np.float64)                  # a private copy, then in place
    np.divide(q, s_w[:, None], out=q)
    np.rint(q, out=q)
    np.clip(q, -qmax, qmax, out=q)
    return q.astype(np.int32)


def _input_range(bits: int, signed: bool) -> tuple[int, int]:
    """Range quantize_inputs produces (symmetric when signed)."""
    if signed:
        m = (1 << (bits - 1)) - 1
        return -m, m
    return 0, (1 << bits) - 1


def input_scale(abs_range: float, bits: int, signed: bool) -> float:
    """s_x for a calibrated absolute range a: a/(2^(Bx-1)-1) signed, a/(2^Bx-1) unsigned."""
    a = float(abs_range)
    if not math.isfinite(a) or a < 0:
        raise InvalidDataError(f"input range {abs_range!r}: expected a finite value >= 0")
    top = _input_range(bits, signed)[1]
    if top < 1:
        raise InvalidTargetError(f"input bits={bits}: a signed input needs at least 2 bits")
    return a / top if a > 0 else 1.0


def quantize_inputs(x: np.ndarray, scale: float, bits: int, signed: bool) -> np.ndarray:
    """q_x = clip(rint(x / s_x)) into the signed-symmetric or unsigned range, int32."""
    lo, hi = _input_range(bits, signed)
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise InvalidDataError("inputs contain NaN or infinity")
    return np.clip(np.rint(x / float(scale)), lo, hi).astype(np.int32)


# --------------------------------------------------------------------------- input cycles


def input_cycles(spec: AnalogSpec, signed: bool) -> list[float]:
    """Digital weight of each input cycle t: 2^(t*d), and -2^(Bx-1) for a sign cycle
    (sign-magnitude: +2^(t*d) for the positive phase, then -2^(t*d) for the negative one)."""
    d, bx = spec.dac_bits, spec.input_bits
    low = bx - 1 if signed else bx
    weights = [float(1 << (t * d)) for t in range(-(-low // d))]
    if signed and spec.input_encoding == "sign_magnitude":
        return weights + [-w for w in weights]
    if signed:
        weights.append(-float(1 << (bx - 1)))
    return weights


def _check_inputs(x_q: np.ndarray, spec: AnalogSpec, signed: bool) -> np.ndarray:
    """Validate integer inputs (V, K) against the Bx-bit range; return them as int64."""
    x = np.asarray(x_q)
    if x.ndim != 2:
        raise InvalidDataError(f"quantised inputs must be 2-D (V, K), got shape {x.shape}")
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)) or np.any(x != np.rint(x)):
            raise InvalidDataError("quantised inputs must be integers")
    elif x.dtype.kind not in "iu":
        raise InvalidDataError(f"quantised inputs must be integers, got dtype {x.dtype}")
    bx = spec.input_bits
    lo, hi = (-(1 << (bx - 1)), (1 << (bx - 1)) - 1) if signed else (0, (1 << bx) - 1)
    if x.size and (x.min() < lo or x.max() > hi):
        kind = "signed" if signed else "unsigned"
        raise InvalidDataError(f"quantised inputs span [{x.min()}, {x.max()}], outside the "
                               f"{kind} {bx}-bit range [{lo}, {hi}]")
    return x.astype(np.int64, copy=False)


def input_chunks(x_q: np.ndarray, spec: AnalogSpec, signed: bool, dtype=None) -> np.ndarray:
    """Chunk values (T, V, K) the DAC applies in each cycle.

    Unsigned: chunk t = (q >> t*d) & (2^d-1). Signed: the two's-complement word's low Bx-1
    bits in d-bit chunks, then the sign bit alone. dtype defaults to uint8 (uint16 when
    d > 8); the fast path asks for its float read dtype directly.
    """
    x = _check_inputs(x_q, spec, signed)
    if dtype is None:
        dtype = np.uint8 if spec.dac_bits <= 8 else np.uint16
    return _fill_chunks(x, spec, signed, np.empty((spec.cycles(signed),) + x.shape, dtype=dtype))


def _fill_chunks(x: np.ndarray, spec: AnalogSpec, signed: bool, out: np.ndarray) -> np.ndarray:
    """Write the chunk values of validated integer inputs x (V, K) into out (T, V, K)."""
    d, bx = spec.dac_bits, spec.input_bits
    low_bits = bx - 1 if signed else bx
    if signed and spec.input_encoding == "sign_magnitude":
        half = -(-low_bits // d)
        for phase, magnitude in enumerate((np.maximum(x, 0), np.maximum(-x, 0))):
            for t in range(half):
                out[phase * half + t] = (magnitude >> (t * d)) & spec.max_chunk
        return out
    word = x & ((1 << bx) - 1)  # two's complement for negative values
    low = word & ((1 << low_bits) - 1)
    for t in range(-(-low_bits // d)):
        out[t] = (low >> (t * d)) & spec.max_chunk
    if signed:
        out[-1] = word >> (bx - 1)
    return out


# --------------------------------------------------------------------------- weight encoding


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
    # Derived data (column index, float weights) computed on first use; not part of the value.
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)


def _spec_key(spec: AnalogSpec) -> tuple:
    return (spec.weight_bits, spec.cell_bits, spec.signed_weights)


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
    if not spec.differential:
        levels[:, -1] = 1
        col_out = np.append(col_out, np.int32(-1))
        col_sign = np.append(col_sign, np.int8(0))
        col_slice = np.append(col_slice, np.int8(0))
    enc = EncodedWeights(levels, col_out, col_slice, col_sign)
    # Keep the weights (compactly) for the lossless shortcut; a decoded encoding rebuilds them.
    enc._cache[("q", _spec_key(spec))] = q.astype(np.int8 if spec.weight_bits <= 8 else np.int32)
    return enc


def _layout(enc: EncodedWeights, spec: AnalogSpec) -> dict:
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
    out, sl, sg = (np.asarray(a).astype(np.int64) for a in (enc.col_out, enc.col_slice, enc.col_sign))
    if not out.shape == sl.shape == sg.shape == (p,):
        raise InvalidDataError(f"column metadata lengths {out.shape}, {sl.shape}, {sg.shape} "
                               f"do not match {p} physical columns")
    is_ref = out < 0
    n_ref = int(is_ref.sum())
    want_ref = 0 if spec.differential else 1
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
    """Inverse of encode_weights: integer q_w (N, K), int32. Validates the encoding."""
    info = _layout(enc, spec)
    if info["n_out"] != n_out:
        raise InvalidDataError(f"the encoding holds {info['n_out']} output channels, expected {n_out}")
    levels = enc.levels
    if info["ref"] is not None and np.any(levels[:, info["ref"]] != 1):
        raise InvalidDataError("the reference column must hold level 1 in every row")
    k = levels.shape[0]
    q = np.zeros((n_out, k), dtype=np.int64)
    col = info["col"]
    for si, sign in enumerate(spec.signs):
        for j in range(spec.slices):
            q += (sign << (j * spec.cell_bits)) * levels[:, col[:, si, j]].T.astype(np.int64)
    q -= spec.offset
    qmax = (1 << (spec.weight_bits - 1)) - 1
    lo = -qmax if spec.differential else -qmax - 1
    if q.size and (q.min() < lo or q.max() > qmax):
        raise InvalidDataError(f"decoded weights span [{q.min()}, {q.max()}], outside the "
                               f"{spec.weight_bits}-bit range [{lo}, {qmax}]")
    return q.astype(np.int32)


def _float_weights(enc: EncodedWeights, spec: AnalogSpec) -> tuple[np.ndarray, int]:
    """q_w as float32 (N, K) and max|q_w|, cached on the encoding (decoded if needed)."""
    key = ("qf32", _spec_key(spec))
    if key not in enc._cache:
        q = enc._cache.get(("q", _spec_key(spec)))
        if q is None:
            q = decode_weights(enc, spec, _layout(enc, spec)["n_out"])
        qf = q.astype(np.float32)
        enc._cache[key] = (qf, int(np.abs(qf).max()) if qf.size else 0)
    return enc._cache[key]


# --------------------------------------------------------------------------- non-idealities


@dataclass(frozen=True)
class NoiseSpec:
    """Device non-idealities (DESIGN §3); every field at its default means 'off'."""

    g_min_us: float = 0.0  # conductance of level 0 (finite on/off ratio when > 0)
    g_max_us: float = 1.0  # conductance of the top level
    programming_sigma: float = 0.0  # std of programming noise, fraction of the level range
    read_sigma: float = 0.0  # std of read noise per read, fraction of the ADC full scale F in use
    stuck_at_zero_rate: float = 0.0  # fraction of cells stuck at level 0 (g_min)
    stuck_at_max_rate: float = 0.0  # fraction of cells stuck at the top level (g_max)
    adc_offset_lsb: float = 0.0  # added to I/Δ before rounding
    adc_gain_error: float = 0.0  # I/Δ is multiplied by (1 + gain error)
    drift_nu_mean: float = 0.0  # drift exponent ν per cell ~ N(mean, std)
    drift_nu_std: float = 0.0
    drift_t0_s: float = 1.0  # time of programming-verify reference
    drift_time_s: float = 0.0  # time since programming at which the layer is read
    drift_compensation: bool = False  # multiply by the global factor (t/t0)^ν_mean

    def __post_init__(self):
        def bad(name, expected):
            raise InvalidTargetError(f"{name}={getattr(self, name)!r}: expected {expected}",
                                     where=f"noise.{name}")

        for name in ("g_min_us", "g_max_us", "programming_sigma", "read_sigma", "adc_offset_lsb",
                     "adc_gain_error", "drift_nu_mean", "drift_nu_std", "drift_t0_s", "drift_time_s",
                     "stuck_at_zero_rate", "stuck_at_max_rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
                bad(name, "a finite number")
        for name in ("g_min_us", "programming_sigma", "read_sigma", "drift_nu_std", "drift_time_s",
                     "stuck_at_zero_rate", "stuck_at_max_rate"):
            if getattr(self, name) < 0:
                bad(name, "a value >= 0")
        if self.g_max_us <= self.g_min_us:
            bad("g_max_us", f"a value above g_min_us={self.g_min_us}")
        if self.stuck_at_zero_rate + self.stuck_at_max_rate > 1:
            bad("stuck_at_max_rate", "stuck-at rates that sum to at most 1")
        if self.drift_t0_s <= 0:
            bad("drift_t0_s", "a value > 0")
        if self.adc_gain_error <= -1:
            bad("adc_gain_error", "a value > -1")

    @property
    def drifts(self) -> bool:
        return (self.drift_time_s > self.drift_t0_s
                and (self.drift_nu_mean != 0 or self.drift_nu_std != 0))

    @property
    def programs_ideally(self) -> bool:
        """No programming-time effect: program_cells would return the levels unchanged."""
        return (self.g_min_us == 0 and self.programming_sigma == 0 and self.stuck_at_zero_rate == 0
                and self.stuck_at_max_rate == 0 and not self.drifts)

    @property
    def reads_ideally(self) -> bool:
        """No read-time effect (read noise, ADC offset or gain error)."""
        return self.read_sigma == 0 and self.adc_offset_lsb == 0 and self.adc_gain_error == 0

    @property
    def is_ideal(self) -> bool:
        return self.programs_ideally and self.reads_ideally


def _generator(rng, what: str) -> np.random.Generator:
    if rng is None:
        raise InvalidDataError(f"{what} needs a seeded numpy Generator (rng=...) so that "
                               "results are reproducible")
    return np.random.default_rng(rng)


def program_cells(levels: np.ndarray, spec: AnalogSpec, noise: NoiseSpec, rng=None) -> np.ndarray:
    """Effective conductance of every cell after programming, in level units, float32 (K, P).

    Level l has conductance g_min + l*Δg, Δg = (g_max - g_min)/(2^cb - 1); in level units
    l + g_min/Δg. Draws from rng, only for the effects that are on, in this order:
    1. stuck-at: one uniform u per cell; u < rate0 -> stuck at level 0,
       rate0 <= u < rate0 + rate_max -> stuck at the top level;
    2. programming noise: l + N(0, σ_prog * (2^cb - 1)) per cell;
    3. drift: ν per cell ~ N(ν_mean, ν_std) (drawn only when ν_std > 0).
    Programmed conductances are clipped at 0 (a conductance is never negative), then
    drift scales them by (t/t0)^(-ν) (t > t0), times (t/t0)^(ν_mean) when compensated.
    Stuck cells take exactly the conductance of their level: no programming noise, no drift.
    """
    lv = np.asarray(levels)
    if lv.ndim != 2:
        raise InvalidDataError(f"levels must be 2-D (K, P), got shape {lv.shape}")
    if lv.size and lv.max() > spec.max_level:
        raise InvalidDataError(f"cell level {lv.max()} exceeds {spec.max_level}")
    g = lv.astype(np.float32)
    if noise.programs_ideally:
        return g
    top = float(spec.max_level)
    leak = np.float32(noise.g_min_us / ((noise.g_max_us - noise.g_min_us) / top))
    random = (noise.stuck_at_zero_rate or noise.stuck_at_max_rate or noise.programming_sigma
              or (noise.drifts and noise.drift_nu_std))
    gen = _generator(rng, "program_cells with random non-idealities") if random else None
    stuck0 = stuck1 = None
    if noise.stuck_at_zero_rate or noise.stuck_at_max_rate:
        u = gen.random(g.shape, dtype=np.float32)
        r0 = np.float32(noise.stuck_at_zero_rate)
        stuck0 = u < r0
        stuck1 = (u >= r0) & (u < np.float32(noise.stuck_at_zero_rate + noise.stuck_at_max_rate))
        del u
    if noise.programming_sigma:
        g += gen.standard_normal(g.shape, dtype=np.float32) * np.float32(noise.programming_sigma * top)
    if leak:
        g += leak
    np.maximum(g, 0, out=g)
    if noise.drifts:
        ratio = noise.drift_time_s / noise.drift_t0_s
        if noise.drift_nu_std:
            nu = gen.standard_normal(g.shape, dtype=np.float32)
            nu *= np.float32(noise.drift_nu_std)
            nu += np.float32(noise.drift_nu_mean)
            g *= np.power(np.float32(ratio), -nu)
        else:
            g *= np.float32(ratio ** -noise.drift_nu_mean)
        if noise.drift_compensation:
            g *= np.float32(ratio ** noise.drift_nu_mean)
    if stuck0 is not None:
        g[stuck0] = leak
        g[stuck1] = np.float32(top) + leak
    return g


# --------------------------------------------------------------------------- the ADC


def adc_step(spec: AnalogSpec, full_scale: float | None = None) -> float:
    """Δ = max(1, F / (2^B_adc - 1)); F defaults to the worst case."""
    f = spec.worst_case_full_scale if full_scale is None else float(full_scale)
    if not math.isfinite(f) or f <= 0:
        raise InvalidDataError(f"ADC full scale {full_scale!r}: expected a finite value > 0")
    return max(1.0, f / spec.max_code)


@dataclass(frozen=True)
class _Adc:
    """Everything one conversion needs; shared by both executors so they round alike."""

    step: float
    max_code: int
    gain: float = 0.0
    offset_lsb: float = 0.0
    integral: bool = False  # I/Δ is already an integer: rint would change nothing
    clip: bool = True  # False only when no code can leave [0, max_code]


def _noise_scale(spec: AnalogSpec, full_scale) -> float:
    """Read noise is relative to the ADC's full scale F in use (calibrated, else worst case):
    the signal range the column is designed for, as aihwkit's out_noise is relative to out_bound."""
    return spec.worst_case_full_scale if full_scale is None else float(full_scale)


def _make_adc(spec: AnalogSpec, full_scale, noise: NoiseSpec | None, exact_reads: bool) -> _Adc:
    step = adc_step(spec, full_scale)
    gain = offset = 0.0
    if noise is not None:
        gain, offset = float(noise.adc_gain_error), float(noise.adc_offset_lsb)
    plain = exact_reads and gain == 0 and offset == 0
    dt = spec.read_dtype
    # Exact non-negative reads never exceed F_worst; skip the clip when F_worst / Δ (as the
    # read dtype computes it) cannot round above the top code.
    top = spec.worst_case_full_scale / float(dt(step))
    return _Adc(step, spec.max_code, gain, offset, integral=plain and step == 1.0,
                clip=not (plain and top * (1 + 1e-6) < spec.max_code + 0.5))


def _adc_codes(i: np.ndarray, adc: _Adc) -> np.ndarray:
    """Convert read currents to ADC codes, in place, in i's dtype.

    code = clip(rint(I / Δ * (1 + gain) + offset), 0, 2^B - 1). Δ is rounded to i's dtype
    first; every operation is an elementwise IEEE operation, so any caller with the same
    I gets the same codes whatever the array shape.
    """
    t = i.dtype.type
    if adc.step != 1.0:
        np.divide(i, t(adc.step), out=i)
    if adc.gain:
        np.multiply(i, t(1.0 + adc.gain), out=i)
    if adc.offset_lsb:
        np.add(i, t(adc.offset_lsb), out=i)
    if not adc.integral:
        np.rint(i, out=i)
    if adc.clip:
        np.clip(i, t(0), t(adc.max_code), out=i)
    return i


# --------------------------------------------------------------------------- fast path


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


def _task_reads(x: np.ndarray, g: np.ndarray, spec: AnalogSpec, signed: bool, task, store: dict):
    """Yield (r, I) for row block r = 0, 1, ... of one task: I = chunks @ g[rows of r, p0:p1].

    I is (T * (v1-v0), p1-p0), row t*(v1-v0) + v holding vector v0+v at cycle t; it lives
    in `store`'s scratch memory and is overwritten by the next block.
    """
    v0, v1, p0, p1 = task
    k = x.shape[1]
    dt = spec.read_dtype
    rows = spec.rows
    t = spec.cycles(signed)
    if store.get("chunks of") != (v0, v1):  # tasks come vector chunk major: reuse
        xc = _scratch(store, "chunks", t * (v1 - v0) * k, dt).reshape(t * (v1 - v0), k)
        _fill_chunks(x[v0:v1], spec, signed, xc.reshape(t, v1 - v0, k))
        store["chunks of"], store["chunks view"] = (v0, v1), xc
    xc = store["chunks view"]
    pc = p1 - p0
    out = _scratch(store, "read", xc.shape[0] * pc, dt).reshape(xc.shape[0], pc)
    for r in range(spec.row_blocks(k)):
        k0, k1 = r * rows, min(k, (r + 1) * rows)
        if g.dtype == dt:
            gb = g[k0:k1, p0:p1]
        else:  # levels (uint8) or cells of another dtype: convert one row block at a time
            gb = _scratch(store, "cells", (k1 - k0) * pc, dt).reshape(k1 - k0, pc)
            np.copyto(gb, g[k0:k1, p0:p1])
        np.matmul(xc[:, k0:k1], gb, out=out)
        yield r, out


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS (created once, after numpy loaded it)."""
    return None if ThreadpoolController is None else ThreadpoolController().select(user_api="blas")


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

    with _parallel_lock, ctl.limit(limits=1), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(len(tasks))))


def _check_exact(spec: AnalogSpec, k: int, signed: bool) -> None:
    """Refuse a layer whose exact integer code sums could reach 2^53."""
    w = sum(abs(c) for c in input_cycles(spec, signed))
    reads = spec.row_blocks(k) * spec.max_code * w
    bound = reads * len(spec.signs) * sum(1 << (j * spec.cell_bits) for j in range(spec.slices))
    bound += reads * spec.offset
    if bound >= _F64_EXACT:
        raise UnsupportedError(f"a layer with K={k} and this spec could need integers up to "
                               f"{bound:.3g}, beyond float64's exact range 2^53")


def _coefficients(spec: AnalogSpec) -> np.ndarray:
    """Shift-and-add factor sign * 2^(j*cb) of a channel's columns, canonical order."""
    return np.array([s * float(1 << (j * spec.cell_bits)) for s in spec.signs
                     for j in range(spec.slices)])


def _prepare(x_q, enc: EncodedWeights, spec: AnalogSpec, signed: bool):
    x = _check_inputs(x_q, spec, signed)
    info = _layout(enc, spec)
    if x.shape[1] != enc.levels.shape[0]:
        raise InvalidDataError(f"inputs have {x.shape[1]} features, the weights {enc.levels.shape[0]} rows")
    _check_exact(spec, x.shape[1], signed)
    return x, info


def _check_cells(cells, enc: EncodedWeights, noise: NoiseSpec | None) -> np.ndarray | None:
    if cells is None:
        if noise is not None and not noise.programs_ideally:
            raise InvalidDataError("noise has programming-time effects (g_min, programming noise, "
                                   "stuck-at, drift) but no cells were given",
                                   hint="pass cells=program_cells(enc.levels, spec, noise, rng)")
        return None
    cells = np.asarray(cells)
    if cells.shape != enc.levels.shape:
        raise InvalidDataError(f"cells have shape {cells.shape}, the encoding {enc.levels.shape}")
    return cells


def _exact_product(x: np.ndarray, enc: EncodedWeights, spec: AnalogSpec) -> np.ndarray:
    """q_x @ q_w^T exactly, as float64: float32 GEMMs over K blocks whose sums stay below 2^24."""
    qf, qmax = _float_weights(enc, spec)
    v, k = x.shape
    n = qf.shape[0]
    xmax = int(np.abs(x).max()) if x.size else 0
    if xmax * qmax == 0:
        return np.zeros((v, n))
    kb = int((_F32_EXACT - 1) // (xmax * qmax))
    if kb == 0:  # products alone leave float32's exact range
        return x.astype(np.float64) @ qf.T.astype(np.float64)
    xf = x.astype(np.float32)
    # The larger of V and N as the GEMM's row dimension suits OpenBLAS's threading best.
    wide = n >= v
    y = None
    for k0 in range(0, k, kb):
        k1 = min(k, k0 + kb)
        part = qf[:, k0:k1] @ xf[:, k0:k1].T if wide else xf[:, k0:k1] @ qf[:, k0:k1].T
        if y is None:
            y = part.astype(np.float64)
        else:
            y += part
    return np.ascontiguousarray(y.T) if wide else y


def mvm(x_q: np.ndarray, enc: EncodedWeights, spec: AnalogSpec, signed: bool, *,
        full_scale: float | None = None, cells: np.ndarray | None = None,
        noise: NoiseSpec | None = None, rng=None, exact_shortcut: bool = True) -> np.ndarray:
    """Integer layer output y_int (V, N), float64, for quantised inputs x_q (V, K). Fast path.

    full_scale: the ADC's F (None: worst case). cells: effective conductances from
    program_cells (None: ideal levels). noise: read-time effects (read noise, ADC offset and
    gain error). Read noise: rng draws one seed per task (integers(0, 2^63, size=tasks),
    tasks in _plan order); a task's own generator then draws
    standard_normal((T * vectors, columns), read dtype) * σ_read * F_worst per row block.
    When the ADC is lossless and nothing is noisy, exact_shortcut returns q_x @ q_w^T
    directly, which is what the full computation gives.
    """
    x, info = _prepare(x_q, enc, spec, signed)
    cells = _check_cells(cells, enc, noise)
    reads_ideally = noise is None or noise.reads_ideally
    adc = _make_adc(spec, full_scale, noise, exact_reads=cells is None and reads_ideally)
    lossless = adc.step == 1.0 and spec.max_code >= spec.worst_case_full_scale
    if exact_shortcut and lossless and cells is None and reads_ideally:
        return _exact_product(x, enc, spec)
    if not info["canonical"]:
        raise InvalidDataError("the fast path needs the canonical column layout of encode_weights",
                               hint="use mvm_reference for other layouts")
    v, k = x.shape
    n, cpc, t = info["n_out"], spec.columns_per_channel, spec.cycles(signed)
    nb = spec.row_blocks(k)
    p_data = n * cpc
    tasks = _plan(v, t, p_data, cpc, spec.rows, info["ref"])
    g = enc.levels if cells is None else cells

    read_sigma = 0.0 if noise is None else noise.read_sigma
    seeds = [None] * len(tasks)
    if read_sigma:
        seeds = _generator(rng, "read noise").integers(0, 2**63, size=len(tasks)).tolist()
    sigma = spec.read_dtype(read_sigma * _noise_scale(spec, full_scale))

    cyc = np.array(input_cycles(spec, signed))
    acc_dt = np.float32 if nb * spec.max_code < _F32_EXACT else np.float64
    sum_f32 = acc_dt == np.float32 and np.abs(cyc).sum() * nb * spec.max_code < _F32_EXACT
    cyc_acc = cyc.astype(np.float32) if sum_f32 else cyc
    coef = _coefficients(spec)
    y = np.zeros((v, n))
    ref = np.zeros(v)

    def work(index, task, store):
        v0, v1, p0, p1 = task
        gen = None if seeds[index] is None else np.random.default_rng(seeds[index])
        acc = None
        for r, i in _task_reads(x, g, spec, signed, task, store):
            if gen is not None:
                i += gen.standard_normal(i.shape, dtype=i.dtype) * sigma
            _adc_codes(i, adc)
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
    if spec.offset:
        y -= spec.offset * ref[:, None]
    if adc.step != 1.0:
        y *= adc.step
    return y


# --------------------------------------------------------------------------- reference path


def mvm_reference(x_q: np.ndarray, enc: EncodedWeights, spec: AnalogSpec, signed: bool, *,
                  full_scale: float | None = None, cells: np.ndarray | None = None,
                  noise: NoiseSpec | None = None, rng=None) -> np.ndarray:
    """Slow, literal DESIGN §2: a loop over row block r, cycle t, slice j, sign s.

    Each read I = chunk_t(x)[rows of r] @ g[rows of r, column (n, s, j)] for all n at once,
    through the ADC, then shift-and-added: y += s * w_t * 2^(j*cb) * code. Codes are summed
    exactly (float64 integers) and multiplied by Δ once at the end, which equals summing
    code*Δ. Works for any valid column layout. Read noise: drawn in loop order as
    standard_normal((V, N), read dtype) * σ_read * F per (r, t, j, s), then
    standard_normal(V) for the reference column after each (r, t).
    """
    x, info = _prepare(x_q, enc, spec, signed)
    cells = _check_cells(cells, enc, noise)
    reads_ideally = noise is None or noise.reads_ideally
    adc = _make_adc(spec, full_scale, noise, exact_reads=cells is None and reads_ideally)
    read_sigma = 0.0 if noise is None else noise.read_sigma
    gen = _generator(rng, "read noise") if read_sigma else None
    dt = spec.read_dtype
    sigma = dt(read_sigma * _noise_scale(spec, full_scale))

    g = enc.levels if cells is None else cells
    chunks = input_chunks(x, spec, signed).astype(dt)  # (T, V, K)
    cycle_weights = input_cycles(spec, signed)
    col, ref_col = info["col"], info["ref"]
    v, k = x.shape
    y = np.zeros((v, info["n_out"]))
    ref = np.zeros(v)
    for r in range(spec.row_blocks(k)):
        rows = slice(r * spec.rows, min(k, (r + 1) * spec.rows))
        g_r = g[rows].astype(dt)
        for t, w_t in enumerate(cycle_weights):
            x_t = chunks[t][:, rows]
            for j in range(spec.slices):
                for si, s in enumerate(spec.signs):
                    current = x_t @ g_r[:, col[:, si, j]]  # (V, N): one read of every channel
                    if gen is not None:
                        current += gen.standard_normal(current.shape, dtype=dt) * sigma
                    code = _adc_codes(current, adc).astype(np.float64)
                    y += (s * w_t * 2.0 ** (j * spec.cell_bits)) * code
            if ref_col is not None:
                current = x_t @ g_r[:, ref_col]
                if gen is not None:
                    current += gen.standard_normal(current.shape, dtype=dt) * sigma
                ref += w_t * _adc_codes(current, adc).astype(np.float64)
    if spec.offset:
        y -= spec.offset * ref[:, None]
    if adc.step != 1.0:
        y *= adc.step
    return y


# --------------------------------------------------------------------------- calibration


def observe_full_scale(x_q: np.ndarray, enc: EncodedWeights, spec: AnalogSpec, signed: bool,
                       percentile: float) -> float:
    """Calibrated ADC full scale: the percentile of every ideal read current I.

    Every (vector, row block, cycle, physical column) read counts, zeros and the reference
    column included. The percentile interpolates linearly between order statistics, as
    numpy.percentile does; the result is at least 1.
    """
    q = float(percentile)
    if not 0 <= q <= 100:
        raise InvalidDataError(f"percentile {percentile!r}: expected a value in [0, 100]")
    x, info = _prepare(x_q, enc, spec, signed)
    if x.size == 0:
        return 1.0
    v, k = x.shape
    p = enc.levels.shape[1]
    t = spec.cycles(signed)
    tasks = _plan(v, t, p, 1, spec.rows, None)

    def work(index, task, store):
        counts = np.zeros(0, dtype=np.int64)
        for _, i in _task_reads(x, enc.levels, spec, signed, task, store):
            whole = _scratch(store, "whole", i.size, np.intp)
            np.copyto(whole.reshape(i.shape), i, casting="unsafe")  # exact: I is an integer
            c = np.bincount(whole)
            if c.size > counts.size:
                c[: counts.size] += counts
                counts = c
            else:
                counts[: c.size] += c
        return counts

    counts = np.zeros(int(spec.worst_case_full_scale) + 1, dtype=np.int64)
    for c in _run_tasks(work, tasks, flops=2.0 * t * v * k * p):
        counts[: c.size] += c
    cum = np.cumsum(counts)
    h = (cum[-1] - 1) * q / 100.0
    lo = math.floor(h)
    a = int(np.searchsorted(cum, lo, side="right"))
    b = int(np.searchsorted(cum, min(lo + 1, cum[-1] - 1), side="right"))
    return max(1.0, a + (h - lo) * (b - a))
