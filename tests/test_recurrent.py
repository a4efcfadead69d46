"""LSTM, GRU and RNN: unrolled onto shared crossbars, checked against onnxruntime."""

import numpy as np
import onnx
import pytest

import models
from helpers import compiled, ort_outputs, simulate

VARIANTS = [{}, {"direction": "bidirectional"}, {"direction": "reverse"}, {"initial_state": True, "clip": 0.5},
            {"linear_before_reset": 1}, {"peepholes": True, "clip": 2.0, "initial_state": True}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "plain")
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_unrolled_recurrent_layer_matches_onnxruntime(op, variant):
    model = models.recurrent(op, **variant)
    feeds = models.random_inputs(model, batch=2)
    comp = compiled(model)
    for got, want in zip(simulate(comp, feeds), ort_outputs(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_batch_first_layout_matches_the_sequence_first_model(op):
    # onnxruntime has no layout=1 kernels, so compare with the layout-0 model on transposed data
    x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
    want = ort_outputs(models.recurrent(op, direction="bidirectional"), {"input": x})
    got = simulate(compiled(models.recurrent(op, direction="bidirectional", layout=1)),
                   {"input": np.ascontiguousarray(x.transpose(1, 0, 2))})
    np.testing.assert_allclose(got[0], want[0].transpose(2, 0, 1, 3), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1].transpose(1, 0, 2), rtol=1e-4, atol=1e-6)


def test_time_steps_share_one_set_of_crossbars():
    seq = 7
    comp = compiled(models.recurrent("LSTM", seq=seq, hidden=16))
    layers = comp.mapping.layers
    assert [l.uses for l in layers] == [1, seq]                 # input projection, recurrent matrix
    assert [l.matrices[0].n_out for l in layers] == [64, 64]
    recurrent = comp.cost["layers"][1]
    assert recurrent["counts"]["input_vectors"] == seq * 2      # every step, both batch rows
    bars_one_step = len(compiled(models.recurrent("LSTM", seq=1, hidden=16)).mapping.crossbars)
    assert len(comp.mapping.crossbars) == bars_one_step


def test_quantized_recurrent_layer_runs_fast_and_reference_alike():
    model = models.recurrent("GRU", seq=3)
    feeds = models.random_inputs(model, batch=2)
    comp = compiled(model, "prime")
    for a, b in zip(simulate(comp, feeds, mode="quantized"), simulate(comp, feeds, mode="quantized", path="reference")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("layout", [0, 1])
def test_an_empty_sequence_gives_an_empty_output_and_the_initial_states(op, layout):
    # onnxruntime's kernels leave the states of an empty sequence uninitialised: the answer is the definition,
    # zero steps from the initial state
    model = models.recurrent(op, seq=0, initial_state=True, direction="bidirectional", layout=layout)
    for value in (*model.graph.input, *model.graph.output[:1]):        # a model of any length, run at 0
        value.type.tensor_type.shape.dim[1 if layout else 0].dim_param = "T"
    shape = (2, 0, 4) if layout else (0, 2, 4)
    comp = compiled(model, input_shapes={"input": shape})
    got = simulate(comp, {"input": np.zeros(shape, np.float32)})
    initial = {i.name: i for i in model.graph.initializer}
    assert got[0].shape == ((2, 0, 2, 8) if layout else (0, 2, 2, 8))
    for value, name in zip(got[1:], ["h0", "c0"]):
        want = onnx.numpy_helper.to_array(initial[name])
        np.testing.assert_array_equal(value, want.transpose(1, 0, 2) if layout else want)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_sequence_lens_shorter_than_the_sequence_match_onnxruntime(op, direction):
    """Steps past a row's length keep its state and write zeros; a reverse direction starts at the row's
    last step. Lengths as a graph input (a padded batch, piper's tashkeel GRUs) and as a constant."""
    lens = np.array([5, 2, 1], np.int32)
    model = models.recurrent(op, direction=direction, batch=3, initial_state=True, sequence_lens="seq_lens")
    feeds = {"input": models.random_inputs(model, batch=3)["input"], "seq_lens": lens}
    comp = compiled(model)
    want = ort_outputs(model, feeds)
    for got_outputs in (simulate(comp, feeds), simulate(compiled(models.recurrent(
            op, direction=direction, batch=3, initial_state=True, sequence_lens=lens)), {"input": feeds["input"]})):
        for got, expected in zip(got_outputs, want):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert np.all(want[0][2:, :, 1] == 0) and np.all(want[0][1:, :, 2] == 0)     # the padding, for the record
    quantized = [simulate(comp, feeds, mode="quantized", path=path) for path in ("fast", "reference")]
    for a, b in zip(*quantized):
        np.testing.assert_array_equal(a, b)
