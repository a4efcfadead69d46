"""Digital addressing around the crossbars: tensors to input vectors and back.

``to_vectors`` turns an activation into the [V, G, K] vectors the crossbars of
a layer read (im2col patches for Conv in ``(c, k1, k2, ...)`` order, input
pixels for ConvTranspose, the last axis for Linear); ``from_vectors`` turns the
[V, G, N] results back into the ONNX layout (col2im scatter-add for
ConvTranspose) and adds the bias. The loops run over kernel offsets only
(at most a few dozen), each one a strided numpy copy. ``without_lost`` sets
aside the vectors no DAC can convert (NaN, infinities); ``model_float_type``
is the type a layer's outputs take back.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..mapping import ConvGeometry
from ..onnx_exec import integer_dtype, narrow_dtype


def _pad_spatial(x: np.ndarray, pads: list[int]) -> np.ndarray:
    """Zero-pad the spatial axes by ONNX pads [b1, b2, ..., e1, e2, ...] (non-negative: lower.py checks)."""
    if not any(pads):
        return x
    nd = x.ndim - 2
    return np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])


def offsets(geo: ConvGeometry):
    """(kernel offset, slices of the padded spatial axes it reads), for every kernel offset."""
    kernel, strides, dil = geo.kernel, geo.strides, geo.dilations
    out_sp = geo.output_shape[2:]
    for offs in itertools.product(*(range(k) for k in kernel)):
        yield offs, tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offs, dil, strides, out_sp))


def windows(x: np.ndarray, geo: ConvGeometry):
    """(kernel offset, strided view [B, C, *O] of the padded input it reads), for every offset."""
    xp = _pad_spatial(x, geo.pads)
    for offs, src in offsets(geo):
        yield offs, xp[(slice(None), slice(None)) + src]


def interior(geo: ConvGeometry) -> tuple[slice, ...]:
    """The input's place on the padded spatial axes."""
    return tuple(slice(geo.pads[i], geo.pads[i] + n) for i, n in enumerate(geo.input_shape[2:]))


def fill_border(padded: np.ndarray, geo: ConvGeometry, value) -> None:
    """Set the padding of ``padded`` [C, B, *padded spatial] to ``value``, in place (not the interior)."""
    inner = interior(geo)
    for axis, sl in enumerate(inner):
        lead = (slice(None),) * (2 + axis)
        padded[lead + (slice(0, sl.start),)] = value
        padded[lead + (slice(sl.stop, None),)] = value


def padded_shape(geo: ConvGeometry) -> tuple[int, ...]:
    """The padded spatial shape of the layer's input."""
    nd = len(geo.kernel)
    return tuple(n + geo.pads[i] + geo.pads[i + nd] for i, n in enumerate(geo.input_shape[2:]))


def gather(padded: np.ndarray, geo: ConvGeometry, out: np.ndarray) -> np.ndarray:
    """Patches of a channel-major padded input [C, B, *padded spatial] into ``out`` [C, *K, B, *O]:
    row (c, k) of ``out.reshape(C·prod(K), B·prod(O))`` is what kernel offset k of channel c
    reads at every output pixel (the vectors' K order, laid out for one GEMM per group)."""
    for offs, src in offsets(geo):
        out[(slice(None),) + offs] = padded[(slice(None), slice(None)) + src]
    return out


