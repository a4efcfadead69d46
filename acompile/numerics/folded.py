"""A quantized model's weights as its integers: what folding a DequantizeLinear of a constant leaves.

Such a weight is ``(ints - zero) * scales`` along one axis, the difference exact and the product rounded
once, as DequantizeLinear computes it (:class:`FoldedIntegers`). Where the weight feeds only crossbar
layers, folding keeps it in that form (:class:`DequantizedWeight`): numpy reads it as the float32 product
(``np.asarray``, or a slice of rows), computed at each read, so a compile or check holds a quarter of a
float copy's bytes and never the whole float copy at once. Where a float weight had to be made (it feeds
other ops too), the graph remembers its integers beside it (:func:`note_folded`). Either way the checks
that would divide the floats back (whole multiples of the model's scales, their largest integer,
finiteness) and program.npz's integer form (:func:`integer_form`, which divides back only a weight whose
integers nobody remembered) read the integers (:func:`folded_integers`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from .quantise import scaled

EXACT_INTEGERS = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16)}    # in float32, and differences
_FOLDED = "folded_integers"     # graph.meta key: id(float tensor) -> (weak reference to it, its FoldedIntegers)


@dataclass(frozen=True, eq=False)
class FoldedIntegers:
    """A float32 tensor that is ``(ints - zero) * scales`` along ``axis``, element for element."""
    ints: np.ndarray
    zero: np.ndarray | None          # None, one value, or one per index of axis
    scales: np.ndarray               # float32: one value, or one per index of axis
    axis: int

    def differences(self) -> np.ndarray:
        """ints - zero, exactly, C-contiguous, in the narrowest of int8, int16 and int32 that holds them."""
        d = self.ints if self.zero is None or not np.any(self.zero) else np.subtract(
            self.ints, self._along(self.zero, self.ints.ndim), dtype=np.int32)
        lo, hi = self._type_range()
        if not -128 <= lo <= hi <= 127:     # the type alone does not make them int8: the values decide
            lo, hi = (int(d.min()), int(d.max())) if d.size else (0, 0)
        for t in (np.int8, np.int16):
            if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
                return np.ascontiguousarray(d, dtype=t)
        return np.ascontiguousarray(d, dtype=np.int32)

    @cached_property
    def largest(self) -> int:
        """max |ints - zero|, from the least and greatest integer (of each index of axis, for zero points
        per index)."""
        low, high = self._extremes()
        return max(-int(low.min(initial=0)), int(high.max(initial=0)))

    @cached_property
    def bound(self) -> int:
        """What the integers' type and the zero points allow of max |ints - zero| (no integer read)."""
        lo, hi = self._type_range()
        return max(-lo, hi)

    def _type_range(self) -> tuple[int, int]:
        """The least and greatest ints - zero the integers' type and the zero points allow."""
        info = np.iinfo(self.ints.dtype)
        zero = np.zeros(1, np.int64) if self.zero is None or not self.zero.size else self.zero.astype(np.int64)
        return int(info.min) - int(zero.max()), int(info.max) - int(zero.min())

    def within(self, limit: int) -> bool:
        """Whether max |ints - zero| <= limit: from :attr:`bound` where that decides it (a model's 8-bit integers
        on 16-bit weights), else from the integers themselves (:attr:`largest`)."""
        return self.bound <= limit or self.largest <= limit

    def finite(self) -> bool:
        """Whether every product is finite: the scales are, and no product can pass float32's largest."""
        top = float(np.max(np.abs(self.scales.astype(np.float64)))) if self.scales.size else 0.0
        if not np.all(np.isfinite(self.scales)):
            return False
        limit = float(np.finfo(np.float32).max)
        return top * self.bound < limit or top * self.largest < limit

    def product(self, rows: slice = slice(None)) -> np.ndarray:
        """The float32 tensor (its ``rows``, a slice of axis 0), as DequantizeLinear computes it."""
        per_row = self.axis == 0
        ints = self.ints[rows]
        zero = self.zero if self.zero is None or self.zero.size == 1 or not per_row else self.zero.reshape(-1)[rows]
        scales = self.scales if self.scales.size == 1 or not per_row else self.scales[rows]
        if zero is not None and np.any(zero):
            ints = np.subtract(ints, self._along(zero, ints.ndim), dtype=np.float32)     # exact
        return scaled(ints, scales, self.axis, np.float32)

    def _extremes(self) -> tuple[np.ndarray, np.ndarray]:
        """(least, greatest) of ints - zero: over all, or per index of axis where zero points or scales are
        given per index."""
        if not self.ints.size:
            return np.zeros(1, np.int64), np.zeros(1, np.int64)
        zero = np.zeros(1, np.int64) if self.zero is None else self.zero.reshape(-1).astype(np.int64)
        if zero.size == 1 and self.scales.size == 1:
            return np.array([int(self.ints.min())]) - zero, np.array([int(self.ints.max())]) - zero
        others = tuple(a for a in range(self.ints.ndim) if a != self.axis)
        return self.ints.min(axis=others) - zero, self.ints.max(axis=others) - zero

    def _along(self, v: np.ndarray, ndim: int) -> np.ndarray:
        v = np.asarray(v).reshape(-1)
        shape = [1] * ndim
        if v.size > 1:
            shape[self.axis] = v.size
        return v.reshape(shape)


