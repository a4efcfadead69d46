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


def test_a_layer_read_by_several_nodes_is_signed_if_any_of_its_inputs_is():
    """An unrolled LSTM's recurrent projection reads the zero initial state first (provably >= 0), then
    signed hidden states: the layer, one set of crossbars for every step, takes signed inputs."""
    from acompile.passes.precision import non_negative_values
    from models import lstm_model
    state = after(lstm_model(), choose_precision)
    (layer,) = [layer for layer in state.mapping.layers if layer.uses > 1]
    inputs = [n.inputs[0] for n in state.graph.nodes if n.meta.get("layer") == layer.index]
    nonneg = non_negative_values(state.graph)
    assert len(inputs) == layer.uses and inputs[0] in nonneg and inputs[-1] not in nonneg
    assert layer.input_signed


def test_an_unrolled_lstm_simulates_its_signed_hidden_state():
    """Quantized mode on an LSTM without an initial state: within 16-bit rounding of onnxruntime."""
    import onnxruntime as ort
    from acompile.compiler import Options, compile_model
    from acompile.sim.runtime import Simulator, WeightsFromGraph
    from acompile.target import load_target
    from models import lstm_model
    model = lstm_model()
    x = np.random.default_rng(1).standard_normal((5, 1, 4)).astype(np.float32)
    compiled = compile_model(model, load_target("isaac"), Options(calibration={"input": x}))
    assert any(layer.uses > 1 for layer in compiled.mapping.layers)
    assert all(layer.input_signed for layer in compiled.mapping.layers if layer.uses > 1)
    weights = WeightsFromGraph(compiled.graph, compiled.mapping)
    (got,) = Simulator(compiled.graph, compiled.mapping, weights, mode="quantized").run({"input": x}).values()
    (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
