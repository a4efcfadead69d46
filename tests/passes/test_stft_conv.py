"""stft_conv: an STFT with a constant window, frame length and step runs on crossbars as a strided Conv1d of
the windowed DFT basis, and gives onnxruntime's spectra (and the log-mel features after them)."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import compiled, ort_outputs, simulate

RNG = np.random.default_rng(4)


def _stft(length=16, step=4, window="hann", onesided=1, given_length=False, mel=False, samples=80, rank=3):
    inits = [numpy_helper.from_array(np.array(step, np.int64), "step")]
    names = ["signal", "step", "", ""]
    if window == "hann":
        inits.append(numpy_helper.from_array(np.hanning(length + 1)[:-1].astype(np.float32), "window"))
        names[2] = "window"
    if given_length or window is None:
        inits.append(numpy_helper.from_array(np.array(length, np.int64), "length"))
        names[3] = "length"
    while not names[-1]:
        names.pop()
    nodes = [helper.make_node("STFT", names, ["spec" if mel else "y"], "stft", onesided=onesided)]
    if mel:     # power spectrum, then a mel filterbank and a log: a speech front end
        bins = length // 2 + 1
        inits += [numpy_helper.from_array(np.array([-1], np.int64), "last"),
                  numpy_helper.from_array(np.abs(RNG.standard_normal((bins, 6))).astype(np.float32), "mel"),
                  numpy_helper.from_array(np.array(1e-6, np.float32), "floor")]
        nodes += [helper.make_node("Mul", ["spec", "spec"], ["sq"]),
                  helper.make_node("ReduceSum", ["sq", "last"], ["power"], keepdims=0),
                  helper.make_node("MatMul", ["power", "mel"], ["banks"]),
                  helper.make_node("Add", ["banks", "floor"], ["floored"]),
                  helper.make_node("Log", ["floored"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("signal", TensorProto.FLOAT,
                                                                         [2, samples, 1][:rank])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


CASES = {"hann": {}, "two_sided": {"onesided": 0}, "rectangular": {"window": None},
         "length_and_window": {"given_length": True, "step": 5}, "one_frame": {"samples": 16},
         "log_mel": {"mel": True}, "signal_of_rank_2": {"rank": 2}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_stft_with_a_constant_window_runs_on_crossbars_as_onnxruntime_computes_it(case):
    model = _stft(**CASES[case])
    c = compiled(model)
    assert c.mapping.layers[0].op_type == "Conv" and not [n for n in c.graph.nodes if n.op_type == "STFT"]
    shape = (2, CASES[case].get("samples", 80), 1)[:CASES[case].get("rank", 3)]
    feeds = {"signal": RNG.standard_normal(shape).astype(np.float32)}
    (got,), (want,) = simulate(c, feeds), ort_outputs(model, feeds)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_an_stft_whose_window_is_data_stays_digital():
    model = _stft()
    model.graph.input.append(helper.make_tensor_value_info("window", TensorProto.FLOAT, [16]))
    del model.graph.initializer[1]
    c = compiled(model)
    assert not c.mapping.layers and [n.op_type for n in c.graph.nodes if n.op_type == "STFT"] == ["STFT"]