def integers_of(ints, scales, zero=None, axis: int = 0, kind: type | None = None) -> FoldedIntegers | None:
    """The FoldedIntegers (or ``kind``, DequantizedWeight) of a DequantizeLinear, or of w_q - z_w with
    scales 1: integers of 16 bits or fewer, float32 scales and zero points of the integers' type, each
    one value or one per index of ``axis``; None for any other form."""
    ints, scales = np.asarray(ints), np.asarray(scales)
    if ints.dtype not in EXACT_INTEGERS or scales.dtype != np.float32 or not 0 <= axis < ints.ndim \
            or scales.size not in (1, ints.shape[axis]) or scales.ndim > 1:
        return None
    if zero is not None:
        zero = np.asarray(zero)
        if zero.dtype != ints.dtype or zero.size not in (1, ints.shape[axis]) or zero.ndim > 1:
            return None
    return (kind or FoldedIntegers)(ints, zero, scales.reshape(-1), axis)


class DequantizedWeight(FoldedIntegers):
    """A weight held as its integers (a :class:`FoldedIntegers`) that numpy reads as the float32 product.

    It has an array's shape, dtype and size; ``np.asarray`` and other numpy functions compute the product,
    a slice of its first axis computes those rows only, ``.T`` of a matrix is the transposed integers, and
    ``min``/``max`` and ``flat[i]`` read the integers. Any other array attribute is the product's (computed
    for it); there is nothing to write in place."""

    base = None         # owns no numpy buffer another constant could share

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ints.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return self.ints.ndim

    @property
    def size(self) -> int:
        return int(self.ints.size)

    @property
    def nbytes(self) -> int:
        return 4 * self.size

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.product()
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, slice) and (self.axis == 0 or self.scales.size == 1 and (
                self.zero is None or self.zero.size == 1)):
            return self.product(key)
        return self.product()[key]

    @property
    def T(self):
        return DequantizedWeight(self.ints.T, self.zero, self.scales, 1 - self.axis) if self.ndim == 2 \
            else self.product().T

    @property
    def flat(self) -> _Flat:
        return _Flat(self)

    def astype(self, dtype, copy: bool = True):
        return self if np.dtype(dtype) == np.float32 and not copy else self.product().astype(dtype)

    def min(self) -> np.float32:
        return self._bound(min)

    def max(self) -> np.float32:
        return self._bound(max)

    def contiguous(self) -> DequantizedWeight:
        """The same weight with its integers C-contiguous (a transposed matrix's copied: a quarter of the bytes
        of its float product)."""
        return self if self.ints.flags.c_contiguous else replace(self, ints=np.ascontiguousarray(self.ints))

    def __getattr__(self, name: str):
        if name.startswith("_") or name in _IN_PLACE:
            raise AttributeError(name)
        return getattr(self.product(), name)

    def _bound(self, pick) -> np.float32:
        """The least or greatest product: for each scale, that of the least or greatest integer (a product
        rounded once is monotonic in the integer)."""
        low, high = self._extremes()
        s = self.scales.reshape(-1)
        ends = [np.multiply(v, s, dtype=np.float32) for v in (low, high)]
        return np.float32(pick(float(e.min() if pick is min else e.max()) for e in ends))


_IN_PLACE = {"fill", "put", "itemset", "resize", "sort", "partition", "setflags", "byteswap", "setfield"}


class _Flat:
    """``flat[i]`` of a DequantizedWeight from its integers; any other index computes the product."""

    def __init__(self, weight: DequantizedWeight):
        self.weight = weight

    def __getitem__(self, i):
        w = self.weight
        if not isinstance(i, (int, np.integer)):
            return w.product().flat[i]
        at = np.unravel_index(int(i) % w.size, w.shape)
        d = int(w.ints[at]) - (0 if w.zero is None else int(w.zero.reshape(-1)[at[w.axis] if w.zero.size > 1 else 0]))
        return np.multiply(d, w.scales.reshape(-1)[at[w.axis] if w.scales.size > 1 else 0], dtype=np.float32)


def note_folded(meta: dict, value: np.ndarray, record: FoldedIntegers | None) -> None:
    """Remember, in a graph's ``meta``, that the float32 tensor ``value`` is ``record``'s product."""
    if record is not None and isinstance(value, np.ndarray) and value.dtype == np.float32 \
            and value.shape == record.ints.shape:
        meta.setdefault(_FOLDED, {})[id(value)] = (weakref.ref(value), record)


def release_folded(meta: dict) -> None:
    """Forget the integers remembered beside float tensors (views of the model file: they can be freed)."""
    meta.pop(_FOLDED, None)


def folded_integers(meta: dict, value) -> FoldedIntegers | None:
    """The integers behind ``value``: a DequantizedWeight's own; those :func:`note_folded` left for exactly
    this array, or for the matrix of which it is the transposed view (a MatMul's weight as its layer reads
    it); else None (a pass that changes a weight makes a new array, which has none)."""
    if isinstance(value, FoldedIntegers):
        return value
    records = meta.get(_FOLDED)
    if not records or not isinstance(value, np.ndarray):
        return None
    ref, record = records.get(id(value), (None, None))
    if ref is not None and ref() is value:
        return record
    base = value.base
    ref, record = records.get(id(base), (None, None)) if base is not None else (None, None)
    if ref is None or ref() is not base or base.ndim != 2 or value.shape != base.shape[::-1] \
            or value.strides != base.strides[::-1] or value.ctypes.data != base.ctypes.data:
        return None
    return FoldedIntegers(record.ints.T, record.zero, record.scales, 1 - record.axis)


def carry_folded(meta: dict, source: np.ndarray, copy: np.ndarray) -> None:
    """``copy`` holds ``source``'s values in the same layout: it keeps source's integers, if remembered."""
    record = folded_integers(meta, source)
    if record is not None:
        note_folded(meta, copy, FoldedIntegers(record.ints, record.zero, record.scales, record.axis))


# elements per pass of integer_form: its temporaries stay in the core's cache (256 KB of float32),
# 1.7x faster than 4 MB pieces on a ResNet-50's weights
_FORM_CHUNK = 1 << 16


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
