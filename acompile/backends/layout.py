"""The device file's layout tables: where every block of every weight matrix sits, as two integer arrays.

``blocks.npy`` holds one row per block in the mapping's order (:data:`BLOCK_COLUMNS`, the row and column
maps with the byte range of its cells in ``levels.bin``); ``crossbars.npy`` one row per crossbar
(:data:`CROSSBAR_COLUMNS`). A crossbar's blocks are the blocks that name it, in the order of their row
offsets: packing gives each block fresh rows. Replicas are not stored: a block that repeats the
(layer, matrix, row block, column block) of one before it is its next copy. docs/formats.md.

The tables are the mapping's own columns (:mod:`..blocks`) side by side: the 12,504 blocks and crossbars of an
int8 ResNet-50 take 2 ms to lay out (34 ms as the JSON records of version 2, 8 ms from block objects) and the
device file is read in 47 ms (130 ms with the JSON records, 75 ms into block objects).
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from ..blocks import Blocks, Crossbars, replica_numbers
from ..mapping import Fabric, Mapping

BLOCK_COLUMNS = ("layer", "matrix", "row_block", "col_block", "row_start", "rows", "col_start", "cols", "crossbar",
                 "row_offset", "col_offset", "offset", "bytes")
CROSSBAR_COLUMNS = ("index", "chip", "tile", "core", "slot", "rows_used", "cols_used")
_LIMIT = 1 << 48        # no count or offset of a mapping comes near it; past it, sums could overflow


def matrix_blocks(mapping: Mapping) -> list[tuple]:
    """Every weight matrix in the order its cells follow each other in levels.bin, with the mapping's
    indices of its blocks in that order: (layer, matrix index, [block indices]) layer by layer, each layer's
    blocks matrix by matrix, in the order the layer lists them."""
    out = []
    for layer in mapping.layers:
        listed = np.asarray(layer.blocks, np.int64)
        matrix = mapping.blocks.matrix[listed]
        listed = listed[(matrix >= 0) & (matrix < len(layer.matrices))]     # a broken mapping: verify names it
        matrix = mapping.blocks.matrix[listed]
        by_matrix = listed[np.argsort(matrix, kind="stable")].tolist()
        ends = np.cumsum(np.bincount(matrix, minlength=len(layer.matrices))).tolist()
        out += [(layer, mi, by_matrix[a:b]) for mi, (a, b) in enumerate(zip([0] + ends, ends))]
    return out


def layout_tables(mapping: Mapping) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(blocks.npy, crossbars.npy, each block's size in levels.bin in file order): what the mapping alone
    decides, each block's cells packed on whole bytes."""
    t = mapping.blocks
    order = np.fromiter(chain.from_iterable(blocks for *_, blocks in matrix_blocks(mapping)), np.int64)
    cell_bits = np.array([layer.spec.cell_bits for layer in mapping.layers], np.int64)
    sizes = (t.rows * t.cols * cell_bits[t.layer] + 7) // 8 if len(order) else np.zeros(0, np.int64)
    offsets = np.zeros(len(order), np.int64)
    offsets[order] = np.cumsum(sizes[order]) - sizes[order]
    blocks = np.concatenate([t.stack(BLOCK_COLUMNS[:-2]), np.stack([offsets, sizes], axis=1)], axis=1)
    return blocks, mapping.crossbars.stack(CROSSBAR_COLUMNS), sizes[order].tolist()


def mapping_from_tables(layers: list, blocks: np.ndarray, crossbars: np.ndarray, fabric: Fabric, tiles_used: int,
                        chips_needed: int) -> Mapping:
    """The mapping the tables describe, on ``layers`` (their block lists rebuilt). Raises ValueError where the
    tables cannot be read as one (wrong types or shapes, a layer or crossbar that does not exist); whether
    what they describe holds together is :meth:`Mapping.verify`'s to say."""
    for table, columns, name in ((blocks, BLOCK_COLUMNS, "blocks"), (crossbars, CROSSBAR_COLUMNS, "crossbars")):
        if table.dtype != np.int64 or table.ndim != 2 or table.shape[1] != len(columns):
            raise ValueError(f"{name}.npy is {table.dtype}{list(table.shape)}, not int64 [n, {len(columns)}]")
        if table.size and (table.min() < 0 or table.max() >= _LIMIT):
            raise ValueError(f"{name}.npy holds a value out of range")
    n, bars = len(blocks), len(crossbars)
    layer, bar = blocks[:, 0], blocks[:, 8]
    if layers and not n:
        raise ValueError("the layout has no blocks")
    if n and (layer.max() >= len(layers) or bar.max() >= bars):
        raise ValueError("a block names a layer or crossbar that does not exist")
    per_bar = np.bincount(bar, minlength=bars)
    if (per_bar == 0).any():        # packing opens a crossbar for a block
        raise ValueError(f"crossbar {int(np.argmin(per_bar))} holds no block")
    columns = dict(zip(BLOCK_COLUMNS[:-2], blocks.T))
    mapping = Mapping(layers, Blocks(**columns, replica=replica_numbers(blocks[:, :4])),
                      Crossbars(**dict(zip(CROSSBAR_COLUMNS, crossbars.T))),
                      tiles_used=tiles_used, chips_needed=chips_needed, fabric=fabric)
    mapping.list_layer_blocks()
    return mapping
