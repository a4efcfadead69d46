"""Assign blocks to physical crossbars.

Without sharing (``crossbar.share_between_layers = false``), a layer's blocks
may still share a crossbar with each other, never with another layer's.
Blocks are placed on the diagonal of a crossbar -- each one takes fresh rows
*and* fresh columns -- so any block can be read on its own (its rows driven,
its columns converted) without disturbing another. First fit, in block order,
so the result is deterministic. Utilisation is reported either way.
"""

from __future__ import annotations

from itertools import chain, repeat
from operator import attrgetter

import numpy as np

from ..mapping import Crossbar
from .base import CompileState, compile_pass


@compile_pass(requires={"blocks"}, provides={"packed"})
def pack(state: CompileState) -> None:
    """Give every block a crossbar and an offset inside it (first fit, on the diagonal)."""
    mapping, target = state.mapping, state.target
    rows, cols = target.crossbar.rows, target.crossbar.cols
    n = len(mapping.blocks)
    layer, height, width = np.fromiter(chain.from_iterable(map(_shape, mapping.blocks)), np.int64,
                                       count=3 * n).reshape(n, 3).T
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
    used = [np.bincount(bar_of, weights=size, minlength=int(opened.sum())).astype(np.int64).tolist()
            for size in (height, width)]       # exact: sums of small integers
    held = [[b] for b in np.flatnonzero(opened).tolist()]
    for b in np.flatnonzero(~opened).tolist():  # blocks are listed in the order they were packed
        held[bar_of[b]].append(b)
    zero = repeat(0)                            # chip, tile, core and slot: set by place
    mapping.crossbars = list(map(Crossbar, range(len(held)), zero, zero, zero, zero, held, *used))
    for blk, bar, r, c in zip(mapping.blocks, bar_of.tolist(), row_offset.tolist(), col_offset.tolist()):
        blk.crossbar, blk.row_offset, blk.col_offset = bar, r, c


_shape = attrgetter("layer", "rows", "cols")
