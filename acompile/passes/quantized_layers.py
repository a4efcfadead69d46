"""Quantized ONNX (QDQ): the model's own integer weights and input codes for its analog layers.

``model_scales`` runs before constant folding: for a Conv, Gemm or MatMul whose weight is a
DequantizeLinear of a constant integer tensor it records the weight scales (per tensor or per
output channel) and, when its input is a DequantizeLinear with constant scale and zero point, the
input scale and zero point (``graph.meta["model_quant"]``, by node name; folding then turns the
weight into floats as before). ``apply_model_scales`` runs after ``choose_precision``: a layer whose
float weights are whole multiples of the recorded scales, and whose integers fit the target's
weight and input bits, takes them instead of acompile's own quantisation (docs/analog.md,
"Quantized models"); otherwise it keeps acompile's and the compile warns once per layer group.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..mapping import layer_matrix
from ..numerics.folded import folded_integers
from ..onnx_exec import QUANTIZE_DOMAINS, integer_dtype, integer_range
from .base import CompileState, compile_pass
from .qoperator import expand_qoperators

LINEAR_OPS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "Gemm": (1, None), "MatMul": (1, 1)}   # op: (weight, out axis)
INTEGER_KINDS = "iu"
_LAYOUT_OPS = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


def _const(graph: Graph, name: str):
    return graph.constants.get(name) if name else None


def _dequantize_parts(graph: Graph, node: Node | None):
    """(integer tensor name, scale, zero point, axis) of a DequantizeLinear with constant scale, or None."""
    if node is None or node.op_type != "DequantizeLinear" or node.domain not in QUANTIZE_DOMAINS:
        return None
    scale = _const(graph, node.inputs[1])
    zp_name = node.inputs[2] if len(node.inputs) > 2 else ""
    zp = _const(graph, zp_name)
    if scale is None or (zp_name and zp is None) or not np.all(np.asarray(scale) > 0):
        return None
    return node.inputs[0], np.asarray(scale, np.float64), zp, int(node.attrs.get("axis", 1))


def _weight_record(graph: Graph, node: Node, producer: dict) -> dict | None:
    w_index, out_axis = LINEAR_OPS[node.op_type]
    if node.op_type == "Gemm":
        out_axis = 0 if node.attrs.get("transB", 0) else 1
    parts = _dequantize_parts(graph, producer.get(node.inputs[w_index]))
    if parts is None:
        return None
    q_name, scale, zp, axis = parts
    # the integers are a constant, or computed from constants (a shared weight quantized again, as
    # onnxruntime's quantizer does to an exporter's deduplicated copies): apply_model_scales checks
    # the folded weights against the scales either way
    q = _const(graph, q_name)
    dtype, shape = (q.dtype, q.shape) if q is not None else (graph.dtype(q_name), graph.shape(q_name))
    if dtype is not None and np.dtype(dtype).kind in "fV" and not integer_dtype(dtype):
        return {"unusable": f"its {np.dtype(dtype).name} weights are not integers: quantized by acompile"}
    if dtype is None or not integer_dtype(dtype) or shape is None or len(shape) < 2 \
            or not isinstance(shape[out_axis], int):
        return None
    n_out = shape[out_axis]
    if scale.size == 1:
        scales = np.full(n_out, float(scale.reshape(-1)[0]))
    elif scale.size == n_out and axis % len(shape) == out_axis:
        scales = scale.reshape(-1)
    elif scale.ndim == len(shape):
        return {"unusable": "its weights have blocked scales (one per block of a column), not one per output "
                            "channel: requantized by acompile"}
    else:
        return None
    if node.op_type == "ConvTranspose":     # a crossbar row per (output channel, kernel position) of each group
        if not all(isinstance(d, int) for d in shape):
            return None
        scales = np.repeat(np.tile(scales, int(node.attrs.get("group", 1))), int(np.prod(shape[2:])))
    return {"weight_scales": np.asarray(scales, np.float64).tolist(), "weight_bits": integer_range(dtype)[2]}


def _model_op(graph: Graph, node: Node) -> dict:
    """How the model's own product reads its weight (an initializer, which onnxruntime packs, or a
    DequantizeLinear's) and adds its bias (a Gemm adds C before the products), which ideal mode follows
    whether or not the layer keeps the model's scales (sim/gemm.py)."""
    if node.op_type not in ("Gemm", "MatMul"):
        return {}
    op = {"trans_b": bool(node.attrs.get("transB", 0))}
    if graph.is_constant(node.inputs[1]):
        op["packed"] = True
    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] and node.attrs.get("beta", 1.0) != 0:
        op["bias_first"] = True
    return op


