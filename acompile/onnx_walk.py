"""Walking and editing ONNX graphs in place, sub-graphs included: protobuf messages only, no onnx import."""

from __future__ import annotations


def node_bodies(n) -> list:
    """The sub-graphs a NodeProto holds in its attributes (a graph, or a list of graphs)."""
    return [a.g for a in n.attribute if a.HasField("g")] + [sub for a in n.attribute for sub in a.graphs]


def all_nodes(*graphs):
    """Every node of these graphs (GraphProtos or FunctionProtos) and of the sub-graphs nested in them;
    a node's sub-graphs are listed after the node."""
    stack = list(graphs)
    while stack:
        g = stack.pop()
        for n in g.node:
            yield n
            stack.extend(node_bodies(n))


HIDDEN = "acompile.hidden."     # a domain prefix onnx knows nothing of


def rename_domain(model, old: str, new: str) -> None:
    """Every node of domain ``old`` in ``model`` (a ModelProto; sub-graphs included) and its opset import
    moved to ``new``."""
    for n in all_nodes(model.graph):
        if n.domain == old:
            n.domain = new
    for imp in model.opset_import:
        if imp.domain == old:
            imp.domain = new


def hide_domains(model, domains) -> None:
    """The nodes of ``domains`` moved under HIDDEN, where onnx's inference and converter pass them by (an
    import is added for a domain the model uses without one)."""
    imported = {imp.domain for imp in model.opset_import}
    for d in sorted(domains):
        if d not in imported:
            model.opset_import.add(domain=d, version=1)
        rename_domain(model, d, HIDDEN + d)


def unhide_domains(model) -> None:
    """What :func:`hide_domains` moved, back under its own domain."""
    hidden = {n.domain for n in all_nodes(model.graph)} | {imp.domain for imp in model.opset_import}
    for d in sorted(x for x in hidden if x.startswith(HIDDEN)):
        rename_domain(model, d, d[len(HIDDEN):])


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
            stack.extend((sub, n.op_type == "If") for sub in node_bodies(n))
    return g
