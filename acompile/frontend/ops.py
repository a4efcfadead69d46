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


# ai.onnx operators whose output *shape* depends on the values of these inputs (None: of any input).
# The others are sized by their inputs' shapes and attributes alone, so running one on zeros of its
# input shapes tells its output shape whatever the data.
SHAPED_BY_VALUES = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 3), "Resize": (1, 2, 3),
    "Upsample": (1,), "Range": None, "ConstantOfShape": None, "OneHot": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,),
    "Split": (1,), "TopK": (1,), "CenterCropPad": (1, 2), "Col2Im": (1, 2), "HannWindow": None, "HammingWindow": None,
    "BlackmanWindow": None, "MelWeightMatrix": None, "DFT": (1, 2), "STFT": (1, 2, 3), "MaxUnpool": (2,),
    "AffineGrid": (1,), "NonZero": None, "Unique": None, "Compress": (1,), "NonMaxSuppression": None,
    "StringSplit": None, "ImageDecoder": None, "RegexFullMatch": None, "Bernoulli": None,
    "RandomNormalLike": None, "RandomUniformLike": None, "Multinomial": None, "Optional": None,
}


@dataclass(frozen=True)
class Problem:
    """Why one node cannot be mapped as asked."""
    node: str
    op_type: str
    domain: str
    opset: int
    category: str  # unsupported_op | unsupported_attribute | dynamic_weights | unknown_shape | unsupported_input
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
    k = a[0] if n.op_type in ("Gemm", "FusedGemm") and n.attrs.get("transA", 0) else a[-1]
    return 2.0 * k * _numel(g, n.outputs[0])


def _scores(b, heads, sq, skv, dq, dv) -> float:
    """Q K^T and the weighted sum of V (2 ops per MAC) and a softmax of 5 ops per score."""
    return 2.0 * b * sq * skv * (dq + dv) + 5.0 * b * heads * sq * skv


def _attention(g: Graph, n: Node) -> float:
    """ONNX Attention (opset 23). Q, K, V are [B, S, hidden] (heads from the attributes) or [B, H, S, head]."""
    q, k, v = (g.static_shape(x) if x else None for x in (n.inputs + ["", "", ""])[:3])
    if q is None or k is None or v is None:
        return math.nan
    def hidden(s):      # (batch, sequence, all heads' width)
        return (s[0], s[1], s[2]) if len(s) == 3 else (s[0], s[2], s[1] * s[3])
    (b, sq, dq), (_, skv, _), (_, _, dv) = hidden(q), hidden(k), hidden(v)
    heads = int(n.attrs.get("q_num_heads", 0)) or (q[1] if len(q) == 4 else 1)
    return _scores(b, heads, sq, skv, dq, dv)


