"""ai.onnx.ml's LinearRegressor and LinearClassifier (skl2onnx's LogisticRegression, LinearRegression,
Ridge, LinearSVC...) hold their weight matrix in attributes, so their product ran on the digital units.

Each becomes a Gemm with that matrix (``gemm_to_linear`` puts it on crossbars) feeding the same operator
with an identity matrix and zero intercepts: what the operator does after its product (post_transform,
the label of the best score, the binary case's complementary score) stays onnxruntime's, applied to the
scores the crossbars computed; x·1 + 0 gives them back unchanged.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ._rewrite import new_node, new_value
from .base import CompileState, compile_pass

ML_LINEAR = ("LinearRegressor", "LinearClassifier")


@compile_pass(requires={"folded"}, provides={"ml_linear"})
def ml_linear(state: CompileState) -> None:
    """Split every LinearRegressor/LinearClassifier of a 2-D input into a Gemm (its coefficients and
    intercepts) and the operator on an identity matrix."""
    graph, out = state.graph, []
    for node in graph.nodes:
        out.extend(_split(graph, node) or [node])
    graph.nodes = out


def _split(graph: Graph, node: Node) -> list[Node] | None:
    if node.op_type not in ML_LINEAR or node.domain != "ai.onnx.ml" or node.meta.get("split"):
        return None
    x = node.inputs[0]
    shape, dtype = graph.shape(x), graph.dtype(x)
    coefficients = np.asarray(node.attrs.get("coefficients", ()), np.float32)
    if shape is None or len(shape) != 2 or not isinstance(shape[1], int) or dtype is None \
            or np.dtype(dtype).kind not in "fiu" or coefficients.size == 0 or coefficients.size % shape[1]:
        return None
    rows = coefficients.size // shape[1]
    given = node.attrs.get("intercepts")
    intercepts = np.asarray(given if given is not None and len(given) else np.zeros(rows), np.float32)
    if intercepts.size != rows or not np.all(np.isfinite(coefficients)):
        return None
    nodes = []
    if np.dtype(dtype) != np.float32:     # the operator reads its input as float32, as a Cast does
        cast = new_value(graph, f"{x}_float", shape, np.float32)
        nodes.append(new_node(graph, "Cast", [x], [cast], {"to": 1}, base=f"{node.name}_cast"))
        x = cast
    weight = graph.add_constant(f"{node.name}_coefficients", coefficients.reshape(rows, shape[1]))
    bias = graph.add_constant(f"{node.name}_intercepts", intercepts)
    scores = new_value(graph, f"{node.name}_scores", (shape[0], rows), np.float32)
    nodes.append(new_node(graph, "Gemm", [x, weight, bias], [scores], {"transB": 1}, base=f"{node.name}_product"))
    attrs = dict(node.attrs, coefficients=np.eye(rows, dtype=np.float32).reshape(-1).tolist(),
                 intercepts=[0.0] * rows)
    nodes.append(Node(node.name, node.op_type, [scores], list(node.outputs), attrs, node.domain, node.opset,
                      meta=dict(node.meta, split=True)))
    return nodes
