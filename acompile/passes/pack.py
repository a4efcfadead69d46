"""Assign blocks to physical crossbars.

Without sharing (``crossbar.share_between_layers = false``), a layer's blocks
may still share a crossbar with each other, never with another layer's.
Blocks are placed on the diagonal of a crossbar -- each one takes fresh rows
*and* fresh columns -- so any block can be read on its own (its rows driven,
its columns converted) without disturbing another. First fit, in block order,
so the result is deterministic. Utilisation is reported either way.
"""

from __future__ import annotations

from ..mapping import Crossbar
from .base import CompileState, compile_pass


@compile_pass(requires={"blocks"}, provides={"packed"})
def pack(state: CompileState) -> None:
    """Give every block a crossbar and an offset inside it (first fit, on the diagonal)."""
    mapping, target = state.mapping, state.target
    rows, cols = target.crossbar.rows, target.crossbar.cols
    share = target.crossbar.share_between_layers
    mapping.crossbars = []
    open_bars: list[Crossbar] = []       # crossbars that may still take blocks
    current_layer = None
    for bi, block in enumerate(mapping.blocks):
        if not share and block.layer != current_layer:
            open_bars = []               # a new layer starts on fresh crossbars
            current_layer = block.layer
        home = None
        if block.rows < rows and block.cols < cols:  # full blocks never share
            for bar in open_bars:
                if bar.rows_used + block.rows <= rows and bar.cols_used + block.cols <= cols:
                    home = bar
                    break
        if home is None:
            home = Crossbar(index=len(mapping.crossbars))
            mapping.crossbars.append(home)
            if block.rows < rows and block.cols < cols:
                open_bars.append(home)
        block.crossbar = home.index
        block.row_offset, block.col_offset = home.rows_used, home.cols_used
        home.rows_used += block.rows
        home.cols_used += block.cols
        home.blocks.append(bi)
        # a crossbar with almost no free rows or columns is closed to keep the search short
        if home in open_bars and (home.rows_used >= rows or home.cols_used >= cols):
            open_bars.remove(home)
