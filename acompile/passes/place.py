"""Place crossbars on cores, tiles and chips.

Policy: crossbars are numbered in layer order and fill cores, then tiles,
then chips in that order (``crossbars_per_core``, ``cores_per_tile``,
``tiles_per_chip``), so consecutive layers sit on neighbouring tiles and the
network traffic between them is short. A model larger than one chip is not an
error: the mapping records how many chips' worth of tiles it needs.
"""

from __future__ import annotations

import math

import numpy as np

from .base import CompileState, compile_pass


@compile_pass(requires={"replicated"}, provides={"placed"})
def place(state: CompileState) -> None:
    """Number every crossbar's chip, tile, core and slot; count the tiles and chips used."""
    mapping, target = state.mapping, state.target
    per_core = target.organisation.crossbars_per_core
    per_tile = per_core * target.organisation.cores_per_tile
    tiles_per_chip = target.organisation.tiles_per_chip
    bars = mapping.crossbars
    bars.tile, within = np.divmod(bars.index, per_tile)
    bars.core, bars.slot = np.divmod(within, per_core)
    bars.chip = bars.tile // tiles_per_chip
    mapping.tiles_used = math.ceil(len(mapping.crossbars) / per_tile) if mapping.crossbars else 0
    mapping.chips_needed = math.ceil(mapping.tiles_used / tiles_per_chip) if mapping.tiles_used else 0


def mesh_position(tile: int, tiles_per_chip: int) -> tuple[int, int, int]:
    """(chip, x, y) of a tile on a square-ish mesh of its chip."""
    chip, local = divmod(tile, tiles_per_chip)
    width = math.ceil(math.sqrt(tiles_per_chip))
    return chip, local % width, local // width
