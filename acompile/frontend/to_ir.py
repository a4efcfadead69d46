"""ONNX -> IR: an inferred, normalised model becomes a verified :class:`~acompile.ir.Graph`.

Attributes become Python values (graph-valued ones the :class:`~acompile.ir.Subgraph`
marker), initializers numpy arrays, inferred value infos :class:`~acompile.ir.TensorInfo`.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidModelError, clean, first_line
from ..ir import Graph, Node, OpaqueAttribute, Subgraph, TensorInfo
from ..limits import Limits
from ..onnx_core import AttributeProto, ModelProto, NodeProto, TensorProto, to_array
from .control_flow import attach_outer, has_bodies
from .convert import ai_onnx_opset
from .value_sizes import value_info

def _attr_value(a: AttributeProto):
    kind = a.type
    A = AttributeProto
    if kind == A.FLOAT:
        return float(a.f)
    if kind == A.INT:
        return int(a.i)
    if kind == A.STRING:
        return a.s.decode("utf-8", errors="replace")
    if kind == A.TENSOR:
        return to_array(a.t)
    if kind == A.FLOATS:
        return [float(x) for x in a.floats]
    if kind == A.INTS:
        return [int(x) for x in a.ints]
    if kind == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if kind == A.GRAPH:
        return Subgraph(a.g)
    if kind == A.GRAPHS:
        return Subgraph()
    return OpaqueAttribute(kind, a.SerializeToString(deterministic=True))


def initializer_array(t: TensorProto, where: str) -> np.ndarray:
    try:
        arr = to_array(t)
    except Exception as e:
        raise InvalidModelError(f"initializer {clean(t.name)!r} cannot be decoded: {first_line(e)}",
                                where=where)
    return arr


def to_node(n: NodeProto, name: str, domains: dict[str, int]) -> Node:
    """One ONNX node as an IR node (``domains``: the model's opset per domain)."""
    dom = "" if n.domain in ("", "ai.onnx") else n.domain
    return Node(name=name, op_type=n.op_type, inputs=list(n.input), outputs=list(n.output),
                attrs={a.name: _attr_value(a) for a in n.attribute}, domain=dom, opset=domains.get(dom, 0),
                meta={"attr_types": {a.name: int(a.type) for a in n.attribute}})


NON_TENSOR_KINDS = {"sequence_type": "sequence", "map_type": "map", "optional_type": "optional",
                    "sparse_tensor_type": "sparse tensor"}


def to_ir(model: ModelProto, where: str, limits: Limits, heavy: dict[str, TensorProto] | None = None,
          mapped: dict[str, np.ndarray] | None = None) -> Graph:
    """The IR of an inferred model; ``heavy`` initializers (after the model's own) are the arrays in
    ``mapped`` (views of the model's files) when it holds them, else from their TensorProto."""
    g = model.graph
    opset = ai_onnx_opset(model, where)
    if len(g.node) > limits.max_nodes:
        raise limits.refuse("max_nodes", "nodes in the graph", len(g.node), where=where)
    constants = {}
    for t in g.initializer:
        constants[t.name] = initializer_array(t, where)
    heavy = heavy or {}
    names = set(constants) | set(heavy)
    tensors: dict[str, TensorInfo] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tensors[vi.name] = value_info(vi)
    inputs = [i.name for i in g.input if i.name not in names]
    kinds = {i.name: i.type.WhichOneof("value") for i in g.input if i.name not in names}
    domains = {imp.domain or "": int(imp.version) for imp in model.opset_import}
    nodes = []
    seen_names: set[str] = set()
    for idx, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{idx}"
        if name in seen_names:
            name = f"{name}_{idx}"
        seen_names.add(name)
        nodes.append(to_node(n, name, domains))
        if has_bodies(nodes[-1]):
            attach_outer(nodes[-1], domains)
    # a value listed twice as an output (onnxruntime returns it twice) is one output, by name
    outputs = list(dict.fromkeys(o.name for o in g.output))
    mapped = mapped or {}
    for name, t in heavy.items():
        constants[name] = mapped[name] if name in mapped else initializer_array(t, where)
    graph = Graph(name=clean(g.name or "model", 80), nodes=nodes, inputs=inputs, outputs=outputs,
                  tensors=tensors, constants=constants, opset=opset, source=where)
    graph.meta["opsets"] = domains     # for nodes a pass brings in later (an inlined If branch)
    graph.meta["non_tensor_inputs"] = {n: NON_TENSOR_KINDS.get(k, k) for n, k in kinds.items()
                                       if k not in ("tensor_type", None)}
    # a sequence or optional output keeps its ONNX type for mapped.onnx (the IR describes tensors only)
    graph.meta["non_tensor_outputs"] = {o.name: o.type.SerializeToString(deterministic=True) for o in g.output
                                        if o.type.WhichOneof("value") not in ("tensor_type", None)}
    graph.toposort()
    graph.verify()
    return graph
