"""Cut every weight matrix into crossbar-sized blocks.

A matrix of ``k_in`` rows and ``P`` physical columns becomes
``ceil(k_in / rows) x ceil(P / cols)`` blocks of at most rows x cols cells
(DESIGN §2 "Row blocks"). Blocks are appended to the mapping in layer, matrix,
row-block, column-block order; nothing is placed yet.
"""

from __future__ import annotations

import math

from ..ir import Graph
from ..mapping import Block


def partition(graph: Graph, target) -> Graph:
    mapping = graph.meta["mapping"]
    rows, cols = int(target["crossbar.rows"]), int(target["crossbar.cols"])
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
    return graph
