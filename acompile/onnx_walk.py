"""Walking and editing ONNX graphs in place, sub-graphs included: protobuf messages only, no onnx import."""

from __future__ import annotations


def all_nodes(graph):
    """Every node of ``graph`` (a GraphProto) and of the sub-graphs nested in it."""
    stack = [graph]
    while stack:
        g = stack.pop()
        for n in g.node:
            yield n
            stack.extend(a.g for a in n.attribute if a.HasField("g"))
            stack.extend(sub for a in n.attribute for sub in a.graphs)


def rename_domain(model, old: str, new: str) -> None:
    """Every node of domain ``old`` in ``model`` (a ModelProto; sub-graphs included) and its opset import
    moved to ``new``."""
    for n in all_nodes(model.graph):
        if n.domain == old:
            n.domain = new
    for imp in model.opset_import:
        if imp.domain == old:
            imp.domain = new


def without_value_info(graph, branch: bool = False):
    """A copy of a sub-graph ``graph`` without the value_info of it and of the sub-graphs nested in it:
    inference's shapes, which onnxruntime infers again. onnx's data propagation can leave one If branch's
    shapes on the other branch's values of the same name (Optimum's merged decoders), and onnxruntime
    refuses those. An If branch's output shapes go too (``branch`` for ``graph`` itself): onnxruntime
    allocates the If's outputs by them. A Loop or Scan body keeps its own, which onnxruntime requires."""
    g = type(graph)()
    g.CopyFrom(graph)
    stack = [(g, branch)]
    while stack:
        x, is_branch = stack.pop()
        del x.value_info[:]
        if is_branch:
            for out in x.output:
                if out.type.HasField("tensor_type"):
                    out.type.tensor_type.ClearField("shape")
        for n in x.node:
            stack.extend((a.g, n.op_type == "If") for a in n.attribute if a.HasField("g"))
            stack.extend((sub, False) for a in n.attribute for sub in a.graphs)
    return g