def im2col(x: np.ndarray, geo: ConvGeometry, groups: int) -> np.ndarray:
    """Conv input [B, C, *S] -> patches [B·prod(out), G, (C/G)·prod(kernel)].

    The patches are gathered one kernel offset at a time (one strided copy each). For one image
    (or one output pixel) they are gathered as [B, C, *K, *O] and returned as a reordered view;
    otherwise that view would need a second, reordering copy, so they are written straight into
    the C-contiguous [B, *O, C, *K] layout that copy would make. Either way the memory layout is
    the one numpy's reshape gives, which the GEMM after it depends on bit for bit.
    """
    kernel, out_sp = geo.kernel, geo.output_shape[2:]
    b, c = x.shape[:2]
    nd = len(kernel)
    shape = (b * math.prod(out_sp), groups, (c // groups) * math.prod(kernel))
    if b == 1 or math.prod(out_sp) == 1 or c * math.prod(kernel) == 1:     # the reorder is a view
        patches = np.empty((b, c) + tuple(kernel) + tuple(out_sp), dtype=x.dtype)
        for offs, window in windows(x, geo):
            patches[(slice(None), slice(None)) + offs] = window
        order = (0,) + tuple(range(2 + nd, 2 + 2 * nd)) + (1,) + tuple(range(2, 2 + nd))
        return patches.transpose(order).reshape(shape)
    patches = np.empty((b,) + tuple(out_sp) + (c,) + tuple(kernel), dtype=x.dtype)
    lead = (slice(None),) * (2 + nd)                     # [B, *O, C]
    to_last = (0,) + tuple(range(2, 2 + nd)) + (1,)      # [B, C, *O] -> [B, *O, C]
    for offs, window in windows(x, geo):
        patches[lead + offs] = window.transpose(to_last)
    return patches.reshape(shape)


def col2im(cols: np.ndarray, geo: ConvGeometry, groups: int) -> np.ndarray:
    """ConvTranspose: per-pixel results [B·prod(in), G, (Cout/G)·prod(K)] -> output [B, Cout, *out]."""
    kernel, strides, dil, pads = geo.kernel, geo.strides, geo.dilations, geo.pads
    x_shape, y_shape = geo.input_shape, geo.output_shape
    b = x_shape[0]
    in_sp = x_shape[2:]
    nd = len(kernel)
    c_out = y_shape[1]
    full = [(n - 1) * s + (k - 1) * d + 1 for n, s, k, d in zip(in_sp, strides, kernel, dil)]
    canvas_sp = [max(f, pads[i] + y_shape[2 + i]) for i, f in enumerate(full)]
    canvas = np.zeros((b, c_out) + tuple(canvas_sp), dtype=np.float64 if cols.dtype == np.float64 else np.float32)
    r = cols.reshape((b,) + tuple(in_sp) + (c_out,) + tuple(kernel))
    # -> [B, Cout, *K, *in]
    r = r.transpose((0, 1 + nd) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(1, 1 + nd)))
    for offs in itertools.product(*(range(k) for k in kernel)):
        dst = tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offs, dil, strides, in_sp))
        canvas[(slice(None), slice(None)) + dst] += r[(slice(None), slice(None)) + offs]
    crop = tuple(slice(pads[i], pads[i] + y_shape[2 + i]) for i in range(nd))
    return canvas[(slice(None), slice(None)) + crop]


def to_vectors(x: np.ndarray, op_type: str, geo: ConvGeometry, groups: int) -> np.ndarray:
    if op_type == "Linear":
        return x.reshape(-1, 1, x.shape[-1])
    if op_type == "Conv":
        return im2col(x, geo, groups)
    # ConvTranspose: every input pixel is one vector per group
    b, c = x.shape[:2]
    moved = np.moveaxis(x, 1, -1).reshape(-1, groups, c // groups)
    return moved


def from_vectors(v: np.ndarray, bias: np.ndarray | None, op_type: str, geo: ConvGeometry, groups: int,
                 dtype=np.float32) -> np.ndarray:
    """The layer's output from its output vectors [V, G, N], with its bias (None: already in v)."""
    if op_type == "Linear":
        y = v.reshape(tuple(geo.input_shape[:-1]) + (v.shape[-1] * v.shape[1],))
        if bias is not None:
            y = y + bias
        return y.astype(dtype, copy=False)
    y_shape = geo.output_shape
    nd = len(y_shape) - 2
    if op_type == "Conv":
        y = v.reshape((y_shape[0],) + tuple(y_shape[2:]) + (y_shape[1],))
        y = np.moveaxis(y, -1, 1)
    else:
        y = col2im(v, geo, groups)
    if bias is None:
        return np.ascontiguousarray(y, dtype=dtype)
    b = bias.reshape((1, -1) + (1,) * nd)
    out = np.empty(np.broadcast_shapes(y.shape, b.shape), dtype=dtype)
    np.add(y, b, out=out, dtype=np.result_type(y, b), casting="unsafe")    # one pass, as (y + b).astype(dtype)
    return out


def without_lost(v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(vectors [V, G, K] with those holding NaN or an infinity set to 0, which they were, or None): the
    model itself computes NaN there (a fully masked attention row), so the outputs of those vectors are
    NaN, as the ideal product's are, and the others are computed as ever."""
    lost = ~np.isfinite(v).all(axis=(1, 2))
    if not lost.any():
        return v, None
    v = v.copy()
    v[lost] = 0
    return v, lost


def model_float_type(x: np.ndarray) -> np.dtype | None:
    """The float type of a layer's input where it is not float32 (a float16, bfloat16 or float64 model).

    Layers compute in float32; their outputs take the model's type, as the model's own Conv, Gemm or
    MatMul gives it, so that the digital ops after them see the types the model declares."""
    t = x.dtype
    if t == np.float32 or integer_dtype(t) or not (t.kind == "f" or narrow_dtype(t)):
        return None
    return t
