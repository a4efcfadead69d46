"""Cut every weight matrix into crossbar-sized blocks.

A matrix of ``k_in`` rows and ``P`` physical columns becomes
``ceil(k_in / rows) x ceil(P / cols)`` blocks of at most rows x cols cells
(docs/analog.md, "Row and column blocks"). Blocks are appended to the mapping in layer, matrix,
row-block, column-block order; nothing is placed yet.
"""

from __future__ import annotations

import math

import numpy as np

from ..limits import Limits
from ..blocks import Blocks
from .base import CompileState, compile_pass


@compile_pass(requires={"precision"}, provides={"blocks"})
def partition(state: CompileState) -> None:
    """Cut every matrix into blocks of at most the crossbar's rows x columns."""
    mapping = state.mapping
    rows, cols = state.target.crossbar.rows, state.target.crossbar.cols
    _check_block_count(state, rows, cols)
    matrices = [(layer.index, mi, m) for layer in mapping.layers for mi, m in enumerate(layer.matrices)]
    for _, _, m in matrices:
        m.row_blocks, m.col_blocks = math.ceil(m.k_in / rows), math.ceil(m.physical_cols / cols)
    # every block's fields at once: block j of a matrix is row block j // C, column block j % C
    layer, mi, R, C, K, P = np.array([(li, i, m.row_blocks, m.col_blocks, m.k_in, m.physical_cols)
                                      for li, i, m in matrices], np.int64).reshape(-1, 6).T
    count = R * C
    of = np.repeat(np.arange(len(matrices)), count)                  # each block's matrix
    j = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    r, c = j // C[of], j % C[of]
    r0, c0 = r * rows, c * cols
    mapping.blocks = Blocks(layer=layer[of], matrix=mi[of], row_block=r, col_block=c, row_start=r0,
                            rows=np.minimum(rows, K[of] - r0), col_start=c0, cols=np.minimum(cols, P[of] - c0))
    mapping.list_layer_blocks()


def _check_block_count(state: CompileState, rows: int, cols: int) -> None:
    """Refuse before any block exists when the blocks (each a crossbar at worst, each a record in the
    device file) would exceed ``limits.max_crossbars``: tiny crossbars can turn a small model into millions."""
    limits = getattr(state.options, "limits", None) or Limits.from_env()
    count = sum(math.ceil(m.k_in / rows) * math.ceil(m.physical_cols / cols)
                for layer in state.mapping.layers for m in layer.matrices)
    if count > limits.max_crossbars:
        raise limits.refuse("max_crossbars", f"crossbar blocks for {rows}x{cols} crossbars", count)
