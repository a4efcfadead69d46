"""The test model zoo (tests/models.py) and the committed samples (samples/) are valid ONNX
that onnxruntime runs, built deterministically, and exercise what their names promise."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import models

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SAMPLE_MODELS = ["mlp", "cnn", "resblock", "digits"]
SAMPLE_FILES = [f"{n}.onnx" for n in SAMPLE_MODELS] + [
    "digits_test_x.npy", "digits_test_y.npy", "digits_calib.npy"]


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ir_version 3 models warn about initializers listed as inputs
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# --------------------------------------------------------------------------- every small model


@pytest.fixture(params=sorted(models.ALL_SMALL), scope="module")
def small(request):
    return request.param, models.ALL_SMALL[request.param]()


def test_small_model_passes_full_check(small):
    name, model = small
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 10, f"{name}: onnxruntime 1.32 reads ir_version <= 10"
    assert default_opset(model) == (9 if name.startswith("old_opset") else 17)
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names), f"{name}: node names empty or repeated"
    assert all(s.isascii() for s in names + [t.name for t in model.graph.initializer])


def test_small_model_runs_in_onnxruntime(small):
    name, model = small
    if any(n.domain == models.CUSTOM_DOMAIN for n in model.graph.node):
        pytest.skip("a custom op onnxruntime cannot run, by design")
    feeds = models.random_inputs(model, batch=3, seed=1)
    outs = session(model).run(None, feeds)
    for vi, out in zip(model.graph.output, outs):
        declared = [d.dim_value if d.HasField("dim_value") else 3
                    for d in vi.type.tensor_type.shape.dim]
        assert list(out.shape) == declared, f"{name}: output {vi.name}"
        assert np.isfinite(out).all(), f"{name}: non-finite output"
        assert np.abs(out).max() > 1e-3, f"{name}: output is all (near) zero"


@pytest.mark.parametrize("name", sorted(models.ALL_SMALL))
def test_small_builder_is_deterministic_and_seeded(name):
    build = models.ALL_SMALL[name]
    assert build.__doc__ and build.__doc__.strip(), f"{name} has no docstring"
    assert build().SerializeToString() == build().SerializeToString()
    other = build(seed=1)
    assert [t.raw_data for t in other.graph.initializer] != \
        [t.raw_data for t in build().graph.initializer]


# --------------------------------------------------------------------------- random_inputs


def test_random_inputs_fills_symbolic_dims_and_is_seeded():
    model = models.dynamic_batch_cnn()
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    a = models.random_inputs(model, batch=5, seed=7)
    b = models.random_inputs(model, batch=5, seed=7)
    assert list(a) == ["input"] and a["input"].shape == (5, 3, 8, 8)
    assert a["input"].dtype == np.float32
    assert 0.0 <= a["input"].min() and a["input"].max() < 1.0  # images: positive
    np.testing.assert_array_equal(a["input"], b["input"])
    c = models.random_inputs(model, batch=5, seed=8)
    assert not np.array_equal(a["input"], c["input"])


def test_random_inputs_skips_initializers_listed_as_inputs():
    model = models.old_opset_cnn(initializers_as_inputs=True)
    assert len(model.graph.input) == 1 + len(model.graph.initializer)
    assert model.ir_version == 3
    assert list(models.random_inputs(model)) == ["input"]


# --------------------------------------------------------------------------- each model's feature


def test_mlp_sizes_and_opset():
    model = models.mlp((4, 5, 6, 7), opset=13)
    assert default_opset(model) == 13
    assert ops(model) == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert all(attrs(n)["transB"] == 1 for n in model.graph.node if n.op_type == "Gemm")
    assert session(model).run(None, models.random_inputs(model))[0].shape == (2, 7)


def test_gemm_variants_cover_the_attributes():
    model = models.gemm_variants()
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    seen = set()
    for n in gemms:
        a = attrs(n)
        seen |= {k for k in ("transA", "transB") if a.get(k) == 1}
        seen |= {k for k in ("alpha", "beta") if a.get(k, 1.0) != 1.0}
        seen.add(f"C{shapes[n.input[2]]}" if len(n.input) > 2 else "noC")
    assert {"transA", "transB", "alpha", "beta", "C[12]", "C[1, 16]", "C[]", "noC"} <= seen


def test_matmul_models_put_the_constant_on_each_side():
    consts = {t.name for t in models.matmul_add().graph.initializer}
    mm = [n for n in models.matmul_add().graph.node if n.op_type == "MatMul"]
    assert mm and all(n.input[0] not in consts and n.input[1] in consts for n in mm)
    model = models.matmul_const_first()
    consts = {t.name for t in model.graph.initializer}
    (mm,) = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert mm.input[0] in consts and mm.input[1] == "input"
    assert len(model.graph.input[0].type.tensor_type.shape.dim) == 3


@pytest.mark.parametrize("build, want", [
    (models.small_cnn, {"Conv", "BatchNormalization", "Relu", "MaxPool", "GlobalAveragePool",
                        "Flatten", "Gemm"}),
    (models.residual_block, {"Conv", "BatchNormalization", "Add", "Relu"}),
    (models.per_channel_mul_add_after_conv, {"Conv", "Mul", "Add"}),
    (models.transformer_block, {"LayerNormalization", "MatMul", "Reshape", "Transpose", "Div",
                                "Softmax", "Erf", "Mul", "Add"}),
    (models.weights_via_constant_nodes, {"Constant", "Reshape", "Transpose", "Identity", "Cast"}),
    (models.unsupported_op_model, {"TopK"}),
    (models.lstm_model, {"LSTM"}),
    (models.old_opset_cnn, {"Conv", "BatchNormalization", "Flatten", "Gemm"}),
])
def test_model_contains_its_ops(build, want):
    assert want <= set(ops(build()))


def test_conv_attributes():
    (g,) = [n for n in models.grouped_conv(groups=4).graph.node if n.op_type == "Conv"]
    assert attrs(g)["group"] == 4
    dw = [attrs(n) for n in models.depthwise_conv().graph.node if n.op_type == "Conv"]
    assert dw[0]["group"] == 8 and dw[1]["group"] == 1 and dw[1]["kernel_shape"] == [1, 1]
    (d,) = [attrs(n) for n in models.dilated_conv().graph.node if n.op_type == "Conv"]
    assert d["dilations"] == [2, 2] and d["pads"] == [2, 2, 2, 2]
    (s,) = [attrs(n) for n in models.strided_conv_autopad().graph.node if n.op_type == "Conv"]
    assert s["auto_pad"] == b"SAME_UPPER" and s["strides"] == [2, 2]
    (c,) = [attrs(n) for n in models.conv_1d().graph.node if n.op_type == "Conv"][:1]
    assert c["kernel_shape"] == [3]
    for build, groups in ((models.conv_transpose, 1), (models.conv_transpose_grouped, 2)):
        (t,) = [attrs(n) for n in build().graph.node if n.op_type == "ConvTranspose"]
        assert t["group"] == groups and t["strides"] == [2, 2] and t["output_padding"] == [1, 1]


def test_transformer_attention_multiplies_two_activations():
    model = models.transformer_block(d=32, heads=2, seq=8)
    consts = {t.name for t in model.graph.initializer}
    mm = [n for n in model.graph.node if n.op_type == "MatMul"]
    dynamic = [n for n in mm if not (set(n.input) & consts)]
    assert len(dynamic) == 2 and len(mm) == 8  # Q.K^T, P.V; Q, K, V, O, MLP up and down


def test_old_opset_cnn_is_old():
    model = models.old_opset_cnn()
    assert default_opset(model) == 9 and model.ir_version == 4


# --------------------------------------------------------------------------- large models


@pytest.mark.slow
def test_resnet50_like_has_resnet50_size():
    t0 = time.perf_counter()
    model = models.resnet50_like()
    build_s = time.perf_counter() - t0
    n = models.weight_count(model)
    assert 22.5e6 <= n <= 27.5e6, f"{n=}"
    assert ops(model).count("Conv") == 53 and ops(model).count("Add") == 16
    assert ops(model).count("Gemm") == 1
    assert build_s < 15, f"resnet50_like took {build_s:.1f} s to build"


@pytest.mark.slow
def test_resnet50_like_runs_in_onnxruntime():
    model = models.resnet50_like()
    (out,) = session(model).run(None, models.random_inputs(model))
    assert out.shape == (1, 1000) and np.isfinite(out).all()


@pytest.mark.slow
@pytest.mark.parametrize("build, low, high", [
    (models.vgg_like, 130e6, 150e6),
    (models.big_mlp, 53e6, 54e6),
])
def test_large_weight_counts(build, low, high):
    model = build(check=False)
    assert low <= models.weight_count(model) <= high


# --------------------------------------------------------------------------- samples/


@pytest.mark.parametrize("name", SAMPLE_MODELS)
def test_sample_model_is_plain_opset17(name):
    model = onnx.load(SAMPLES / f"{name}.onnx", load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert default_opset(model) == 17 and model.ir_version in (8, 9)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    names = [n.name for n in model.graph.node] + [t.name for t in model.graph.initializer]
    assert all(s.isascii() for s in names)
    feeds = models.random_inputs(model, batch=2)
    assert np.isfinite(session(model).run(None, feeds)[0]).all()


def test_digits_sample_is_a_real_classifier():
    x = np.load(SAMPLES / "digits_test_x.npy")
    y = np.load(SAMPLES / "digits_test_y.npy")
    calib = np.load(SAMPLES / "digits_calib.npy")
    assert x.dtype == np.float32 and y.dtype == np.int64 and calib.dtype == np.float32
    assert x.shape[1] == 64 and 200 <= len(x) == len(y) and calib.shape == (100, 64)
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(np.unique(y)) == set(range(10))
    sess = session(onnx.load(SAMPLES / "digits.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["input"]
    logits = sess.run(None, {"input": x})[0]
    assert logits.shape == (len(x), 10)
    assert (logits.argmax(1) == y).mean() > 0.93


def test_samples_are_small():
    total = sum((SAMPLES / f).stat().st_size for f in SAMPLE_FILES)
    assert total < 2_000_000, f"samples/ holds {total} bytes"


@pytest.mark.slow
def test_make_samples_reproduces_the_committed_files(tmp_path):
    proc = subprocess.run([sys.executable, str(SAMPLES / "make_samples.py"), "--out-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "digits.onnx: float accuracy" in proc.stdout
    for f in SAMPLE_FILES:
        assert (tmp_path / f).read_bytes() == (SAMPLES / f).read_bytes(), f
