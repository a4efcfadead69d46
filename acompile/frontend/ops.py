"""The op-support table: which ONNX operators map to crossbars, which run on
the digital units, and what each costs.

One entry per operator, registered with :func:`_register`, so the list of
supported operators is derived from this code (``acompile ops`` prints it, the
classify pass reads it) and cannot drift from what the compiler does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..ir import DOMAIN, LINEAR, Graph, Node


@dataclass(frozen=True)
class Problem:
    """Why one node cannot be mapped as asked."""
    node: str
    op_type: str
    domain: str
    opset: int
    category: str  # unsupported_op | unsupported_attribute | dynamic_weights | unknown_shape
    reason: str

    def line(self) -> str:
        dom = f"{self.domain}." if self.domain else ""
        return f"node {self.node!r} ({dom}{self.op_type}, opset {self.opset}): {self.reason}"


CostFn = Callable[[Graph, Node], float]


@dataclass(frozen=True)
class OpSupport:
    op_type: str
    kind: str             # "analog" | "digital"
    cost: CostFn          # digital element operations per inference (MAC = 2 ops)
    moves_data: bool      # pure data movement (no arithmetic): costed as buffer traffic
    doc: str
    check: Callable[[Graph, Node], Problem | None] | None = None


OPS: dict[tuple[str, str], OpSupport] = {}


def _register(op_types, kind, cost, doc, moves_data=False, check=None, domain=""):
    for op in op_types.split():
        OPS[(domain, op)] = OpSupport(op, kind, cost, moves_data, doc, check)


def _numel(graph: Graph, name: str) -> float:
    shape = graph.static_shape(name)
    return float(math.prod(shape)) if shape is not None else math.nan


def per_output(k: float) -> CostFn:
    return lambda g, n: k * _numel(g, n.outputs[0])


def per_input(k: float) -> CostFn:
    return lambda g, n: k * _numel(g, n.inputs[0])


def free(g, n) -> float:
    return 0.0


def _sum_inputs(g: Graph, n: Node) -> float:
    return max(len([i for i in n.inputs if i]) - 1, 1) * _numel(g, n.outputs[0])


def _pool(g: Graph, n: Node) -> float:
    kernel = n.attrs.get("kernel_shape", [1])
    return math.prod(kernel) * _numel(g, n.outputs[0])


def _matmul(g: Graph, n: Node) -> float:
    a = g.static_shape(n.inputs[0])
    if a is None:
        return math.nan
    k = a[-1] if n.op_type != "Gemm" or not n.attrs.get("transA", 0) else a[0]
    return 2.0 * k * _numel(g, n.outputs[0])


def _lrn(g: Graph, n: Node) -> float:
    return (2 * int(n.attrs.get("size", 1)) + 4) * _numel(g, n.outputs[0])


# --- digital operators --------------------------------------------------------
_register("Relu Abs Neg Sign Floor Ceil Round Not", "digital", per_output(1), "one op per element")
_register("LeakyRelu PRelu Clip ThresholdedRelu Celu Elu Selu", "digital", per_output(2), "compare and scale")
_register("HardSigmoid HardSwish Softsign", "digital", per_output(3), "piecewise-linear activation")
_register("Sigmoid Tanh Erf Softplus Exp Log Sqrt Reciprocal Pow Sin Cos Mish", "digital", per_output(4),
          "transcendental via lookup/polynomial")
_register("Gelu", "digital", per_output(8), "GELU (erf or tanh form)")
_register("Add Sub Mul Div Max Min Mod Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor Where",
          "digital", per_output(1), "element-wise")
_register("Sum Mean", "digital", _sum_inputs, "element-wise over inputs")
_register("MaxPool AveragePool LpPool", "digital", _pool, "kernel-size ops per output")
_register("GlobalAveragePool GlobalMaxPool ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL2 "
          "ReduceL1 ReduceSumSquare ReduceLogSumExp ArgMax ArgMin", "digital", per_input(1),
          "one op per input element")
_register("Softmax LogSoftmax", "digital", per_input(5), "exp, sum, divide")
_register("LayerNormalization InstanceNormalization GroupNormalization", "digital", per_input(8),
          "mean, variance, normalise, affine")
_register("BatchNormalization", "digital", per_output(2), "per-channel affine (not folded)")
_register("LRN", "digital", _lrn, "local response normalisation")
_register("Resize Upsample", "digital", per_output(4), "interpolation")
_register("MatMul Gemm", "digital", _matmul, "matrix product of two dynamic tensors (2 ops per MAC)")
_register("Concat Split Flatten Reshape Transpose Squeeze Unsqueeze Pad Slice Gather GatherElements "
          "Expand Tile Identity Dropout Cast Shape Size Constant ConstantOfShape Range DepthToSpace "
          "SpaceToDepth CastLike", "digital", free, "data movement (costed as buffer traffic)",
          moves_data=True)


# --- analog operators ---------------------------------------------------------
def _weights_constant(g: Graph, n: Node) -> Problem | None:
    if len(n.inputs) < 2 or not g.is_constant(n.inputs[1]):
        return Problem(n.name, n.op_type, n.domain, n.opset, "dynamic_weights",
                       "weights are not constant (bind them with --bind, or export them as initializers)")
    if g.constants[n.inputs[1]].dtype.kind not in "fiu":
        return Problem(n.name, n.op_type, n.domain, n.opset, "unsupported_attribute",
                       f"weights of type {g.constants[n.inputs[1]].dtype} cannot be programmed")
    if len(n.inputs) > 2 and n.inputs[2] and not g.is_constant(n.inputs[2]):
        return Problem(n.name, n.op_type, n.domain, n.opset, "dynamic_weights", "bias is not constant")
    x = g.static_shape(n.inputs[0])
    if x is None:
        return Problem(n.name, n.op_type, n.domain, n.opset, "unknown_shape",
                       f"the shape of input {n.inputs[0]!r} cannot be inferred (fix the model's dynamic "
                       "input dimensions with --input-shape NAME:D1,D2,...)")
    return None


_register("Conv ConvTranspose", "analog", free, "crossbar matrix-vector product (im2col; one matrix per group)",
          check=_weights_constant)
_register(LINEAR, "analog", free, "crossbar matrix-vector product (Gemm / MatMul with a constant operand)",
          check=_weights_constant, domain=DOMAIN)

RECURRENT = {"LSTM", "GRU", "RNN"}


def support(node: Node) -> OpSupport | None:
    return OPS.get((node.domain, node.op_type))


def digital_ops(graph: Graph, node: Node) -> float:
    sup = support(node)
    if sup is None:
        return per_output(1)(graph, node) if node.outputs else 0.0
    return sup.cost(graph, node)


def supported_table() -> list[tuple[str, str, str]]:
    """(op_type, kind, note) for every supported operator, sorted, for docs and `acompile ops`."""
    rows = [(f"{d + '.' if d else ''}{op}", s.kind, s.doc) for (d, op), s in OPS.items()]
    rows += [(op, "analog", "unrolled: input and recurrent matrices on crossbars (shared by all time steps), "
                            "gates digital") for op in sorted(RECURRENT)]
    return sorted(rows)
