"""Canonical forms for the analog layers.

* Gemm and MatMul with a constant 2-D operand become ``acompile.Linear``
  (``y = x @ W.T + b`` over the last axis, W of shape [N, K]); transA, alpha,
  beta and a constant-first MatMul become explicit digital Transposes and scales.
* BatchNormalization after a Conv, ConvTranspose or Linear is folded into its
  weights and bias, and so are per-channel Mul/Div/Add/Sub by constants
  (which is how MatMul + Add is seen as one linear layer).
* Every analog node ends with an explicit bias constant.
A standalone BatchNormalization stays a digital op.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, TensorInfo

LINEAR = "Linear"
DOMAIN = "acompile"
ANALOG_WEIGHTED = ("Conv", "ConvTranspose", LINEAR)


def is_linear(node: Node) -> bool:
    return node.op_type == LINEAR and node.domain == DOMAIN


def _node(graph: Graph, op: str, inputs: list[str], outputs: list[str], attrs=None, domain="",
          base: str = "") -> Node:
    return Node(name=graph.unique_name(base or op), op_type=op, inputs=inputs, outputs=outputs,
                attrs=dict(attrs or {}), domain=domain, opset=graph.opset if not domain else 1)


def _value(graph: Graph, base: str, shape, dtype) -> str:
    name = graph.unique_name(base)
    graph.tensors[name] = TensorInfo(name, np.dtype(dtype) if dtype is not None else None,
                                     tuple(shape) if shape is not None else None)
    return name


# ---------------------------------------------------------------------------
# Gemm / MatMul -> Linear
# ---------------------------------------------------------------------------

def gemm_to_linear(graph: Graph) -> Graph:
    """Rewrite Gemm and MatMul with a constant 2-D weight as acompile.Linear."""
    out_nodes: list[Node] = []
    for node in graph.nodes:
        replacement = None
        if node.op_type == "Gemm" and not node.domain:
            replacement = _gemm(graph, node)
        elif node.op_type == "MatMul" and not node.domain:
            replacement = _matmul(graph, node)
        out_nodes.extend(replacement if replacement is not None else [node])
    graph.nodes = out_nodes
    return graph


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
        x = _value(graph, f"{a_name}_T", shape[::-1] if shape else None, graph.dtype(a_name))
        nodes.append(_node(graph, "Transpose", [a_name], [x], {"perm": [1, 0]}, base=f"{node.name}_transA"))
    bias = np.zeros(n_out, np.float32)
    extra_add = None
    if c_name:
        if graph.is_constant(c_name) and _as_channel_vector(graph.constants[c_name], n_out, 2, axis=1) is not None:
            bias = beta * _as_channel_vector(graph.constants[c_name], n_out, 2, axis=1)
        else:
            extra_add = c_name
    y = node.outputs[0]
    lin_out = y if extra_add is None else _value(graph, f"{y}_linear", graph.shape(y), graph.dtype(y))
    lin = _linear_node(graph, node, x, w, bias.astype(np.float32), lin_out)
    nodes.append(lin)
    if extra_add is not None:
        c = extra_add
        if beta != 1.0:
            beta_c = graph.add_constant(f"{node.name}_beta", np.array(beta, np.float32))
            scaled = _value(graph, f"{c}_beta", graph.shape(c), graph.dtype(c))
            nodes.append(_node(graph, "Mul", [c, beta_c], [scaled], base=f"{node.name}_beta"))
            c = scaled
        nodes.append(_node(graph, "Add", [lin_out, c], [y], base=f"{node.name}_C"))
    return nodes


def _linear_node(graph: Graph, origin: Node, x: str, w: np.ndarray, b: np.ndarray, y: str) -> Node:
    w_name = graph.add_constant(f"{origin.name}_W", np.ascontiguousarray(w, dtype=np.float32))
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
        return [_linear_node(graph, node, a_name, b.T.astype(np.float32, copy=False), np.zeros(b.shape[1], np.float32),
                             node.outputs[0])]
    # constant first: y = W @ x, the vectors are x's columns
    w = graph.constants[a_name]
    x_shape = graph.shape(b_name)
    if w.ndim != 2 or x_shape is None or len(x_shape) < 2:
        return None
    perm = list(range(len(x_shape)))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    xt_shape = tuple(x_shape[p] for p in perm)
    xt = _value(graph, f"{b_name}_T", xt_shape, graph.dtype(b_name))
    y = node.outputs[0]
    yt = _value(graph, f"{y}_T", xt_shape[:-1] + (w.shape[0],), graph.dtype(y))
    return [
        _node(graph, "Transpose", [b_name], [xt], {"perm": perm}, base=f"{node.name}_in_T"),
        _linear_node(graph, node, xt, w.astype(np.float32, copy=False), np.zeros(w.shape[0], np.float32), yt),
        _node(graph, "Transpose", [yt], [y], {"perm": perm}, base=f"{node.name}_out_T"),
    ]


# ---------------------------------------------------------------------------
# folding per-channel affine ops into the preceding analog layer
# ---------------------------------------------------------------------------

def _as_channel_vector(c: np.ndarray, n: int, rank: int, axis: int) -> np.ndarray | None:
    """c as a length-n vector along ``axis`` of a rank-``rank`` output, or None if it is not per-channel."""
    c = np.asarray(c)
    if c.ndim > rank:
        return None
    target = [1] * rank
    target[axis] = n
    try:
        if np.broadcast_shapes(c.shape, tuple(target)) != tuple(target):
            return None
    except ValueError:
        return None
    return np.broadcast_to(c.reshape((1,) * (rank - c.ndim) + c.shape), target).reshape(n).astype(np.float64)


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


def ensure_bias(graph: Graph, node: Node) -> None:
    if len(node.inputs) >= 3 and node.inputs[2]:
        return
    n_out = output_channels(graph, node)
    name = graph.add_constant(f"{node.name}_b", np.zeros(n_out, np.float32))
    node.inputs = node.inputs[:2] + [name]


def output_channels(graph: Graph, node: Node) -> int:
    w = graph.constants[node.inputs[1]]
    if node.op_type == "ConvTranspose":
        return w.shape[1] * int(node.attrs.get("group", 1))
    return w.shape[0]


def _own_constants(graph: Graph, node: Node) -> None:
    """Give the node private copies of its weight and bias so folding cannot leak to a sharer."""
    users = graph.consumers()
    for pos in (1, 2):
        name = node.inputs[pos]
        if len(users.get(name, [])) > 1 or name in graph.outputs:
            node.inputs[pos] = graph.add_constant(f"{node.name}_{'W' if pos == 1 else 'b'}",
                                                  graph.constants[name].copy())


def fold_affine(graph: Graph) -> Graph:
    """Fold BatchNormalization and per-channel Mul/Div/Add/Sub by constants into analog layers."""
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
    return graph


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
        vec = _as_channel_vector(graph.constants[c_name], n, rank, axis)
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


def canonicalise(graph: Graph) -> Graph:
    from .recurrent import unroll_recurrent
    unroll_recurrent(graph)
    gemm_to_linear(graph)
    fold_affine(graph)
    for node in graph.nodes:
        if node.op_type in ("Conv", "ConvTranspose") and not node.domain and graph.is_constant(node.inputs[1]):
            ensure_bias(graph, node)
    graph.prune()
    graph.verify()
    return graph
