"""The operators exporters write on constants to compute shapes and reshape weights, folded in numpy.

torch's multi-head attention computes its scaling from a Shape (Slice, Cast, Sqrt, Div, ...), its
recurrent layers their initial states (Gather, Unsqueeze, Concat, Expand), and quantizers reshape their
weights: a quarter of the real models we collected fold some of these, and with onnxruntime each took
its import (20 ms of a `check`) and a session per operator. Here they give onnxruntime's results exactly
(the same types, IEEE arithmetic, the ONNX rules for negative and out-of-range indices, integer division
truncating as C++ does). Anything else -- another type, an attribute or form not handled here, a value
whose result onnxruntime leaves undefined or refuses -- returns None and onnxruntime computes it (or
says what is wrong). tests/test_numpy_fold.py compares the two on each operator's edge cases.
"""

from __future__ import annotations

import numpy as np

from ..onnx_core import NUMPY_TYPES

INTEGERS = {np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)}
FLOATS = {np.dtype(np.float32), np.dtype(np.float64)}      # float16's arithmetic is left to onnxruntime
PLAIN = INTEGERS | FLOATS | {np.dtype(np.bool_)}


def fold_in_numpy(op: str, attrs: dict, args: list, opset: int) -> list[np.ndarray] | None:
    """The outputs of the ai.onnx operator ``op`` on constant ``args`` (None for an absent optional input),
    or None where onnxruntime has to compute them."""
    fold = _OPS.get(op)
    if fold is None:
        return None
    arrays = [None if a is None else np.asarray(a) for a in args]
    if not arrays or arrays[0] is None or any(a is not None and a.dtype not in PLAIN for a in arrays):
        return None
    try:
        with np.errstate(all="ignore"):         # integers wrap and floats overflow as onnxruntime's do
            out = fold(attrs, arrays, opset)
    except (ValueError, IndexError, TypeError, OverflowError):
        return None
    return None if out is None else [np.array(out, copy=True)]


def _ints(x: np.ndarray | None) -> list[int] | None:
    return None if x is None else [int(v) for v in x.reshape(-1)]


def _axes(attrs: dict, args: list, opset: int, since: int) -> list[int] | None:
    """An operator's axes: an input from opset ``since``, an attribute before."""
    return _ints(args[1] if len(args) > 1 else None) if opset >= since else attrs.get("axes")


def _unsqueeze(attrs, args, opset):
    axes = _axes(attrs, args, opset, 13)
    rank = args[0].ndim + len(axes or ())
    if not axes or any(not -rank <= a < rank for a in axes):
        return None
    return np.expand_dims(args[0], tuple(axes))       # a repeated axis raises ValueError


def _squeeze(attrs, args, opset):
    axes = _axes(attrs, args, opset, 13)
    x = args[0]
    if axes is None:
        return np.squeeze(x)
    if not axes or any(not -x.ndim <= a < x.ndim for a in axes) or any(x.shape[a] != 1 for a in axes):
        return None
    return np.squeeze(x, tuple(axes))


def _reshape(attrs, args, opset):
    x, shape = args[0], _ints(args[1])
    if opset < 5 or args[1].dtype != np.int64 or shape.count(-1) > 1 or any(d < -1 for d in shape):
        return None
    if not attrs.get("allowzero", 0):
        if any(d == 0 and i >= x.ndim for i, d in enumerate(shape)):
            return None
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    elif 0 in shape and -1 in shape:
        return None
    return x.reshape(shape)


def _concat(attrs, args, opset):
    if any(a is None or a.dtype != args[0].dtype or a.ndim != args[0].ndim for a in args) or args[0].ndim == 0:
        return None
    axis = attrs.get("axis", 0 if opset < 4 else None)        # required from opset 4
    return np.concatenate(args, axis=axis) if axis is not None and -args[0].ndim <= axis < args[0].ndim else None


def _gather(attrs, args, opset):
    x, indices = args[0], args[1]
    axis = int(attrs.get("axis", 0))
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim or indices.dtype not in (np.int32, np.int64):
        return None
    dim = x.shape[axis]
    if indices.size and (indices.min() < -dim or indices.max() >= dim):
        return None
    return np.take(x, indices.astype(np.int64), axis=axis)


