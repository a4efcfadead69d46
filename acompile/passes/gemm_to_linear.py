"""Gemm and MatMul with a constant operand, and an Einsum that is a dense layer, become
``acompile.Linear``.

``y = x @ W.T + b`` over the last axis, W of shape [N, K]; transA, alpha, beta, a Gemm's constant A and a
constant-first MatMul become explicit digital Transposes and scales. An Einsum with one constant
operand that contracts some of x's axes with it and keeps the rest (Keras' EinsumDense,
``abc,cd->abd``; ``abcd,cde->abe``) is the same layer between Transposes and Reshapes. An Einsum with
axes that x, W and the output share (per-head weights, ``bhid,hdk->bhik``) is one layer per matrix, on
the slice of x each multiplies; a MatMul by a constant with batch axes is such an Einsum, and one with a
1-D operand a layer of one row or column. A MatMul of two dynamic tensors (attention) stays a digital
op.
"""

from __future__ import annotations

import math
import string

import numpy as np

from ..ir import DOMAIN, LINEAR, Graph, Node
from ._rewrite import channel_vector, new_node, new_value
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
        elif node.op_type == "Einsum" and not node.domain:
            replacement = _einsum(graph, node)
        out_nodes.extend(replacement if replacement is not None else [node])
    graph.nodes = out_nodes


def _integers(graph: Graph, node: Node) -> bool:
    """A Gemm or MatMul on integer tensors: exact integer arithmetic (wrapping at the type's width), which
    the digital units keep; a quantized model's integer products come as MatMulInteger or QLinearMatMul."""
    return any((graph.constants[i].dtype if graph.is_constant(i) else graph.dtype(i) or np.dtype("f4")).kind in "iub"
               for i in node.inputs[:2])


def _gemm(graph: Graph, node: Node) -> list[Node] | None:
    """Y = alpha·A'·B' + beta·C. With B constant the vectors are the rows of A'; with A constant they
    are the columns of B' (the rows of B itself when transB), and the layer computes Yᵀ."""
    a_name, b_name = node.inputs[0], node.inputs[1]
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    a_const = graph.is_constant(a_name)
    if a_const == graph.is_constant(b_name) or _integers(graph, node) \
            or graph.constants[a_name if a_const else b_name].ndim != 2:
        return None
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    trans_a, trans_b = bool(node.attrs.get("transA", 0)), bool(node.attrs.get("transB", 0))
    if a_const:
        a = graph.constants[a_name].astype(np.float32, copy=False)
        w, x, x_trans, axis = (a.T if trans_a else a), b_name, not trans_b, 0
    else:
        b = graph.constants[b_name].astype(np.float32, copy=False)
        w, x, x_trans, axis = (b if trans_b else b.T), a_name, trans_a, 1
    if alpha != 1.0:
        w = w * np.float32(alpha)
    n_out = w.shape[0]
    nodes = []
    if x_trans:
        shape = graph.shape(x)
        xt = new_value(graph, f"{x}_T", shape[::-1] if shape else None, graph.dtype(x))
        base = f"{node.name}_trans{'B' if a_const else 'A'}"
        nodes.append(new_node(graph, "Transpose", [x], [xt], {"perm": [1, 0]}, base=base))
        x = xt
    bias = np.zeros(n_out, np.float32)
    extra_add = None
    # beta 0 drops C, as onnxruntime does: 0·C would turn an infinite C into NaN
    if c_name and beta != 0.0:
        vec = channel_vector(graph.constants[c_name], n_out, 2, axis) if graph.is_constant(c_name) else None
        if vec is not None:
            bias = beta * vec
        else:
            extra_add = c_name
    y, dtype = node.outputs[0], graph.dtype(node.outputs[0])
    total = y if extra_add is None else new_value(graph, f"{y}_linear", graph.shape(y), dtype)
    lin_out = total
    if a_const:
        x_shape = graph.shape(x)
        lin_out = new_value(graph, f"{y}_T", (x_shape[0], n_out) if x_shape else None, dtype)
    nodes.append(_linear_node(graph, node, x, w, bias.astype(np.float32), lin_out))
    if a_const:
        nodes.append(new_node(graph, "Transpose", [lin_out], [total], {"perm": [1, 0]}, base=f"{node.name}_out_T"))
    if extra_add is not None:
        c = extra_add
        if beta != 1.0:
            beta_c = graph.add_constant(f"{node.name}_beta", np.array(beta, np.float32))
            scaled = new_value(graph, f"{c}_beta", graph.shape(c), graph.dtype(c))
            nodes.append(new_node(graph, "Mul", [c, beta_c], [scaled], base=f"{node.name}_beta"))
            c = scaled
        nodes.append(new_node(graph, "Add", [total, c], [y], base=f"{node.name}_C"))
    return nodes


