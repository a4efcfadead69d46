"""Make the analog/digital boundaries explicit.

Replaces every analog node by the chain the hardware executes::

    ToVectors -> DAC -> CrossbarRead -> ADC -> ShiftAdd -> Accumulate -> Dequantize -> FromVectors

(domain ``acompile``). ToVectors/FromVectors are the digital addressing around
the crossbars (im2col for Conv, pixels and col2im for ConvTranspose, the last
axis for Linear); DAC and ADC are the converters; ShiftAdd recombines input
cycles, bit slices and signs; Accumulate sums partial results of row blocks;
Dequantize applies ``s_w · s_x``. FromVectors restores the ONNX layout and
adds the bias. Every chain node carries ``layer`` so backends can find the
mapping record.
"""

from __future__ import annotations

from ..ir import DOMAIN, Node, TensorInfo
from .base import CompileState, compile_pass

CHAIN = ("ToVectors", "DAC", "CrossbarRead", "ADC", "ShiftAdd", "Accumulate", "Dequantize", "FromVectors")


@compile_pass(requires={"placed"}, provides={"boundaries"})
def insert_boundaries(state: CompileState) -> None:
    """Replace every analog node by its converter chain."""
    graph, mapping = state.graph, state.mapping
    new_nodes: list[Node] = []
    for node in graph.nodes:
        if node.kind != "analog":
            new_nodes.append(node)
            continue
        layer = mapping.layers[node.meta["layer"]]
        x, w, b = node.inputs[:3]
        y = node.outputs[0]
        base = node.name
        names = [graph.unique_name(f"{base}/{step.lower()}") for step in CHAIN[:-1]]
        groups = layer.groups
        k_in = layer.matrices[0].k_in
        n_out = layer.matrices[0].n_out
        # Only the vectors in and out of the analog part have a dense shape; the
        # buffers between DAC and Accumulate are per-cycle/per-slice streams.
        shapes = {0: (layer.n_vec, groups, k_in), 6: (layer.n_vec, groups, n_out)}
        for i, nm in enumerate(names):
            graph.tensors[nm] = TensorInfo(nm, None, shapes.get(i))
        inputs_of = {
            "ToVectors": [x], "DAC": [names[0]], "CrossbarRead": [names[1], w], "ADC": [names[2]],
            "ShiftAdd": [names[3]], "Accumulate": [names[4]], "Dequantize": [names[5]],
            "FromVectors": [names[6], b],
        }
        outputs = names + [y]
        for step, out in zip(CHAIN, outputs):
            kind = "analog" if step in ("CrossbarRead",) else ("converter" if step in ("DAC", "ADC") else "digital")
            new_nodes.append(Node(name=f"{base}/{step}", op_type=step, inputs=inputs_of[step], outputs=[out],
                                  domain=DOMAIN, opset=1, kind=kind,
                                  meta={"layer": layer.index, "origin": node.op_type, "chain": base}))
    graph.nodes = new_nodes
    graph.meta.pop("_names", None)
