"""QOperator and dynamic-quantization ops rewritten into the QDQ form acompile maps.

QLinearConv, QLinearMatMul and com.microsoft QGemm and QLinearConv (onnxruntime's, on NHWC data when
channels_last: then between two Transposes) become DequantizeLinear -> Conv/MatMul/Gemm ->
QuantizeLinear (the int32 bias dequantized with s_x * s_w), so their integer weights and scales
reach the crossbars as a QDQ model's do. MatMulInteger and ConvInteger (fed by
DynamicQuantizeLinear, whose scale and zero point change per batch) become a float product of the
cast integer input x_q with the weights w_q - zp_w, less the zero point's term
zp_x * (sum of the weights each output reads) and cast back to int32: the product maps onto
crossbars streaming x_q as is, and the scales stay digital, where the model applies them.
com.microsoft MatMulNBits (2-, 4- or 8-bit weights packed along K with one scale, and zero point, per block
of K: LLM exports) becomes a MatMul by its dequantized float weights: blocked scales are not per output
channel, so acompile quantizes that layer itself, as it does a blocked QDQ weight.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..numerics.folded import DequantizedWeight, integers_of
from ..onnx_core import TensorProto
from ..onnx_exec import run_node
from ._rewrite import new_node, new_value
from .fold_constants import NEVER_FOLD
from .lower import conv_pads

MS = "com.microsoft"
FLOAT = int(TensorProto.FLOAT)
INT32 = int(TensorProto.INT32)


def _c(graph: Graph, name: str):
    return graph.constants.get(name) if name else None


def _float(graph: Graph, base: str, like: str) -> str:
    return new_value(graph, base, graph.shape(like), np.float32)


def _dq(graph: Graph, out: list, q: str, scale: str, zp: str, axis: int | None = None) -> str:
    y = _float(graph, f"{q}_dq", q)
    attrs = {"axis": axis} if axis is not None else {}
    out.append(new_node(graph, "DequantizeLinear", [q, scale, zp] if zp else [q, scale], [y], attrs))
    return y


def _bias(graph: Graph, b: str, s_x: str, s_w: str) -> str:
    """The int32 bias as floats, b * s_x * s_w."""
    scale = np.asarray(_c(graph, s_x), np.float64) * np.asarray(_c(graph, s_w), np.float64).reshape(-1)
    return graph.add_constant(f"{b}_float", (_c(graph, b).astype(np.float64) * scale).astype(np.float32))


def _from_constants(graph: Graph, name: str, producer: dict, depth: int = 0) -> bool:
    """Whether ``name`` is a constant or computed from constants alone (folding makes it one): an
    exporter's copy of a weight that onnxruntime's quantizer quantized again."""
    if name in graph.constants:
        return True
    node = producer.get(name)
    if node is None or depth > _MAX_DEPTH or node.op_type in NEVER_FOLD or node.domain not in ("", "ai.onnx"):
        return False
    return node.op_type == "Constant" or bool(node.inputs) and all(
        not i or _from_constants(graph, i, producer, depth + 1) for i in node.inputs)


_MAX_DEPTH = 32     # ops between a weight and its constants that are looked through


def _qlinear(graph: Graph, node: Node, producer: dict) -> list[Node] | None:
    """QLinearConv / QLinearMatMul / QGemm -> DQ, float op, Q (or float output for a QGemm without y_scale)."""
    ins = list(node.inputs) + [""] * 9
    if node.op_type == "QGemm":
        x, sx, zx, w, sw, zw, b, sy, zy = ins[:9]
        op, attrs = "Gemm", {k: node.attrs[k] for k in ("alpha", "transA", "transB") if k in node.attrs}
        axis = 0 if node.attrs.get("transB", 0) else 1
    elif node.op_type == "QLinearConv":
        x, sx, zx, w, sw, zw, sy, zy, b = ins[:9]
        op, attrs, axis = "Conv", {k: v for k, v in node.attrs.items() if k != "channels_last"}, 0
    else:
        x, sx, zx, w, sw, zw, sy, zy = ins[:8]
        b, op, attrs, axis = "", "MatMul", {}, 1
    if not _from_constants(graph, w, producer) or _c(graph, sx) is None or _c(graph, sw) is None \
            or (b and _c(graph, b) is None):
        return None
    per_channel = np.asarray(_c(graph, sw)).size > 1
    if per_channel and graph.opset < 13:
        return None
    rank = len(graph.shape(x) or ())
    last = node.attrs.get("channels_last", 0)      # com.microsoft's QLinearConv on NHWC data
    if last and rank < 3:
        return None
    out: list[Node] = []
    xf = _dq(graph, out, x, sx, zx)
    if last:
        xf = _transpose(graph, out, xf, [0, rank - 1, *range(1, rank - 1)])
    wf = _dq(graph, out, w, sw, zw, axis if per_channel else None)
    args = [xf, wf] + ([_bias(graph, b, sx, sw)] if b else [])
    y = node.outputs[0]
    if last:        # NCHW between the Transposes: its shape is inferred later
        yf = new_value(graph, f"{y}_float", None, np.float32)
    else:
        yf = _float(graph, f"{y}_float", y) if sy else y
    out.append(Node(name=node.name, op_type=op, inputs=args, outputs=[yf], attrs=attrs, domain="",
                    opset=graph.opset, meta=_requantize(graph, node, b, sy, zy, _channels(graph, w, axis))))
    if last:
        yf = _transpose(graph, out, yf, [0, *range(2, rank), 1], None if sy else y)
    if sy:
        out.append(new_node(graph, "QuantizeLinear", [yf, sy, zy] if zy else [yf, sy], [y]))
    return out


def _channels(graph: Graph, w: str, axis: int) -> int:
    """The weight's size along its output axis (0 when unknown: a weight computed from constants may not
    have its shape inferred yet), which ``output_channels`` reads from a constant only."""
    value = _c(graph, w)
    shape = np.shape(value) if value is not None else graph.shape(w) or ()
    return shape[axis] if len(shape) > axis and isinstance(shape[axis], int) else 0


def _requantize(graph: Graph, node: Node, b: str, sy: str, zy: str, n_out: int) -> dict:
    """For the float op of a QLinearConv, QLinearMatMul or QGemm with constant output scale and zero point,
    how onnxruntime's kernel makes its output codes (its int32 bias per output channel, QGemm's alpha, s_y,
    the output type's zero point and range), which ideal mode reproduces (sim/requantize.py)."""
    y_scale, y_zero = _c(graph, sy) if sy else None, _c(graph, zy) if zy else np.zeros((), np.uint8)
    if y_scale is None or y_zero is None or np.size(y_scale) != 1 or np.size(y_zero) != 1 \
            or y_zero.dtype not in (np.uint8, np.int8):
        return {}
    info = np.iinfo(y_zero.dtype)
    record = {"output_scale": float(np.asarray(y_scale).reshape(-1)[0]),
              "output_zero_point": int(np.asarray(y_zero).reshape(-1)[0]),
              "output_min": int(info.min), "output_max": int(info.max),
              "alpha": float(node.attrs.get("alpha", 1.0))}
    if b:
        bias = np.asarray(_c(graph, b)).reshape(-1)
        if bias.size not in (1, n_out):         # a QGemm's C per row too: not one per output channel
            return {}
        record["bias"] = [int(v) for v in np.broadcast_to(bias, (n_out,))]
    return {"requantize": record}


