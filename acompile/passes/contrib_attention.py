"""onnxruntime's fused com.microsoft Attention (what its transformer optimizer makes of a BERT or GPT-2
block) multiplies its input by the merged Q, K and V weights inside the operator, so that product, most
of an encoder layer's work, ran on the digital units.

The product becomes a MatMul by the constant weights (``gemm_to_linear`` puts it on crossbars), split
into Q, K and V, feeding com.microsoft MultiHeadAttention with the same bias, mask, attention bias,
heads, scale, mask fill value and direction: the attention itself stays onnxruntime's, which gives
the same outputs from the same Q, K and V. A past state (2, B, N, P, H) becomes MultiHeadAttention's
past key and value, and its present key and value are stacked back into the Attention's present.
onnxruntime's quantize_dynamic makes such an Attention a QAttention (int8 weights, the input quantized
by DynamicQuantizeLinear): its product becomes a MatMulInteger, rewritten and recorded as model_scales
does quantize_dynamic's own, so the model's integers go onto the crossbars, scaled by s_x · s_w after.

Left fused (digital, costed with its projection): rotary embedding, a buffer shared by past and present,
the mask formats MultiHeadAttention has no counterpart for (start and end positions, the 4-D mask),
weights that are not a constant matrix, or shapes not known.
"""

from __future__ import annotations

import numpy as np

from ..frontend.ops import attention_widths
from ..ir import Graph, Node
from ._rewrite import kept_meta, new_node, new_value
from .qoperator import scaled_integer_product
from .quantized_layers import record_integer_layer
from .base import CompileState, compile_pass

MS = "com.microsoft"
PASSED_ON = ("num_heads", "scale", "mask_filter_value", "unidirectional")


@compile_pass(requires={"folded"}, provides={"contrib_attention"})
def contrib_attention(state: CompileState) -> None:
    """Split every com.microsoft Attention (QAttention) with constant weights into a MatMul (MatMulInteger)
    for the Q, K, V projection, a Split and a com.microsoft MultiHeadAttention."""
    graph, out = state.graph, []
    for node in graph.nodes:
        split = None
        if node.domain == MS and node.op_type == "Attention":
            split = _split(graph, node)
        elif node.domain == MS and node.op_type == "QAttention":
            split = _split_quantized(graph, node)
        out.extend(split or [node])
    graph.nodes = out


def _mask_fits(graph: Graph, mask: str, batch) -> bool:
    """A mask MultiHeadAttention reads as Attention does: raw (B, T) or (B, S, T), lengths (B), or the
    (3B + 2) index; not the (2B) start and end positions nor the 4-D mask."""
    shape = graph.static_shape(mask)
    if shape is None:
        return False
    if len(shape) in (2, 3):
        return True
    return len(shape) == 1 and isinstance(batch, int) and shape[0] in (batch, 3 * batch + 2)


def _split(graph: Graph, node: Node) -> list[Node] | None:
    ins = node.inputs + [""] * (7 - len(node.inputs))
    x, weights, bias, mask, past, attention_bias, past_length = ins[:7]
    sizes = splittable(graph, node, mask, past_length)
    if sizes is None or graph.constants[weights].dtype.kind != "f":
        return None
    shape = graph.shape(x)
    qkv = new_value(graph, f"{node.name}_qkv", (*shape[:2], sum(sizes)), graph.dtype(x))
    product = new_node(graph, "MatMul", [x, weights], [qkv], base=f"{node.name}_projection")
    return [product, *attention_of(graph, node, qkv, sizes, bias, mask, attention_bias, past)]


def _split_quantized(graph: Graph, node: Node) -> list[Node] | None:
    """QAttention: its merged product a MatMulInteger (rewritten as quantize_dynamic's are, its scales
    recorded as model_scales records theirs), scaled by s_x · s_w, then the attention as above, which adds
    the float bias."""
    x, w, bias, sx, sw, mask, zx, zw, past = (list(node.inputs) + [""] * 9)[:9]
    sizes = splittable(graph, node, mask)
    if sizes is None or graph.constants[w].dtype.kind not in "iu" or (zw and not graph.is_constant(zw)):
        return None
    shape = (*graph.shape(x)[:2], sum(sizes))
    qkv = new_value(graph, f"{node.name}_qkv", shape, np.float32)
    found = scaled_integer_product(graph, node.name, [x, w, zx, zw], sx, sw, qkv, shape)
    if found is None:
        return None
    nodes, product = found
    record_integer_layer(graph, product, {o: n for n in nodes for o in n.outputs})
    return [*nodes, *attention_of(graph, node, qkv, sizes, bias, mask, "", past)]