def _linear_node(graph: Graph, origin: Node, x: str, w: np.ndarray, b: np.ndarray, y: str,
                 name: str | None = None) -> Node:
    # a MatMul's weight stays the transposed view of the model's [K, N] array, in check and compile alike
    # (contiguous_weights): no transposing copy of memory as large as the weights
    name = name or origin.name
    w_name = graph.add_constant(f"{name}_W", w.astype(np.float32, copy=False))
    b_name = graph.add_constant(f"{name}_b", np.ascontiguousarray(b, dtype=np.float32))
    return Node(name=name, op_type=LINEAR, inputs=[x, w_name, b_name], outputs=[y], domain=DOMAIN,
                opset=1, meta={"origin": origin.meta.get("origin", origin.op_type)})


def _matmul(graph: Graph, node: Node) -> list[Node] | None:
    a_name, b_name = node.inputs
    a_const, b_const = graph.is_constant(a_name), graph.is_constant(b_name)
    if a_const == b_const or _integers(graph, node):
        return None  # dynamic x dynamic (attention) or fully constant (folded earlier)
    if b_const:
        b = graph.constants[b_name]
        a_shape = graph.shape(a_name)
        if a_shape is None or not a_shape or b.dtype.kind != "f":
            return None
        if b.ndim > 2:
            return _batched(graph, node, a_name, b)
        if b.ndim == 1 or len(a_shape) == 1:
            return _vector(graph, node, a_name, a_shape, b)
        return [_linear_node(graph, node, a_name, b.T, np.zeros(b.shape[1], np.float32),
                             node.outputs[0])]
    # constant first: y = W @ x, the vectors are x's columns
    w = graph.constants[a_name]
    x_shape = graph.shape(b_name)
    if w.ndim < 2 or x_shape is None or len(x_shape) < 2 or w.dtype.kind != "f":
        return None
    if w.ndim > 2:
        return _batched(graph, node, b_name, w, w_first=True)
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


def _vector(graph: Graph, node: Node, x: str, x_shape: tuple, w: np.ndarray) -> list[Node] | None:
    """A MatMul with a 1-D operand, which ONNX (as numpy) promotes to a matrix and then drops the axis
    again: a vector x [K] by W [K, N] is one vector through the layer; x [..., K] by a vector w [K] is a
    layer of one column."""
    y, dtype = node.outputs[0], graph.dtype(node.outputs[0])
    axis = 0 if len(x_shape) == 1 else -1
    if len(x_shape) == 1 and w.ndim == 1:
        return None     # a dot product of two vectors: one output, no layer worth a crossbar
    matrix = w.reshape(1, -1) if w.ndim == 1 else w.T
    axes = graph.add_constant(f"{node.name}_axis", np.array([axis], np.int64))
    nodes = []
    if len(x_shape) == 1:
        row = new_value(graph, f"{x}_row", (1,) + tuple(x_shape), graph.dtype(x))
        nodes.append(new_node(graph, "Unsqueeze", [x, axes], [row], base=f"{node.name}_row"))
        x = row
    out_shape = (1, matrix.shape[0]) if len(x_shape) == 1 else tuple(x_shape[:-1]) + (1,)
    wide = new_value(graph, f"{y}_linear", out_shape, dtype)
    nodes.append(_linear_node(graph, node, x, matrix, np.zeros(matrix.shape[0], np.float32), wide))
    nodes.append(new_node(graph, "Squeeze", [wide, axes], [y], base=f"{node.name}_squeeze"))
    return nodes


