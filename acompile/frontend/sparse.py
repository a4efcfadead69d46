"""Sparse tensors as the dense tensors they stand for.

ONNX lets a graph (the main graph or any sub-graph) hold ``sparse_initializer`` entries, and a
Constant node give its value as ``sparse_value``: values, their indices (linear, or one row of
coordinates per value) and the dense shape. onnxruntime expands both when it loads a model; here
they become ordinary initializers and ``value`` attributes the same way, before the checker, so
shape inference, constant folding and the crossbars see plain tensors.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidModelError, LimitError, clean
from ..limits import Limits, byte_size
from ..onnx_core import AttributeProto, ModelProto, SparseTensorProto, TensorProto, from_array, to_array


def densify(model: ModelProto, where: str, limits: Limits) -> None:
    """Replace, in place, every sparse initializer and every Constant's ``sparse_value`` by its dense tensor."""
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        if len(graph.sparse_initializer):
            graph.initializer.extend(dense(sp, where, limits) for sp in graph.sparse_initializer)
            del graph.sparse_initializer[:]
        for node in graph.node:
            for a in node.attribute:
                if a.type == AttributeProto.GRAPH:
                    stack.append(a.g)
                elif a.type == AttributeProto.GRAPHS:
                    stack.extend(a.graphs)
                elif node.op_type == "Constant" and a.name == "sparse_value" and node.domain in ("", "ai.onnx"):
                    _to_value(a, dense(a.sparse_tensor, where, limits))


def _to_value(a: AttributeProto, t: TensorProto) -> None:
    a.Clear()
    a.name, a.type = "value", AttributeProto.TENSOR
    a.t.CopyFrom(t)


def dense(sp: SparseTensorProto, where: str, limits: Limits) -> TensorProto:
    """The dense tensor (named as its values are, as ONNX names a sparse tensor) of ``sp``."""
    name = sp.values.name
    what = f"sparse tensor {clean(name)!r}"
    dims = [int(d) for d in sp.dims]
    try:
        values, indices = to_array(sp.values), to_array(sp.indices)
    except Exception as e:
        raise InvalidModelError(f"{what} cannot be decoded: {clean(str(e), 120)}", where=where)
    size = math.prod(dims)
    if any(d < 0 for d in dims) or values.ndim != 1 or indices.dtype.kind not in "iu":
        raise InvalidModelError(f"{what} is malformed: dims {dims}, values of shape {list(values.shape)}, "
                                f"{indices.dtype} indices", where=where)
    if size * values.dtype.itemsize > limits.max_tensor_bytes:
        raise LimitError(f"{what} would take {byte_size(size * values.dtype.itemsize)} dense; the limit is "
                         f"{byte_size(limits.max_tensor_bytes)}", where=where,
                         hint="set ACOMPILE_MAX_TENSOR_MB to raise it")
    indices = indices.astype(np.int64)
    linear = indices.reshape(-1) if indices.ndim == 1 else None
    if indices.ndim == 2 and indices.shape[1] == len(dims) and np.all((indices >= 0) & (indices < dims)):
        linear = np.ravel_multi_index(tuple(indices.T), dims) if len(indices) else indices.reshape(-1)
    if linear is None or len(linear) != len(values) or (len(linear) and (linear.min() < 0 or linear.max() >= size)):
        raise InvalidModelError(f"{what} is malformed: its indices (shape {list(indices.shape)}) do not place "
                                f"{len(values)} values in dims {dims}", where=where)
    out = np.zeros(size, values.dtype)
    out[linear] = values
    return from_array(out.reshape(dims), name)
