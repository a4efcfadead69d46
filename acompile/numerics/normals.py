"""The normal draws of read noise: sigma * N(0, 1) added to every read, one draw per element.

A read-noise simulation of a 4096x4096 layer makes half a billion draws, so a draw must cost
about a nanosecond. Each draw is one of 65,536 equally likely values, the mean of the standard
normal over one 1/65,536 slice of its probability; 16 random bits pick the slice. The bits come
from SplitMix64 over a counter: word w of a call is mix64(key + (w + 1) * GOLDEN), and its four
16-bit fields, lowest first, index the draws 4w..4w+3. The key is one raw 64-bit output of the
caller's generator, so a call's draws depend on its generator's state and the element index only.

The distribution function of the draws is within half a slice (2^-17) of the normal's in the body
and within 0.63 of a slice (9.5e-6) at the two outermost slices, which hold the tails beyond 4.17
sigma at their means, ±4.39 sigma; each slice has the normal's mean, so the draws have mean 0 and
variance 1 - 1.5e-6. Integer arithmetic and a table built with Python's own math make the draws the
same on every machine.
numba compiles the loop when it is installed (about 0.45 ns a draw on one core of an AVX-512 machine,
against 3 ns for the numpy passes that define it; tests/test_noise_draws.py checks that both give the
same bits).
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

SLICES = 1 << 16
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
# elements per numpy pass: the words, indices and values of a chunk stay in cache
CHUNK = 1 << 16
# Draws made with numpy before numba is loaded: loading it (import, and the compiled loop from its
# on-disk cache) takes about 0.9 s on the 2-core machine, what numpy spends on 2^28 draws. Paying for
# it only once numpy has spent as much keeps any run within twice its best (rent, then buy), and
# small simulations never pay it
SWITCH_DRAWS = 1 << 28

_tables: dict = {}
_compiled = None
_drawn = 0
_lock = threading.RLock()  # compiled() builds the table while it holds it


@functools.cache
def slice_means() -> tuple[float, ...]:
    """E[Z | Z in slice i] for the 65,536 equiprobable slices of the standard normal, in order:
    SLICES * (φ(a_i) - φ(b_i)) with a_i, b_i the slice's quantiles (φ(±∞) = 0)."""
    from statistics import NormalDist
    inv = NormalDist().inv_cdf
    density = [0.0] + [math.exp(-0.5 * q * q) / math.sqrt(2 * math.pi)
                       for q in (inv(i / SLICES) for i in range(1, SLICES))] + [0.0]
    return tuple(SLICES * (density[i] - density[i + 1]) for i in range(SLICES))


def table(dtype) -> np.ndarray:
    """slice_means() in ``dtype`` (float32 or float64), computed once per process."""
    dt = np.dtype(dtype)
    if dt not in _tables:
        with _lock:
            if dt not in _tables:
                t = np.array(slice_means(), dt)
                t.flags.writeable = False
                _tables[dt] = t
    return _tables[dt]


def _words(key: int, first: int, count: int) -> np.ndarray:
    """SplitMix64 words first..first+count-1 of the stream of ``key`` (uint64 wraps like C)."""
    z = np.arange(first + 1, first + count + 1, dtype=np.uint64)
    z *= np.uint64(GOLDEN)
    z += np.uint64(key)
    z ^= z >> np.uint64(30)
    z *= np.uint64(MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(MIX2)
    z ^= z >> np.uint64(31)
    return z


def add_with_numpy(flat: np.ndarray, sigma: float, key: int) -> np.ndarray:
    """The definition, in numpy passes over chunks of CHUNK elements (a multiple of 4)."""
    values = table(flat.dtype)
    s = flat.dtype.type(sigma)
    for c0 in range(0, flat.size, CHUNK):
        c1 = min(flat.size, c0 + CHUNK)
        words = _words(key, c0 // 4, (c1 - c0 + 3) // 4)
        # a little-endian word's 16-bit fields are its bytes in pairs, lowest first
        index = words.astype("<u8", copy=False).view("<u2")[:c1 - c0].astype(np.intp)
        z = np.take(values, index)
        z *= s
        flat[c0:c1] += z
    return flat


def _compile():
    """The same loop compiled by numba (from its on-disk cache when it can), or None when numba is
    not installed or cannot compile it: numpy then draws the same bits."""
    try:
        import numba
    except ImportError:
        return None
    golden, mix1, mix2 = np.uint64(GOLDEN), np.uint64(MIX1), np.uint64(MIX2)
    s16, s27, s30, s31, s32, s48 = (np.uint64(v) for v in (16, 27, 30, 31, 32, 48))
    mask = np.uint64(SLICES - 1)

    # no fastmath: sigma * value is rounded before the addition, as numpy does it; the mix is
    # written inline because a jitted helper in the closure would defeat numba's on-disk cache. The
    # whole words' loop has no branch, so LLVM vectorises it (its 64-bit multiplies and the table's
    # gathers): 0.44 ns a draw against 1.09 with the last word's case inside it
    def loop(flat, sigma, key, values):
        full = flat.size // 4
        for w in range(full):
            z = key + np.uint64(w + 1) * golden
            z = (z ^ (z >> s30)) * mix1
            z = (z ^ (z >> s27)) * mix2
            z = z ^ (z >> s31)
            b = 4 * w
            flat[b] += sigma * values[z & mask]
            flat[b + 1] += sigma * values[(z >> s16) & mask]
            flat[b + 2] += sigma * values[(z >> s32) & mask]
            flat[b + 3] += sigma * values[z >> s48]
        b = 4 * full
        if b < flat.size:       # the last word's first fields
            z = key + np.uint64(full + 1) * golden
            z = (z ^ (z >> s30)) * mix1
            z = (z ^ (z >> s27)) * mix2
            z = z ^ (z >> s31)
            for e in range(b, flat.size):
                flat[e] += sigma * values[(z >> np.uint64(16 * (e - b))) & mask]
        return flat

    # without a cache folder it may write (a read-only install and home), numba refuses cache=True
    for cache in (True, False):
        try:
            add = numba.njit(nogil=True, cache=cache, boundscheck=False)(loop)
            add(np.zeros(5, np.float32), np.float32(1), np.uint64(0), table(np.float32))  # compile now
            return add
        except Exception:  # noqa: BLE001 - any failure leaves the numpy definition in charge
            continue
    return None


def compiled():
    """numba's version of add_with_numpy (compiled on first use), or None."""
    global _compiled
    if _compiled is None:
        with _lock:
            if _compiled is None:
                _compiled = _compile() or False
    return _compiled or None


def add_normal(out: np.ndarray, sigma: float, gen: np.random.Generator) -> np.ndarray:
    """Add sigma * N(0, 1), one independent draw per element in memory order, to C-contiguous
    float32 or float64 ``out`` in place; takes one raw 64-bit output of gen's bit generator."""
    if not out.flags.c_contiguous:  # reshape would copy, and the draws would be lost
        raise ValueError("add_normal needs a C-contiguous array")
    if out.dtype not in (np.float32, np.float64):
        raise ValueError(f"add_normal needs float32 or float64, got {out.dtype}")
    global _drawn
    key = int(gen.bit_generator.random_raw())
    flat = out.reshape(-1)
    if flat.size:
        add = compiled() if _drawn >= SWITCH_DRAWS else None
        _drawn += flat.size
        if add is None:
            add_with_numpy(flat, sigma, key)
        else:
            add(flat, out.dtype.type(sigma), np.uint64(key), table(out.dtype))
    return out
