"""Analog layer weights as contiguous float32 arrays, for the steps that read them whole or by rows."""

from __future__ import annotations

import numpy as np

from ..numerics.folded import DequantizedWeight, carry_folded
from ._rewrite import contiguous_float32
from .base import CompileState, compile_pass


@compile_pass(requires={"boundaries"}, provides={"contiguous"})
def contiguous_weights(state: CompileState) -> None:
    """Make every analog layer's weight a contiguous float32 array (a weight held as its integers,
    numerics.folded, keeps that form: its integers are made C-contiguous).

    gemm_to_linear leaves a MatMul's weight as the transposed view of the model's [K, N] array, and it
    stays one: the simulator's GEMMs take it as their operand as it lies, the device file's row stripes
    are rows of the model's array, and program.npz stores it in the model's order (``fortran_order``).
    Copying it by rows cost a transposing pass over memory as large as the weights: 10.6 s of a
    28.9 s compile for a 2.4 GB model, and its peak memory grew by as much. Other strided or
    non-float32 weights are copied.
    """
    graph = state.graph
    for layer in state.mapping.layers:
        w = graph.constants[layer.weight]
        if isinstance(w, DequantizedWeight):        # its rows are computed as they are read
            graph.constants[layer.weight] = w.contiguous()
        elif w.dtype != np.float32 or not (w.flags.c_contiguous or w.ndim == 2 and w.flags.f_contiguous):
            graph.constants[layer.weight] = contiguous_float32(w)
            carry_folded(graph.meta, w, graph.constants[layer.weight])
