"""What one execution of a control-flow node (If, Loop, Scan) costs on the digital units: its
sub-graphs' nodes, costed like the enclosing graph's, times the iteration count.

The shapes inside a sub-graph come from ONNX shape inference with the enclosing graph's shapes and
constants, the inputs of a Loop or Scan body as one iteration sees them, and where inference leaves
some open, from an onnxruntime run of the sub-graph on representative data (``inferred_bodies``,
which passes/unroll_control.py also uses to give every copied value its shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node, Subgraph
from ..onnx_core import (AttributeProto, GraphProto, ValueInfoProto, from_array, infer_shapes,
                         make_attribute, make_graph, make_model, make_node, make_opsetid,
                         make_tensor_value_info, np_dtype_to_tensor_dtype, tensor_dtype_to_np_dtype)
from ..onnx_walk import without_value_info
from .control_flow import (attach_outer, bodies, has_bodies, is_control_flow, iterations, own_inputs,
                           passed_constants)
from .value_sizes import value_info
from .ops import digital_ops
from .to_ir import initializer_array, to_node

# layers with a constant weight operand: on crossbars outside a body, digital inside one that is not unrolled
WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
RECURRENT = ("LSTM", "GRU", "RNN")
# outputs sized by the content of the data: a probe on made-up data would give them made-up shapes
CONTENT_SIZED = ("NonZero", "Unique", "Compress", "NonMaxSuppression")


def inferred_bodies(graph: Graph, node: Node) -> list[GraphProto]:
    """Copies of the node's sub-graphs with shapes inferred from the enclosing graph's (now static)
    shapes and constants (an exporter's symbolic shapes inside a body would leave most of its ops
    uncounted), a Loop or Scan body's inputs typed as one iteration sees them, and what inference
    leaves open settled by an onnxruntime probe of the body where it can run."""
    attrs = {k: v.graph for k, v in node.attrs.items() if isinstance(v, Subgraph) and v.graph is not None}
    try:
        proto = make_node(node.op_type, own_inputs(node), node.outputs)
        for k, g in sorted(attrs.items()):
            proto.attribute.append(make_attribute(k, without_value_info(g)))
        proto.attribute.extend(make_attribute(k, v) for k, v in sorted(node.attrs.items())
                               if k not in attrs and isinstance(v, (int, float, str, list)))
        names = dict.fromkeys(x for x in own_inputs(node) + node.meta.get("outer", []) if x)
        inputs, inits = [], []
        for x in names:
            if graph.is_constant(x) and np.size(graph.constants[x]) <= 1024:
                inits.append(from_array(np.asarray(graph.constants[x]), x))
                continue
            info = graph.tensors.get(x)
            value = graph.constants.get(x)
            dtype = value.dtype if value is not None else info.dtype if info is not None else None
            shape = np.shape(value) if value is not None else info.shape if info is not None else None
            inputs.append(make_tensor_value_info(
                x, np_dtype_to_tensor_dtype(np.dtype(dtype)) if dtype is not None else 1,
                [d if isinstance(d, int) else None for d in shape] if shape is not None else None))
        outer = node.meta.get("outer", [])
        rename = dict(zip(outer, node.inputs[len(node.inputs) - len(outer):]))
        for vi in inputs:       # the sub-graphs read an outer value under the name they were written with
            for spelled, now in rename.items():
                if now == vi.name and spelled != now:
                    vi.name = spelled
        model = make_model(make_graph([proto], "wrap", inputs, [], inits),
                           opset_imports=[make_opsetid(d, v) for d, v in
                                          (node.meta.get("opsets") or {"": graph.opset}).items()])
        done = infer_shapes(model, data_prop=True)
        found = [a.g for a in done.graph.node[0].attribute if a.type == AttributeProto.GRAPH]
        feeds = {vi.name: graph.constants.get(rename.get(vi.name, vi.name)) for vi in inputs}
        for body in found:
            typed = _iteration_inputs(graph, node, body)
            for vi, t in zip(body.input, typed or ()):
                vi.type.CopyFrom(t.type)
            if typed is not None and not all(_static(vi) for vi in list(body.value_info) + list(body.output)):
                _probe_shapes(body, inputs, inits, feeds, model.opset_import, _steps(graph, node),
                              node.op_type == "Loop")
        return found
    except Exception:           # shapes are a best effort for the cost: the body as stored still counts
        return bodies(node.attrs)


def _static(vi: ValueInfoProto) -> bool:
    tt = vi.type.tensor_type
    return tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)


def _spec(graph: Graph, name: str) -> tuple[np.dtype, tuple[int, ...]] | None:
    """(dtype, static shape) of an enclosing-graph value, or None where either is unknown."""
    value = graph.constants.get(name)
    if value is not None:
        return value.dtype, np.shape(value)
    info, shape = graph.tensors.get(name), graph.static_shape(name) if name else None
    return (info.dtype, shape) if info is not None and info.dtype is not None and shape is not None else None


def _iteration_inputs(graph: Graph, node: Node, body: GraphProto) -> list[ValueInfoProto] | None:
    """The body's inputs as one iteration sees them, typed and static (a Loop: the iteration number,
    the condition, the loop-carried values as they enter; a Scan: its states and one slice of each
    scanned input); [] for an If; None where one is unknown."""
    own = own_inputs(node)
    if node.op_type == "If":
        return []
    if node.op_type == "Loop":
        specs = [(np.dtype(np.int64), ()), (np.dtype(np.bool_), ())] + [_spec(graph, x) for x in own[2:]]
    else:
        m = int(node.attrs.get("num_scan_inputs", 0))
        axes = node.attrs.get("scan_input_axes") or [0] * m
        specs = [_spec(graph, x) for x in own[:len(own) - m]]
        for x, axis in zip(own[len(own) - m:], axes):
            spec = _spec(graph, x)
            rank = len(spec[1]) if spec is not None else 0
            a = axis % rank if -rank <= axis < rank else None
            specs.append((spec[0], spec[1][:a] + spec[1][a + 1:]) if a is not None else None)
    if len(specs) != len(body.input) or any(s is None for s in specs):
        return None
    return [make_tensor_value_info(vi.name, np_dtype_to_tensor_dtype(dtype), list(shape))
            for vi, (dtype, shape) in zip(body.input, specs)]


def _steps(graph: Graph, node: Node) -> list[int]:
    """The iteration numbers a body is probed at, one per run: a Loop's first and, when the count is
    known, its last; else the first twice (the two runs differ in their data)."""
    count, estimated = iterations(graph, node) if node.op_type == "Loop" else (1, True)
    return [0, count - 1] if not estimated and count > 1 else [0, 0]


def _probe_shapes(body: GraphProto, inputs, inits, feeds: dict, opsets, steps: list[int], loop: bool) -> None:
    """Shapes ONNX inference leaves open inside a body (a Pad whose pads are computed): onnxruntime's
    view, from runs of the body on representative data (the enclosing graph's constants, seeded normal
    floats drawn anew for each run, zero integers; a Loop body at the iteration numbers ``steps`` with
    its condition true). A shape is kept only when the runs agree (so it depends neither on the data
    nor on the iteration) and no loop-carried value changes shape (else it would hold for the first
    iteration only). A best effort: a body it cannot run keeps its shapes."""
    import onnxruntime as ort
    outer = {vi.name for vi in inputs}
    if not all(_static(vi) for vi in list(inputs) + list(body.input)) or outer & {vi.name for vi in body.input} \
            or any(n.op_type in CONTENT_SIZED for n in body.node):
        return
    typed = {vi.name: vi for vi in list(body.value_info) + list(body.output) if vi.type.tensor_type.elem_type}
    names = list(dict.fromkeys(o for n in body.node for o in n.output if o in typed))
    if not names:
        return
    g = without_value_info(make_graph(list(body.node), "probe", list(inputs) + list(body.input),
                                      [typed[n] for n in names], list(inits) + list(body.initializer)))
    for vi in list(g.input) + list(g.output):   # only the run fixes shapes: static inputs make onnxruntime
        vi.type.tensor_type.ClearField("shape")  # check branches the data never takes (rank-2 vs rank-3 input)
    model = make_model(g, opset_imports=list(opsets))
    model.ir_version = min(model.ir_version, 10)
    runs = []
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for seed, step in enumerate(steps):
            data = _probe_data(list(inputs) + list(body.input), feeds, seed)
            if loop:
                data[body.input[0].name] = np.array(step, np.int64)
            runs.append({n: np.shape(v) for n, v in zip(names, session.run(names, data))})
    except Exception:
        return
    if loop and any(r.get(o.name, _dims(i)) != _dims(i) for r in runs for i, o in zip(body.input[2:], body.output[1:])):
        return                      # a loop-carried value grows or shrinks: later iterations differ
    for name in names:
        vi = typed[name]
        if not _static(vi) and all(r[name] == runs[0][name] for r in runs):
            vi.type.tensor_type.shape.Clear()
            for n in runs[0][name]:
                vi.type.tensor_type.shape.dim.add().dim_value = int(n)


def _probe_data(inputs, feeds: dict, seed: int) -> dict[str, np.ndarray]:
    """A value for every input of a probe: the enclosing graph's constant where it has one, else seeded
    normal floats, true conditions and zero integers."""
    rng = np.random.default_rng(seed)
    data = {}
    for vi in inputs:
        value = feeds.get(vi.name)
        if value is None:
            dtype = tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            value = rng.standard_normal(dims).astype(dtype) if np.issubdtype(dtype, np.floating) \
                else np.ones(dims, dtype) if dtype == np.bool_ else np.zeros(dims, dtype)
        data[vi.name] = np.asarray(value)
    return data


def _dims(vi: ValueInfoProto) -> tuple[int, ...]:
    return tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)


def body_ir(graph: Graph, node: Node, body: GraphProto) -> Graph:
    """One of ``node``'s sub-graphs as an IR graph: its inputs and outputs, its initializers and the
    enclosing graph's constants it reads (under the names it spells them with) as constants, the
    enclosing graph's value facts visible beside its own (nested control flow reads outer values as
    inputs)."""
    opsets = node.meta.get("opsets") or {"": graph.opset}
    tensors = dict(graph.tensors)
    for vi in list(body.output) + list(body.value_info) + list(body.input):
        # an input one iteration sees, typed from the enclosing graph's values, over an exporter's
        # symbolic dims on the same value carried through as an output
        tensors[vi.name] = value_info(vi)
    outer = node.meta.get("outer", [])
    now = node.inputs[len(node.inputs) - len(outer):]
    constants = {spelled: graph.constants[name] for spelled, name in zip(outer, now) if graph.is_constant(name)}
    constants.update((t.name, initializer_array(t, graph.source)) for t in body.initializer)
    nodes = [to_node(n, n.name or f"{n.op_type}_{i}", opsets) for i, n in enumerate(body.node)]
    for n in nodes:
        if has_bodies(n):
            attach_outer(n, opsets)
    inner = Graph(body.name or "body", nodes, [i.name for i in body.input], [o.name for o in body.output],
                  tensors, constants, opsets.get("", graph.opset), graph.source)
    inner.meta["opsets"] = dict(opsets)
    return inner


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
    layer_ops: list[str]        # op types in the bodies that would be analog outside one: digital here
    reason: str | None = None   # why the node was not unrolled into the enclosing graph (passes/unroll_control)

    @property
    def analog_ops(self) -> list[str]:
        """What the report names as running digitally in the body: the op types, then why (also with no
        layer in it: why a Loop stayed one node is worth knowing)."""
        return self.layer_ops + ([f"not unrolled: {self.reason}"] if self.reason else [])


def body_cost(graph: Graph, node: Node) -> BodyCost:
    """What one execution of a control-flow node costs, from its sub-graphs' nodes and shapes."""
    per_body, analog, estimated = [], set(), False
    for body in inferred_bodies(graph, node):
        inner = body_ir(graph, node, body)
        known = set(inner.constants) | {o for n in inner.nodes if n.op_type == "Constant" for o in n.outputs} | \
            set(passed_constants(graph, node, body))     # a weight carried unchanged is a weight too
        total = 0.0
        for n in inner.nodes:
            if is_control_flow(n):
                sub = body_cost(inner, n)
                ops, estimated = sub.ops, estimated or sub.estimated
                analog.update(sub.layer_ops)
            else:
                ops = digital_ops(inner, n)
                if (not ops or np.isnan(ops)) and (n.op_type in WEIGHTED or n.op_type in RECURRENT) and not n.domain:
                    ops = _layer_ops(inner, n)      # a crossbar layer outside a body: costed digital here
                if n.op_type in WEIGHTED and not n.domain and len(n.inputs) > 1 and n.inputs[1] in known:
                    analog.add(n.op_type)
            total += 0.0 if np.isnan(ops) else ops
        per_body.append(total)
    count, est = iterations(graph, node)
    return BodyCost(max(per_body, default=0.0) * count, count, estimated or est, sorted(analog),
                    node.meta.get("unroll_reason"))
