"""What one execution of a control-flow node (If, Loop, Scan) costs on the digital units: its
sub-graphs' nodes, costed like the enclosing graph's, times the iteration count."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..ir import Graph, Node, Subgraph
from .control_flow import attach_outer, bodies, is_control_flow, iterations, own_inputs
from .normalise import value_info
from .ops import digital_ops
from .to_ir import initializer_array, to_node

# layers with a constant weight operand: on crossbars outside a body, digital inside one (for now)
WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _strip_value_info(g: onnx.GraphProto) -> None:
    del g.value_info[:]
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _strip_value_info(a.g)


def _inferred_bodies(graph: Graph, node: Node) -> list[onnx.GraphProto]:
    """The node's sub-graphs with shapes inferred from the enclosing graph's (now static) shapes and
    constants; an exporter's symbolic shapes inside a body would leave most of its ops uncounted."""
    from onnx import helper, numpy_helper
    attrs = {k: v.graph for k, v in node.attrs.items() if isinstance(v, Subgraph) and v.graph is not None}
    try:
        proto = helper.make_node(node.op_type, own_inputs(node), node.outputs)
        for k, g in sorted(attrs.items()):
            body = onnx.GraphProto()
            body.CopyFrom(g)
            _strip_value_info(body)
            proto.attribute.append(helper.make_attribute(k, body))
        proto.attribute.extend(helper.make_attribute(k, v) for k, v in sorted(node.attrs.items())
                               if k not in attrs and isinstance(v, (int, float, str, list)))
        names = dict.fromkeys(x for x in own_inputs(node) + node.meta.get("outer", []) if x)
        inputs, inits = [], []
        for x in names:
            if graph.is_constant(x) and np.size(graph.constants[x]) <= 1024:
                inits.append(numpy_helper.from_array(np.asarray(graph.constants[x]), x))
                continue
            info = graph.tensors.get(x)
            value = graph.constants.get(x)
            dtype = value.dtype if value is not None else info.dtype if info is not None else None
            shape = np.shape(value) if value is not None else info.shape if info is not None else None
            inputs.append(helper.make_tensor_value_info(
                x, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)) if dtype is not None else 1,
                [d if isinstance(d, int) else None for d in shape] if shape is not None else None))
        outer = node.meta.get("outer", [])
        rename = dict(zip(outer, node.inputs[len(node.inputs) - len(outer):]))
        for vi in inputs:       # the sub-graphs read an outer value under the name they were written with
            for spelled, now in rename.items():
                if now == vi.name and spelled != now:
                    vi.name = spelled
        model = helper.make_model(helper.make_graph([proto], "wrap", inputs, [], inits),
                                  opset_imports=[helper.make_opsetid(d, v) for d, v in
                                                 (node.meta.get("opsets") or {"": graph.opset}).items()])
        done = onnx.shape_inference.infer_shapes(model, data_prop=True)
        return [a.g for a in done.graph.node[0].attribute if a.type == onnx.AttributeProto.GRAPH]
    except Exception:           # shapes are a best effort for the cost: the body as stored still counts
        return bodies(node.attrs)


def _body_ir(graph: Graph, body: onnx.GraphProto, opsets: dict[str, int]) -> Graph:
    tensors = dict(graph.tensors)
    for vi in list(body.input) + list(body.value_info) + list(body.output):
        tensors[vi.name] = value_info(vi)
    constants = {t.name: initializer_array(t, graph.source) for t in body.initializer}
    nodes = [to_node(n, n.name or f"{n.op_type}_{i}", opsets) for i, n in enumerate(body.node)]
    for n in nodes:
        if is_control_flow(n):
            attach_outer(n, opsets)
    return Graph(body.name or "body", nodes, [i.name for i in body.input], [o.name for o in body.output],
                 tensors, constants, opsets.get("", graph.opset), graph.source)


@dataclass
class BodyCost:
    """One execution of a control-flow node on the digital units."""
    ops: float                  # digital ops of every body run (the dearer branch of an If)
    iterations: int             # body runs per execution
    estimated: bool             # the count (or the branch) depends on the data
    analog_ops: list[str]       # op types in the bodies that would be analog outside one: digital here


def body_cost(graph: Graph, node: Node) -> BodyCost:
    """What one execution of a control-flow node costs, from its sub-graphs' nodes and shapes."""
    opsets = node.meta.get("opsets") or {"": graph.opset}
    per_body, analog, estimated = [], set(), False
    outer = node.meta.get("outer", [])
    outer_constants = {spelled for spelled, now in zip(outer, node.inputs[len(node.inputs) - len(outer):])
                       if graph.is_constant(now)}
    for body in _inferred_bodies(graph, node):
        inner = _body_ir(graph, body, opsets)
        known = outer_constants | set(inner.constants) | \
            {o for n in inner.nodes if n.op_type == "Constant" for o in n.outputs}
        total = 0.0
        for n in inner.nodes:
            if is_control_flow(n):
                sub = body_cost(inner, n)
                ops, estimated = sub.ops, estimated or sub.estimated
                analog.update(sub.analog_ops)
            else:
                ops = digital_ops(inner, n)
                if n.op_type in WEIGHTED and not n.domain and len(n.inputs) > 1 and n.inputs[1] in known:
                    analog.add(n.op_type)
            total += 0.0 if np.isnan(ops) else ops
        per_body.append(total)
    count, est = iterations(graph, node)
    return BodyCost(max(per_body, default=0.0) * count, count, estimated or est, sorted(analog))