def _transpose(graph: Graph, out: list, x: str, perm: list[int], y: str | None = None) -> str:
    y = y or new_value(graph, f"{x}_t", None, graph.dtype(x))
    out.append(new_node(graph, "Transpose", [x], [y], {"perm": perm}))
    return y


def integer_product(graph: Graph, node: Node) -> list[Node] | None:
    """MatMulInteger / ConvInteger -> Cast(x_q), float op on w_q - zp_w, less zp_x's term, Cast(int32)."""
    x, w, zx, zw = (list(node.inputs) + ["", "", ""])[:4]
    wq = _c(graph, w)
    if wq is None or (zw and _c(graph, zw) is None):
        return None
    conv = node.op_type == "ConvInteger"
    zero = _c(graph, zw) if zw else None
    # w_q - z_w held as those integers (a Conv's zero points are per output channel, a MatMul's per column)
    wv = integers_of(wq, np.ones(1, np.float32), zero, 0 if conv else wq.ndim - 1, DequantizedWeight)
    if wv is None:      # zero points of another shape: the float weight itself (8-bit differences are exact)
        zwv = np.asarray(zero if zw else 0, np.float32)
        wv = np.subtract(wq, zwv.reshape((-1,) + (1,) * (wq.ndim - 1)) if conv and zwv.ndim == 1 else zwv,
                         dtype=np.float32)
    out: list[Node] = []
    attrs = dict(node.attrs) if conv else {}
    x_read = _padded_with_zero_point(graph, node, x, zx, attrs, out) if conv and zx else x
    xf = _float(graph, f"{x}_float", x_read)
    out.append(new_node(graph, "Cast", [x_read], [xf], {"to": FLOAT}))
    yf = _float(graph, f"{node.outputs[0]}_float", node.outputs[0])
    op = "Conv" if conv else "MatMul"
    out.append(Node(name=node.name, op_type=op, inputs=[xf, graph.add_constant(f"{w}_float", wv)], outputs=[yf],
                    attrs=attrs, domain="", opset=graph.opset))
    y = yf
    if zx:
        term = _zero_point_term(graph, node, wv, attrs, conv)
        if term is None:
            return None
        zf = new_value(graph, f"{zx}_float", graph.shape(zx), np.float32)
        out.append(new_node(graph, "Cast", [zx], [zf], {"to": FLOAT}))
        corr = _float(graph, f"{yf}_zp", node.outputs[0])
        out.append(new_node(graph, "Mul", [zf, graph.add_constant(f"{node.name}_wsum", term)], [corr]))
        y = _float(graph, f"{yf}_less_zp", node.outputs[0])
        out.append(new_node(graph, "Sub", [yf, corr], [y]))
    out.append(new_node(graph, "Cast", [y], [node.outputs[0]], {"to": INT32}))
    return out


