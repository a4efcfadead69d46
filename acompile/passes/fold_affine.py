"""Fold per-channel affine ops into the preceding analog layer's weights and bias.

BatchNormalization after a Conv, ConvTranspose or Linear, and Mul/Div/Add/Sub by a
per-channel constant (which is how MatMul + Add becomes one linear layer). A standalone
BatchNormalization stays a digital op. A weight is scaled once, by the float64 product of
every scale folded into it, and rounded to float32 once; when no later step reads the weights'
values (``check``), the scale is kept beside the weight instead (:class:`PendingScale`), which
tells whether the scaled weight would be finite without writing it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..frontend.file_bytes import release
from ..ir import DOMAIN, LINEAR, Graph, Node, is_linear
from ..limits import usable_cores
from ..numerics.folded import folded_integers
from ._rewrite import channel_vector, ensure_bias, output_channels
from .base import CompileState, compile_pass

ANALOG_WEIGHTED = ("Conv", "ConvTranspose", LINEAR)
PARALLEL_ELEMENTS = 1 << 20     # weights scaled on one thread below this many elements in all


@compile_pass(requires={"linear"}, provides={"affine_folded"})
def fold_affine(state: CompileState) -> None:
    """Fold BatchNormalization and per-channel Mul/Div/Add/Sub by constants into analog layers."""
    graph = state.graph
    producers = graph.producers()
    users = graph.consumers()
    folded = []
    scales: dict[str, tuple[Node, np.ndarray]] = {}     # analog node name -> (node, its weight's scale)
    # one sweep in node order: a fold only hands the analog node the folded node's output, which
    # later nodes read, so nothing before it can become foldable (the maps are kept up to date)
    for node in graph.nodes:
        if node.domain not in ("",) or node.op_type not in ("BatchNormalization", "Mul", "Div", "Add", "Sub"):
            continue
        if _try_fold(graph, node, producers, users, scales):
            folded.append(node)
    if folded:
        graph.remove_nodes(folded)
    shared = _shared_buffers(graph)
    scaled = []
    for node, scale in scales.values():
        if np.all(scale == 1.0):
            continue
        w = graph.constants[node.inputs[1]]
        # a quantized model's weight is scaled even in check: its integers, which the checks after read, would
        # no longer describe the product
        if not state.weights_read and isinstance(w, np.ndarray) and folded_integers(graph.meta, w) is None:
            state.pending_scales[node.inputs[1]] = PendingScale(node, scale)
        else:
            scaled.append((node, scale))
    weights = [graph.constants[node.inputs[1]] for node, _ in scaled]
    jobs = [(node, scale, out) for (node, scale), out in zip(scaled, _outputs(weights, shared))]
    # numpy's loops let go of the GIL: a large model's weights scale on every core at once (ResNet-50's
    # 25 M in 11 ms on two, 18 ms on one)
    workers = min(usable_cores(), len(jobs))
    if workers > 1 and sum(map(np.size, weights)) >= PARALLEL_ELEMENTS:
        from concurrent.futures import ThreadPoolExecutor     # only here: check, which scales nothing, never pays
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda job: _scale_output_channels(graph, *job), jobs))
    else:
        for job in jobs:
            _scale_output_channels(graph, *job)


def _outputs(weights: list, shared: set[int]) -> list:
    """Where each weight to scale goes: where it lies when it may be written (:func:`_private`), else into one
    block of memory for them all (2 MiB pages, where a weight's own small allocation would take 4 KiB ones:
    this pass on ResNet-50 went from 32-42 to 23-40 ms)."""
    private = [_private(w, shared) for w in weights]
    sizes = [0 if own else -(-np.size(w) // 16) * 16 for w, own in zip(weights, private)]    # 64-byte aligned
    block = np.empty(sum(sizes), np.float32)
    ends = np.cumsum(sizes)
    return [w if own else block[end - size:end - size + np.size(w)].reshape(np.shape(w))
            for w, own, size, end in zip(weights, private, sizes, ends)]


def _channel_axis(graph: Graph, node: Node) -> tuple[int, int] | None:
    """(rank, channel axis) of an analog node's output, if per-channel folding applies."""
    shape = graph.shape(node.outputs[0])
    if shape is None:
        return None
    rank = len(shape)
    if is_linear(node):
        return rank, rank - 1
    return (rank, 1) if rank >= 2 else None


