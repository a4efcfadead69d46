"""Gemm and MatMul with a constant 2-D operand become ``acompile.Linear``.

``y = x @ W.T + b`` over the last axis, W of shape [N, K]; transA, alpha, beta and a
constant-first MatMul become explicit digital Transposes and scales. A MatMul of two
dynamic tensors (attention) stays a digital op.
"""

from __future__ import annotations

import numpy as np

from ..ir import DOMAIN, LINEAR, Graph, Node
from ._rewrite import channel_vector, contiguous_float32, new_node, new_value
from .base import CompileState, compile_pass


@compile_pass(requires={"folded"}, provides={"linear"})
def gemm_to_linear(state: CompileState) -> None:
    """Rewrite Gemm and MatMul with a constant 2-D weight as acompile.Linear."""
    graph = state.graph
    out_nodes: list[Node] = []
    for node in graph.nodes:
        replacement = None
        if node.op_type == "Gemm" and not node.domain:
            replacement = _gemm(graph, node)
        elif node.op_type == "MatMul" and not node.domain:
            replacement = _matmul(graph, node)
        out_nodes.extend(replacement if replacement is not None else [node])
    graph.nodes = out_nodes


def _gemm(graph: Graph, node: Node) -> list[Node] | None:
    a_name, b_name = node.inputs[0], node.inputs[1]
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if not graph.is_constant(b_name) or graph.constants[b_name].ndim != 2:
        return None
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    b = graph.constants[b_name].astype(np.float32, copy=False)
    w = b if node.attrs.get("transB", 0) else b.T
    if alpha != 1.0:
        w = w * np.float32(alpha)
    n_out = w.shape[0]
    nodes = []
    x = a_name
    if node.attrs.get("transA", 0):
        shape = graph.shape(a_name)
        x = new_value(graph, f"{a_name}_T", shape[::-1] if shape else None, graph.dtype(a_name))
        nodes.append(new_node(graph, "Transpose", [a_name], [x], {"perm": [1, 0]}, base=f"{node.name}_transA"))
    bias = np.zeros(n_out, np.float32)
    extra_add = None
    if c_name:
        if graph.is_constant(c_name) and channel_vector(graph.constants[c_name], n_out, 2, axis=1) is not None:
            bias = beta * channel_vector(graph.constants[c_name], n_out, 2, axis=1)
        else:
            extra_add = c_name
    y = node.outputs[0]
    lin_out = y if extra_add is None else new_value(graph, f"{y}_linear", graph.shape(y), graph.dtype(y))
    lin = _linear_node(graph, node, x, w, bias.astype(np.float32), lin_out)
    nodes.append(lin)
    if extra_add is not None:
        c = extra_add
        if beta != 1.0:
            beta_c = graph.add_constant(f"{node.name}_beta", np.array(beta, np.float32))
            scaled = new_value(graph, f"{c}_beta", graph.shape(c), graph.dtype(c))
            nodes.append(new_node(graph, "Mul", [c, beta_c], [scaled], base=f"{node.name}_beta"))
            c = scaled
        nodes.append(new_node(graph, "Add", [lin_out, c], [y], base=f"{node.name}_C"))
    return nodes


def _linear_node(graph: Graph, origin: Node, x: str, w: np.ndarray, b: np.ndarray, y: str) -> Node:
    w_name = graph.add_constant(f"{origin.name}_W", contiguous_float32(w))
    b_name = graph.add_constant(f"{origin.name}_b", np.ascontiguousarray(b, dtype=np.float32))
    return Node(name=origin.name, op_type=LINEAR, inputs=[x, w_name, b_name], outputs=[y], domain=DOMAIN,
                opset=1, meta={"origin": origin.op_type})


def _matmul(graph: Graph, node: Node) -> list[Node] | None:
    a_name, b_name = node.inputs
    a_const, b_const = graph.is_constant(a_name), graph.is_constant(b_name)
    if a_const == b_const:
        return None  # dynamic x dynamic (attention) or fully constant (folded earlier)
    if b_const:
        b = graph.constants[b_name]
        a_shape = graph.shape(a_name)
        if b.ndim != 2 or a_shape is None or len(a_shape) < 1:
            return None
        if len(a_shape) == 1:
            return None
        return [_linear_node(graph, node, a_name, b.T, np.zeros(b.shape[1], np.float32),
                             node.outputs[0])]
    # constant first: y = W @ x, the vectors are x's columns
    w = graph.constants[a_name]
    x_shape = graph.shape(b_name)
    if w.ndim != 2 or x_shape is None or len(x_shape) < 2:
        return None
    perm = list(range(len(x_shape)))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    xt_shape = tuple(x_shape[p] for p in perm)
    xt = new_value(graph, f"{b_name}_T", xt_shape, graph.dtype(b_name))
    y = node.outputs[0]
    yt = new_value(graph, f"{y}_T", xt_shape[:-1] + (w.shape[0],), graph.dtype(y))
    return [
        new_node(graph, "Transpose", [b_name], [xt], {"perm": perm}, base=f"{node.name}_in_T"),
        _linear_node(graph, node, xt, w, np.zeros(w.shape[0], np.float32), yt),
        new_node(graph, "Transpose", [yt], [y], {"perm": perm}, base=f"{node.name}_out_T"),
    ]
