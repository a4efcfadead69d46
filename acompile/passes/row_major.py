"""Analog layer weights as row-major float32 arrays, for the steps that read them by rows."""

from __future__ import annotations

import numpy as np

from ..numerics.folded import DequantizedWeight, carry_folded
from ._rewrite import contiguous_float32
from .base import CompileState, compile_pass


@compile_pass(requires={"boundaries"}, provides={"row_major"})
def row_major_weights(state: CompileState) -> None:
    """Make every analog layer's weight a C-contiguous float32 array (a weight held as its integers,
    numerics.folded, keeps that form: its integers are made C-contiguous).

    gemm_to_linear leaves a MatMul's weight as the transposed view of the model's [K, N] array, so
    ``check``, which reads only weight shapes and finiteness, never copies it (on a transformer block,
    30-60 ms of fresh pages in a new process). The simulator and the writers read weights by rows:
    ``compile`` runs this pass before calibration and before anything is written.
    """
    graph = state.graph
    for layer in state.mapping.layers:
        w = graph.constants[layer.weight]
        if isinstance(w, DequantizedWeight):        # its rows are computed as they are read
            graph.constants[layer.weight] = w.contiguous()
        elif w.dtype != np.float32 or not w.flags.c_contiguous:
            graph.constants[layer.weight] = contiguous_float32(w)
            carry_folded(graph.meta, w, graph.constants[layer.weight])
