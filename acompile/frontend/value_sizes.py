"""The sizes a model's values would take, from its declared and inferred shapes, checked before anything
is allocated: within the limits, and possible (onnxruntime refuses a dimension below 0, which ONNX's
inference gives a convolution's output when its input is shorter than its kernel, and a convolution over
an empty axis)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidModelError, LimitError, clean
from ..ir import TensorInfo
from ..limits import Limits, byte_size
from ..onnx_core import ModelProto, ValueInfoProto, tensor_dtype_to_np_dtype

# the operators onnxruntime refuses to run over an empty spatial axis or one shorter than the kernel
CONVOLUTIONS = {"Conv", "ConvInteger", "QLinearConv", "FusedConv"}
_LONGER = "give the model a longer input: --input-shape, or data of that length"


def check_input_sizes(skel: ModelProto, where: str, limits: Limits) -> None:
    """Every model input's fixed size within the limit, and none negative."""
    for vi in skel.graph.input:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        n = 1
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                if d.dim_value < 0:
                    raise InvalidModelError(f"input {clean(vi.name)!r} has a negative dimension", where=where)
                n *= int(d.dim_value)
        itemsize = (_np_dtype(tt.elem_type) or np.dtype(np.float32)).itemsize
        if n * itemsize > limits.max_tensor_bytes:
            raise LimitError(f"input {clean(vi.name)!r} would take {byte_size(n * itemsize)}; the limit is "
                             f"{byte_size(limits.max_tensor_bytes)}", where=where,
                             hint="set ACOMPILE_MAX_TENSOR_MB to raise it")


def check_value_sizes(model: ModelProto, where: str, limits: Limits) -> None:
    """Every inferred value's size within the limit and possible: no dimension below 0 (an input shorter than
    a kernel), no convolution over an empty axis (onnxruntime refuses both)."""
    infos = {vi.name: value_info(vi) for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output)}
    for node in model.graph.node:
        if node.op_type in CONVOLUTIONS and node.input and node.output \
                and not any(a.name == "channels_last" and a.i for a in node.attribute):    # NCHW data only
            _check_convolution(node, infos, where)
    producer = {o: n for n in model.graph.node for o in n.output if o}
    for vi in (*model.graph.value_info, *model.graph.output):
        info = infos[vi.name]
        if info.shape is None or info.dtype is None:
            continue
        dims = [d for d in info.shape if isinstance(d, int)]
        negative = next((k for k, d in enumerate(info.shape) if isinstance(d, int) and d < 0), None)
        if negative is not None and vi.name in producer:
            node = producer[vi.name]
            raise InvalidModelError(f"node {clean(node.name)!r} ({node.op_type}) would give {clean(vi.name)!r} a "
                                    f"size of {info.shape[negative]} along axis {negative}: its input is too short",
                                    where=where, hint=_LONGER)
        n = math.prod(dims)
        if n * info.dtype.itemsize > limits.max_tensor_bytes:
            raise LimitError(f"tensor {clean(vi.name)!r} would take {byte_size(n * info.dtype.itemsize)}; "
                             f"the limit is {byte_size(limits.max_tensor_bytes)}", where=where,
                             hint="set ACOMPILE_MAX_TENSOR_MB to raise it")


def _check_convolution(node, infos: dict, where: str) -> None:
    """A convolution's input has no empty spatial axis and, padded, none shorter than the (dilated) kernel:
    ONNX's inference then gives an output of size 0 or 1, onnxruntime an error."""
    x = infos[node.input[0]].shape if node.input[0] in infos else None
    if not x:
        return
    empty = next((k for k, d in enumerate(x[2:], 2) if d == 0), None)
    if empty is not None:
        raise InvalidModelError(f"node {clean(node.name)!r} ({node.op_type}) would convolve an empty axis: "
                                f"{clean(node.input[0])!r} has size 0 along axis {empty}", where=where, hint=_LONGER)
    attrs = {a.name: (list(a.ints) if a.ints else a.s.decode(errors="replace")) for a in node.attribute}
    at = 3 if node.op_type == "QLinearConv" else 1       # the weights
    w = infos[node.input[at]].shape if len(node.input) > at and node.input[at] in infos else None
    kernel = attrs.get("kernel_shape") or (list(w[2:]) if w else None)
    if not kernel or str(attrs.get("auto_pad", "NOTSET")).startswith("SAME") or len(kernel) != len(x) - 2:
        return
    pads = attrs.get("pads") or [0] * 2 * len(kernel)
    dilations = attrs.get("dilations") or [1] * len(kernel)
    if len(pads) != 2 * len(kernel) or len(dilations) != len(kernel):
        return          # the checker's or onnxruntime's to refuse
    for i, (n, k, d) in enumerate(zip(x[2:], kernel, dilations)):
        span = d * (k - 1) + 1 if isinstance(k, int) else None
        if isinstance(n, int) and span is not None and n + pads[i] + pads[i + len(kernel)] < span:
            raise InvalidModelError(f"node {clean(node.name)!r} ({node.op_type}) has an input shorter than its "
                                    f"kernel: {clean(node.input[0])!r} has size {n} along axis {i + 2}, padded "
                                    f"{n + pads[i] + pads[i + len(kernel)]}, and the kernel spans {span}",
                                    where=where, hint=_LONGER)


def _np_dtype(elem_type: int):
    try:
        return np.dtype(tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None


def value_info(vi: ValueInfoProto) -> TensorInfo:
    tt = vi.type.tensor_type
    dtype = _np_dtype(tt.elem_type) if tt.elem_type else None
    shape = None
    if tt.HasField("shape"):
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(clean(d.dim_param, 64))
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorInfo(vi.name, dtype, shape)