def _unit_scales(graph: Graph, node: Node) -> dict:
    """A MatMulInteger/ConvInteger rewritten by qoperator.py: its weights are the integers themselves."""
    w = graph.constants[node.inputs[1]]
    return {"weight_scales": [1.0] * w.shape[LINEAR_OPS[node.op_type][1]], "weight_bits": 8}


def record_integer_layer(graph: Graph, node: Node, producer: dict) -> None:
    """Record the scales of a MatMulInteger that ``integer_product`` rewrote after this pass ran (a
    QAttention's product, contrib_attention): integer weights, and the input codes the Cast in ``producer``
    reads."""
    rec = _unit_scales(graph, node)
    rec.update(_input_record(graph, node.inputs[0], producer) or {})
    graph.meta.setdefault("model_quant", {})[node.name] = rec


def _input_record(graph: Graph, x: str, producer: dict) -> dict | None:
    cast = producer.get(x)
    if cast is not None and cast.op_type == "Cast" and graph.dtype(cast.inputs[0]) is not None \
            and np.dtype(graph.dtype(cast.inputs[0])).kind in INTEGER_KINDS \
            and np.dtype(graph.dtype(cast.inputs[0])).itemsize == 1:
        dtype = np.dtype(graph.dtype(cast.inputs[0]))      # x_q itself, cast to float: s_x = 1, zero point 0
        return {"input_scale": 1.0, "input_zero_point": 0, "input_offset": -int(np.iinfo(dtype).min),
                "input_bits": 8, "input_dtype": dtype.name}
    node = producer.get(x)
    # a per-tensor DequantizeLinear's values moved about (onnxruntime's channels-last QLinearConv, between
    # Transposes; a Flatten before a Gemm) are the same codes times the same scale
    while node is not None and node.op_type in _LAYOUT_OPS and node.domain in ("", "ai.onnx") and node.inputs:
        node = producer.get(node.inputs[0])
    parts = _dequantize_parts(graph, node)
    if parts is None or parts[1].size != 1:
        return None
    q_name, scale, zp, _ = parts
    info = graph.tensors.get(q_name)
    dtype = zp.dtype if zp is not None else (info.dtype if info is not None else None)
    if dtype is None or not integer_dtype(dtype) or np.dtype(dtype).itemsize > 2:
        return None
    dtype = np.dtype(dtype)
    q_min, _, bits = integer_range(dtype)
    zero = int(np.asarray(zp).reshape(-1)[0]) if zp is not None else 0
    return {"input_scale": float(scale.reshape(-1)[0]), "input_zero_point": zero,
            "input_offset": zero - q_min, "input_bits": bits, "input_dtype": dtype.name}


@compile_pass(provides={"model_scales_read"})
def model_scales(state: CompileState) -> None:
    """Record the weight and input scales a quantized (QDQ) model gives its Conv/Gemm/MatMul nodes, and how
    each of a quantized model's float products is computed (``model_ops``, for ideal mode)."""
    graph = state.graph
    integer = expand_qoperators(graph)
    producer = {o: n for n in graph.nodes for o in n.outputs if o}
    # a float layer of a quantized model (one its quantizer left in floats) may feed a QuantizeLinear too
    quantized = any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for n in graph.nodes)
    found, ops = {}, {}
    for node in graph.nodes:
        if node.op_type not in LINEAR_OPS or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        rec = _weight_record(graph, node, producer) if node.name not in integer else _unit_scales(graph, node)
        if rec is not None:
            rec.update(_input_record(graph, node.inputs[0], producer) or {})
            if "requantize" in node.meta and "input_scale" in rec:     # a QLinearConv's, QLinearMatMul's, QGemm's
                rec["requantize"] = node.meta["requantize"]
            found[node.name] = rec
        if node.name not in integer and (quantized or rec is not None):     # a product in floats
            ops[node.name] = _model_op(graph, node)
    if found:
        graph.meta["model_quant"] = found
    if ops:
        graph.meta["model_ops"] = ops


