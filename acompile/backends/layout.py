"""The device file's layout tables: where every block of every weight matrix sits, as two integer arrays.

``blocks.npy`` holds one row per block in the mapping's order (:data:`BLOCK_COLUMNS`, the row and column
maps with the byte range of its cells in ``levels.bin``); ``crossbars.npy`` one row per crossbar
(:data:`CROSSBAR_COLUMNS`). A crossbar's blocks are the blocks that name it, in the order of their row
offsets: packing gives each block fresh rows. Replicas are not stored: a block that repeats the
(layer, matrix, row block, column block) of one before it is its next copy. docs/formats.md.

As arrays, the 12,504 blocks and crossbars of an int8 ResNet-50 take 8 ms to lay out and half as long to
read back as the 3.6 MB of JSON records they replace (34 ms to build; the device file read in 66 ms, not 130).
"""

from __future__ import annotations

from dataclasses import fields
from itertools import accumulate, chain, pairwise
from operator import attrgetter

import numpy as np

from ..mapping import Block, Crossbar, Fabric, Mapping, block_table

BLOCK_COLUMNS = ("layer", "matrix", "row_block", "col_block", "row_start", "rows", "col_start", "cols", "crossbar",
                 "row_offset", "col_offset", "offset", "bytes")
CROSSBAR_COLUMNS = ("index", "chip", "tile", "core", "slot", "rows_used", "cols_used")
_LIMIT = 1 << 48        # no count or offset of a mapping comes near it; past it, sums could overflow
_crossbar_row = attrgetter(*CROSSBAR_COLUMNS)
_BLOCK_ARGS = [BLOCK_COLUMNS.index(f.name) for f in fields(Block) if f.name != "replica"]   # Block's own order


def matrix_blocks(mapping: Mapping) -> list[tuple]:
    """Every weight matrix in the order its cells follow each other in levels.bin, with the mapping's
    indices of its blocks in that order: (layer, matrix index, [block indices]) layer by layer, each layer's
    blocks matrix by matrix, in the order the layer lists them."""
    out = []
    for layer in mapping.layers:
        by_matrix: dict[int, list[int]] = {}
        for b in layer.blocks:
            by_matrix.setdefault(mapping.blocks[b].matrix, []).append(b)
        out += [(layer, mi, by_matrix.get(mi, [])) for mi in range(len(layer.matrices))]
    return out


def layout_tables(mapping: Mapping) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(blocks.npy, crossbars.npy, each block's size in levels.bin in file order): what the mapping alone
    decides, each block's cells packed on whole bytes."""
    t = block_table(mapping.blocks)
    order = np.fromiter(chain.from_iterable(blocks for *_, blocks in matrix_blocks(mapping)), np.int64)
    cell_bits = np.array([layer.spec.cell_bits for layer in mapping.layers], np.int64)
    sizes = (t.rows * t.cols * cell_bits[t.layer] + 7) // 8 if len(order) else np.zeros(0, np.int64)
    offsets = np.zeros(len(order), np.int64)
    offsets[order] = np.cumsum(sizes[order]) - sizes[order]
    blocks = np.stack([getattr(t, name) for name in BLOCK_COLUMNS[:-2]] + [offsets, sizes], axis=1)
    n = len(mapping.crossbars)
    crossbars = np.fromiter(chain.from_iterable(map(_crossbar_row, mapping.crossbars)), np.int64,
                            count=n * len(CROSSBAR_COLUMNS)).reshape(n, len(CROSSBAR_COLUMNS))
    return blocks, crossbars, sizes[order].tolist()


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
    layer, bar, row_offset = blocks[:, 0], blocks[:, 8], blocks[:, 9]
    if layers and not n:
        raise ValueError("the layout has no blocks")
    if n and (layer.max() >= len(layers) or bar.max() >= bars):
        raise ValueError("a block names a layer or crossbar that does not exist")
    per_bar = np.bincount(bar, minlength=bars)
    if (per_bar == 0).any():        # packing opens a crossbar for a block
        raise ValueError(f"crossbar {int(np.argmin(per_bar))} holds no block")
    on_bar = np.lexsort((row_offset, bar)).tolist()     # by crossbar, then row offset
    bounds = list(accumulate(per_bar.tolist(), initial=0))
    held = [on_bar[a:b] for a, b in pairwise(bounds)]
    mapping = Mapping(layers, crossbars=[Crossbar(blocks=h, **dict(zip(CROSSBAR_COLUMNS, row)))
                                         for row, h in zip(crossbars.tolist(), held)],
                      tiles_used=tiles_used, chips_needed=chips_needed, fabric=fabric)
    mapping.blocks = list(map(Block, *blocks[:, _BLOCK_ARGS].T.tolist(), _copies(blocks[:, :4]).tolist()))
    by_layer = np.argsort(layer, kind="stable").tolist()
    bounds = list(accumulate(np.bincount(layer, minlength=len(layers)).tolist(), initial=0))
    for x, (a, b) in zip(layers, pairwise(bounds)):
        x.blocks = by_layer[a:b]
    return mapping


def _copies(keys: np.ndarray) -> np.ndarray:
    """For each row of ``keys``, how many rows before it are equal to it: a block's replica number."""
    if not len(keys):
        return np.zeros(0, np.int64)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    order = np.argsort(group.reshape(-1), kind="stable")
    ranked = group.reshape(-1)[order]
    first = np.flatnonzero(np.concatenate(([True], ranked[1:] != ranked[:-1])))
    copies = np.empty(len(keys), np.int64)
    copies[order] = np.arange(len(keys)) - np.repeat(first, np.diff(np.append(first, len(keys))))
    return copies
