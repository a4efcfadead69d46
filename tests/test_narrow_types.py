"""Tensors of ONNX's narrow types: int4/uint4 (packed two to a byte), float8 and bfloat16.

onnxruntime runs models that hold them (weight-only int4 quantization writes blocked int4
DequantizeLinear weights; fp8 models write float8 ones), but its Python binding cannot be fed
such arrays one operator at a time. These models must compile, and simulate to onnxruntime's
outputs, like any other: the quantize/dequantize operators run in numpy (checked here against
onnxruntime itself), data movement runs on the storage bits, and program.npz round-trips the types.
"""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from helpers import cli as _cli
from acompile.onnx_exec import dequantize_linear, quantize_linear, run_node

K, N = 64, 32



def _model(nodes, inits, x_shape, opset=21, out_shape=None) -> onnx.ModelProto:
    g = h.make_graph(nodes, "narrow", [h.make_tensor_value_info("x", T.FLOAT, x_shape)],
                     [h.make_tensor_value_info("y", T.FLOAT, out_shape)], initializer=inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=10)


def _int4_blocked(rng):
    q = rng.integers(-8, 8, size=(K, N)).astype(ml_dtypes.int4)
    scale = (rng.random((K // 16, N)) * 0.1 + 0.01).astype(np.float32)
    return _model([h.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=0, block_size=16),
                   h.make_node("MatMul", ["x", "w"], ["y"])],
                  [nh.from_array(q, "wq"), nh.from_array(scale, "ws")], [4, K], out_shape=[4, N])


def _uint4_axis_zero_point(rng):
    q = rng.integers(0, 16, size=(K, N)).astype(ml_dtypes.uint4)
    zp = rng.integers(0, 16, size=N).astype(ml_dtypes.uint4)
    scale = (rng.random(N) * 0.1 + 0.01).astype(np.float32)
    return _model([h.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=1),
                   h.make_node("MatMul", ["x", "w"], ["y"])],
                  [nh.from_array(q, "wq"), nh.from_array(scale, "ws"), nh.from_array(zp, "wz")], [4, K],
                  out_shape=[4, N])


def _int4_conv_blocked(rng):
    q = rng.integers(-8, 8, size=(8, 32, 3, 3)).astype(ml_dtypes.int4)
    scale = (rng.random((8, 2, 3, 3)) * 0.1 + 0.01).astype(np.float32)
    return _model([h.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=1, block_size=16),
                   h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                  [nh.from_array(q, "wq"), nh.from_array(scale, "ws")], [1, 32, 6, 6])


def _int4_activations(rng):
    q = rng.integers(-8, 8, size=(K, N)).astype(ml_dtypes.int4)
    return _model([h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                   h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                   h.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=1),
                   h.make_node("MatMul", ["xd", "w"], ["y"])],
                  [nh.from_array(q, "wq"), nh.from_array((rng.random(N) * 0.05 + 0.01).astype(np.float32), "ws"),
                   nh.from_array(np.array(0.3, np.float32), "xs"), nh.from_array(np.array(0, ml_dtypes.int4), "xz")],
                  [4, K], out_shape=[4, N])


def _float8_qdq(rng):
    w = (rng.standard_normal((K, N)) * 4).astype(ml_dtypes.float8_e4m3fn)
    return _model([h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                   h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                   h.make_node("DequantizeLinear", ["wq", "ws"], ["w"]),
                   h.make_node("MatMul", ["xd", "w"], ["y"])],
                  [nh.from_array(w, "wq"), nh.from_array(np.array(0.05, np.float32), "ws"),
                   nh.from_array(np.array(0.02, np.float32), "xs"),
                   nh.from_array(np.array(0, ml_dtypes.float8_e4m3fn), "xz")], [4, K], opset=19, out_shape=[4, N])


def _bfloat16_weights(rng):
    w = rng.standard_normal((N, K)).astype(ml_dtypes.bfloat16)
    return _model([h.make_node("Reshape", ["wb", "shape"], ["wr"]), h.make_node("Cast", ["wr"], ["wf"], to=T.FLOAT),
                   h.make_node("Gemm", ["x", "wf"], ["y"], transB=1)],
                  [nh.from_array(w, "wb"), nh.from_array(np.array([N, K], np.int64), "shape")], [4, K], opset=19,
                  out_shape=[4, N])


