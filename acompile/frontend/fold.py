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
from .load import Limits

NON_DETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}
NEVER_FOLD = NON_DETERMINISTIC | {"If", "Loop", "Scan", "SequenceConstruct", "Dropout"}


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
        if any(isinstance(v, object) and type(v).__name__ == "_Subgraph" for v in node.attrs.values()):
            continue
        if not all((not i) or graph.is_constant(i) for i in node.inputs):
            continue
        if not node.outputs or any(o in graph.outputs for o in node.outputs):
            continue
        for o in node.outputs:
            shape = graph.static_shape(o) if o in graph.tensors else None
            dtype = graph.dtype(o)
            if shape is not None:
                _check_budget(node, shape, (dtype.itemsize if dtype is not None else 8), limits)
        args = [graph.constants[i] if i else None for i in node.inputs]
        values = _fold_numpy(node, args, limits)
        if values is None:
            if node.op_type in ("Tile", "Expand", "Range", "Resize", "Upsample", "Pad") and not all(
                    graph.static_shape(o) for o in node.outputs if o):
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
            graph.constants[node.outputs[0]] = np.array(shape[start:end], np.int64)
            graph.remove_nodes([node])
            changed = True
    return changed
