"""explicit_bias: every analog layer reads (x, W, b); what no output needs is pruned."""

import numpy as np
from onnx import helper

from acompile.passes.explicit_bias import explicit_bias
from frontend_passes import check_pass, tiny_model, weights


def test_conv_and_conv_transpose_get_a_zero_bias_and_dead_nodes_go():
    w = weights()
    model = tiny_model(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("ConvTranspose", ["c", "wt"], ["y"], group=3),
         helper.make_node("Relu", ["c"], ["unused"])],
        [("x", (1, 2, 4, 4))], [("y", (1, 6, 4, 4))], {"w": w(3, 2, 1, 1), "wt": w(3, 2, 1, 1)})
    state = check_pass(model, explicit_bias)
    g = state.graph
    assert [n.op_type for n in g.nodes] == ["Conv", "ConvTranspose"]
    conv, convt = g.nodes
    assert g.constants[conv.inputs[2]].tolist() == [0, 0, 0]
    assert g.constants[convt.inputs[2]].shape == (6,) and not np.any(g.constants[convt.inputs[2]])
    assert "canonical" in state.facts


def test_an_existing_bias_is_kept():
    w = weights()
    b = w(3)
    model = tiny_model([helper.make_node("Conv", ["x", "w", "b"], ["y"])], [("x", (1, 2, 3, 3))],
                       [("y", (1, 3, 3, 3))], {"w": w(3, 2, 1, 1), "b": b})
    g = check_pass(model, explicit_bias).graph
    np.testing.assert_array_equal(g.constants[g.nodes[0].inputs[2]], b)