def _batched(graph: Graph, node: Node, x: str, w: np.ndarray, w_first: bool = False) -> list[Node] | None:
    """A MatMul by a constant with batch axes (per-head weights [H, K, N], experts; or first, W [T, N, K] @
    x [T, K, B], one matrix per tree) as the Einsum that names them: axes x has too are shared (one layer
    per matrix, on x's slice), axes x lacks are new axes of the output (one layer of all the matrices'
    columns). Axes that broadcast stay digital."""
    x_shape = graph.static_shape(x)
    if x_shape is None:
        return None
    nb, overlap = w.ndim - 2, min(w.ndim, len(x_shape)) - 2
    if tuple(x_shape[len(x_shape) - 2 - overlap:-2]) != w.shape[nb - overlap:nb]:
        return None
    letters = iter(string.ascii_letters)
    lead, batch, (m, k, n) = ("".join(next(letters) for _ in range(count))
                              for count in (len(x_shape) - 2 - overlap, nb, 3))
    x_batch = f"{lead}{batch[nb - overlap:]}"
    equation = f"{x_batch}{m}{k},{batch}{k}{n}->{lead}{batch}{m}{n}"
    if w_first:     # W @ x: the vectors are x's columns m
        equation = f"{batch}{n}{k},{x_batch}{k}{m}->{lead}{batch}{n}{m}"
    return _einsum(graph, Node(name=node.name, op_type="Einsum", inputs=node.inputs, outputs=node.outputs,
                               attrs={"equation": equation}, opset=node.opset, meta={"origin": node.op_type}))


def _einsum(graph: Graph, node: Node) -> list[Node] | None:
    """An Einsum of x and a constant W that sums x's contracted axes against W and keeps every other
    axis of each (no diagonals, no axis in both and in the output but W's batch axes, an ellipsis over
    x's axes only): Transpose x to (kept, contracted), Reshape to (kept..., K), a Linear layer to
    (kept..., N), Reshape to W's kept axes, Transpose to the output's order."""
    eq = str(node.attrs.get("equation", "")).replace(" ", "")
    if len(node.inputs) != 2 or eq.count("->") > 1:
        return None
    lhs, out = eq.split("->") if "->" in eq else (eq, None)
    subs = lhs.split(",")
    const = [graph.is_constant(i) for i in node.inputs]
    if len(subs) != 2 or const.count(True) != 1:
        return None
    xi = const.index(False)
    xs, ws = subs[xi], subs[1 - xi]
    x_name, w = node.inputs[xi], graph.constants[node.inputs[1 - xi]]
    x_shape = graph.static_shape(x_name)
    if out is None:     # implicit output: the ellipsis, then every letter used once, in alphabetical order
        letters = lhs.replace("...", "").replace(",", "")
        out = ("..." if "..." in lhs else "") + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if "..." in eq:
        if "..." in ws or "..." not in xs or x_shape is None:
            return None
        fresh = "".join(c for c in string.ascii_letters if c not in eq)[:len(x_shape) - len(xs) + 3]
        xs, out = xs.replace("...", fresh), out.replace("...", fresh)
    if any(len(set(t)) != len(t) for t in (xs, ws, out)) or w.ndim != len(ws) or w.dtype.kind != "f" \
            or x_shape is None or len(x_shape) != len(xs):
        return None
    shared = [c for c in xs if c in ws and c in out]
    if shared:
        return _einsum_per_matrix(graph, node, (xs, ws, out), shared, x_name, w, x_shape)
    return _dense_layer(graph, node, (xs, ws, out), x_name, w, x_shape)


