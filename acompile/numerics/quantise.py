"""Quantisation (docs/analog.md, Quantisation): symmetric per-output-channel weights,
per-layer inputs scaled by a calibrated range.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidDataError, InvalidTargetError

if TYPE_CHECKING:
    from .folded import FoldedIntegers


def quantize_weights(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantisation of W (N, K) to `bits` bits.

    Returns q_w int32 (N, K) in [-(2^(bits-1)-1), 2^(bits-1)-1] and s_w float64 (N,),
    ``s_w[n] = max|W[n,:]| / (2^(bits-1)-1)``; an all-zero channel gets s_w = 1.
    """
    s_w = weight_scales(w, bits)
    return quantize_with_scales(w, s_w, bits, own_scales=True), s_w


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


def quantize_with_scales(w: np.ndarray, s_w: np.ndarray, bits: int, own_scales: bool = False) -> np.ndarray:
    """q_w of :func:`quantize_weights` for the scales s_w of the full rows: int32, same shape as w.

    Elementwise, so any set of W's columns (a row block) quantises on its own. ``own_scales``: s_w is
    :func:`weight_scales` of these rows, so |w / s_w| is at most 2^(bits-1)-1 (up to one rounding,
    which rint takes back) and clipping would change nothing: it is skipped.
    """
    qmax = (1 << (bits - 1)) - 1
    # float64 from the first operation on (w is converted element by element, exactly), then in place
    q = np.divide(w, s_w[:, None], dtype=np.float64)
    np.rint(q, out=q)
    if not own_scales:
        np.minimum(q, qmax, out=q)          # np.clip's values, in two plain ufunc passes (it costs twice as much)
        np.maximum(q, -qmax, out=q)
    return q.astype(np.int32)


def whole_multiples(w: np.ndarray, s_w: np.ndarray) -> np.ndarray:
    """q_w (int32) of rows W (N, K) known to be whole multiples of their scales s_w (N,) within the
    tolerance a quantized model's weights are checked to (apply_model_scales): rint of one float32
    division gives them, as the float64 one of :func:`quantize_with_scales` does (neither is near a half),
    at half its memory traffic; their range was checked too, so nothing is clipped."""
    q = np.divide(w, np.asarray(s_w, np.float32)[:, None], dtype=np.float32)
    np.rint(q, out=q)
    return q.astype(np.int32)


def input_range(bits: int, signed: bool) -> tuple[int, int]:
    """The smallest and largest code quantize_inputs produces (symmetric when signed)."""
    if signed:
        m = (1 << (bits - 1)) - 1
        return -m, m
    return 0, (1 << bits) - 1


def input_scale(abs_range: float, bits: int, signed: bool) -> float:
    """s_x for a calibrated absolute range a: a/(2^(Bx-1)-1) signed, a/(2^Bx-1) unsigned."""
    a = float(abs_range)
    if not math.isfinite(a) or a < 0:
        raise InvalidDataError(f"input range {abs_range!r}: expected a finite value >= 0")
    top = input_range(bits, signed)[1]
    if top < 1:
        raise InvalidTargetError(f"input bits={bits}: a signed input needs at least 2 bits")
    return a / top if a > 0 else 1.0


def quantize_inputs(x: np.ndarray, scale: float, bits: int, signed: bool, offset: int = 0) -> np.ndarray:
    """q_x = clip(rint(x / s_x) + offset) into the signed-symmetric or unsigned range, int32.

    rint rounds half to even, as ONNX QuantizeLinear does; ``offset`` is a quantized model's zero
    point less its type's minimum (the codes stream unsigned; the sim subtracts offset * sum(w)).
    """
    lo, hi = input_range(bits, signed)
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise InvalidDataError("inputs contain NaN or infinity")
    q = np.rint(x / float(scale))
    if offset:
        q += offset
    return np.clip(q, lo, hi).astype(np.int32)


# elements per pass of integer_form: its temporaries stay in the core's cache (256 KB of float32),
# 1.7x faster than 4 MB pieces on a ResNet-50's weights
_FORM_CHUNK = 1 << 16


def scaled(ints: np.ndarray, scales: np.ndarray, axis: int, dtype) -> np.ndarray:
    """``ints * scales`` with one scale per index of ``axis``, computed in ``dtype`` as ONNX's
    DequantizeLinear does (the integer converted, then one rounding of the product)."""
    shape = [1] * ints.ndim
    shape[axis] = scales.size
    return np.multiply(ints, scales.reshape(shape), dtype=np.dtype(dtype))


def integer_form(w: np.ndarray, scales: np.ndarray,
                 known: FoldedIntegers | None = None) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(integers, scales in w's type, axis) whose :func:`scaled` is ``w`` bit for bit, or None.

    A quantized model's weight, once folding has evaluated its DequantizeLinear, is such a product:
    stored as int8 (or int16, for unsigned integers with a zero point) and its scales, it takes a quarter
    (a half) of its float32 bytes. Each axis as long as ``scales`` is tried; only an exact match counts,
    so a float weight that merely looks quantized is never changed. ``known`` (w's folding record)
    gives the same answer without dividing w back, where it has it.
    """
    if w.dtype.kind != "f" or w.ndim == 0 or w.size == 0:
        return None
    s = np.asarray(scales).astype(w.dtype).reshape(-1)
    axes = [a for a in range(w.ndim) if w.shape[a] == s.size]
    if known is not None and axes and w.dtype == np.float32 and _known_on(known, s, axes[0]):
        ints = known.differences()
        if ints.dtype != np.int32:
            return ints, s, axes[0]
    for axis in axes:
        found = _exact_integers(w, s, axis)
        if found is not None:
            ints, low, high = found
            return (ints.astype(np.int8) if -128 <= low and high <= 127 else ints), s, axis
    return None


def _known_on(known: FoldedIntegers, s: np.ndarray, axis: int) -> bool:
    """Whether ``known``'s scales, along ``axis``, are ``s``: the first axis integer_form would try."""
    mine = known.scales.reshape(-1)
    if mine.size == 1 or (known.axis == axis and mine.size == s.size):
        return bool(np.array_equal(np.broadcast_to(mine, s.shape), s))
    return False


def _exact_integers(w: np.ndarray, s: np.ndarray, axis: int) -> tuple[np.ndarray, float, float] | None:
    """(the int16 integers of :func:`integer_form` on ``axis``, their least and greatest), or None when w
    is not their exact product with s. Works through w in slices of its first axis."""
    bits, info = w.view(f"u{w.dtype.itemsize}"), np.iinfo(np.int16)
    ints = np.empty(w.shape, np.int16)
    shape = [1] * w.ndim
    shape[axis] = s.size
    rows = max(1, _FORM_CHUNK // max(1, w[:1].size))
    low = high = 0.0
    for r in range(0, w.shape[0], rows):
        sb = s.reshape(shape)[r:r + rows] if axis == 0 else s.reshape(shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.rint(w[r:r + rows] / sb)
        lo, hi = float(q.min()), float(q.max())
        if not (info.min <= lo and hi <= info.max):      # NaN and infinities fail it too
            return None
        low, high = min(low, lo), max(high, hi)
        ints[r:r + rows] = q
        if not np.array_equal(scaled(ints[r:r + rows], sb, axis, w.dtype).view(bits.dtype), bits[r:r + rows]):
            return None
    return ints, low, high
