"""One node's output shapes before it runs: ONNX shape inference of the node alone (its small constant
inputs given by value), else onnxruntime running it on zeros of its input shapes (its own view of a
shape ONNX cannot infer). What constant folding and shape re-inference ask of a node."""

from __future__ import annotations

import numpy as np

from ..ir import Node
from ..onnx_core import (from_array, infer_shapes, make_empty_tensor_value_info, make_graph, make_model, make_node,
                         make_opsetid, make_tensor_value_info, np_dtype_to_tensor_dtype, tensor_dtype_to_np_dtype)
from ..onnx_exec import IR_VERSION, add_attributes, run_node

# Operators whose output size is set by the *values* of their inputs: folded only once it is known.
SIZE_FROM_VALUES = {"Tile", "Expand", "Range", "Resize", "Upsample", "Pad", "OneHot", "CenterCropPad", "Col2Im",
                    "HannWindow", "HammingWindow", "BlackmanWindow", "MelWeightMatrix", "DFT", "STFT",
                    "MaxUnpool", "AffineGrid"}
SMALL_INPUT_BYTES = 4096   # inputs up to this size are given to shape inference by value


def inferred_output(node: Node, args: list, index: int, opset: int):
    """(static shape, dtype) of one output of ``node`` given its inputs, or (None, None).

    ``args`` holds arrays (constants) or ``(shape, dtype)`` pairs (values known by shape only). Runs
    ONNX shape inference (with data propagation) on a one-node model whose small constant inputs are
    initializers, so value-dependent sizes (Tile repeats, OneHot depth, window lengths) are known
    before anything is allocated.
    """
    try:
        names = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
        inits, inputs = [], []
        for name, a in zip(names, args):
            if a is None:
                continue
            if isinstance(a, tuple):
                inputs.append(make_tensor_value_info(name, np_dtype_to_tensor_dtype(a[1]), list(a[0])))
                continue
            a = np.asarray(a)
            if a.nbytes <= SMALL_INPUT_BYTES:
                inits.append(from_array(a, name))
            else:
                inputs.append(make_tensor_value_info(name, np_dtype_to_tensor_dtype(a.dtype),
                                                     list(a.shape)))
        outs = [f"out{i}" for i in range(len(node.outputs))]
        proto = make_node(node.op_type, names, outs, domain=node.domain or None)
        add_attributes(proto.attribute, node.attrs, node.meta.get("attr_types"))
        g = make_graph([proto], "fold", inputs, [make_empty_tensor_value_info(o) for o in outs], inits)
        imports = [make_opsetid("", int(opset))]
        if node.domain:
            imports.append(make_opsetid(node.domain, int(node.opset or 1)))
        m = make_model(g, opset_imports=imports, ir_version=IR_VERSION)
        tt = infer_shapes(m, data_prop=True).graph.output[index].type.tensor_type
        if not tt.HasField("shape") or not all(d.HasField("dim_value") for d in tt.shape.dim):
            return None, None
        shape = tuple(int(d.dim_value) for d in tt.shape.dim)
        dtype = np.dtype(tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else None
        return shape, dtype
    except Exception:    # no inference for this op, odd attributes: the caller stays careful
        return None, None


PROBE_BYTES = 1 << 24   # a node is run on zeros to learn its output shape only up to this input size


def probed_output(node: Node, args: list, index: int, opset: int):
    """(shape, dtype) of one output from running ``node`` in onnxruntime on zeros of its input
    shapes (onnxruntime's own view of a shape ONNX cannot infer), or (None, None)."""
    if node.op_type in SIZE_FROM_VALUES:    # its output size comes from input values: running it is the risk
        return None, None
    if sum(int(np.prod(a[0])) * np.dtype(a[1]).itemsize for a in args if isinstance(a, tuple)) > PROBE_BYTES:
        return None, None
    feeds = [np.zeros(a[0], a[1]) if isinstance(a, tuple) else a for a in args]
    if node.op_type == "GroupQueryAttention" and node.domain == "com.microsoft" and len(feeds) > 6:
        _attention_lengths(feeds, args)
    try:
        out = run_node(node.op_type, node.attrs, feeds, len(node.outputs), node.opset or opset, domain=node.domain,
                       attr_types=node.meta.get("attr_types"))[index]
    except Exception:      # it needs real values (a Reshape of zeros, a custom op): stay unknown
        return None, None
    if not isinstance(out, np.ndarray) or out.dtype == object:
        return None, None
    return tuple(int(d) for d in out.shape), out.dtype


def _attention_lengths(feeds: list, args: list) -> None:
    """GroupQueryAttention's sequence lengths, which onnxruntime checks against the query and the past:
    zeros are refused once the query holds more than one token (a prompt). Every sequence full: the past's
    length plus the query's tokens (seqlens_k counts one less)."""
    query, past = feeds[0], feeds[3]
    if not isinstance(query, np.ndarray) or query.ndim != 3:
        return
    total = query.shape[1] + (past.shape[2] if isinstance(past, np.ndarray) and past.ndim == 4 else 0)
    for index, value in ((5, total - 1), (6, total)):
        if isinstance(args[index], tuple):
            feeds[index] = np.full(args[index][0], value, args[index][1])