def _dense_layer(graph: Graph, node: Node, subs: tuple[str, str, str], x_name: str, w: np.ndarray,
                 x_shape) -> list[Node] | None:
    """The nodes of an Einsum (subscripts ``subs`` of x, W and the output) that is a dense layer, ``node``
    giving its name and output, or None when it is not one."""
    xs, ws, out = subs
    axes = _dense_axes(xs, ws, out, x_shape, w.shape)
    if axes is None:
        return None
    contracted, kept, new = axes
    size = dict(zip(xs, x_shape)) | dict(zip(ws, w.shape))
    k, n = math.prod(size[c] for c in contracted), math.prod(size[c] for c in new)
    weight = np.transpose(w, [ws.index(c) for c in new + contracted]).reshape(n, k)
    dtype, y = graph.dtype(node.outputs[0]), node.outputs[0]
    nodes, cur = [], x_name
    kept_dims = [size[c] for c in kept]

    def step(op, shape, attrs=None, extra=(), last=False):
        nonlocal cur
        value = y if last else new_value(graph, f"{node.name}_{op.lower()}", shape, dtype)
        nodes.append(new_node(graph, op, [cur, *extra], [value], attrs, base=f"{node.name}_{op.lower()}"))
        cur = value

    perm = [xs.index(c) for c in kept + contracted]
    if perm != list(range(len(xs))):
        step("Transpose", kept_dims + [size[c] for c in contracted], {"perm": perm})
    if len(contracted) != 1:
        step("Reshape", kept_dims + [k], extra=[graph.add_constant(f"{node.name}_in_shape",
                                                                 np.array(kept_dims + [k], np.int64))])
    order = kept + new
    back = [order.index(c) for c in out]
    tail = len(new) != 1 or back != list(range(len(out)))
    linear_out = new_value(graph, f"{node.name}_linear", kept_dims + [n], dtype) if tail else y
    nodes.append(_linear_node(graph, node, cur, weight, np.zeros(n, np.float32), linear_out))
    cur = linear_out
    if len(new) != 1:
        step("Reshape", kept_dims + [size[c] for c in new],
             extra=[graph.add_constant(f"{node.name}_out_shape",
                                       np.array(kept_dims + [size[c] for c in new], np.int64))],
             last=back == list(range(len(out))))
    if back != list(range(len(out))):
        step("Transpose", [size[c] for c in out], {"perm": back}, last=True)
    return nodes


def _dense_axes(xs: str, ws: str, out: str, x_shape, w_shape) -> tuple[list, list, list] | None:
    """(contracted, kept, new) axes of an Einsum of x and W that is a dense layer, or None."""
    contracted = [c for c in xs if c in ws and c not in out]
    kept = [c for c in xs if c not in ws]
    new = [c for c in ws if c not in xs]
    if not contracted or not kept or sorted(kept + new) != sorted(out) \
            or any(w_shape[ws.index(c)] != x_shape[xs.index(c)] for c in contracted):
        return None
    return contracted, kept, new