def splittable(graph: Graph, node: Node, mask: str, past_length: str = "") -> list[int] | None:
    """The widths of Q, K and V when the (Q)Attention ``node`` can become its product and a
    MultiHeadAttention: constant weights (input 1) of its input's width, a mask the latter reads, no rotary
    embedding nor buffer shared by past and present; else None."""
    weights, shape = node.inputs[1], graph.shape(node.inputs[0])
    if node.attrs.get("do_rotary") or node.attrs.get("past_present_share_buffer") or past_length \
            or not graph.is_constant(weights) or shape is None or len(shape) != 3:
        return None
    w = graph.constants[weights]
    if w.ndim != 2 or shape[2] != w.shape[0] or (mask and not _mask_fits(graph, mask, shape[0])):
        return None
    return attention_widths(node, w.shape[1])


def attention_of(graph: Graph, node: Node, qkv: str, sizes: list[int], bias: str, mask: str, attention_bias: str,
                 past: str) -> list[Node]:
    """The nodes computing ``node``'s outputs from its merged product ``qkv`` (B, S, Q + K + V): a Split and a
    MultiHeadAttention (which takes ``node``'s name), its past key and value taken from the stacked past, its
    present ones stacked back."""
    batch, seq = graph.shape(qkv)[:2]
    dtype = graph.dtype(qkv)
    nodes = []
    parts = [new_value(graph, f"{node.name}_{p}", (batch, seq, n), dtype) for p, n in zip("qkv", sizes)]
    widths = graph.add_constant(f"{node.name}_qkv_sizes", np.asarray(sizes, np.int64))
    nodes.append(new_node(graph, "Split", [qkv, widths], parts, {"axis": 2}, base=f"{node.name}_split"))
    mha_in = [*parts, bias, mask, attention_bias]
    if past:
        mha_in += [_half(graph, nodes, node, past, k) for k in (0, 1)]
    while not mha_in[-1]:
        mha_in.pop()
    present = node.outputs[1] if len(node.outputs) > 1 and node.outputs[1] else ""
    halves = [new_value(graph, f"{node.name}_present_{kv}", _present_shape(graph, node, past, sizes[0]), dtype)
              for kv in ("key", "value")] if present else []
    attrs = {k: v for k, v in node.attrs.items() if k in PASSED_ON}
    nodes.append(Node(node.name, "MultiHeadAttention", mha_in, [node.outputs[0], *halves], attrs, MS, 1,
                      meta=kept_meta(node, attrs)))
    if present:
        axis = graph.add_constant(f"{node.name}_axis0", np.zeros(1, np.int64))
        stacked = [new_value(graph, f"{h}_stacked", _shape_of(graph, h, lambda s: (1, *s)), dtype) for h in halves]
        nodes += [new_node(graph, "Unsqueeze", [h, axis], [s], base=f"{h}_stack") for h, s in zip(halves, stacked)]
        nodes.append(new_node(graph, "Concat", stacked, [present], {"axis": 0}, base=f"{node.name}_present"))
    return nodes


def _half(graph: Graph, nodes: list[Node], node: Node, past: str, k: int) -> str:
    """The past key (k = 0) or value (k = 1) of a stacked (2, B, N, P, H) past, as a Gather adds to ``nodes``."""
    index = graph.add_constant(f"{node.name}_past_{k}", np.asarray(k, np.int64))
    half = new_value(graph, f"{node.name}_past_{'kv'[k]}", _shape_of(graph, past, lambda s: s[1:]), graph.dtype(past))
    nodes.append(new_node(graph, "Gather", [past, index], [half], {"axis": 0}, base=f"{node.name}_past"))
    return half


def _shape_of(graph: Graph, value: str, fn):
    shape = graph.shape(value)
    return fn(shape) if shape is not None else None


def _present_shape(graph: Graph, node: Node, past: str, width: int):
    """(B, N, P + S, H) of a present key or value; a length not known is None."""
    batch, seq = graph.shape(node.inputs[0])[:2]
    heads = int(node.attrs.get("num_heads", 1))
    before = graph.shape(past)[3] if past and graph.shape(past) is not None else (None if past else 0)
    total = before + seq if isinstance(before, int) and isinstance(seq, int) else None
    return (batch, heads, total, width // heads)