def _contrib_int4(rng):
    """onnxruntime's quantizer writes com.microsoft QuantizeLinear/DequantizeLinear for int4 (QInt4)."""
    q = rng.integers(-8, 8, size=(K, N)).astype(ml_dtypes.int4)
    m = _model([h.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], domain="com.microsoft"),
                h.make_node("MatMul", ["x", "w"], ["y"])],
               [nh.from_array(q, "wq"), nh.from_array(np.array(0.05, np.float32), "ws"),
                nh.from_array(np.array(0, ml_dtypes.int4), "wz")], [4, K], opset=17, out_shape=[4, N])
    m.opset_import.append(h.make_opsetid("com.microsoft", 1))
    return m


MODELS = {"int4_blocked": _int4_blocked, "contrib_int4": _contrib_int4, "uint4_axis_zero_point": _uint4_axis_zero_point,
          "int4_conv_blocked": _int4_conv_blocked, "int4_activations": _int4_activations,
          "float8_qdq": _float8_qdq, "bfloat16_weights": _bfloat16_weights}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_compiles_and_simulates_as_onnxruntime_runs_it(name, tmp_path):
    model = MODELS[name](np.random.default_rng(0))
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal(x_shape).astype(np.float32))
    code, out, err = _cli("check", str(path), "--target", "isaac", "--format", "json")
    assert code == 0, out + err
    code, out, err = _cli("run", str(path), "--target", "isaac", "--input", str(tmp_path / "x.npy"), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["comparison"]["y"]["relative_error"] < 1e-5


def test_int4_model_integers_reach_the_crossbars(tmp_path):
    """int4 activations and per-channel int4 weights fit an 8-bit target: quantized mode keeps them exact."""
    path = tmp_path / "m.onnx"
    onnx.save(_int4_activations(np.random.default_rng(0)), str(path))
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((4, K)).astype(np.float32))
    code, out, err = _cli("run", str(path), "--target", "isaac", "--input", str(tmp_path / "x.npy"),
                          "--mode", "quantized", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["comparison"]["y"]["relative_error"] < 1e-5


def _ort_node(node: onnx.NodeProto, inits: list, out_type: int, opset: int = 21) -> np.ndarray:
    g = h.make_graph([node], "one", [], [h.make_tensor_value_info(node.output[0], out_type, None)], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=10)
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]


@pytest.mark.parametrize("dtype,axis,block", [(ml_dtypes.int4, 0, 16), (ml_dtypes.uint4, 1, 0), (ml_dtypes.int4, -1, 8),
                                               (np.int8, 1, 0), (ml_dtypes.uint4, 0, 0)])
def test_dequantize_matches_onnxruntime(dtype, axis, block):
    rng = np.random.default_rng(3)
    lo, hi = (-8, 8) if np.dtype(dtype).name.startswith("int") else (0, 16)
    x = rng.integers(lo, hi, size=(48, 24)).astype(dtype)
    if block:
        shape = list(x.shape)
        shape[axis] = -(-shape[axis] // block)
    else:
        shape = [x.shape[axis]] if axis == 1 or dtype == ml_dtypes.uint4 else []
    scale = (rng.random(shape) * 0.2 + 0.01).astype(np.float32)
    zp = rng.integers(lo, hi, size=shape).astype(dtype) if not block else None
    names = ["x", "s"] + (["z"] if zp is not None else [])
    inits = [nh.from_array(x, "x"), nh.from_array(scale, "s")] + ([nh.from_array(zp, "z")] if zp is not None else [])
    attrs = {"axis": axis, **({"block_size": block} if block else {})}
    want = _ort_node(h.make_node("DequantizeLinear", names, ["y"], **attrs), inits, T.FLOAT)
    got = dequantize_linear(x, scale, zp, axis, block)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(run_node("DequantizeLinear", attrs, [x, scale, zp], 1, 21)[0], want)


@pytest.mark.parametrize("dtype", [ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2])
def test_quantize_matches_onnxruntime(dtype):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((16, 12)) * 6).astype(np.float32)
    x[0, :4] = [0.25, 0.75, -0.25, 1e6]              # ties to even, and a value far outside the range
    scale = (rng.random(12) * 0.5 + 0.25).astype(np.float32)
    zp = np.zeros(12, dtype) if np.dtype(dtype).name.startswith("float") else \
        rng.integers(0 if "uint" in np.dtype(dtype).name else -2, 3, size=12).astype(dtype)
    # onnxruntime's Python binding cannot return these types: it reads the codes back through a
    # DequantizeLinear with scale 1 and zero point 0
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             h.make_node("DequantizeLinear", ["q", "one", "zero"], ["y"])]
    inits = [nh.from_array(x, "x"), nh.from_array(scale, "s"), nh.from_array(zp, "z"),
             nh.from_array(np.array(1, np.float32), "one"), nh.from_array(np.array(0, dtype), "zero")]
    g = h.make_graph(nodes, "qdq", [], [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21)], ir_version=10)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    got = quantize_linear(x, scale, zp, axis=1)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.astype(np.float32), want)
    np.testing.assert_array_equal(run_node("QuantizeLinear", {"axis": 1}, [x, scale, zp], 1, 21)[0].astype(np.float32),
                                  want)


