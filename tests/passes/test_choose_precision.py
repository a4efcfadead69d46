"""choose_precision: the target's converter/cell settings on every layer, unsigned inputs where a
non-negative op feeds the layer, and as many physical columns as the encoded weights occupy."""

import numpy as np
from onnx import helper

from acompile.mapping import layer_matrix
from acompile.numerics import decode_weights, encode_weights, quantize_weights
from acompile.passes.precision import choose_precision
from frontend_passes import tiny_model, weights
from mapping_passes import after, conv_relu_linear


def test_spec_signedness_and_columns_follow_the_target():
    for target in ("isaac", "prime", "hermes"):
        state = after(conv_relu_linear(), choose_precision, target=target)
        t = state.target
        conv, fc = state.mapping.layers
        assert conv.input_signed and not fc.input_signed        # fc reads Relu's output (through Flatten)
        for layer in (conv, fc):
            spec = layer.spec
            assert (spec.weight_bits, spec.input_bits, spec.cell_bits, spec.rows, spec.signed_weights) == (
                t.precision.weight_bits, t.precision.input_bits, t.crossbar.cell_bits, t.crossbar.rows,
                t.crossbar.signed_weights)
            for g, m in enumerate(layer.matrices):
                q_w, _ = quantize_weights(layer_matrix(state.graph.constants, layer, g), spec.weight_bits)
                enc = encode_weights(q_w, spec)
                assert enc.levels.shape == (m.k_in, m.physical_cols)
                np.testing.assert_array_equal(decode_weights(enc, spec, m.n_out), q_w)


def test_a_declared_input_range_not_calibration_data_makes_the_first_layer_unsigned():
    model = tiny_model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], [("x", (2, 3))], [("y", (2, 4))],
                       {"w": weights()(4, 3)})
    signed = after(model, choose_precision).mapping.layers[0]
    calibrated = after(model, choose_precision, calibration={"x": np.abs(weights()(2, 3))}).mapping.layers[0]
    declared = after(model, choose_precision, input_ranges={"x": (0.0, 1.0)}).mapping.layers[0]
    assert signed.input_signed and calibrated.input_signed and not declared.input_signed
