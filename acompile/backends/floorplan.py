"""The floorplan of a mapping as hand-drawn SVG (no charting library draws chip -> tiles -> cores ->
crossbars): every crossbar with the blocks it holds, coloured by layer, each with a hover title;
above :data:`AGGREGATE_ABOVE` crossbars, one box per tile showing which layers live there.

Elements carry classes the tests count: ``xbar`` (one per mapped crossbar), ``blk`` (one per block),
``slot`` (an empty crossbar of a used tile), ``tile`` (one per used tile).
"""

from __future__ import annotations

import math
from collections import defaultdict
from html import escape

import numpy as np

from ..units import count, percent
from .charts import colour

AGGREGATE_ABOVE = 1500        # crossbars: beyond this the per-crossbar drawing is too dense to read
_BAR = 34                     # px: one crossbar
_GAP = 4
_PAD = 8
_LABEL = 16


def _grid(n: int) -> tuple[int, int]:
    cols = max(1, math.ceil(math.sqrt(n)))
    return cols, max(1, math.ceil(n / cols))


def _bar_title(bar, on_bar: list, fab, names) -> str:
    lines = [f"crossbar {bar.index}: chip {bar.chip}, tile {bar.tile}, core {bar.core}, slot {bar.slot}"]
    cells = 0
    for blk in on_bar:
        cells += blk.rows * blk.cols
        copy = f", copy {blk.replica}" if blk.replica else ""
        lines.append(f"{names[blk.layer]}: block r{blk.row_block} c{blk.col_block}{copy}, "
                     f"{blk.rows} × {blk.cols} (rows {blk.row_start}-{blk.row_start + blk.rows - 1})")
    lines.append(f"utilisation {percent(cells / (fab.rows * fab.cols))} of {fab.rows} × {fab.cols} cells")
    return "\n".join(lines)


def _crossbar(out: list[str], bar, on_bar: list, fab, names, x: float, y: float) -> None:
    """One crossbar (a record of :class:`..blocks.Crossbars`) and ``on_bar``, the records of its blocks."""
    out.append(f'<g class="xbar" data-index="{bar.index}"><title>{escape(_bar_title(bar, on_bar, fab, names))}</title>'
               f'<rect x="{x}" y="{y}" width="{_BAR}" height="{_BAR}" fill="#fff" stroke="#555" stroke-width="0.8"/>')
    for blk in on_bar:
        bx = x + _BAR * blk.col_offset / fab.cols
        by = y + _BAR * blk.row_offset / fab.rows
        w = max(_BAR * blk.cols / fab.cols, 0.6)
        h = max(_BAR * blk.rows / fab.rows, 0.6)
        out.append(f'<rect class="blk" data-layer="{blk.layer}" x="{bx:.2f}" y="{by:.2f}" width="{w:.2f}" '
                   f'height="{h:.2f}" fill="{colour(blk.layer)}"/>')
    out.append("</g>")


def _tiles(mapping) -> list[tuple[int, int, list[int]]]:
    """(chip, tile, the indices of its crossbars) of every tile used, in order: the tile boxes of both views,
    grouped over the crossbar table (a ResNet-50's 12,504 crossbars need no record each)."""
    bars = mapping.crossbars
    order = np.lexsort((bars.tile, bars.chip))       # stable: a tile's crossbars in index order
    chip, tile = bars.chip[order], bars.tile[order]
    first = np.flatnonzero(np.concatenate([[True], (chip[1:] != chip[:-1]) | (tile[1:] != tile[:-1])]))
    ends = np.append(first[1:], len(order)).tolist()
    order = order.tolist()
    return [(c, t, order[a:b]) for c, t, a, b in zip(chip[first].tolist(), tile[first].tolist(), first.tolist(), ends)]


def _tile_shares(mapping) -> dict[int, dict[int, float]]:
    """{tile: {layer: the crossbars' worth it holds}}: each crossbar split between the layers by the cells their
    blocks occupy on it, added up crossbar by crossbar."""
    t, layers = mapping.blocks, len(mapping.layers)
    key = t.crossbar * layers + t.layer
    order = np.argsort(key, kind="stable")                                      # by crossbar, then layer
    first = np.flatnonzero(np.diff(key[order], prepend=-1))
    cells = np.add.reduceat((t.rows * t.cols)[order], first).astype(np.float64)  # exact: integers
    bar, layer = np.divmod(key[order][first], layers)
    share = cells / np.bincount(bar, weights=cells)[bar]
    out: dict[int, dict[int, float]] = defaultdict(dict)
    for tile, x, v in zip(mapping.crossbars.tile[bar].tolist(), layer.tolist(), share.tolist()):
        out[tile][x] = out[tile].get(x, 0.0) + v
    return out


