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
RECURRENT = ("LSTM", "GRU", "RNN")


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
        found = [a.g for a in done.graph.node[0].attribute if a.type == onnx.AttributeProto.GRAPH]
        feeds = {vi.name: graph.constants.get(rename.get(vi.name, vi.name)) for vi in inputs}
        for body in found:
            if not all(_static(vi) for vi in list(body.value_info) + list(body.output)):
                _probe_shapes(body, inputs, inits, feeds, model.opset_import)
        return found
    except Exception:           # shapes are a best effort for the cost: the body as stored still counts
        return bodies(node.attrs)


def _static(vi: onnx.ValueInfoProto) -> bool:
    tt = vi.type.tensor_type
    return tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)


def _probe_shapes(body: onnx.GraphProto, inputs, inits, feeds: dict, opsets) -> None:
    """Shapes ONNX inference leaves open inside a body (a Pad whose pads are computed): onnxruntime's
    view, from one run of the body on representative data (the enclosing graph's constants, seeded
    normal floats, zero integers). A best effort: a body it cannot run keeps its shapes."""
    from onnx import helper
    import onnxruntime as ort
    if len(body.input) or not all(_static(vi) for vi in inputs):
        return                  # Loop / Scan bodies read per-iteration inputs: not probed
    typed = {vi.name: vi for vi in list(body.value_info) + list(body.output) if vi.type.tensor_type.elem_type}
    names = [o for n in body.node for o in n.output if o in typed]
    if not names:
        return
    rng = np.random.default_rng(0)
    data = {}
    for vi in inputs:
        value = feeds.get(vi.name)
        if value is None:
            dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            value = rng.standard_normal(dims).astype(dtype) if np.issubdtype(dtype, np.floating) \
                else np.zeros(dims, dtype)
        data[vi.name] = np.asarray(value)
    g = helper.make_graph(list(body.node), "probe", list(inputs), [typed[n] for n in names],
                          list(inits) + list(body.initializer))
    _strip_value_info(g)            # inference's guesses inside nested bodies: onnxruntime redoes them
    for vi in list(g.input) + list(g.output):   # only the run fixes shapes: static inputs make onnxruntime
        vi.type.tensor_type.ClearField("shape")  # check branches the data never takes (rank-2 vs rank-3 input)
    model = helper.make_model(g, opset_imports=list(opsets))
    model.ir_version = min(model.ir_version, 10)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(names, data)
    except Exception:
        return
    for name, value in zip(names, values):
        vi = typed[name]
        if not _static(vi):
            vi.type.tensor_type.shape.Clear()
            for n in np.shape(value):
                vi.type.tensor_type.shape.dim.add().dim_value = int(n)


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


def _layer_ops(g: Graph, n: Node) -> float:
    """Digital ops (2 per MAC, plus the gates of a recurrent layer) of a weighted layer inside a body."""
    def shape(i):
        name = n.inputs[i] if len(n.inputs) > i else ""
        value = g.constants.get(name)
        s = np.shape(value) if value is not None else g.static_shape(name) if name in g.tensors else None
        return s
    try:
        out = g.static_shape(n.outputs[0]) if n.outputs[0] in g.tensors else None
        x, w = shape(0), shape(1)
        if n.op_type == "Conv" and out and w:
            return 2.0 * np.prod(out) * np.prod(w[1:])
        if n.op_type == "ConvTranspose" and x and w:
            return 2.0 * np.prod(x) * np.prod(w[1:])
        if n.op_type == "MatMul" and out and x:
            return 2.0 * np.prod(out) * x[-1]
        if n.op_type == "Gemm" and out and x:
            return 2.0 * np.prod(out) * x[0 if n.attrs.get("transA", 0) else 1]
        if n.op_type in RECURRENT and x and w and len(x) == 3:
            r = shape(2)
            steps = x[0] * x[1]                     # T x B, in either layout
            return 2.0 * steps * w[0] * w[1] * (w[2] + (r[2] if r else w[1])) + 4.0 * steps * w[0] * w[1]
    except Exception:
        pass
    return float("nan")


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
                if (not ops or np.isnan(ops)) and (n.op_type in WEIGHTED or n.op_type in RECURRENT) and not n.domain:
                    ops = _layer_ops(inner, n)      # a crossbar layer outside a body: costed digital here
                if n.op_type in WEIGHTED and not n.domain and len(n.inputs) > 1 and n.inputs[1] in known:
                    analog.add(n.op_type)
            total += 0.0 if np.isnan(ops) else ops
        per_body.append(total)
    count, est = iterations(graph, node)
    return BodyCost(max(per_body, default=0.0) * count, count, estimated or est, sorted(analog))
