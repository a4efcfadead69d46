"""Assign blocks to physical crossbars.

Without sharing (``crossbar.share_between_layers = false``), a layer's blocks
may still share a crossbar with each other, never with another layer's.
Blocks are placed on the diagonal of a crossbar -- each one takes fresh rows
*and* fresh columns -- so any block can be read on its own (its rows driven,
its columns converted) without disturbing another. First fit, in block order,
so the result is deterministic. Utilisation is reported either way.
"""

from __future__ import annotations

import numpy as np

from ..blocks import Crossbars
from .base import CompileState, compile_pass


@compile_pass(requires={"blocks"}, provides={"packed"})
def pack(state: CompileState) -> None:
    """Give every block a crossbar and an offset inside it (first fit, on the diagonal)."""
    mapping, target = state.mapping, state.target
    rows, cols = target.crossbar.rows, target.crossbar.cols
    blocks = mapping.blocks
    n, layer, height, width = len(blocks), blocks.layer, blocks.rows, blocks.cols
    home = np.arange(n)                          # the block that opened each block's crossbar
    row_offset, col_offset = np.zeros((2, n), np.int64)
    # a block as tall or as wide as a crossbar (all but a matrix's corner block) never shares one: only
    # the others go through first fit, on the crossbars they opened
    small = np.flatnonzero((height < rows) & (width < cols)).tolist()
    # without sharing, the open crossbars close whenever the layer changes (a layer starts on fresh ones)
    run = [0] * n if target.crossbar.share_between_layers else \
        np.cumsum(np.concatenate(([0], layer[1:] != layer[:-1]))).tolist()
    open_bars: list[list[int]] = []             # [opening block, rows used, columns used], in opening order
    current = None
    for b in small:
        if run[b] != current:
            open_bars, current = [], run[b]
        h, w = int(height[b]), int(width[b])
        bar = next((o for o in open_bars if o[1] + h <= rows and o[2] + w <= cols), None)
        if bar is None:
            bar = [b, 0, 0]
            open_bars.append(bar)
        home[b], row_offset[b], col_offset[b] = bar
        bar[1] += h
        bar[2] += w
        if bar[1] >= rows or bar[2] >= cols:    # almost no free rows or columns: closed, to keep the search short
            open_bars = [o for o in open_bars if o is not bar]
    opened = home == np.arange(n)
    bar_of = (np.cumsum(opened) - 1)[home]      # crossbars are numbered in the order they are opened
    bars = int(opened.sum())
    rows_used, cols_used = (np.bincount(bar_of, weights=size, minlength=bars) for size in (height, width))
    # exact: sums of small integers; chip, tile, core and slot are set by place
    mapping.crossbars = Crossbars(index=np.arange(bars), rows_used=rows_used, cols_used=cols_used)
    blocks.crossbar, blocks.row_offset, blocks.col_offset = bar_of, row_offset, col_offset