def _buffer(a: np.ndarray):
    """The object that owns an array's memory (a view's base, followed to its end)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a if a.base is None else a.base


def _shared_buffers(graph: Graph) -> set[int]:
    """ids of the buffers that more than one constant reads (views of one weight, tied names)."""
    seen: set[int] = set()
    shared: set[int] = set()
    for value in graph.constants.values():
        key = id(_buffer(value))
        (shared if key in seen else seen).add(key)
    return shared


def _private(w: np.ndarray, shared: set[int]) -> bool:
    """Whether ``w`` can be scaled where it lies: float32, contiguous, its buffer read by no other constant
    and writable (an array a pass made, once unlocked; the model file's weights, views of its read-only
    mapping, are not, nor are numpy_helper's over protobuf bytes; a weight held as its integers,
    numerics.folded, is no array)."""
    if not isinstance(w, np.ndarray) or w.dtype != np.float32 or not w.flags.c_contiguous \
            or id(_buffer(w)) in shared:
        return False
    if not w.flags.writeable:
        try:
            w.flags.writeable = True
        except ValueError:
            return False
    return True


def _by_channel(node: Node, w: np.ndarray, scale: np.ndarray) -> tuple[tuple, np.ndarray]:
    """(a shape of w, scale shaped to broadcast against it) that put each output channel's scale on its
    weights."""
    if node.op_type == "ConvTranspose":
        groups = int(node.attrs.get("group", 1))
        cin, cout_g = w.shape[0], w.shape[1]
        return (groups, cin // groups, cout_g) + w.shape[2:], scale.reshape((groups, 1, cout_g) + (1,) * (w.ndim - 2))
    return w.shape, scale.reshape((-1,) + (1,) * (w.ndim - 1))


class PendingScale:
    """A folded per-output-channel scale kept beside its weight (``check``: nothing reads the product)."""

    def __init__(self, node: Node, scale: np.ndarray):
        self.node, self.scale = node, scale

    def finite(self, w: np.ndarray, finite_weight: Callable[[np.ndarray], bool]) -> bool:
        """Whether every element of the scaled weight (float64 products rounded to float32) is finite, w being
        finite by ``finite_weight(w)``. A scale of at most 1 cannot make a finite weight overflow; past that the
        rounding is monotonic in |w|, so the largest |w| (of each channel, when the whole's is too large) decides."""
        s = np.abs(self.scale)
        if not finite_weight(w) or (w.size and not np.isfinite(s).all()):
            return False
        if not w.size or s.max() <= 1.0 or _fits(max(float(w.max()), -float(w.min())) * s.max()):
            return True
        shape, by_channel = _by_channel(self.node, w, s)
        v = w.reshape(shape)
        other = tuple(axis for axis, size in enumerate(by_channel.shape) if size == 1)
        return _fits(np.maximum(v.max(axis=other, keepdims=True), -v.min(axis=other, keepdims=True)) * by_channel)


def _fits(x) -> bool:
    """Whether float64 ``x`` stays finite rounded to float32."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.asarray(x, np.float64).astype(np.float32)).all())


def _scale_output_channels(graph: Graph, node: Node, scale: np.ndarray, out: np.ndarray) -> None:
    """Multiply the node's weight by ``scale`` per output channel into ``out`` (the weight itself, or float32
    memory of its shape): in float64, rounded once to float32."""
    w_name = node.inputs[1]
    w = graph.constants[w_name]
    shape, s = _by_channel(node, w, scale)
    # the float64 loop on buffered chunks, element by element (so in place is safe): the same values as
    # w.astype(float64) * s, without the temporaries
    np.multiply(w.reshape(shape), s, out=out.reshape(shape), dtype=np.float64, casting="unsafe")
    graph.constants[w_name] = out
    if out is not w:
        release(w)      # the file's pages under the old weight: the process holds the new one instead


def _own_constants(graph: Graph, node: Node, users: dict) -> None:
    """Give the node private copies of its weight and bias so folding cannot leak to a sharer."""
    for pos in (1, 2):
        name = node.inputs[pos]
        sharers = users.get(name, [])
        if len(sharers) > 1 or name in graph.outputs:
            node.inputs[pos] = graph.add_constant(f"{node.name}_{'W' if pos == 1 else 'b'}",
                                                  graph.constants[name].copy())
            users[name] = [u for u in sharers if u is not node]
            users[node.inputs[pos]] = [node]


def _try_fold(graph: Graph, node: Node, producers: dict, users: dict, scales: dict) -> bool:
    """Fold ``node`` into the analog node producing its input, if it applies; keeps ``producers`` and
    ``users`` (the graph's maps) true to the changed graph, and multiplies the analog node's entry in
    ``scales`` (its weight's per-channel scale, applied once the sweep is over) by the fold's."""
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
    if len(prev.inputs) < 3 or not prev.inputs[2]:
        ensure_bias(graph, prev)
        users[prev.inputs[2]] = [prev]
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
    _own_constants(graph, prev, users)
    pending = scales.get(prev.name, (prev, 1.0))[1]
    scales[prev.name] = (prev, pending * scale)
    b = graph.constants[prev.inputs[2]].astype(np.float64)
    graph.constants[prev.inputs[2]] = (b * scale + shift).astype(np.float32)
    out = node.outputs[0]
    prev.outputs[0] = out
    producers[out] = prev
    for name in node.inputs:
        if name in users:
            users[name] = [u for u in users[name] if u is not node]
    prev.meta.setdefault("folded", []).append(node.op_type)
    return True
