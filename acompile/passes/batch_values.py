"""Values and shapes that follow a dynamic batch.

A model exported with a dynamic batch computes sizes from it at run time (``Shape``, then Gather,
Concat, Where: a Reshape's target). The compile keeps those nodes live, so the program runs at any
batch, but maps at one batch size: this module gives shape inference their values at the batch and
at batch + 1, says which elements depend on the batch, and records each value's shape at batch + 1.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import AcompileError
from ..ir import Graph, Node, TensorInfo
from ..onnx_exec import run_node

# how a batch-dependence mask passes through an op: element by element (broadcast), or moved like the data
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Min", "Max", "Equal", "Greater", "Less",
                "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor", "Where", "Cast", "Identity", "Sign"}
_MOVES = {"Gather": (0,), "Slice": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Reshape": (0,), "Flatten": (0,),
          "Transpose": (0,), "Concat": None}     # the inputs that carry data (None: all)


def value_of(graph: Graph, node: Node, not_a_value: Callable[[Node], bool], max_bytes: int) -> bool:
    """With a dynamic batch: record the value of ``node``'s output if it is a small integer tensor
    computed from shapes that follow the batch (``Shape``, then Gather, Slice, Concat, Equal, Where,
    ...), at the batch and at batch + 1, and which of its elements depend on the batch, in
    ``graph.meta["batch_values"]`` (name -> (at batch, at batch + 1, depends)).

    An element depends on the batch when it comes from a batch axis of a ``Shape`` (tracked exactly
    through data movement and element-wise ops; any other op's output depends on the batch wholly if
    any input element does). A value no element of which depends on the batch is a constant: it is
    folded, and True returned (the caller removes the node; ``x.shape[-2] == y.shape[-2]`` deciding an
    If). The others stay live in the program, but shape inference is given them by value, so a Reshape
    or Expand whose target they are gets a static shape whose axes that differ at batch + 1 follow the
    batch. Nodes ``not_a_value`` says are data sized by values are not run; values over ``max_bytes``
    are not kept.
    """
    values = graph.meta.setdefault("batch_values", {})
    if not node.outputs or all(not o or o in values for o in node.outputs):
        return False
    if node.op_type == "Shape" and not node.domain:
        shape = graph.static_shape(node.inputs[0])
        if shape is not None:
            span = slice(node.attrs.get("start", 0), node.attrs.get("end"))
            bumped = at_next_batch(graph, node.inputs[0], shape)
            depends = np.array([x != y for x, y in zip(shape, bumped)], bool)[span]
            values[node.outputs[0]] = (np.array(shape[span], np.int64), np.array(bumped[span], np.int64), depends)
        return False
    if node.domain or not_a_value(node):
        return False    # a data tensor sized by the values, not a value: its shape is inferred from them
    if not any(i in values for i in node.inputs) \
            or not all(not i or i in values or graph.is_constant(i) for i in node.inputs):
        return False
    at = [[(values[i][k] if i in values else graph.constants[i]) if i else None for i in node.inputs]
          for k in (0, 1)]
    if any(a is not None and np.asarray(a).nbytes > max_bytes for a in at[0] + at[1]):
        return False
    try:
        outs = [run_node(node.op_type, node.attrs, args, len(node.outputs), graph.opset,
                         attr_types=node.meta.get("attr_types"), where=node.describe()) for args in at]
        depends = _depends(graph, node, values, outs[0])
    except AcompileError:
        return False
    for o, a, b, d in zip(node.outputs, *outs, depends):
        if not o or not isinstance(a, np.ndarray) or a.nbytes > max_bytes or a.ndim != np.ndim(b):
            continue
        values[o] = (a, np.asarray(b), d)
        if graph.static_shape(o) is None:
            graph.tensors[o] = TensorInfo(o, a.dtype, a.shape)
            follows_batch(graph, o, a.shape, np.shape(b))
    if not all(not o or (o in values and not values[o][2].any() and o not in graph.outputs) for o in node.outputs):
        return False
    for o in node.outputs:
        if o:
            graph.constants[o] = values.pop(o)[0]
    return True


def at_next_batch(graph: Graph, name: str, shape: tuple) -> tuple:
    """The shape of ``name`` at batch + 1: as inferred there, else ``shape`` (it does not follow the batch)."""
    known = graph.meta.get("batch_shapes", {}).get(name)
    return tuple(known) if known is not None and len(known) == len(shape) else tuple(shape)


def follows_batch(graph: Graph, name: str, shape: tuple, at_next: tuple) -> None:
    """Record the shape of ``name`` at batch + 1 when some axis follows the batch (:meth:`Graph.batch_axes`)."""
    if any(x != y for x, y in zip(shape, at_next)):
        graph.meta.setdefault("batch_shapes", {})[name] = tuple(at_next)


def _depends(graph: Graph, node: Node, values: dict, outs: list) -> list[np.ndarray]:
    """Per output of ``node``, which elements depend on the batch (see :func:`value_of`)."""
    masks = [values[i][2] if i in values else np.zeros(np.shape(graph.constants[i]), bool) if i else None
             for i in node.inputs]
    if node.op_type in _ELEMENTWISE:
        whole = np.zeros(np.shape(outs[0]), bool)
        for m in masks:
            if m is not None:
                whole = whole | np.broadcast_to(m, whole.shape)
        return [whole]
    if node.op_type in _MOVES:
        data = _MOVES[node.op_type] or range(len(node.inputs))
        args = [masks[k] if k in data else (values[i][0] if i in values else graph.constants[i]) if i else None
                for k, i in enumerate(node.inputs)]
        if all(k in data or i not in values or not values[i][2].any() for k, i in enumerate(node.inputs)):
            moved = run_node(node.op_type, node.attrs, args, len(node.outputs), graph.opset,
                             attr_types=node.meta.get("attr_types"), where=node.describe())
            return [np.asarray(m, bool) for m in moved]
    anything = any(m is not None and m.any() for m in masks)
    return [np.full(np.shape(o), anything, bool) for o in outs]