def _shape(attrs, args, opset):
    rank = args[0].ndim
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    return np.array(args[0].shape[slice(start, rank if end is None else int(end))], np.int64)


def _expand(attrs, args, opset):
    shape = _ints(args[1])
    if args[1].dtype != np.int64 or args[1].ndim != 1 or any(d < 0 for d in shape):
        return None
    return np.broadcast_to(args[0], np.broadcast_shapes(args[0].shape, tuple(shape)))


def _slice(attrs, args, opset):
    x = args[0]
    if opset < 10:
        starts, ends, axes, steps = attrs.get("starts"), attrs.get("ends"), attrs.get("axes"), None
    else:
        starts, ends, axes, steps = (_ints(args[i]) if len(args) > i else None for i in range(1, 5))
    if starts is None or ends is None or len(starts) != len(ends):
        return None
    axes = list(range(len(starts))) if axes is None else [a + x.ndim if a < 0 else a for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if len(axes) != len(starts) or len(steps) != len(starts) or len(set(axes)) != len(axes) \
            or any(not 0 <= a < x.ndim for a in axes) or 0 in steps:
        return None
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = x.shape[axis]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:       # from dim - 1 down to -1: through index 0 (a slice's stop of -1 would mean the last)
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(0, 0) if dim == 0 else slice(start, None if end < 0 else end, step)
    return x[tuple(index)]


def _cast(attrs, args, opset):
    to = NUMPY_TYPES.get(int(attrs.get("to", -1)))
    if to is None or np.dtype(to) not in PLAIN:
        return None
    x, to = args[0], np.dtype(to)
    if x.dtype in FLOATS and to in INTEGERS:      # C++ truncates; out of range it is undefined
        info = np.iinfo(to)
        if not np.isfinite(x).all() or x.size and (np.trunc(x.min()) < info.min or np.trunc(x.max()) > info.max):
            return None
    return x.astype(to)


def _same_types(args, kinds) -> bool:
    return len(args) == 2 and args[1] is not None and args[0].dtype == args[1].dtype and args[0].dtype in kinds


def _binary(ufunc, kinds=INTEGERS | FLOATS):
    def fold(attrs, args, opset):
        return ufunc(args[0], args[1]) if _same_types(args, kinds) else None
    return fold


def _div(attrs, args, opset):
    if not _same_types(args, INTEGERS | FLOATS):
        return None
    a, b = args
    if a.dtype in FLOATS:
        return np.divide(a, b)
    if (b == 0).any() or a.dtype.kind == "i" and ((a == np.iinfo(a.dtype).min) & (b == -1)).any():
        return None         # undefined in C++
    q = np.floor_divide(a, b)
    return q + ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0)))       # toward zero, as C++ divides


def _mod(attrs, args, opset):
    if not _same_types(args, INTEGERS | FLOATS):
        return None
    a, b = args
    if attrs.get("fmod", 0):
        return np.fmod(a, b) if a.dtype in FLOATS or not (b == 0).any() else None
    return np.remainder(a, b) if a.dtype in INTEGERS and not (b == 0).any() else None    # the divisor's sign


def _unary(ufunc, kinds):
    def fold(attrs, args, opset):
        return ufunc(args[0]) if len(args) == 1 and args[0].dtype in kinds else None
    return fold


def _where(attrs, args, opset):
    if len(args) != 3 or args[0].dtype != np.bool_ or any(a is None for a in args) or args[1].dtype != args[2].dtype:
        return None
    return np.where(*args)


_OPS = {
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Reshape": _reshape, "Concat": _concat, "Gather": _gather,
    "Shape": _shape, "Expand": _expand, "Slice": _slice, "Cast": _cast, "Where": _where,
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply),
    "Div": _div, "Mod": _mod, "Sqrt": _unary(np.sqrt, FLOATS),
    "Neg": _unary(np.negative, FLOATS | {t for t in INTEGERS if t.kind == "i"}),
    "Equal": _binary(np.equal, PLAIN), "Less": _binary(np.less), "Greater": _binary(np.greater),
}
