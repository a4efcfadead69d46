"""Small helpers shared by the graph-rewriting passes: new nodes and values with
unique names, per-channel constants, and the bias input of analog layers."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, TensorInfo


def new_node(graph: Graph, op: str, inputs: list[str], outputs: list[str], attrs=None, domain="",
             base: str = "") -> Node:
    return Node(name=graph.unique_name(base or op), op_type=op, inputs=inputs, outputs=outputs,
                attrs=dict(attrs or {}), domain=domain, opset=graph.opset if not domain else 1)


def kept_meta(node: Node, attrs: dict) -> dict:
    """``node``'s notes for a node that takes its name, with the types of only the attributes ``attrs`` it keeps."""
    meta = dict(node.meta)
    if "attr_types" in meta:
        meta["attr_types"] = {k: t for k, t in meta["attr_types"].items() if k in attrs}
    return meta


def new_value(graph: Graph, base: str, shape, dtype) -> str:
    name = graph.unique_name(base)
    graph.tensors[name] = TensorInfo(name, np.dtype(dtype) if dtype is not None else None,
                                     tuple(shape) if shape is not None else None)
    return name


_TRANSPOSE_ROWS = 64   # rows of the source copied per block: both sides of a block stay in cache


def contiguous_float32(w: np.ndarray) -> np.ndarray:
    """w as a C-contiguous float32 array, w itself when it is one.

    A transposed view (MatMul's weight as Linear's [N, K]) is copied in blocks of source rows:
    numpy's copy of the whole view walks one side with a stride of a full row, 4-7x slower from
    512 x 2048 up (measured).
    """
    if w.ndim != 2 or w.flags.c_contiguous or not w.T.flags.c_contiguous:
        return np.ascontiguousarray(w, dtype=np.float32)
    src = w.T                                   # C-contiguous (K, N)
    out = np.empty(w.shape, np.float32)
    for r in range(0, src.shape[0], _TRANSPOSE_ROWS):
        out[:, r:r + _TRANSPOSE_ROWS] = src[r:r + _TRANSPOSE_ROWS].T
    return out


def channel_vector(c: np.ndarray, n: int, rank: int, axis: int) -> np.ndarray | None:
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


def output_channels(graph: Graph, node: Node) -> int:
    w = graph.constants[node.inputs[1]]
    if node.op_type == "ConvTranspose":
        return w.shape[1] * int(node.attrs.get("group", 1))
    return w.shape[0]


def ensure_bias(graph: Graph, node: Node) -> None:
    """Give an analog node (Conv, ConvTranspose, Linear) a zero bias constant if it has none."""
    if len(node.inputs) >= 3 and node.inputs[2]:
        return
    n_out = output_channels(graph, node)
    name = graph.add_constant(f"{node.name}_b", np.zeros(n_out, np.float32))
    node.inputs = node.inputs[:2] + [name]
