"""lower_analog: one layer per analog weight, its matrices in im2col order and its geometry; the
matrices times the vectors the geometry addresses reproduce the ONNX operator (onnxruntime)."""

import math

import numpy as np
import pytest
from onnx import helper

from acompile.errors import InvalidModelError
from acompile.mapping import ConvGeometry, layer_matrix
from acompile.passes.lower import lower_analog
from acompile.sim.vectors import from_vectors, to_vectors
import models
from frontend_passes import ort_run, tiny_model, weights
from mapping_passes import after, feeds


def _conv(op, x_shape, w_shape, y_shape, **attrs):
    w = weights(1)
    return tiny_model([helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)], [("x", x_shape)], [("y", y_shape)],
                      {"w": w(*w_shape), "b": w(w_shape[1] * attrs.get("group", 1) if op == "ConvTranspose"
                                                else w_shape[0])})


CASES = {
    "conv": _conv("Conv", (2, 4, 6, 6), (6, 4, 3, 3), (2, 6, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1]),
    "grouped_conv": _conv("Conv", (1, 4, 5, 5), (6, 2, 3, 3), (1, 6, 3, 3), group=2),
    "same_upper_dilated": _conv("Conv", (1, 3, 7, 7), (4, 3, 3, 3), (1, 4, 7, 7), auto_pad="SAME_UPPER",
                                dilations=[1, 1]),
    "conv_transpose": _conv("ConvTranspose", (1, 4, 3, 3), (4, 3, 2, 2), (1, 6, 6, 6), strides=[2, 2], group=2),
    "linear": tiny_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], [("x", (3, 5))],
                         [("y", (3, 7))], {"w": weights(2)(7, 5), "b": weights(3)(7)}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matrices_times_vectors_reproduce_the_operator(name):
    model = CASES[name]
    state = after(model, lower_analog)
    x = feeds(state)["x"]
    (layer,) = state.mapping.layers
    assert isinstance(layer.geometry, ConvGeometry) and layer.geometry.input_shape == x.shape
    v = to_vectors(x, layer.op_type, layer.geometry, layer.groups)
    assert v.shape == (layer.n_vec, layer.groups, layer.matrices[0].k_in)
    out = np.stack([v[:, g] @ layer_matrix(state.graph.constants, layer, g).T.astype(np.float64)
                    for g in range(layer.groups)], axis=1)
    y = from_vectors(out, state.graph.constants[layer.bias], layer.op_type, layer.geometry, layer.groups)
    np.testing.assert_allclose(y, ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    per_out = math.prod(layer.geometry.kernel) if layer.op_type == "ConvTranspose" else 1   # col2im columns
    assert sum(m.n_out for m in layer.matrices) == layer.out_channels * per_out
    assert [n.meta.get("layer") for n in state.graph.nodes if n.kind == "analog"] == [0]


def test_grouped_conv_has_one_matrix_per_group():
    layer = after(CASES["grouped_conv"], lower_analog).mapping.layers[0]
    assert [(m.group, m.n_out, m.k_in) for m in layer.matrices] == [(0, 3, 2 * 9), (1, 3, 2 * 9)]
    assert layer.n_vec == 1 * 3 * 3 and layer.geometry.pads == (0, 0, 0, 0)


def test_time_steps_sharing_a_weight_share_one_layer():
    state = after(models.recurrent("RNN", hidden=4, inputs=3, seq=3, batch=2), lower_analog)
    uses = {}
    for n in state.graph.nodes:
        if n.kind == "analog":
            uses.setdefault(n.meta["layer"], []).append(n.name)
    shared = [layer for layer in state.mapping.layers if layer.uses > 1]
    assert shared and all(layer.uses == len(uses[layer.index]) == 3 and layer.n_vec == 3 * 2 for layer in shared)


def test_the_mapping_records_the_target_fabric():
    state = after(CASES["conv"], lower_analog, target="puma")
    f, t = state.mapping.fabric, state.target
    assert (f.rows, f.cols, f.tiles_per_chip) == (t.crossbar.rows, t.crossbar.cols, t.organisation.tiles_per_chip)
    assert len(state.mapping.blocks) == 0 and "mapping" in state.facts


def test_non_finite_weights_are_refused():
    model = tiny_model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], [("x", (1, 2))], [("y", (1, 2))],
                       {"w": np.array([[1, np.nan], [0, 1]], np.float32)})
    with pytest.raises(InvalidModelError, match="NaN"):
        after(model, lower_analog)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_every_non_finite_weight_is_found_whatever_its_chunk(bad):
    from acompile.passes.lower import _all_finite
    w = np.ones((7, 5), np.float32)
    assert _all_finite(w, step=4) and _all_finite(w[:0])
    for i in (0, 3, 4, 34):         # first, last and first of a chunk, the very last
        x = w.copy()
        x.flat[i] = bad
        assert not _all_finite(x, step=4) and not _all_finite(x)