# matrix elements per pass of _largest_integer: its temporaries stay in the core's cache
_CHUNK = 1 << 15
_ULPS = np.float32(2.0 ** -22)


def _largest_integer(w: np.ndarray, s: np.ndarray) -> float | None:
    """max |rint(W / s_w)| when W (N, K) holds whole multiples of its channels' scales (else None).

    In float32, as the weights were made: W = q·s rounded once, and W / s rounded once more, comes back
    within |q|·2^-23 of q (a 16-bit integer included), inside the tolerance |q|·2^-22 + 1e-3."""
    top = 0.0
    s32 = s.astype(np.float32)
    rows = max(1, _CHUNK // max(1, w.shape[1]))
    for r in range(0, w.shape[0], rows):
        q = np.divide(w[r:r + rows], s32[r:r + rows, None], dtype=np.float32)
        whole = np.rint(q)
        q -= whole
        np.abs(q, out=q)
        np.abs(whole, out=whole)
        if not bool(np.all(q <= 1e-3 + whole * _ULPS)):
            return None
        top = max(top, float(whole.max(initial=0.0)))
    return top


def _use(graph: Graph, layer, rec: dict) -> str | None:
    """Attach the model's scales to ``layer``; or say why not (one line)."""
    spec = layer.spec
    if "unusable" in rec:
        return rec["unusable"]
    scales = np.asarray(rec["weight_scales"], np.float64)
    n = layer.matrices[0].n_out
    if scales.size != n * layer.groups:
        return "its weight scales do not match its output channels"
    qmax = (1 << (spec.weight_bits - 1)) - 1
    # still the folded product of the integers these scales came from (the same DequantizeLinear): whole
    # multiples by construction, its largest integer bounded by their type or read from them
    known = folded_integers(graph.meta, graph.constants[layer.weight])
    too_wide = (f"the model's {rec['weight_bits']}-bit weights need more than the target's "
                f"{spec.weight_bits} weight bits: requantized by acompile")
    if known is not None and not known.within(qmax):
        return too_wide
    for g in range(layer.groups) if known is None else ():
        top = _largest_integer(layer_matrix(graph.constants, layer, g), scales[g * n:(g + 1) * n])
        if top is None:
            return "its weights are no longer whole multiples of the model's scales"
        if top > qmax:
            return too_wide
    quant = {"weight_scales": rec["weight_scales"], "weight_bits": rec["weight_bits"]}
    if "input_scale" in rec:
        if rec["input_bits"] > spec.input_bits:
            return (f"the model's {rec['input_bits']}-bit inputs need more than the target's "
                    f"{spec.input_bits} input bits: requantized by acompile")
        quant.update({k: rec[k] for k in ("input_scale", "input_zero_point", "input_offset", "input_bits",
                                           "input_dtype", "requantize") if k in rec})
        layer.input_signed = False          # the DAC streams x_q - q_min: unsigned, see docs/analog.md
        layer.input_scale = rec["input_scale"]
    layer.model_quant = quant
    return None


@compile_pass(requires={"precision", "model_scales_read"}, provides={"model_scales"})
def apply_model_scales(state: CompileState) -> None:
    """Give each analog layer of a quantized model the model's integer weights and input codes, and how the
    model's op computes it."""
    if state.mapping is None:
        return
    ops = state.graph.meta.get("model_ops", {})
    for layer in state.mapping.layers:
        layer.model_op = ops.get(layer.name)
    found = state.graph.meta.get("model_quant")
    if not found:
        return
    notes = []
    for layer in state.mapping.layers:
        rec = found.get(layer.name)
        if rec is not None:
            why = _use(state.graph, layer, rec)
            if why is not None:
                notes.append((why, layer.name))
    groups: dict[str, list[str]] = {}
    for why, name in notes:
        groups.setdefault(why, []).append(name)
    state.graph.meta["model_quant_notes"] = [
        f"quantized model: {len(names)} layer(s) ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): {why}"
        for why, names in groups.items()]


def model_scale_notes(graph: Graph) -> list[str]:
    """The compile's one line per group of quantized layers that could not keep the model's scales."""
    return list(graph.meta.get("model_quant_notes", []))
