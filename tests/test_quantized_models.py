"""Quantized ONNX models (tests/corpus.py) keep their own integer weights and scales on the crossbars.

QDQ, QOperator and dynamic-quantization models made by onnxruntime's quantization tool: every
Conv/Gemm/MatMul takes its weight scales (and input scale and zero point) from the model, and
quantized-mode simulation on an 8-bit target with a lossless ADC agrees with onnxruntime's
integer execution on >= 99% of top-1 predictions (docs/analog.md, "Quantized models").
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnx
import pytest

import corpus
from acompile.cli.app import main

QUANTIZED = ["q_mlp_qdq_tensor", "q_mlp_qdq_channel", "q_cnn_qdq_tensor", "q_cnn_qdq_channel", "q_mlp_qop",
             "q_cnn_qop", "q_mlp_dynamic", "q_cnn_dynamic"]
SAMPLES = 200


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _inputs(model: str, path, n: int, seed: int = 0) -> None:
    m = onnx.load(model, load_external_data=False)
    weights = {t.name for t in m.graph.initializer}
    vi = next(v for v in m.graph.input if v.name not in weights)
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
    shape[0] = n
    rng = np.random.default_rng(seed)
    x = rng.random(shape) if len(shape) == 4 else rng.standard_normal(shape)
    np.savez(path, **{vi.name: x.astype(np.float32)})


@pytest.mark.parametrize("name", QUANTIZED + [pytest.param("torch_mobilenet_qdq", marks=pytest.mark.slow)])
def test_model_scales_reproduce_onnxruntime(name, tmp_path):
    model = str(corpus.path(name))
    code, _, _ = _cli("compile", model, "--target", "isaac", "-q", "-o", str(tmp_path / "out"), "--emit", "program")
    assert code == 0
    layers = json.loads((tmp_path / "out" / "program.json").read_text())["layers"]
    assert layers and all(layer.get("model_quant", {}).get("input_bits") == 8 for layer in layers)
    _inputs(model, tmp_path / "in.npz", SAMPLES)
    code, out, _ = _cli("run", model, "--target", "isaac", "--set", "adc.bits=16", "--mode", "quantized",
                        "--input", str(tmp_path / "in.npz"), "--batch", str(SAMPLES), "--format", "json")
    assert code == 0
    (cmp,) = json.loads(out)["comparison"].values()
    assert cmp["top1_agreement"] >= 0.99, cmp


def test_zero_point_path_is_bit_exact_on_both_paths(tmp_path):
    """The first layer of the QDQ MLP streams x_q + 128 with zero point -4 (offset 124): the fast
    kernel and the step-by-step chain agree bit for bit, also with a lossy ADC."""
    model = str(corpus.path("q_mlp_qdq_tensor"))
    _inputs(model, tmp_path / "in.npz", 8, seed=1)
    results = []
    for path in ("fast", "reference"):
        res = tmp_path / f"{path}.npz"
        code, _, _ = _cli("run", model, "--target", "isaac", "--set", "adc.bits=6", "--mode", "quantized", "--path",
                          path, "--input", str(tmp_path / "in.npz"), "--batch", "8", "--result", str(res), "-q")
        assert code == 0
        results.append(dict(np.load(res)))
    assert results[0].keys() == results[1].keys()
    assert all(np.array_equal(results[0][k], results[1][k]) for k in results[0])


def test_fewer_target_bits_requantize_and_say_so(tmp_path):
    model = str(corpus.path("q_cnn_qdq_channel"))
    code, _, err = _cli("compile", model, "--target", "isaac", "--set", "precision.weight_bits=6", "-o",
                        str(tmp_path / "out"), "--emit", "program")
    assert code == 0
    notes = [line for line in err.splitlines() if "quantized model" in line]
    assert len(notes) == 1 and "6 weight bits: requantized" in notes[0]
    layers = json.loads((tmp_path / "out" / "program.json").read_text())["layers"]
    assert all("model_quant" not in layer for layer in layers)


def test_program_and_device_file_reproduce_the_model_scales(tmp_path):
    """program.json and the device file carry the model's scales: simulating the compiled folder
    gives the same outputs as ``run`` (which compiles in memory)."""
    model = str(corpus.path("q_mlp_qdq_tensor"))
    _inputs(model, tmp_path / "in.npz", 8, seed=2)
    out = tmp_path / "out"
    assert _cli("compile", model, "--target", "isaac", "--set", "adc.bits=6", "-q", "-o", str(out),
                "--emit", "program,device")[0] == 0
    assert _cli("simulate", str(out), "--input", str(tmp_path / "in.npz"), "--mode", "quantized",
                "--result", str(tmp_path / "sim.npz"), "-q")[0] == 0
    assert _cli("run", model, "--target", "isaac", "--set", "adc.bits=6", "--mode", "quantized", "--input",
                str(tmp_path / "in.npz"), "--batch", "8", "--result", str(tmp_path / "run.npz"), "-q")[0] == 0
    a, b = np.load(tmp_path / "sim.npz"), np.load(tmp_path / "run.npz")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
