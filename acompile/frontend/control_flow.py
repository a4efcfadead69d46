"""Control flow (If, Loop, Scan): the enclosing-graph values their sub-graphs read, how many times a
body runs, whether a Loop provably runs its full trip count (``always_continues``) or a count its
condition settles (``static_trips``), and the constants a body carries unchanged (``passed_constants``).

A sub-graph may read values of the graph around it by name (outer scope). Those names become extra
inputs of the node (after its own, listed in ``node.meta["outer"]`` as the sub-graph spells them), so
ordering, pruning and buffer lifetimes see the dependency, and onnx_exec feeds them to the node.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Subgraph
from ..onnx_core import GraphProto, TensorProto, get_attribute_value, to_array
from ..onnx_walk import node_bodies
from .loop_trips import counted_trips

CONTROL_FLOW = ("If", "Loop", "Scan")
NUMERIC_CONSTANTS = ("value", "value_float", "value_floats", "value_int", "value_ints")
NO_LIMIT = 2**31 - 1        # a trip count this large is the exporters' "no limit" (INT32_MAX, INT64_MAX)


def is_control_flow(node: Node) -> bool:
    return node.op_type in CONTROL_FLOW and not node.domain


def has_bodies(node: Node) -> bool:
    """Whether the node holds sub-graphs (If, Loop, Scan, SequenceMap, a custom domain's own): they read
    enclosing values by name."""
    return any(isinstance(v, Subgraph) for v in node.attrs.values())


def bodies(attrs) -> list[GraphProto]:
    return [v.graph for v in attrs.values() if isinstance(v, Subgraph) and v.graph is not None]


def outer_names(body: GraphProto) -> list[str]:
    """Names a sub-graph (and the sub-graphs nested in it) reads but does not define, in first-use order."""
    defined = {i.name for i in body.input} | {t.name for t in body.initializer} | \
        {t.name for t in body.sparse_initializer} | {""}
    found: list[str] = []

    def need(name: str) -> None:
        if name not in defined and name not in found:
            found.append(name)
    for n in body.node:
        for i in n.input:
            need(i)
        for inner in node_bodies(n):
            for name in outer_names(inner):
                need(name)
        defined.update(n.output)
    for o in body.output:
        need(o.name)
    return found


def rename_outer(body: GraphProto, rename: dict[str, str]) -> GraphProto:
    """A copy of ``body`` whose reads of enclosing values (its own and its nested sub-graphs') use the
    names in ``rename``: the body of a node a pass copied under new value names."""
    out = GraphProto()
    out.CopyFrom(body)
    free = {x: rename[x] for x in outer_names(body) if x in rename}
    if free:
        _rename_reads(out, free)
    return out


def _rename_reads(g: GraphProto, rename: dict[str, str]) -> None:
    local = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    rename = {k: v for k, v in rename.items() if k not in local}     # a name a graph defines shadows the outer one
    for n in g.node:
        n.input[:] = [rename.get(x, x) for x in n.input]
        for inner in node_bodies(n):
            _rename_reads(inner, rename)
    for o in g.output:
        o.name = rename.get(o.name, o.name)


def attach_outer(node: Node, opsets: dict[str, int]) -> None:
    """Make the outer-scope values a node's sub-graphs read extra inputs of the node."""
    names: list[str] = []
    for body in bodies(node.attrs):
        names += [x for x in outer_names(body) if x not in names]
    node.meta["outer"] = names
    node.meta["opsets"] = dict(sorted(opsets.items()))
    node.inputs = node.inputs + names


def own_inputs(node: Node) -> list[str]:
    """The node's inputs as ONNX defines them (without the outer-scope values)."""
    return node.inputs[:len(node.inputs) - len(node.meta.get("outer", ()))]


def _static_dim(graph: Graph, name: str, axis: int) -> int | None:
    if graph.is_constant(name):
        shape = np.shape(graph.constants[name])
    else:
        info = graph.tensors.get(name)
        shape = info.shape if info is not None else None
    if shape is None or not -len(shape) <= axis < len(shape):
        return None
    d = shape[axis]
    return d if isinstance(d, int) and d > 0 else None


def _truth(graph: Graph, node: Node, body: GraphProto, name: str) -> bool:
    """Whether the Loop body's value ``name`` is its condition input or a constant true, through
    Identity chains: a Constant or initializer of the body, or a constant of the enclosing graph."""
    producers = {o: n for n in body.node for o in n.output}
    inits = {t.name: t for t in body.initializer}
    outer = node.meta.get("outer", [])
    now = dict(zip(outer, node.inputs[len(node.inputs) - len(outer):]))
    for _ in range(len(body.node) + 1):     # an Identity chain is at most as long as the body
        if name == body.input[1].name:
            return True
        if name in inits:
            return bool(np.all(to_array(inits[name])))
        n = producers.get(name)
        if n is None:
            x = now.get(name, "")
            return graph.is_constant(x) and bool(np.all(graph.constants[x]))
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name in NUMERIC_CONSTANTS:
            value = get_attribute_value(n.attribute[0])
            return bool(np.all(to_array(value) if isinstance(value, TensorProto) else value))
        if n.op_type != "Identity":
            return False
        name = n.input[0]
    return False


def always_continues(graph: Graph, node: Node) -> bool:
    """A Loop whose every iteration provably continues: its initial condition is absent or a constant
    true, and its body's continue-condition output is its condition input passed through or a
    constant true (so the trip count alone decides how often the body runs)."""
    own = own_inputs(node)
    if len(own) > 1 and own[1] and not (graph.is_constant(own[1]) and bool(np.all(graph.constants[own[1]]))):
        return False
    body = node.attrs.get("body")
    if not isinstance(body, Subgraph) or body.graph is None or len(body.graph.input) < 2 or not body.graph.output:
        return False
    return _truth(graph, node, body.graph, body.graph.output[0].name)


def static_trips(graph: Graph, node: Node) -> int | None:
    """How many times a Loop runs its body, when that is settled before it runs: its constant trip
    count when every iteration continues, else the count its counting condition reaches
    (``loop_trips.counted_trips``); None when the data decides."""
    own = own_inputs(node)
    if own and own[0] and graph.is_constant(own[0]) and always_continues(graph, node):
        return max(int(np.asarray(graph.constants[own[0]]).reshape(-1)[0]), 0)
    return counted_trips(graph, node, own)


def iterations(graph: Graph, node: Node) -> tuple[int, bool]:
    """(how many times the node's body runs per execution, whether that is an estimate)."""
    own = own_inputs(node)
    if node.op_type == "If":
        return 1, True                  # which branch runs depends on the data: the dearer one is counted
    if node.op_type == "Loop":
        exact = static_trips(graph, node)
        if exact is not None:
            return exact, False
        scans = [o for o in node.outputs[len(own) - 2:] if o]
        for o in scans:                 # a scan output's length is the iteration count
            d = _static_dim(graph, o, 0)
            if d is not None:
                return d, False
        trip = own[0] if own else ""
        if trip and graph.is_constant(trip):
            m = int(np.asarray(graph.constants[trip]).reshape(-1)[0])
            if m < NO_LIMIT:            # an upper bound the condition may stop short of
                return max(m, 0), True
        return 1, True
    n_scan = int(node.attrs.get("num_scan_inputs", 0))
    axes = node.attrs.get("scan_input_axes") or [0] * n_scan
    first = own[len(own) - n_scan] if n_scan else ""
    d = _static_dim(graph, first, int(axes[0])) if first else None
    return (d, False) if d is not None else (1, True)


def passed_constants(graph: Graph, node: Node, body: GraphProto) -> dict[str, str]:
    """Loop-carried values (Loop) or states (Scan) the body returns unchanged and that enter as constants
    of the enclosing graph (TensorFlow's while_loop carries its weights so): body name -> enclosing name.
    Every iteration reads the same constant."""
    own = own_inputs(node)
    if node.op_type == "Loop":
        pairs = zip(body.input[2:], body.output[1:], own[2:])
    elif node.op_type == "Scan":
        carried = len(own) - int(node.attrs.get("num_scan_inputs", 0))
        pairs = zip(body.input[:carried], body.output[:carried], own[:carried])
    else:
        return {}
    return {i.name: x for i, o, x in pairs if i.name and i.name == o.name and x and graph.is_constant(x)}