def attention_widths(node: Node, width: int) -> list[int] | None:
    """The widths of Q, K and V in com.microsoft Attention's ``width`` merged weight columns, or None if
    they do not add up."""
    sizes = [int(s) for s in node.attrs.get("qkv_hidden_sizes") or ()]
    if not sizes:
        return [width // 3] * 3 if width % 3 == 0 else None
    return sizes if len(sizes) == 3 and sum(sizes) == width and min(sizes) > 0 else None


def _ms_attention(g: Graph, n: Node) -> float:
    """com.microsoft Attention (QAttention): the merged Q, K, V product of its input and its bias, then the
    scores over the past (2, B, N, P, H) and the new keys."""
    x, w = g.static_shape(n.inputs[0]), g.static_shape(n.inputs[1])
    at = 8 if n.op_type == "QAttention" else 4
    past = g.static_shape(n.inputs[at]) if len(n.inputs) > at and n.inputs[at] else (0,) * 5
    sizes = attention_widths(n, w[1]) if x is not None and w is not None and len(w) == 2 else None
    if sizes is None or past is None or len(x) != 3:
        return math.nan
    b, s = x[0], x[1]
    heads = int(n.attrs.get("num_heads", 1))
    return 2.0 * b * s * x[2] * w[1] + b * s * w[1] + _scores(b, heads, s, s + past[3], sizes[0], sizes[2])


def _ms_multi_head(g: Graph, n: Node) -> float:
    """com.microsoft MultiHeadAttention: the bias of the input projection, then the scores. Query
    (B, S, D) or packed Q, K, V (B, S, N, 3, H); key (B, L, D), a past key (B, N, L, H) or packed K, V
    (B, L, N, 2, H); a past key (B, N, P, H) in slot 6."""
    ins = n.inputs + [""] * 8
    q, out = g.static_shape(ins[0]), g.static_shape(n.outputs[0])
    key = g.static_shape(ins[1]) if ins[1] else None
    past = g.static_shape(ins[6]) if ins[6] else (0,) * 4
    if q is None or out is None or past is None or (ins[1] and key is None):
        return math.nan
    b, s = q[0], q[1]
    dq = q[2] if len(q) == 3 else q[2] * q[4]
    kv = s if key is None else key[2] if len(key) == 4 else key[1]
    heads = int(n.attrs.get("num_heads", 1))
    bias = b * (s * dq + kv * (dq + out[2])) if len(ins) > 3 and ins[3] else 0.0
    return bias + _scores(b, heads, s, kv + past[2], dq, out[2])


def _ms_grouped(g: Graph, n: Node) -> float:
    """com.microsoft GroupQueryAttention: every query head scores the T keys of its group's present key
    (B, kv heads, T, H): the past key's P and the S new ones where the present's length is data."""
    out = g.static_shape(n.outputs[0])
    present = g.static_shape(n.outputs[1]) if len(n.outputs) > 1 and n.outputs[1] else None
    past = g.static_shape(n.inputs[3]) if len(n.inputs) > 3 and n.inputs[3] else (0,) * 4
    if out is None or (present is None and past is None):
        return math.nan
    total = present[2] if present is not None else past[2] + out[1]
    return _scores(out[0], int(n.attrs.get("num_heads", 1)), out[1], total, out[2], out[2])


def _fused_matmul(g: Graph, n: Node) -> float:
    """com.microsoft FusedMatMul: a MatMul with transposed operands and a scale."""
    a = g.static_shape(n.inputs[0])
    if a is None or len(a) < 2:
        return math.nan
    k = a[-2] if n.attrs.get("transA", 0) else a[-1]
    return 2.0 * k * _numel(g, n.outputs[0]) + _numel(g, n.outputs[0])


def _fused_conv(g: Graph, n: Node) -> float:
    """com.microsoft FusedConv and com.microsoft.nchwc Conv: a Conv, the sum with Z and the activation. Each
    output channel reads its share of the weights, in (M, C/group, k...) or a blocked layout's padded form."""
    w, y = g.static_shape(n.inputs[1]), g.static_shape(n.outputs[0])
    if w is None or y is None or len(y) < 2 or not y[1]:
        return math.nan
    return (2.0 * math.prod(w) / y[1] + 4) * math.prod(y)


def _ms_quantized_lstm(g: Graph, n: Node) -> float:
    """com.microsoft DynamicQuantizeLSTM: every step's input and recurrent products (W [D, I, 4H], R [D, H, 4H];
    2 ops per MAC) and its gates (about ten ops per hidden unit)."""
    x, w, r = (g.static_shape(v) for v in n.inputs[:3])
    if x is None or w is None or r is None:
        return math.nan
    steps = x[0] * x[1] * w[0]          # sequence x batch x directions
    return steps * (2.0 * w[2] * (w[1] + r[1]) + 10 * r[1])


def _lrn(g: Graph, n: Node) -> float:
    return (2 * int(n.attrs.get("size", 1)) + 4) * _numel(g, n.outputs[0])


# --- digital operators --------------------------------------------------------
_register("Relu Abs Neg Sign Floor Ceil Round Not", "digital", per_output(1), "one op per element")
_register("LeakyRelu PRelu Clip ThresholdedRelu Celu Elu Selu", "digital", per_output(2), "compare and scale")
_register("HardSigmoid HardSwish Softsign", "digital", per_output(3), "piecewise-linear activation")
_register("Sigmoid Tanh Erf Softplus Exp Log Sqrt Reciprocal Pow Sin Cos Mish", "digital", per_output(4),
          "transcendental via lookup/polynomial")
_register("Gelu", "digital", per_output(8), "GELU (erf or tanh form)")
_register("Swish", "digital", per_output(5), "x times its sigmoid")
_register("RotaryEmbedding", "digital", per_input(3), "rotate pairs of features (two products and a sum)")
_register("Attention", "digital", _attention, "Q K^T, softmax, weights times V (2 ops per MAC, 5 per score)")
_register("Add Sub Mul Div Max Min Mod Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor Where",
          "digital", per_output(1), "element-wise")
_register("Sum Mean", "digital", _sum_inputs, "element-wise over inputs")
_register("MaxPool AveragePool LpPool", "digital", _pool, "kernel-size ops per output")
_register("GlobalAveragePool GlobalMaxPool ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL2 "
          "ReduceL1 ReduceSumSquare ReduceLogSumExp ArgMax ArgMin", "digital", per_input(1),
          "one op per input element")
_register("Softmax LogSoftmax", "digital", per_input(5), "exp, sum, divide")
_register("LayerNormalization InstanceNormalization GroupNormalization MeanVarianceNormalization RMSNormalization",
          "digital", per_input(8), "mean, variance, normalise, affine")
_register("BatchNormalization", "digital", per_output(2), "per-channel affine (not folded)")
_register("LRN", "digital", _lrn, "local response normalisation")
_register("Resize Upsample", "digital", per_output(4), "interpolation")
for _domain in ("", "com.microsoft"):       # onnxruntime's own (com.microsoft) compute what ONNX's do
    _register("QuantizeLinear", "digital", per_output(4), "divide by the scale, round, add the zero point, saturate",
              domain=_domain)
    _register("DequantizeLinear", "digital", per_output(2), "subtract the zero point, multiply by the scale",
              domain=_domain)
_register("DynamicQuantizeLinear", "digital", per_input(6), "the input's range, then quantize it")

# onnxruntime's fused operators (its transformer optimizer, its saved optimized graphs), costed as what they
# compute; any other operator onnxruntime runs counts one op per output element, marked as estimated
_register("Attention QAttention", "digital", _ms_attention, "merged Q, K, V product (2 ops per MAC) and attention, "
          "where the product cannot go onto crossbars", domain="com.microsoft")
_register("MultiHeadAttention", "digital", _ms_multi_head, "projection bias, Q K^T, softmax, weights times V",
          domain="com.microsoft")
_register("GroupQueryAttention", "digital", _ms_grouped, "Q K^T, softmax, weights times V over each group's keys",
          domain="com.microsoft")
_register("FusedMatMul", "digital", _fused_matmul, "matrix product (2 ops per MAC) and its scale",
          domain="com.microsoft")
_register("DynamicQuantizeMatMul MatMulIntegerToFloat", "digital",
          lambda g, n: _matmul(g, n) + 2 * _numel(g, n.outputs[0]),
          "integer matrix product (2 ops per MAC), scale and bias", domain="com.microsoft")
_register("DynamicQuantizeLSTM", "digital", _ms_quantized_lstm, "LSTM on 8-bit weights: its products (2 ops per "
          "MAC) and gates, every step", domain="com.microsoft")
_register("FusedGemm", "digital", lambda g, n: _matmul(g, n) + 4 * _numel(g, n.outputs[0]),
          "matrix product (2 ops per MAC) and activation", domain="com.microsoft")
_register("FusedConv", "digital", _fused_conv, "convolution (2 ops per MAC), sum and activation",
          domain="com.microsoft")
_register("Conv", "digital", _fused_conv, "convolution in a blocked channel layout (2 ops per MAC), sum and "
          "activation: onnxruntime's weights reordered for one machine's vectors", domain="com.microsoft.nchwc")
_register("SkipLayerNormalization SkipSimplifiedLayerNormalization", "digital", per_input(9),
          "residual sum, then layer normalisation", domain="com.microsoft")
_register("SimplifiedLayerNormalization", "digital", per_input(8), "RMS normalisation (onnxruntime's, in the ONNX "
          "domain)")
_register("EmbedLayerNormalization", "digital", per_output(10), "embedding sums, then layer normalisation",
          domain="com.microsoft")
_register("BiasGelu FastGelu", "digital", per_output(9), "bias, then GELU", domain="com.microsoft")
_register("Gelu", "digital", per_output(8), "GELU (erf or tanh form)", domain="com.microsoft")
_register("QuickGelu", "digital", per_output(5), "x times the sigmoid of a multiple of x", domain="com.microsoft")
_register("RotaryEmbedding", "digital", per_input(3), "rotate pairs of features (two products and a sum)",
          domain="com.microsoft")
def _weights_lost(g: Graph, n: Node) -> Problem | None:
    """A MatMul or Gemm left digital although one operand is a constant matrix: its other operand's
    shape (rank even) was lost, so it could not become a crossbar layer. Say so rather than run the
    layer digitally without a word."""
    if len(n.inputs) < 2:
        return None
    for const, other in ((n.inputs[1], n.inputs[0]), (n.inputs[0], n.inputs[1])):
        if g.is_constant(const) and not g.is_constant(other) and g.constants[const].ndim == 2 \
                and g.static_shape(other) is None:
            return Problem(n.name, n.op_type, n.domain, n.opset, "unknown_shape", unknown_shape_reason(g, other))
    return None


_register("MatMul Gemm", "digital", _matmul, "matrix product of two dynamic tensors (2 ops per MAC)",
          check=_weights_lost)
_register("Concat Split Flatten Reshape Transpose Squeeze Unsqueeze Pad Slice Gather GatherElements "
          "Expand Tile Identity Dropout Cast Shape Size Constant ConstantOfShape Range DepthToSpace "
          "SpaceToDepth CastLike", "digital", free, "data movement (costed as buffer traffic)",
          moves_data=True)


# --- analog operators ---------------------------------------------------------
def unknown_shape_reason(g: Graph, name: str) -> str:
    """Why the shape of value ``name`` is not known, traced back to where it is lost: a model input
    with dynamic dimensions (``--input-shape`` fixes it), an operator whose output size depends on
    values computed at run time (NonZero), or an operator no shape inference follows."""
    producers = g.producers()
    inputs, data_sized, lost = [], [], []
    seen, todo = set(), [name]
    while todo:
        v = todo.pop()
        if v in seen or not v or g.is_constant(v) or g.static_shape(v) is not None:
            continue
        seen.add(v)
        node = producers.get(v)
        if node is None:
            if v in g.inputs:
                inputs.append(v)
            continue
        unknown = [i for i in node.inputs if i and not g.is_constant(i) and g.static_shape(i) is None]
        which = SHAPED_BY_VALUES.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ()
        value_inputs = range(len(node.inputs)) if which is None else which
        if any(k < len(node.inputs) and node.inputs[k] and not g.is_constant(node.inputs[k]) for k in value_inputs):
            data_sized.append(node)
        elif not unknown:
            lost.append(node)
        todo.extend(unknown)
    def nodes(found):
        return ", ".join(f"{n.op_type} {n.name!r}" for n in found[:3]) + (", ..." if len(found) > 3 else "")
    def fixes(names):
        return " ".join(f"--input-shape {i}:{_dims(g, i)}" for i in names[:3]) + (" ..." if len(names) > 3 else "")
    why = []
    inputs = [i for i in g.inputs if i in inputs]     # in the model's order
    if inputs:
        which = "model input " + repr(inputs[0]) + " has" if len(inputs) == 1 else \
            "model inputs " + ", ".join(repr(i) for i in inputs[:3]) + (", ..." if len(inputs) > 3 else "") + " have"
        why.append(f"{which} dynamic dimensions (fix them with {fixes(inputs)}, a number for each named dimension)")
    if data_sized:
        # the fix for the dynamic inputs above fixes the batch too
        batch = [] if inputs or not g.meta.get("dynamic_batch") else [i for i in g.inputs if 0 in g.batch_axes(i)]
        why.append(f"its size depends on values computed at run time ({nodes(data_sized)})"
                   + (f"; if they follow the model's dynamic batch, {fixes(batch)} fixes it" if batch else ""))
    if lost:
        why.append(f"shape inference does not follow {nodes(lost)}")
    return f"the shape of input {name!r} cannot be inferred: " + ("; ".join(why) or "no shape was declared or inferred")


def _dims(g: Graph, name: str) -> str:
    """A model input's shape as ``--input-shape`` takes it, dynamic dimensions by name."""
    shape = g.shape(name)
    return ",".join(str(d) if isinstance(d, int) else str(d or "?") for d in shape) if shape else "D1,D2,..."


def _as_written(g: Graph, n: Node) -> tuple[str, str, int]:
    """(op type, domain, opset) of the node as the model wrote it (a MatMul that is now a linear layer)."""
    origin = n.meta.get("origin")
    return (origin, "", g.opset) if origin else (n.op_type, n.domain, n.opset)


def _weights_constant(g: Graph, n: Node) -> Problem | None:
    op = _as_written(g, n)
    if len(n.inputs) < 2 or not g.is_constant(n.inputs[1]):
        return Problem(n.name, *op, "dynamic_weights",
                       "weights are not constant (bind them with --bind, or export them as initializers)")
    if g.constants[n.inputs[1]].dtype.kind not in "fiu":
        return Problem(n.name, *op, "unsupported_attribute",
                       f"weights of type {g.constants[n.inputs[1]].dtype} cannot be programmed")
    if len(n.inputs) > 2 and n.inputs[2] and not g.is_constant(n.inputs[2]):
        return Problem(n.name, *op, "dynamic_weights", "bias is not constant")
    if g.static_shape(n.inputs[0]) is None:
        return Problem(n.name, *op, "unknown_shape", unknown_shape_reason(g, n.inputs[0]))
    return None


_register("Conv ConvTranspose", "analog", free, "crossbar matrix-vector product (im2col; one matrix per group)",
          check=_weights_constant)
_register(LINEAR, "analog", free, "crossbar matrix-vector product (Gemm / MatMul with a constant operand)",
          check=_weights_constant, domain=DOMAIN)

RECURRENT = {"LSTM", "GRU", "RNN"}
# operators whose outputs are draws: never computed ahead of the run (folded, hoisted, counted ahead)
NON_DETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}


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
