"""pack: every block on one crossbar, on the diagonal, so driving one block's rows puts current on its
own columns only -- the product it would give alone; layers share crossbars only where the target allows."""

import numpy as np
import pytest

import models
from acompile.mapping import layer_matrix
from acompile.numerics import encode_weights, quantize_weights
from acompile.passes.pack import pack
from mapping_passes import after, conv_relu_linear


def _levels(state):
    """Cell levels of every (layer, matrix), as encoded for the device."""
    out = {}
    for layer in state.mapping.layers:
        for g in range(len(layer.matrices)):
            q_w, _ = quantize_weights(layer_matrix(state.graph.constants, layer, g), layer.spec.weight_bits)
            out[(layer.index, g)] = encode_weights(q_w, layer.spec).levels.astype(np.int64)
    return out


@pytest.mark.parametrize("target", ["isaac", "puma"])
def test_each_block_reads_alone_on_its_crossbar(target):
    state = after(conv_relu_linear(groups=2), pack, target=target)
    rows, cols = state.target.crossbar.rows, state.target.crossbar.cols
    mapping, levels = state.mapping, _levels(state)
    rng = np.random.default_rng(0)
    for on_bar in mapping.held():
        cells = np.zeros((rows, cols), np.int64)
        for b in (mapping.blocks[i] for i in on_bar):
            cells[b.row_offset:b.row_offset + b.rows, b.col_offset:b.col_offset + b.cols] = \
                levels[(b.layer, b.matrix)][b.row_start:b.row_start + b.rows, b.col_start:b.col_start + b.cols]
        for b in (mapping.blocks[i] for i in on_bar):
            drive = np.zeros(rows, np.int64)
            x = rng.integers(1, 4, b.rows)
            drive[b.row_offset:b.row_offset + b.rows] = x
            current = drive @ cells
            mine = np.zeros(cols, bool)
            mine[b.col_offset:b.col_offset + b.cols] = True
            expected = x @ levels[(b.layer, b.matrix)][b.row_start:b.row_start + b.rows,
                                                       b.col_start:b.col_start + b.cols]
            np.testing.assert_array_equal(current[mine], expected)
            assert not current[~mine].any()


def test_layers_share_crossbars_only_when_the_target_allows():
    def layers_per_bar(m):
        return [len(set(m.blocks.layer[on_bar].tolist())) for on_bar in m.held()]
    model = models.mlp((16, 8, 8, 4))
    separate = after(model, pack, target="isaac")
    shared = after(model, pack, target="puma")
    assert not separate.target.crossbar.share_between_layers and max(layers_per_bar(separate.mapping)) == 1
    assert shared.target.crossbar.share_between_layers and max(layers_per_bar(shared.mapping)) > 1
    assert all(b.crossbar >= 0 for b in shared.mapping.blocks) and shared.mapping.tiles_used == 0
