"""partition: every matrix cut into ceil(K/rows) x ceil(P/cols) crossbar-sized blocks; the partial
products of the blocks, accumulated over row blocks, are the product of the whole cell array."""

import math

import numpy as np
import pytest

from acompile.mapping import layer_matrix
from acompile.numerics import encode_weights, quantize_weights
from acompile.passes.partition import partition
from mapping_passes import after, conv_relu_linear, wide_linear


@pytest.mark.parametrize("target", ["isaac", "puma", "prime", "hermes"])
def test_blocks_are_the_crossbar_grid_of_each_matrix(target):
    state = after(wide_linear(), partition, target=target)
    rows, cols = state.target.crossbar.rows, state.target.crossbar.cols
    (layer,) = state.mapping.layers
    m = layer.matrices[0]
    assert (m.row_blocks, m.col_blocks) == (math.ceil(m.k_in / rows), math.ceil(m.physical_cols / cols))
    assert len(layer.blocks) == len(state.mapping.blocks) == m.row_blocks * m.col_blocks
    assert all(b.crossbar == -1 for b in state.mapping.blocks)      # nothing packed yet
    q_w, _ = quantize_weights(layer_matrix(state.graph.constants, layer, 0), layer.spec.weight_bits)
    levels = encode_weights(q_w, layer.spec).levels.astype(np.int64)
    x = np.random.default_rng(0).integers(0, 4, (3, m.k_in))
    out = np.zeros((3, m.physical_cols), np.int64)
    for b in state.mapping.blocks:
        out[:, b.col_start:b.col_start + b.cols] += \
            x[:, b.row_start:b.row_start + b.rows] @ levels[b.row_start:b.row_start + b.rows,
                                                            b.col_start:b.col_start + b.cols]
    np.testing.assert_array_equal(out, x @ levels)


def test_blocks_follow_layer_matrix_row_column_order():
    state = after(conv_relu_linear(groups=2), partition, target="isaac")
    order = [(b.layer, b.matrix, b.row_block, b.col_block) for b in state.mapping.blocks]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert {b.matrix for b in state.mapping.blocks if b.layer == 0} == {0, 1}
