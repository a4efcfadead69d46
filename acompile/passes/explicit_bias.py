"""Every analog layer gets an explicit bias constant; what no output needs is pruned.

The last canonicalising pass: after it every Conv, ConvTranspose (with constant
weights) and acompile.Linear reads ``(x, W, b)``.
"""

from __future__ import annotations

from ._rewrite import ensure_bias
from .base import CompileState, compile_pass


@compile_pass(requires={"affine_folded", "recurrent_unrolled"}, provides={"canonical"})
def explicit_bias(state: CompileState) -> None:
    """Add a zero bias to every Conv/ConvTranspose with constant weights that has none; prune."""
    graph = state.graph
    for node in graph.nodes:
        if node.op_type in ("Conv", "ConvTranspose") and not node.domain and graph.is_constant(node.inputs[1]):
            ensure_bias(graph, node)
    graph.prune()
