"""Quantisation (docs/analog.md, Quantisation): symmetric per-output-channel weights,
per-layer inputs scaled by a calibrated range.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidDataError, InvalidTargetError


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


def scaled(ints: np.ndarray, scales: np.ndarray, axis: int, dtype) -> np.ndarray:
    """``ints * scales`` with one scale per index of ``axis``, computed in ``dtype`` as ONNX's
    DequantizeLinear does (the integer converted, then one rounding of the product)."""
    shape = [1] * ints.ndim
    shape[axis] = scales.size
    return np.multiply(ints, scales.reshape(shape), dtype=np.dtype(dtype))
