"""onnxruntime saves a model it has optimized (``SessionOptions.optimized_model_filepath``, extended level)
with its layers fused into com.microsoft FusedConv, FusedGemm and FusedMatMul, which ran on the digital
units: a CNN saved that way was a few percent analog.

Each becomes the ONNX operators it fuses: FusedConv a Conv, the sum with its fourth input, then its
activation; FusedGemm a Gemm and its activation; FusedMatMul by a constant a MatMul (the transposed
operands as Transposes, its scale a Mul). The layers then map like any Conv, Gemm or MatMul, and the
activations are onnxruntime's own ONNX operators, with the parameters the fused node carried.

Left fused (digital, costed): an activation with no ONNX operator, a FusedMatMul that transposes batch
axes or has no constant operand.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ._rewrite import kept_meta, new_node, new_value
from .base import CompileState, compile_pass

MS = "com.microsoft"
# onnxruntime's activation name -> (ONNX operator, its attributes in the order FusedConv's activation_params
# lists them; FusedGemm names them activation_alpha, ...)
ACTIVATIONS = {"Relu": ("Relu", ()), "Sigmoid": ("Sigmoid", ()), "Tanh": ("Tanh", ()), "Softsign": ("Softsign", ()),
               "Softplus": ("Softplus", ()), "LeakyRelu": ("LeakyRelu", ("alpha",)), "Elu": ("Elu", ("alpha",)),
               "ThresholdedRelu": ("ThresholdedRelu", ("alpha",)), "HardSigmoid": ("HardSigmoid", ("alpha", "beta")),
               "Selu": ("Selu", ("alpha", "gamma")), "Clip": ("Clip", ())}


@compile_pass(requires={"folded"}, provides={"contrib_fused"})
def contrib_fused(state: CompileState) -> None:
    """Replace every com.microsoft FusedConv, FusedGemm and FusedMatMul (with a constant operand) by the ONNX
    operators it fuses."""
    graph, out = state.graph, []
    for node in graph.nodes:
        split = None
        if node.domain == MS and node.op_type in ("FusedConv", "FusedGemm"):
            split = _unfuse(graph, node)
        elif node.domain == MS and node.op_type == "FusedMatMul":
            split = _matmul(graph, node)
        out.extend(split or [node])
    graph.nodes = out


def _activation_attrs(node: Node, keys: tuple[str, ...]) -> dict[str, float]:
    """The activation's attributes as the fused node holds them: FusedConv's ``activation_params`` in the
    order of ``keys``, FusedGemm's ``activation_alpha``, ``activation_beta``, ``activation_gamma`` by name. A
    value not given keeps the ONNX operator's default."""
    if node.op_type == "FusedConv":
        return dict(zip(keys, (float(v) for v in node.attrs.get("activation_params") or ())))
    return {k: float(node.attrs[f"activation_{k}"]) for k in keys if f"activation_{k}" in node.attrs}


def _activation(graph: Graph, node: Node, x: str, y: str) -> list[Node] | None:
    """The ONNX node computing the fused activation of ``x`` into ``y``; None for one ONNX has not."""
    name = str(node.attrs.get("activation", ""))
    if name in ("", "Identity"):      # onnxruntime fuses a Conv and the Add after it with no activation
        return [new_node(graph, "Identity", [x], [y], base=f"{node.name}_out")]
    if name not in ACTIVATIONS:
        return None
    op, keys = ACTIVATIONS[name]
    base = f"{node.name}_{op.lower()}"
    if op == "Clip":        # its bounds are inputs: FusedConv's two parameters (FusedGemm has none)
        bounds = _activation_attrs(node, ("min", "max")) if node.op_type == "FusedConv" else {}
        if len(bounds) != 2:
            return None
        dtype = graph.dtype(x) or np.float32
        names = [graph.add_constant(f"{base}_{k}", np.asarray(v, dtype)) for k, v in bounds.items()]
        return [new_node(graph, "Clip", [x, *names], [y], base=base)]
    return [new_node(graph, op, [x], [y], _activation_attrs(node, keys), base=base)]


def _unfuse(graph: Graph, node: Node) -> list[Node] | None:
    """FusedConv: Conv(X, W, B) + Z, then the activation; FusedGemm: Gemm, then the activation."""
    y = node.outputs[0]
    conv = node.op_type == "FusedConv"
    inputs = node.inputs[:3] if conv else list(node.inputs)
    summed = conv and len(node.inputs) > 3 and node.inputs[3]
    kept = {k: v for k, v in node.attrs.items() if not k.startswith("activation")}
    product = new_value(graph, f"{node.name}_product", graph.shape(y), graph.dtype(y))
    op = "Conv" if conv else "Gemm"
    nodes = [Node(node.name, op, inputs, [product], kept, "", graph.opset, meta=kept_meta(node, kept))]
    if summed:
        total = new_value(graph, f"{node.name}_sum", graph.shape(y), graph.dtype(y))
        nodes.append(new_node(graph, "Add", [product, node.inputs[3]], [total], base=f"{node.name}_sum"))
        product = total
    after = _activation(graph, node, product, y)
    return None if after is None else nodes + after


def _matmul(graph: Graph, node: Node) -> list[Node] | None:
    """FusedMatMul with a constant operand: alpha · op(A) op(B), op a swap of the last two axes."""
    a, b = node.inputs[:2]
    if node.attrs.get("transBatchA") or node.attrs.get("transBatchB") \
            or not (graph.is_constant(a) or graph.is_constant(b)):
        return None
    nodes, operands = [], []
    for value, flag in ((a, "transA"), (b, "transB")):
        shape = graph.shape(value)
        if node.attrs.get(flag) and (shape is None or len(shape) < 2):
            return None
        if not node.attrs.get(flag):
            operands.append(value)
        elif graph.is_constant(value):
            operands.append(graph.add_constant(f"{value}_t", np.swapaxes(graph.constants[value], -1, -2).copy()))
        else:
            perm = [*range(len(shape) - 2), len(shape) - 1, len(shape) - 2]
            swapped = new_value(graph, f"{value}_t", (*shape[:-2], shape[-1], shape[-2]), graph.dtype(value))
            nodes.append(new_node(graph, "Transpose", [value], [swapped], {"perm": perm}, base=f"{node.name}_t"))
            operands.append(swapped)
    y, alpha = node.outputs[0], float(node.attrs.get("alpha", 1.0))
    product = y if alpha == 1.0 else new_value(graph, f"{node.name}_product", graph.shape(y), graph.dtype(y))
    nodes.append(Node(node.name, "MatMul", operands, [product], {}, "", graph.opset, meta=kept_meta(node, {})))
    if alpha != 1.0:
        scale = graph.add_constant(f"{node.name}_alpha", np.asarray(alpha, graph.dtype(y) or np.float32))
        nodes.append(new_node(graph, "Mul", [product, scale], [y], base=f"{node.name}_alpha"))
    return nodes