def _einsum_per_matrix(graph: Graph, node: Node, subs: tuple[str, str, str], shared: list[str], x_name: str,
                       w: np.ndarray, x_shape) -> list[Node] | None:
    """An Einsum whose constant operand has axes that x and the output share (per-head weights,
    ``bhid,hdk->bhik``): x with those axes first and as one (Transpose, Reshape), a dense-layer Einsum per
    matrix of W on the slice of x it multiplies (Gather; each a Linear layer as above), the results
    stacked (Concat, Reshape) and put in the output's order (Transpose)."""
    xs, ws, out = subs
    rx, rw, ro = ([c for c in t if c not in shared] for t in subs)
    x_rest = [x_shape[xs.index(c)] for c in rx]
    size = dict(zip(xs, x_shape)) | dict(zip(ws, w.shape))
    if any(w.shape[ws.index(c)] != x_shape[xs.index(c)] for c in shared) \
            or _dense_axes("".join(rx), "".join(rw), "".join(ro), x_rest, [size[c] for c in rw]) is None:
        return None
    count, y = math.prod(size[c] for c in shared), node.outputs[0]
    x_type, dtype = graph.dtype(x_name), graph.dtype(y)
    nodes, cur = [], x_name

    def step(op, inputs, shape, attrs=None, value=None, source_type=dtype):
        nonlocal cur
        value = value or new_value(graph, f"{node.name}_{op.lower()}", shape, source_type)
        nodes.append(new_node(graph, op, inputs, [value], attrs, base=f"{node.name}_{op.lower()}"))
        cur = value

    perm = [xs.index(c) for c in shared + rx]
    if perm != list(range(len(xs))):
        step("Transpose", [cur], [size[c] for c in shared + rx], {"perm": perm}, source_type=x_type)
    if len(shared) != 1:
        step("Reshape", [cur, graph.add_constant(f"{node.name}_matrices", np.array([count] + x_rest, np.int64))],
             [count] + x_rest, source_type=x_type)
    matrices = np.transpose(w, [ws.index(c) for c in shared + rw]).reshape([count] + [size[c] for c in rw])
    sliced, parts = cur, []
    for i, matrix in enumerate(matrices):
        step("Gather", [sliced, graph.add_constant(f"{node.name}_index{i}", np.array(i, np.int64))], x_rest,
             {"axis": 0}, source_type=x_type)
        part = Node(name=graph.unique_name(f"{node.name}_{i}"), op_type="Einsum", opset=node.opset, inputs=[cur],
                    outputs=[new_value(graph, f"{y}_{i}", [size[c] for c in ro], dtype)],
                    meta={"origin": node.meta.get("origin", node.op_type)})
        nodes += _dense_layer(graph, part, ("".join(rx), "".join(rw), "".join(ro)), cur, matrix, x_rest)
        parts.append(part.outputs[0])
    order = shared + ro
    back = [order.index(c) for c in out]
    last = y if back == sorted(back) else None
    if len(shared) == 1:
        # each result on a new axis, then Concat: a Reshape's target would fix the parts' other axes, among
        # them a batch that the program must follow at run time (W [T, N, K] @ x [T, K, batch])
        axis = graph.add_constant(f"{node.name}_stack", np.array([0], np.int64))
        for i, part in enumerate(parts):
            step("Unsqueeze", [part, axis], [1] + [size[c] for c in ro])
            parts[i] = cur
        step("Concat", parts, [size[c] for c in order], {"axis": 0}, value=last)
    else:
        step("Concat", parts, [count * size[ro[0]]] + [size[c] for c in ro[1:]], {"axis": 0})
        unstack = graph.add_constant(f"{node.name}_unstack", np.array([size[c] for c in order], np.int64))
        step("Reshape", [cur, unstack], [size[c] for c in order], value=last)
    if back != sorted(back):
        step("Transpose", [cur], None, {"perm": back}, value=y)
    return nodes


@compile_pass(requires={"classified"}, provides={"unmapped_linear"})
def unmapped_linear(state: CompileState) -> None:
    """A Linear layer that classification left digital (a problem --allow-unsupported let through: its
    input size is computed at run time, say) becomes MatMul by Wᵀ plus an Add of its bias, standard ops
    the digital units run; it keeps its name and its 'unknown' mark for the report."""
    graph = state.graph
    out_nodes: list[Node] = []
    for node in graph.nodes:
        if node.op_type != LINEAR or node.domain != DOMAIN or node.kind != "digital":
            out_nodes.append(node)
            continue
        x, w_name, b_name = node.inputs
        dtype = graph.dtype(x) if graph.dtype(x) is not None and graph.dtype(x).kind == "f" else np.dtype(np.float32)
        wt = graph.add_constant(f"{node.name}_Wt", np.ascontiguousarray(graph.constants[w_name].T, dtype=dtype))
        b = graph.add_constant(f"{node.name}_bias", graph.constants[b_name].astype(dtype))
        y = node.outputs[0]
        product = new_value(graph, f"{y}_product", None, dtype)
        out_nodes.append(Node(name=node.name, op_type="MatMul", inputs=[x, wt], outputs=[product],
                              kind="digital", opset=graph.opset, meta=dict(node.meta)))
        out_nodes.append(new_node(graph, "Add", [product, b], [y], base=f"{node.name}_bias"))
        out_nodes[-1].kind = "digital"
    graph.nodes = out_nodes
    graph.prune()
