"""calibrate: input scales from the calibration activations (a percentile of |x|) and ADC full scales
(worst case, or a percentile of the column currents); the quantized program then tracks onnxruntime."""

import numpy as np

from acompile.calibrate import calibrate
from acompile.numerics import input_scale
from acompile.target import load_target
from frontend_passes import ort_run
from helpers import simulate
from mapping_passes import after, conv_relu_linear, feeds, state_before


def test_scales_come_from_the_calibration_data_and_the_quantized_program_tracks_onnxruntime():
    model = conv_relu_linear()
    x = feeds(state_before(model, calibrate))
    lossless = load_target("isaac").with_overrides({"adc.bits": 10})     # resolves every current of 128 rows
    state = after(model, calibrate, target=lossless, calibration=x)
    conv, fc = state.mapping.layers
    spec = conv.spec
    assert conv.input_range == float(np.abs(x["x"]).max())          # isaac: percentile 100, the maximum
    assert conv.input_scale == input_scale(conv.input_range, spec.input_bits, True)
    assert 0 < fc.input_range and not fc.input_signed
    assert all(layer.adc_full_scale == layer.spec.worst_case_full_scale for layer in (conv, fc))
    got = simulate(state, x, mode="quantized")[0]
    want = ort_run(model, x)[0]
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


def test_a_calibrated_adc_range_is_below_the_worst_case():
    state = after(conv_relu_linear(), calibrate, target="prime")
    assert state.target.adc.range == "calibrated"
    for layer in state.mapping.layers:
        assert 1.0 <= layer.adc_full_scale < layer.spec.worst_case_full_scale and layer.input_scale > 0


def test_default_data_is_seeded():
    one, two = (after(conv_relu_linear(), calibrate, seed=3).mapping.layers[0] for _ in range(2))
    other = after(conv_relu_linear(), calibrate, seed=4).mapping.layers[0]
    assert one.input_scale == two.input_scale != other.input_scale



def test_activations_that_overflow_are_refused_naming_the_layer():
    """A weight near float32's top makes the next layer's inputs infinite on the default data:
    calibration names that layer (exit 2) rather than failing on a scale of inf."""
    import pytest
    from onnx import TensorProto, helper, numpy_helper

    from acompile.compiler import Options, compile_model
    from acompile.errors import InvalidDataError
    w1 = np.full((4, 8), 3e38, np.float32)
    w2 = np.ones((8, 2), np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
                           helper.make_node("MatMul", ["h", "w2"], ["y"], name="second")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidDataError, match=r"analog layer 'second' reach (inf|nan) on the default"):
        compile_model(model, load_target("isaac"), Options())


def test_a_nan_activation_is_kept_by_the_recorder():
    """max() would drop a NaN met after a number; the recorder keeps it, so calibration reports it."""
    from types import SimpleNamespace

    from acompile.calibrate import _Recorder
    rec = _Recorder(0, keep_values=False, keep_vectors=False)
    layer = SimpleNamespace(index=0)
    rec(layer, np.array([[1.0, -2.0]], np.float32))
    rec(layer, np.array([[np.nan, 0.5]], np.float32))
    rec(layer, np.array([[3.0]], np.float32))
    assert np.isnan(rec.maxima[0])