def _to_float(graph: Graph, node: Node) -> tuple[list[Node], str] | None:
    """com.microsoft DynamicQuantizeMatMul (A float, quantized here by a DynamicQuantizeLinear) and
    MatMulIntegerToFloat (A quantized) -> the MatMulInteger they fuse (rewritten as above), its int32
    product scaled by s_a · s_b, plus the bias: the form quantize_dynamic writes before onnxruntime fuses
    it. With the name of the product's node; None when B is not a constant."""
    if node.op_type == "DynamicQuantizeMatMul":
        a, b, sb, zb, bias = (list(node.inputs) + [""] * 5)[:5]
        if not (graph.is_constant(b) and (not zb or graph.is_constant(zb))):
            return None
        aq, sa, za = (new_value(graph, f"{node.name}_{p}", graph.shape(a) if p == "a_q" else (), t)
                      for p, t in (("a_q", np.uint8), ("a_scale", np.float32), ("a_zero_point", np.uint8)))
        nodes = [new_node(graph, "DynamicQuantizeLinear", [a], [aq, sa, za], base=f"{node.name}_quantize")]
    else:
        aq, b, sa, sb, za, zb, bias = (list(node.inputs) + [""] * 7)[:7]
        if not (graph.is_constant(b) and (not zb or graph.is_constant(zb))):
            return None
        nodes = []
    y = node.outputs[0]
    scaled = _float(graph, f"{node.name}_scaled", y) if bias else y
    found = scaled_integer_product(graph, node.name, [aq, b, za, zb], sa, sb, scaled, graph.shape(y))
    if found is None:
        return None
    nodes += found[0]
    if bias:
        nodes.append(new_node(graph, "Add", [scaled, bias], [y]))
    return nodes, found[1].name