def floorplan_svg(mapping) -> str:
    """The floorplan, per crossbar or (above :data:`AGGREGATE_ABOVE` crossbars) per tile."""
    names = [layer.name for layer in mapping.layers]
    if not mapping.crossbars or mapping.fabric is None:
        return '<svg xmlns="http://www.w3.org/2000/svg" class="floorplan" width="300" height="30">' \
               '<text x="4" y="20">no crossbars: nothing is mapped to analog</text></svg>'
    if len(mapping.crossbars) > AGGREGATE_ABOVE:
        return _aggregated(mapping, names)
    fab = mapping.fabric
    core_cols, core_rows = _grid(fab.crossbars_per_core)
    tile_core_cols, tile_core_rows = _grid(fab.cores_per_tile)
    core_w = core_cols * (_BAR + _GAP) + _GAP
    core_h = core_rows * (_BAR + _GAP) + _GAP
    tile_w = tile_core_cols * (core_w + _GAP) + _GAP
    tile_h = tile_core_rows * (core_h + _GAP) + _GAP + _LABEL
    tiles = _tiles(mapping)
    blocks, crossbars = list(mapping.blocks), list(mapping.crossbars)
    held = [[blocks[b] for b in on_bar] for on_bar in mapping.held()]
    per_row = max(1, min(len(tiles), 1200 // (tile_w + _PAD)))
    out: list[str] = []
    for i, (chip, tile, on_tile) in enumerate(tiles):
        bars = [crossbars[b] for b in on_tile]
        tx = _PAD + (i % per_row) * (tile_w + _PAD)
        ty = _PAD + (i // per_row) * (tile_h + _PAD)
        out.append(f'<g class="tile" data-chip="{chip}" data-tile="{tile}">'
                   f'<rect x="{tx}" y="{ty}" width="{tile_w}" height="{tile_h}" fill="#f4f4f4" stroke="#222"/>'
                   f'<text x="{tx + 4}" y="{ty + 12}" font-size="11">chip {chip} · tile {tile} · '
                   f'{count(len(bars), "crossbar")}</text>')
        by_slot = {(b.core, b.slot): b for b in bars}
        for core in range(fab.cores_per_tile):
            cx = tx + _GAP + (core % tile_core_cols) * (core_w + _GAP)
            cy = ty + _LABEL + _GAP + (core // tile_core_cols) * (core_h + _GAP)
            out.append(f'<rect class="core" x="{cx}" y="{cy}" width="{core_w}" height="{core_h}" fill="#e2e6ea" '
                       f'stroke="#999" stroke-width="0.5"><title>core {core} of tile {tile}</title></rect>')
            for slot in range(fab.crossbars_per_core):
                x = cx + _GAP + (slot % core_cols) * (_BAR + _GAP)
                y = cy + _GAP + (slot // core_cols) * (_BAR + _GAP)
                bar = by_slot.get((core, slot))
                if bar is None:
                    out.append(f'<rect class="slot" x="{x}" y="{y}" width="{_BAR}" height="{_BAR}" fill="none" '
                               f'stroke="#bbb" stroke-dasharray="2 2" stroke-width="0.6"/>')
                else:
                    _crossbar(out, bar, held[bar.index], fab, names, x, y)
        out.append("</g>")
    rows = math.ceil(len(tiles) / per_row)
    width = _PAD + per_row * (tile_w + _PAD)
    height = _PAD + rows * (tile_h + _PAD)
    zoom = max(1.0, min(2.0, 900 / width))       # a single small tile is drawn larger
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="floorplan" data-view="crossbars" '
            f'width="{width * zoom:.0f}" height="{height * zoom:.0f}" viewBox="0 0 {width} {height}" font-family="sans-serif">' + "".join(out) + "</svg>")


def _aggregated(mapping, names) -> str:
    """One box per used tile: a bar split by the share of the tile's crossbars each layer occupies."""
    tiles = _tiles(mapping)
    shares = _tile_shares(mapping)
    box_w, box_h, per_row = 150, 46, 7
    out = []
    for i, (chip, tile, on_tile) in enumerate(tiles):
        bars = len(on_tile)
        x = _PAD + (i % per_row) * (box_w + _PAD)
        y = _PAD + (i // per_row) * (box_h + _PAD)
        share = shares.get(tile, {})
        lines = [f"chip {chip}, tile {tile}: {count(bars, 'crossbar')}"]
        lines += [f"{names[k]}: {v:.3g} crossbars" for k, v in sorted(share.items())]
        out.append(f'<g class="tile" data-chip="{chip}" data-tile="{tile}"><title>{escape(chr(10).join(lines))}'
                   f'</title><rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" fill="#f4f4f4" stroke="#222"/>'
                   f'<text x="{x + 4}" y="{y + 12}" font-size="10">chip {chip} · tile {tile} · {bars}</text>')
        left = x + 4
        for layer, v in sorted(share.items()):
            w = (box_w - 8) * v / mapping.fabric.crossbars_per_tile
            out.append(f'<rect class="share" data-layer="{layer}" x="{left:.2f}" y="{y + 18}" width="{w:.2f}" '
                       f'height="{box_h - 24}" fill="{colour(layer)}"/>')
            left += w
        out.append("</g>")
    rows = math.ceil(len(tiles) / per_row)
    width = _PAD + min(len(tiles), per_row) * (box_w + _PAD)
    height = _PAD + rows * (box_h + _PAD)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="floorplan" data-view="tiles" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">' + "".join(out) + "</svg>")
