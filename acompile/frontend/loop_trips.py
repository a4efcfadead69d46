"""How many times a Loop whose continue-condition only counts runs: exporters (tf2onnx's while_loop,
TFLite's) write ``And(Less(t + 1, n), Less(i + 1, max))`` with ``t`` a loop-carried counter, not a
condition passed through, and often a trip count of INT64_MAX ("no limit").

The backward slice of the body's condition output, closed over every loop-carried value it reads (that
value's update joins the slice), is run iteration by iteration in one onnxruntime session, from the
Loop's constant initial values, until the condition turns false or the trip count is reached. It
qualifies only when it reads nothing the data can change: the iteration number, the incoming condition
(true in every iteration that runs), constants of the body or the enclosing graph, and loop-carried
values with small constant initial values; no sub-graphs, no random ops, a bounded size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..ir import Graph, Node, Subgraph
from ..limits import Limits
from ..onnx_core import (AttributeProto, GraphProto, TensorProto, from_array, make_graph, make_model, make_node,
                         make_opsetid, make_tensor_value_info, np_dtype_to_tensor_dtype)
from .ops import NON_DETERMINISTIC

MAX_SLICE_NODES = 256
MAX_STATE_ELEMENTS = 64         # a counter is a scalar; a carried tensor is data, not a count
MAX_CONSTANT_ELEMENTS = 1 << 16  # the slice is rebuilt for every question asked of the Loop: keep it cheap
PREFIX = "loop_trips/"
RANDOM = NON_DETERMINISTIC | {"Dropout"}     # a training-mode Dropout draws too


def counted_trips(graph: Graph, node: Node, own: list[str], bound: int | None = None) -> int | None:
    """How many times the Loop ``node`` (its ONNX inputs ``own``) runs its body, when its condition
    only counts and it stops within ``bound`` iterations (default: the unrolling limit, at least its
    default); else None."""
    trip = own[0] if own else ""
    if trip and not graph.is_constant(trip):
        return None
    limit = int(np.asarray(graph.constants[trip]).reshape(-1)[0]) if trip else None
    start = own[1] if len(own) > 1 else ""
    if start and not graph.is_constant(start):
        return None
    if (limit is not None and limit <= 0) or (start and not np.all(graph.constants[start])):
        return 0                # ONNX checks ``i < M and cond`` before the first run too
    body = node.attrs.get("body")
    if not isinstance(body, Subgraph) or body.graph is None:
        return None
    try:
        built = _slice_model(graph, node, body.graph, own)
    except (ValueError, TypeError, KeyError):   # a value ONNX cannot hold as a tensor: not a counter
        return None
    if built is None:
        return None
    model, feeds = built
    if bound is None:           # a lowered unrolling limit keeps a Loop one node, not its count unknown
        bound = max(Limits.from_env().max_unrolled_nodes, Limits.max_unrolled_nodes)
    return _run(model, tuple((k, v.dtype.str, v.shape, v.tobytes()) for k, v in feeds.items()), limit, bound)


def _slice_model(graph: Graph, node: Node, body: GraphProto, own: list[str]):
    """(serialized model of the condition's slice, its initial loop-carried values) or None. The model
    reads ``i``, ``cond`` and ``in<j>`` (the carried values the slice needs) and returns ``out`` (the
    condition) and ``out<j>`` (carried value j after the iteration), every name under ``PREFIX``."""
    if len(body.input) < 2 or not body.output or body.sparse_initializer:
        return None
    outer = node.meta.get("outer", [])
    now = dict(zip(outer, node.inputs[len(node.inputs) - len(outer):]))
    carried = {vi.name: j for j, vi in enumerate(body.input[2:])}
    inits = {t.name: t for t in body.initializer}
    producers = {o: k for k, n in enumerate(body.node) for o in n.output if o}
    used, nodes, states = set(), set(), set()
    todo = [body.output[0].name]
    while todo:
        name = todo.pop()
        if name in used or not name:
            continue
        used.add(name)
        if name in (body.input[0].name, body.input[1].name):
            continue
        if name in carried:
            j = carried[name]
            if j + 1 >= len(body.output) or 2 + j >= len(own) or not _small_constant(graph, own[2 + j]):
                return None
            states.add(j)
            todo.append(body.output[1 + j].name)
        elif name in inits:
            if int(np.prod(inits[name].dims)) > MAX_CONSTANT_ELEMENTS:
                return None
        elif name in producers:
            n = body.node[producers[name]]
            if n.domain not in ("", "ai.onnx") or n.op_type in RANDOM or len(nodes) >= MAX_SLICE_NODES or \
                    any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in n.attribute):
                return None
            nodes.add(producers[name])
            todo.extend(n.input)
        else:
            x = now.get(name, "")
            if not graph.is_constant(x) or np.size(graph.constants[x]) > MAX_CONSTANT_ELEMENTS:
                return None     # an input of the enclosing graph, or a value computed from one: data
    # canonical names outside the body's: the run feeds the iteration number and the state by them
    feeds = {f"{PREFIX}in{j}": np.asarray(graph.constants[own[2 + j]]) for j in sorted(states)}
    inputs = [make_tensor_value_info(x, np_dtype_to_tensor_dtype(v.dtype), None) for x, v in feeds.items()]
    inputs += [make_tensor_value_info(f"{PREFIX}i", TensorProto.INT64, []),
               make_tensor_value_info(f"{PREFIX}cond", TensorProto.BOOL, [])]
    ops = [make_node("Identity", [f"{PREFIX}i"], [body.input[0].name]),
           make_node("Identity", [f"{PREFIX}cond"], [body.input[1].name])]
    ops += [make_node("Identity", [f"{PREFIX}in{j}"], [body.input[2 + j].name]) for j in sorted(states)]
    ops += [body.node[k] for k in sorted(nodes)]
    answers = [(f"{PREFIX}out", body.output[0].name, TensorProto.BOOL)]
    answers += [(f"{PREFIX}out{j}", body.output[1 + j].name,
                 np_dtype_to_tensor_dtype(feeds[f"{PREFIX}in{j}"].dtype))
                for j in sorted(states)]
    ops += [make_node("Identity", [src], [out]) for out, src, _ in answers]
    tensors = [inits[x] for x in sorted(used) if x in inits]
    tensors += [from_array(np.asarray(graph.constants[now[x]]), x) for x in sorted(used)
                if x not in inits and x not in producers and x in now]
    g = make_graph(ops, "trips", inputs, [make_tensor_value_info(out, t, None) for out, _, t in answers], tensors)
    opsets = node.meta.get("opsets") or {"": graph.opset}
    model = make_model(g, opset_imports=[make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = min(model.ir_version, 10)
    return model.SerializeToString(), feeds


def _small_constant(graph: Graph, name: str) -> bool:
    if not name or not graph.is_constant(name):
        return False
    value = np.asarray(graph.constants[name])
    return value.size <= MAX_STATE_ELEMENTS and value.dtype.kind in "biuf"


@lru_cache(maxsize=256)
def _run(model: bytes, feeds: tuple, limit: int | None, bound: int) -> int | None:
    """Runs of the body until the slice's condition turns false or ``limit`` runs; None past ``bound``
    or where onnxruntime cannot run the slice (cached: check, compile and the cost ask about one Loop
    several times)."""
    import onnxruntime as ort
    data = {k: np.frombuffer(raw, np.dtype(dtype)).reshape(shape) for k, dtype, shape, raw in feeds}
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        runs = 0
        while limit is None or runs < limit:
            if runs >= bound:
                return None
            data[f"{PREFIX}i"], data[f"{PREFIX}cond"] = np.array(runs, np.int64), np.array(True)
            values = dict(zip(names, session.run(names, data)))
            runs += 1
            cond = np.asarray(values.pop(f"{PREFIX}out"))
            if cond.size != 1:
                return None
            if not bool(cond.reshape(-1)[0]):
                return runs
            data.update((f"{PREFIX}in{k[len(PREFIX) + 3:]}", v) for k, v in values.items())
        return runs
    except Exception:           # a slice onnxruntime cannot run: the count stays unknown
        return None