def scaled_integer_product(graph: Graph, name: str, operands: list[str], sa: str, sb: str, y: str, shape
                           ) -> tuple[list[Node], Node] | None:
    """The nodes computing ``y`` = MatMulInteger(a_q, b, za, zb) · s_a · s_b (``operands`` a_q, b, za, zb,
    a zero point "" where there is none; ``shape`` y's), the product rewritten by :func:`integer_product`;
    with the MatMul that product became (its node takes the scales the model's integers need). None when
    the weights b are not a constant."""
    operands = list(operands)
    while not operands[-1]:
        operands.pop()
    acc = new_value(graph, f"{name}_acc", shape, np.int32)
    integer = integer_product(graph, Node(graph.unique_name(f"{name}_product"), "MatMulInteger", operands, [acc],
                                          {}, "", graph.opset))
    if integer is None:
        return None
    accf = new_value(graph, f"{name}_acc_float", shape, np.float32)
    scale = new_value(graph, f"{name}_scale", graph.shape(sb), np.float32)
    nodes = [*integer, new_node(graph, "Cast", [acc], [accf], {"to": FLOAT}), new_node(graph, "Mul", [sa, sb], [scale]),
             new_node(graph, "Mul", [accf, scale], [y])]
    return nodes, next(n for n in integer if n.op_type == "MatMul")


