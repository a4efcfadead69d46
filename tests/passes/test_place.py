"""place: crossbars fill cores, then tiles, then chips, in order; every crossbar sits in a slot of its
tile, and a model larger than one chip says how many chips it needs."""

import math

from acompile.passes.place import mesh_position, place
from acompile.target import load_target
from mapping_passes import after, conv_relu_linear, wide_linear


def test_every_crossbar_has_its_own_slot_in_its_tile():
    state = after(wide_linear(), place, target="isaac")
    org = state.target.organisation
    per_tile = org.crossbars_per_core * org.cores_per_tile
    m = state.mapping
    slots = {(bar.tile, bar.core, bar.slot) for bar in m.crossbars}
    assert len(slots) == len(m.crossbars)
    for bar in m.crossbars:
        assert 0 <= bar.slot < org.crossbars_per_core and 0 <= bar.core < org.cores_per_tile
        assert bar.tile * per_tile + bar.core * org.crossbars_per_core + bar.slot == bar.index
        assert bar.chip == bar.tile // org.tiles_per_chip
    assert m.tiles_used == math.ceil(len(m.crossbars) / per_tile) and m.chips_needed == 1


def test_a_model_larger_than_a_chip_needs_several():
    small = load_target("isaac").with_overrides({"organisation.tiles_per_chip": 1, "organisation.cores_per_tile": 1,
                                                 "organisation.crossbars_per_core": 2,
                                                 "network.tiles_per_router": 1})
    m = after(conv_relu_linear(), place, target=small).mapping
    assert m.tiles_used == math.ceil(len(m.crossbars) / 2) and m.chips_needed == m.tiles_used > 1
    assert [bar.chip for bar in m.crossbars] == [i // 2 for i in range(len(m.crossbars))]


def test_tiles_sit_on_a_square_mesh_per_chip():
    width = math.ceil(math.sqrt(10))
    positions = [mesh_position(t, 10) for t in range(20)]
    assert positions[0] == (0, 0, 0) and positions[10] == (1, 0, 0) and positions[5] == (0, 1, 1)
    assert all(0 <= x < width and 0 <= y < width for _, x, y in positions)
