"""Constant folding of weight sub-graphs.

Matches nodes whose inputs are all constants (initializers or outputs of
already-folded nodes) and replaces them by the constant they compute, so that
weights produced by Constant, ConstantOfShape, Identity, Cast, Reshape,
Transpose, Unsqueeze, Squeeze (or any other deterministic operator, through
onnxruntime) reach the analog layers as initializers. A byte budget is checked
*before* each evaluation, so folding never allocates without limit.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidModelError, LimitError
from ..ir import Graph, Node
from ..onnx_exec import run_node
from .load import Limits, Subgraph

NON_DETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}
NEVER_FOLD = NON_DETERMINISTIC | {"If", "Loop", "Scan", "SequenceConstruct", "Dropout"}
# Operators whose output size is set by the *values* of their inputs: folded only once it is known.
SIZE_FROM_VALUES = {"Tile", "Expand", "Range", "Resize", "Upsample", "Pad", "OneHot", "CenterCropPad", "Col2Im",
                    "HannWindow", "HammingWindow", "BlackmanWindow", "MelWeightMatrix", "DFT", "STFT"}
SMALL_INPUT_BYTES = 4096   # inputs up to this size are given to shape inference by value


def _infer_output(node: Node, args: list, index: int, opset: int):
    """(static shape, dtype) of one output of ``node`` given its constant inputs, or (None, None).

    Runs ONNX shape inference (with data propagation) on a one-node model whose
    small inputs are initializers, so value-dependent sizes (Tile repeats,
    OneHot depth, window lengths) are known before anything is allocated.
    """
    from onnx import helper, numpy_helper, shape_inference
    from ..onnx_exec import IR_VERSION, make_attributes
    try:
        names = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
        inits, inputs = [], []
        for name, a in zip(names, args):
            if a is None:
                continue
            a = np.asarray(a)
            if a.nbytes <= SMALL_INPUT_BYTES:
                inits.append(numpy_helper.from_array(a, name))
            else:
                inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                                            list(a.shape)))
        outs = [f"out{i}" for i in range(len(node.outputs))]
        proto = helper.make_node(node.op_type, names, outs)
        proto.attribute.extend(make_attributes(node.attrs, node.meta.get("attr_types")))
        g = helper.make_graph([proto], "fold", inputs, [helper.make_empty_tensor_value_info(o) for o in outs], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", int(opset))], ir_version=IR_VERSION)
        tt = shape_inference.infer_shapes(m, data_prop=True).graph.output[index].type.tensor_type
        if not tt.HasField("shape") or not all(d.HasField("dim_value") for d in tt.shape.dim):
            return None, None
        shape = tuple(int(d.dim_value) for d in tt.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else None
        return shape, dtype
    except Exception:    # no inference for this op, odd attributes: the caller stays careful
        return None, None


def _const_of_shape(node: Node, shape: np.ndarray, limits: Limits) -> np.ndarray:
    shape = [int(d) for d in np.asarray(shape).reshape(-1)]
    if any(d < 0 for d in shape):
        raise InvalidModelError(f"negative dimension in {shape}", where=node.describe())
    value = node.attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    _check_budget(node, shape, value.dtype.itemsize, limits)
    return np.full(shape, value[0], dtype=value.dtype)


def _check_budget(node: Node, shape, itemsize: int, limits: Limits) -> None:
    n = 1
    for d in shape:
        n *= int(d)
        if n * itemsize > limits.fold_budget_bytes:
            raise LimitError(f"folding would allocate more than the {limits.fold_budget_bytes / 1024**2:.0f} MiB "
                             f"budget (shape {list(shape)})", where=node.describe(),
                             hint="set ACOMPILE_MAX_TENSOR_MB to raise the limit")


def _fold_numpy(node: Node, args: list, limits: Limits) -> list[np.ndarray] | None:
    """Cheap numpy implementations of the weight-shaping ops; None means 'use onnxruntime'."""
    op, a = node.op_type, node.attrs
    if op == "Constant":
        for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
            if key in a:
                v = a[key]
                if isinstance(v, float):
                    return [np.array(v, np.float32)]
                if isinstance(v, int):
                    return [np.array(v, np.int64)]
                if isinstance(v, list):
                    return [np.array(v, np.float32 if key == "value_floats" else np.int64)]
                return [np.asarray(v)]
        return None
    if op == "ConstantOfShape":
        return [_const_of_shape(node, args[0], limits)]
    if op == "Identity":
        return [args[0]]
    if op == "Transpose":
        perm = a.get("perm")
        return [np.ascontiguousarray(np.transpose(args[0], perm))]
    return None


def fold_constants(graph: Graph, limits: Limits | None = None) -> Graph:
    """Replace every foldable all-constant node by the constant it produces."""
    limits = limits or Limits()
    while _fold_once(graph, limits) | fold_shapes(graph):
        pass
    graph.prune()
    return graph


def _fold_once(graph: Graph, limits: Limits) -> bool:
    folded = []
    for node in graph.nodes:
        if node.op_type in NEVER_FOLD or node.domain:
            continue
        if any(isinstance(v, Subgraph) for v in node.attrs.values()):
            continue
        if not all((not i) or graph.is_constant(i) for i in node.inputs):
            continue
        if not node.outputs or any(o in graph.outputs for o in node.outputs):
            continue
        args = [graph.constants[i] if i else None for i in node.inputs]
        unknown = False
        for k, o in enumerate(node.outputs):
            shape = graph.static_shape(o) if o in graph.tensors else None
            dtype = graph.dtype(o)
            if shape is None and o:
                # Whole-model inference could not size it (a shape computed by an op data propagation
                # does not follow); the inputs are concrete now, so ask again for this one node.
                shape, dtype = _infer_output(node, args, k, graph.opset)
            if shape is not None:
                _check_budget(node, shape, (dtype.itemsize if dtype is not None else 8), limits)
            elif o:
                unknown = True
        values = _fold_numpy(node, args, limits)
        if values is None:
            if node.op_type in SIZE_FROM_VALUES and unknown:
                continue  # unknown output size: do not gamble on an allocation
            values = run_node(node.op_type, node.attrs, args, len(node.outputs), graph.opset,
                              attr_types=node.meta.get("attr_types"), where=node.describe())
        for o, v in zip(node.outputs, values):
            if o:
                graph.constants[o] = np.asarray(v)
        folded.append(node)
    graph.remove_nodes(folded)
    return bool(folded)


def fold_shapes(graph: Graph) -> bool:
    """``Shape`` of a statically shaped tensor is a constant; fold it and what then becomes constant."""
    changed = False
    for node in list(graph.nodes):
        if node.op_type == "Shape" and node.inputs and not graph.is_constant(node.inputs[0]):
            shape = graph.static_shape(node.inputs[0])
            if shape is None:
                continue
            start, end = node.attrs.get("start", 0), node.attrs.get("end")
            batch_axes = graph.meta.get("batch_axes", {}).get(node.inputs[0], [])
            if any(a in range(len(shape))[start:end] for a in batch_axes):
                continue  # the model's batch is dynamic: keep the shape computation live
            graph.constants[node.outputs[0]] = np.array(shape[start:end], np.int64)
            graph.remove_nodes([node])
            changed = True
    return changed
