"""Control flow (If, Loop, Scan): the enclosing-graph values their sub-graphs read, and how many
times a body runs.

A sub-graph may read values of the graph around it by name (outer scope). Those names become extra
inputs of the node (after its own, listed in ``node.meta["outer"]`` as the sub-graph spells them), so
ordering, pruning and buffer lifetimes see the dependency, and onnx_exec feeds them to the node.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..ir import Graph, Node, Subgraph

CONTROL_FLOW = ("If", "Loop", "Scan")


def is_control_flow(node: Node) -> bool:
    return node.op_type in CONTROL_FLOW and not node.domain


def bodies(attrs) -> list[onnx.GraphProto]:
    return [v.graph for v in attrs.values() if isinstance(v, Subgraph) and v.graph is not None]


def _node_bodies(n: onnx.NodeProto) -> list[onnx.GraphProto]:
    out = []
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def outer_names(body: onnx.GraphProto) -> list[str]:
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
        for inner in _node_bodies(n):
            for name in outer_names(inner):
                need(name)
        defined.update(n.output)
    for o in body.output:
        need(o.name)
    return found


def attach_outer(node: Node, opsets: dict[str, int]) -> None:
    """Make the outer-scope values a control-flow node's sub-graphs read extra inputs of the node."""
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


def _passes_condition(body: onnx.GraphProto) -> bool:
    """A Loop body whose continue-condition output is its condition input, unchanged (or a constant true)."""
    if len(body.input) < 2 or len(body.output) < 1:
        return False
    cond_in, cond_out = body.input[1].name, body.output[0].name
    if cond_in == cond_out:
        return True
    for n in body.node:
        if cond_out in n.output:
            if n.op_type == "Identity" and list(n.input) == [cond_in]:
                return True
            if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR:
                return bool(np.all(onnx.numpy_helper.to_array(n.attribute[0].t)))
    return False


def iterations(graph: Graph, node: Node) -> tuple[int, bool]:
    """(how many times the node's body runs per execution, whether that is an estimate)."""
    own = own_inputs(node)
    if node.op_type == "If":
        return 1, True                  # which branch runs depends on the data: the dearer one is counted
    if node.op_type == "Loop":
        trip = own[0] if own else ""
        body = node.attrs.get("body")
        cond_true = len(own) < 2 or not own[1] or (graph.is_constant(own[1]) and
                                                    bool(np.all(graph.constants[own[1]])))
        if trip and graph.is_constant(trip):
            m = int(np.asarray(graph.constants[trip]).reshape(-1)[0])
            known = cond_true and isinstance(body, Subgraph) and body.graph is not None and \
                _passes_condition(body.graph)
            return max(m, 0), not known
        scans = [o for o in node.outputs[len(own) - 2:] if o]
        for o in scans:                 # a scan output's length is the iteration count
            d = _static_dim(graph, o, 0)
            if d is not None:
                return d, False
        return 1, True
    n_scan = int(node.attrs.get("num_scan_inputs", 0))
    axes = node.attrs.get("scan_input_axes") or [0] * n_scan
    first = own[len(own) - n_scan] if n_scan else ""
    d = _static_dim(graph, first, int(axes[0])) if first else None
    return (d, False) if d is not None else (1, True)
