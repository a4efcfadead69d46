"""The DAC side of a read (docs/analog.md, Bit-serial inputs): integer inputs streamed
in d-bit chunks, one chunk per input cycle, and each cycle's digital weight.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidDataError
from .spec import AnalogSpec


def cycle_weights(spec: AnalogSpec, signed: bool) -> list[float]:
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


def check_inputs(x_q: np.ndarray, spec: AnalogSpec, signed: bool) -> np.ndarray:
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
    x = check_inputs(x_q, spec, signed)
    if dtype is None:
        dtype = np.uint8 if spec.dac_bits <= 8 else np.uint16
    return fill_chunks(x, spec, signed, np.empty((spec.cycles(signed),) + x.shape, dtype=dtype))


def fill_chunks(x: np.ndarray, spec: AnalogSpec, signed: bool, out: np.ndarray) -> np.ndarray:
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
