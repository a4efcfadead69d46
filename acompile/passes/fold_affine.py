"""Fold per-channel affine ops into the preceding analog layer's weights and bias.

BatchNormalization after a Conv, ConvTranspose or Linear, and Mul/Div/Add/Sub by a
per-channel constant (which is how MatMul + Add becomes one linear layer). A standalone
BatchNormalization stays a digital op.
"""

from __future__ import annotations

import numpy as np

from ..ir import DOMAIN, LINEAR, Graph, Node, is_linear
from ._rewrite import channel_vector, ensure_bias, output_channels
from .base import CompileState, compile_pass

ANALOG_WEIGHTED = ("Conv", "ConvTranspose", LINEAR)


@compile_pass(requires={"linear"}, provides={"affine_folded"})
def fold_affine(state: CompileState) -> None:
    """Fold BatchNormalization and per-channel Mul/Div/Add/Sub by constants into analog layers."""
    graph = state.graph
    changed = True
    while changed:
        changed = False
        producers = graph.producers()
        users = graph.consumers()
        for node in graph.nodes:
            if node.domain not in ("",) or node.op_type not in ("BatchNormalization", "Mul", "Div", "Add", "Sub"):
                continue
            folded = _try_fold(graph, node, producers, users)
            if folded:
                graph.remove_nodes([node])
                changed = True
                break


def _channel_axis(graph: Graph, node: Node) -> tuple[int, int] | None:
    """(rank, channel axis) of an analog node's output, if per-channel folding applies."""
    shape = graph.shape(node.outputs[0])
    if shape is None:
        return None
    rank = len(shape)
    if is_linear(node):
        return rank, rank - 1
    return (rank, 1) if rank >= 2 else None


def _scale_output_channels(graph: Graph, node: Node, scale: np.ndarray) -> None:
    w_name = node.inputs[1]
    w = graph.constants[w_name].astype(np.float64)
    if node.op_type == "ConvTranspose":
        groups = int(node.attrs.get("group", 1))
        cin, cout_g = w.shape[0], w.shape[1]
        view = w.reshape((groups, cin // groups, cout_g) + w.shape[2:])
        s = scale.reshape((groups, 1, cout_g) + (1,) * (w.ndim - 2))
        w = (view * s).reshape(w.shape)
    else:
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    graph.constants[w_name] = w.astype(np.float32)


def _own_constants(graph: Graph, node: Node) -> None:
    """Give the node private copies of its weight and bias so folding cannot leak to a sharer."""
    users = graph.consumers()
    for pos in (1, 2):
        name = node.inputs[pos]
        if len(users.get(name, [])) > 1 or name in graph.outputs:
            node.inputs[pos] = graph.add_constant(f"{node.name}_{'W' if pos == 1 else 'b'}",
                                                  graph.constants[name].copy())


def _try_fold(graph: Graph, node: Node, producers, users) -> bool:
    if node.op_type == "BatchNormalization":
        if len(node.outputs) > 1 and any(node.outputs[1:]):
            return False  # training-mode outputs
        x = node.inputs[0]
        params = node.inputs[1:5]
        if not all(graph.is_constant(p) for p in params):
            return False
    else:
        a, b = node.inputs
        if graph.is_constant(b) and not graph.is_constant(a):
            x, c_name = a, b
        elif graph.is_constant(a) and not graph.is_constant(b) and node.op_type in ("Mul", "Add"):
            x, c_name = b, a
        else:
            return False
    prev = producers.get(x)
    if prev is None or prev.op_type not in ANALOG_WEIGHTED or prev.op_type != LINEAR and prev.domain:
        return False
    if prev.op_type == LINEAR and prev.domain != DOMAIN:
        return False
    if not graph.is_constant(prev.inputs[1]) or len(users.get(x, [])) != 1 or x in graph.outputs:
        return False
    geo = _channel_axis(graph, prev)
    if geo is None:
        return False
    rank, axis = geo
    ensure_bias(graph, prev)
    n = output_channels(graph, prev)
    if node.op_type == "BatchNormalization":
        if axis != 1:
            return False
        gamma, beta, mean, var = (graph.constants[p].astype(np.float64).reshape(-1) for p in params)
        if gamma.size != n:
            return False
        eps = float(node.attrs.get("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
    else:
        vec = channel_vector(graph.constants[c_name], n, rank, axis)
        if vec is None:
            return False
        if node.op_type == "Mul":
            scale, shift = vec, np.zeros(n)
        elif node.op_type == "Div":
            if np.any(vec == 0):
                return False
            scale, shift = 1.0 / vec, np.zeros(n)
        elif node.op_type == "Add":
            scale, shift = np.ones(n), vec
        else:
            scale, shift = np.ones(n), -vec
    _own_constants(graph, prev)
    if not np.all(scale == 1.0):
        _scale_output_channels(graph, prev, scale)
    b = graph.constants[prev.inputs[2]].astype(np.float64)
    graph.constants[prev.inputs[2]] = (b * scale + shift).astype(np.float32)
    out = node.outputs[0]
    prev.outputs[0] = out
    prev.meta.setdefault("folded", []).append(node.op_type)
    return True