def _padded_with_zero_point(graph: Graph, node: Node, x: str, zx: str, attrs: dict, out: list) -> str:
    """ConvInteger pads x_q with its zero point: that padding made explicit (a Pad of x_q by zp_x, and no
    pads left in ``attrs``), so every output reads whole kernels and zp_x's term is one sum per output
    channel, not one per output pixel (a constant the size of the layer's output: 0.7 GB of them for a
    detector at 800 x 800). x itself where x's shape is unknown, or where there is no padding; and before
    opset 11, where Pad cannot take a computed value (a model is brought to a later opset on load)."""
    shape = graph.static_shape(x)
    if shape is None or graph.opset < 11 or len(shape) < 3:
        return x
    nd = len(shape) - 2
    kernel = list(attrs.get("kernel_shape", _c(graph, node.inputs[1]).shape[2:]))
    strides, dilations = list(attrs.get("strides", [1] * nd)), list(attrs.get("dilations", [1] * nd))
    same = [-(-n // s) for n, s in zip(shape[2:], strides)]        # SAME's output size; other modes ignore it
    pads = conv_pads(node, shape[2:], same, kernel, strides, dilations)
    if len(pads) != 2 * nd or min(pads) < 0:
        return x
    attrs.pop("auto_pad", None)
    attrs["pads"] = [0] * (2 * nd)
    if not any(pads):
        return x
    value = zx
    if graph.shape(zx) != ():
        value = new_value(graph, f"{zx}_scalar", (), graph.dtype(zx))
        out.append(new_node(graph, "Reshape", [zx, graph.add_constant(f"{node.name}_scalar", np.zeros(0, np.int64))],
                            [value]))
    padded = new_value(graph, f"{x}_padded", tuple(shape[:2]) + tuple(
        n + pads[i] + pads[i + nd] for i, n in enumerate(shape[2:])), graph.dtype(x))
    widths = graph.add_constant(f"{node.name}_pads", np.array([0, 0] + pads[:nd] + [0, 0] + pads[nd:], np.int64))
    out.append(new_node(graph, "Pad", [x, widths, value], [padded], {"mode": "constant"}))
    return padded


def _zero_point_term(graph: Graph, node: Node, wv: np.ndarray, attrs: dict, conv: bool):
    """Sum of the weights each output reads: per column of a MatMul, per output channel of a Conv that reads
    no padding, else per output pixel (padding reads the zero point, so contributes nothing to x_q - zp_x)."""
    if not conv:
        return wv.sum(axis=0, dtype=np.float64).astype(np.float32)
    if not any(attrs.get("pads", [])) and attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"):
        sums = wv.sum(axis=tuple(range(1, wv.ndim)), dtype=np.float64).astype(np.float32)
        return sums.reshape((1, -1) + (1,) * (wv.ndim - 2))
    shape = graph.static_shape(node.inputs[0])
    if shape is None:
        return None
    ones = np.ones((1,) + tuple(shape[1:]), np.float32)
    return np.asarray(run_node("Conv", attrs, [ones, wv], 1, graph.opset, where=node.describe())[0], np.float32)


def _nbits(graph: Graph, node: Node) -> list[Node] | None:
    """MatMulNBits with constant weights, scales and zero points -> MatMul(A, W) (+ bias), W the (K, N)
    weights ((q - zp) * scale per block, as onnxruntime dequantizes them) in the scales' type (float32
    or float16). accuracy_level is the least precision onnxruntime may compute in (int8 inputs at 4, as
    onnxruntime-genai's int4 exports ask), not what the model means: mapped like any other (``run`` notes
    that onnxruntime's own outputs are the approximate ones). Left to onnxruntime when it reorders K (g_idx)."""
    a, b, scales, zp, g_idx, bias = (list(node.inputs) + [""] * 6)[:6]
    attrs = node.attrs
    bits, block, k, n = (int(attrs.get(key, 4 if key == "bits" else 0)) for key in ("bits", "block_size", "K", "N"))
    sv, bv, zv = _c(graph, scales), _c(graph, b), _c(graph, zp) if zp else None
    if bits not in (2, 4, 8) or block < 16 or k < 1 or n < 1 or g_idx:
        return None
    if bv is None or sv is None or sv.dtype not in (np.float32, np.float16) or (zp and zv is None) \
            or (bias and _c(graph, bias) is None):
        return None
    blocks = -(-k // block)
    if bv.size != n * blocks * block * bits // 8 or sv.size != n * blocks:
        return None
    q = _unpack(bv.reshape(n, -1), bits)[:, :blocks * block].reshape(n, blocks, block)
    if zv is None:
        zero = np.full((n, blocks), 1 << (bits - 1), np.float32)
    elif zv.dtype == np.uint8:
        zero = _unpack(zv.reshape(n, -1), bits)[:, :blocks].astype(np.float32)
    else:
        zero = np.asarray(zv, np.float32).reshape(n, blocks)
    # in float32, then the scales' type: (q - zp) times a float16 scale is exact in float32, so a float16
    # weight is rounded once, as a float16 product would be
    w = (q.astype(np.float32) - zero[:, :, None]) * sv.reshape(n, blocks, 1).astype(np.float32)
    weight = graph.add_constant(f"{b}_float", np.ascontiguousarray(w.reshape(n, -1)[:, :k].T.astype(sv.dtype)))
    y = node.outputs[0]
    product = _float(graph, f"{y}_mm", y) if bias else y
    out = [Node(name=node.name, op_type="MatMul", inputs=[a, weight], outputs=[product], attrs={}, domain="",
                opset=graph.opset)]
    if bias:
        out.append(new_node(graph, "Add", [out[0].outputs[0], bias], [y]))
    return out


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Rows of bytes holding 8 / bits unsigned fields each, lowest bits first, as rows of one uint8 per field."""
    from ..numerics.encoding import unpack_levels     # cell levels' own packing; check never needs it otherwise
    return unpack_levels(np.ascontiguousarray(packed), bits, packed.size * 8 // bits).reshape(packed.shape[0], -1)


def expand_qoperators(graph: Graph) -> list[str]:
    """Rewrite the graph's QOperator and integer ops in place; the names of the integer ones rewritten."""
    done, nodes = [], []
    producer = {o: n for n in graph.nodes for o in n.outputs if o}
    for node in graph.nodes:
        new = None
        if node.op_type in ("QLinearConv", "QLinearMatMul") and node.domain in ("", "ai.onnx") \
                or node.op_type in ("QGemm", "QLinearConv") and node.domain == MS:
            new = _qlinear(graph, node, producer)
        elif node.op_type == "MatMulNBits" and node.domain == MS:
            new = _nbits(graph, node)
        elif node.op_type in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat") and node.domain == MS:
            new, product = _to_float(graph, node) or (None, None)
            if new is not None:
                done.append(product)
        elif node.op_type in ("MatMulInteger", "ConvInteger") and node.domain in ("", "ai.onnx"):
            new = integer_product(graph, node)
            if new is not None:
                done.append(node.name)
        if new is None:
            nodes.append(node)
        else:
            nodes.extend(new)
    graph.nodes = nodes
    return done
