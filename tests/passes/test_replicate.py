"""replicate: with "auto", the slowest layers get copies of all their blocks on fresh crossbars within
the chips already needed; copies hold the same cells, so the quantized results do not change."""

import numpy as np
import pytest

from acompile.errors import UsageError
from acompile.passes.replicate import replicate
from helpers import compiled, simulate
from mapping_passes import after, conv_relu_linear, feeds, state_before


def test_auto_copies_the_slowest_layer_within_the_chips_used():
    plain = after(conv_relu_linear(), replicate, target="isaac")
    auto = after(conv_relu_linear(), replicate, target="isaac", replicate="auto")
    assert len(plain.mapping.blocks) == len(state_before(conv_relu_linear(), replicate).mapping.blocks)
    m = auto.mapping
    t = auto.target
    per_chip = t.organisation.crossbars_per_core * t.organisation.cores_per_tile * t.organisation.tiles_per_chip
    assert len(plain.mapping.crossbars) < len(m.crossbars) <= per_chip
    conv = m.layers[0]
    assert 1 < conv.replication <= conv.n_vec
    for layer in m.layers:
        originals = [m.blocks[b] for b in layer.blocks if m.blocks[b].replica == 0]
        for copy in range(1, layer.replication):
            mine = [m.blocks[b] for b in layer.blocks if m.blocks[b].replica == copy]
            assert _spans(mine) == _spans(originals)
            assert not {b.crossbar for b in mine} & {b.crossbar for b in originals}


def _spans(blocks):
    return [(b.matrix, b.row_start, b.rows, b.col_start, b.cols, b.row_offset, b.col_offset) for b in blocks]


def test_copies_do_not_change_the_quantized_results():
    model = conv_relu_linear()
    x = feeds(state_before(model, replicate))
    plain, auto = compiled(model, "isaac"), compiled(model, "isaac", replicate="auto")
    assert max(layer.replication for layer in auto.mapping.layers) > 1
    np.testing.assert_array_equal(simulate(plain, x, mode="quantized")[0], simulate(auto, x, mode="quantized")[0])
    assert auto.cost["totals"]["slowest_stage_ns"] < plain.cost["totals"]["slowest_stage_ns"]


def test_the_mode_is_checked():
    with pytest.raises(UsageError, match="replicate"):
        after(conv_relu_linear(), replicate, replicate="always")
