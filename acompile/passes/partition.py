"""Cut every weight matrix into crossbar-sized blocks.

A matrix of ``k_in`` rows and ``P`` physical columns becomes
``ceil(k_in / rows) x ceil(P / cols)`` blocks of at most rows x cols cells
(docs/analog.md, "Row and column blocks"). Blocks are appended to the mapping in layer, matrix,
row-block, column-block order; nothing is placed yet.
"""

from __future__ import annotations

import math

from ..limits import Limits
from ..mapping import Block
from .base import CompileState, compile_pass


@compile_pass(requires={"precision"}, provides={"blocks"})
def partition(state: CompileState) -> None:
    """Cut every matrix into blocks of at most the crossbar's rows x columns."""
    mapping = state.mapping
    rows, cols = state.target.crossbar.rows, state.target.crossbar.cols
    _check_block_count(state, rows, cols)
    mapping.blocks = []
    for layer in mapping.layers:
        layer.blocks = []
        for mi, m in enumerate(layer.matrices):
            m.row_blocks = math.ceil(m.k_in / rows)
            m.col_blocks = math.ceil(m.physical_cols / cols)
            for r in range(m.row_blocks):
                r0 = r * rows
                for c in range(m.col_blocks):
                    c0 = c * cols
                    layer.blocks.append(len(mapping.blocks))
                    mapping.blocks.append(Block(layer.index, mi, r, c, r0, min(rows, m.k_in - r0),
                                                c0, min(cols, m.physical_cols - c0)))


def _check_block_count(state: CompileState, rows: int, cols: int) -> None:
    """Refuse before any block exists when the blocks (each a crossbar at worst, each a record in the
    device file) would exceed ``limits.max_crossbars``: tiny crossbars can turn a small model into millions."""
    limits = getattr(state.options, "limits", None) or Limits.from_env()
    count = sum(math.ceil(m.k_in / rows) * math.ceil(m.physical_cols / cols)
                for layer in state.mapping.layers for m in layer.matrices)
    if count > limits.max_crossbars:
        raise limits.refuse("max_crossbars", f"crossbar blocks for {rows}x{cols} crossbars", count)
