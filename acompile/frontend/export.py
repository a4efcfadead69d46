"""Write an IR graph back to ONNX (before the boundary pass), so every frontend
pass can be checked the qonnx way: run the model before and after through
onnxruntime and compare. ``acompile.Linear`` becomes MatMul(x, W^T) + Add(b).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Subgraph, is_linear
from ..onnx_core import (ModelProto, from_array, make_attribute, make_graph, make_model, make_node,
                         make_opsetid, make_tensor_value_info, np_dtype_to_tensor_dtype)
from ..onnx_exec import IR_VERSION, add_attributes
from .control_flow import own_inputs

def to_onnx(graph: Graph) -> ModelProto:
    nodes, inits = [], []
    for name, value in graph.constants.items():
        inits.append(from_array(np.asarray(value), name))
    for n in graph.nodes:
        if is_linear(n):
            x, w, b = n.inputs
            wt = f"{w}__T"
            inits.append(from_array(np.ascontiguousarray(graph.constants[w].T), wt))
            mid = f"{n.outputs[0]}__mm"
            nodes.append(make_node("MatMul", [x, wt], [mid], name=f"{n.name}__mm"))
            nodes.append(make_node("Add", [mid, b], [n.outputs[0]], name=f"{n.name}__bias"))
            continue
        if n.domain:
            raise ValueError(f"{n.describe()} has no ONNX form (export before the boundary pass)")
        node = make_node(n.op_type, own_inputs(n), n.outputs, name=n.name)
        add_attributes(node.attribute, {k: v for k, v in n.attrs.items() if not isinstance(v, Subgraph)},
                       n.meta.get("attr_types"))
        node.attribute.extend(make_attribute(k, v.graph) for k, v in sorted(n.attrs.items())
                              if isinstance(v, Subgraph) and v.graph is not None)
        nodes.append(node)

    def info(name):
        t = graph.tensors.get(name)
        elem = np_dtype_to_tensor_dtype(t.dtype) if t is not None and t.dtype is not None else 1
        shape = list(t.shape) if t is not None and t.shape is not None else None
        return make_tensor_value_info(name, elem, shape)

    g = make_graph(nodes, graph.name, [info(i) for i in graph.inputs], [info(o) for o in graph.outputs], inits)
    return make_model(g, opset_imports=[make_opsetid("", graph.opset)], ir_version=IR_VERSION)