def test_packed_int4_initializer_size_is_checked(tmp_path):
    """A packed int4 initializer holds half a byte an element: the right size loads, a short one is refused."""
    model = _int4_blocked(np.random.default_rng(0))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert _cli("check", str(path), "--target", "isaac")[0] == 0
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-1]
    onnx.save(model, str(path))
    code, out, err = _cli("check", str(path), "--target", "isaac")
    assert code == 2 and "holds 1023 bytes but its shape [64, 32] needs 1024" in out + err


def test_a_blocked_scale_of_the_wrong_shape_is_bad_input_naming_file_and_node(tmp_path):
    model = _int4_blocked(np.random.default_rng(0))
    model.graph.initializer[1].CopyFrom(nh.from_array(np.ones((3, N), np.float32), "ws"))   # 64 / 16 is 4 blocks
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    code, out, err = _cli("compile", str(path), "--target", "isaac", "-o", str(tmp_path / "out"))
    assert code == 2 and not (tmp_path / "out").exists()
    assert f"{path}: node 'DequantizeLinear_0' (DequantizeLinear)" in err and "blocked scale of shape [3, 32]" in err


def test_the_comparison_notes_when_onnxruntime_is_not_exact(tmp_path, monkeypatch):
    """onnxruntime's u8s8 MatMulInteger saturates on x86 CPUs without VNNI: run says so beside its figures
    (from the model's nodes: its weights are not read for that)."""
    from pathlib import Path
    from acompile.simulation import onnxruntime_saturates, reference_caveat
    g = h.make_graph([h.make_node("MatMulInteger", ["x", "w"], ["q"]), h.make_node("Cast", ["q"], ["y"], to=T.FLOAT)],
                     "g", [h.make_tensor_value_info("x", T.UINT8, [2, 2048])],
                     [h.make_tensor_value_info("y", T.FLOAT, [2, 3])],
                     [nh.from_array(np.full((2048, 3), 127, np.int8), "w")])
    path = tmp_path / "int.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 13)], ir_version=8), str(path))
    from acompile.frontend import protobuf
    with monkeypatch.context() as m:
        for owner, name in ((Path, "read_bytes"), (protobuf, "map_file")):
            m.setattr(owner, name, lambda *a, **k: pytest.fail("the model's weights were read"))
        note = reference_caveat(path)
    assert (note is not None) == onnxruntime_saturates()
    assert note is None or "MatMulInteger" in note
    onnx.save(_int4_blocked(np.random.default_rng(0)), str(tmp_path / "float.onnx"))
    assert reference_caveat(tmp_path / "float.onnx") is None


def test_sixteen_bit_integers_times_their_scales_are_recognised():
    """int16 weights near 32767 times a float32 scale come back within |q| * 2^-23 of whole numbers:
    they are still the model's integers (a fixed 1e-3 tolerance refused them)."""
    from acompile.passes import quantized_layers
    q = np.array([[32767, -32768, 12345, 1], [-32000, 31999, 7, 0]], np.float64)
    s = np.array([1.3e-5, 7.1e-4])
    w = (q * s[:, None]).astype(np.float32)
    assert quantized_layers._largest_integer(w, s) == 32768
    assert quantized_layers._largest_integer(w + np.float32(0.3) * s[:, None].astype(np.float32), s) is None
    # a row past the first piece that is not whole is found too (the matrix goes in pieces of rows)
    big = np.tile(w, (quantized_layers._CHUNK, 1))
    scales = np.tile(s, quantized_layers._CHUNK)
    assert quantized_layers._largest_integer(big, scales) == 32768
    big[-1, 2] += np.float32(0.3 * 7.1e-4)
    assert quantized_layers._largest_integer(big, scales) is None


def test_the_compile_says_why_blocked_or_float8_weights_are_requantized(tmp_path):
    for make, why in ((_int4_blocked, "blocked scales"), (_float8_qdq, "float8_e4m3fn weights are not integers")):
        path = tmp_path / "m.onnx"
        onnx.save(make(np.random.default_rng(0)), str(path))
        code, out, err = _cli("compile", str(path), "--target", "isaac", "-o", str(tmp_path / make.__name__))
        assert code == 0 and "quantized model: 1 layer(s)" in err and why in err, err
