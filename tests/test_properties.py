"""Property-based tests (hypothesis): random small valid graphs, and random damage to a valid model.

* A random graph built from supported operators (Conv, Gemm, MatMul with a
  constant, Relu, Add, MaxPool, Concat, Reshape, Transpose, Softmax, Flatten)
  compiles, compiles to the same bytes twice (two OUT folders), and simulates in
  ideal mode to onnxruntime's output (rtol 1e-4).
* A valid model with one protobuf field changed (a dimension, an attribute, a
  data type, an op type, a name, an input) or one byte flipped, inserted or
  removed either still compiles or meets the error contract: exit 1 or 2, one
  line naming the problem, no traceback, OUT untouched.

Structure comes from hypothesis; weight and input values from a numpy generator
seeded by a drawn integer. The default profile keeps example counts small; the
``slow`` tests rerun both properties with many more examples.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import bad_inputs as bi

FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LONG = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
TARGETS = ("isaac", "puma", "prime")
BATCH = 2
COMPARED_FILES = ("program.json", "program.npz", "device.acdev", "report.json")


# ---------------------------------------------------------------------------
# random valid graphs
# ---------------------------------------------------------------------------

class _Graph:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, array) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, shape, fan_in: int) -> str:
        w = self.rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2.0 / max(fan_in, 1)))
        return self.const(w)

    def op(self, op_type: str, inputs, **attrs) -> str:
        out = self.name(op_type.lower() + "_")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out + "_node", **attrs))
        return out


def _image_step(g: _Graph, x: str, shape: list[int], choice: int, a: int, b: int):
    """One operator on an [N, C, H, W] tensor; returns (output, shape, still an image)."""
    n, c, h, w = shape
    if choice == 0:   # Conv
        k = min(1 + a % 3, h, w)
        pad = b % 2 if k > 1 else 0
        stride = 1 + (a // 3) % 2 if h >= 4 and w >= 4 else 1
        groups = c if (b // 2) % 3 == 0 and c > 1 else 1
        c_out = c * (1 + b % 2) if groups > 1 else 1 + (a * 7 + b) % 8
        inputs = [x, g.weight([c_out, c // groups, k, k], c // groups * k * k)]
        if b % 3:
            inputs.append(g.const(g.rng.standard_normal(c_out).astype(np.float32) * np.float32(0.1)))
        y = g.op("Conv", inputs, kernel_shape=[k, k], pads=[pad] * 4, strides=[stride] * 2, group=groups)
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        return y, [n, c_out, ho, wo], True
    if choice == 1:
        return g.op("Relu", [x]), shape, True
    if choice == 2 and h >= 2 and w >= 2:   # MaxPool 2x2
        return g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), [n, c, h // 2, w // 2], True
    if choice == 3:   # Add: a per-channel constant, or the tensor to itself through a Relu (a residual)
        other = g.const(g.rng.standard_normal([c, 1, 1]).astype(np.float32)) if a % 2 else g.op("Relu", [x])
        return g.op("Add", [x, other]), shape, True
    if choice == 4:   # Concat of two branches along channels
        other = g.op("Conv", [x, g.weight([1 + a % 3, c, 1, 1], c)], kernel_shape=[1, 1])
        return g.op("Concat", [x, other], axis=1), [n, c + 1 + a % 3, h, w], True
    if choice == 5:   # Transpose H and W
        return g.op("Transpose", [x], perm=[0, 1, 3, 2]), [n, c, w, h], True
    # to a vector: Flatten or Reshape
    if a % 2:
        return g.op("Flatten", [x], axis=1), [n, c * h * w], False
    return g.op("Reshape", [x, g.const(np.array([n, c * h * w], np.int64))]), [n, c * h * w], False


def _vector_step(g: _Graph, x: str, shape: list[int], choice: int, a: int, b: int):
    """One operator on an [N, F] tensor; returns (output, shape)."""
    n, f = shape
    k = 1 + (a * 5 + b) % 24
    if choice == 0:   # Gemm, with or without bias / transposed weight / alpha
        trans = b % 2
        w = g.weight([k, f] if trans else [f, k], f)
        inputs = [x, w] + ([g.const(g.rng.standard_normal(k).astype(np.float32) * np.float32(0.1))] if a % 2 else [])
        return g.op("Gemm", inputs, transB=trans, alpha=[1.0, 0.5][b // 2 % 2]), [n, k]
    if choice == 1:   # MatMul with a constant, then maybe an Add of a bias
        y = g.op("MatMul", [x, g.weight([f, k], f)])
        if b % 2:
            y = g.op("Add", [y, g.const(g.rng.standard_normal(k).astype(np.float32))])
        return y, [n, k]
    if choice == 2:
        return g.op("Relu", [x]), shape
    if choice == 3:
        return g.op("Softmax", [x], axis=-1), shape
    if choice == 4:   # Concat with a Relu branch
        return g.op("Concat", [x, g.op("Relu", [x])], axis=1), [n, 2 * f]
    if choice == 5 and f % 2 == 0:   # Reshape -> Transpose -> Reshape: a permutation of features
        y = g.op("Reshape", [x, g.const(np.array([n, 2, f // 2], np.int64))])
        y = g.op("Transpose", [y], perm=[0, 2, 1])
        return g.op("Reshape", [y, g.const(np.array([n, f], np.int64))]), shape
    return g.op("Relu", [x]), shape


@st.composite
def graphs(draw):
    """(ModelProto, feeds) of a random valid graph; at least one analog layer."""
    seed = draw(st.integers(0, 2**31 - 1))
    g = _Graph(seed)
    image = draw(st.booleans())
    if image:
        shape = [BATCH, draw(st.integers(1, 4)), draw(st.integers(3, 8)), draw(st.integers(3, 8))]
    else:
        shape = [BATCH, draw(st.integers(1, 32))]
    x, in_shape = "input", list(shape)
    steps = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 99), st.integers(0, 99)), min_size=1,
                          max_size=6))
    analog = False
    for choice, a, b in steps:
        if image:
            x, shape, image = _image_step(g, x, shape, choice, a, b)
            analog |= choice in (0, 4)
        else:
            x, shape = _vector_step(g, x, shape, choice % 6, a, b)
            analog |= choice % 6 in (0, 1)
    if not analog:   # make sure something lands on crossbars
        if image:
            x, shape = g.op("Flatten", [x], axis=1), [shape[0], int(np.prod(shape[1:]))]
        x, shape = _vector_step(g, x, shape, 0, 1, 1)
    out = g.op("Identity", [x])
    graph = helper.make_graph(g.nodes, "random", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    feeds = {"input": g.rng.standard_normal(in_shape).astype(np.float32)}
    return model, feeds


def _onnxruntime(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _compile_cli(model_path: Path, target: str, out: Path, extra=()) -> int:
    from acompile.cli import main
    return main(["compile", str(model_path), "-t", target, "-o", str(out), "-q", *extra])


def check_random_graph(model: onnx.ModelProto, feeds: dict, target: str) -> None:
    import acompile
    with tempfile.TemporaryDirectory(prefix="acompile-prop-") as tmp:
        tmp = Path(tmp)
        path = tmp / "model.onnx"
        path.write_bytes(model.SerializeToString())
        np.save(tmp / "calib.npy", feeds["input"])
        # two compiles into two folders: the same bytes
        for out in ("a", "b"):
            rc = _compile_cli(path, target, tmp / out)
            assert rc == 0, f"compile failed (exit {rc}) for a valid random graph"
        for name in COMPARED_FILES:
            assert (tmp / "a" / name).read_bytes() == (tmp / "b" / name).read_bytes(), f"{name} differs"
        # ideal mode from the written program reproduces onnxruntime
        got = acompile.simulate(tmp / "a", feeds, mode="ideal")
        ref = _onnxruntime(model, feeds)
        name = model.graph.output[0].name
        scale = max(1.0, float(np.max(np.abs(ref[0]))))
        np.testing.assert_allclose(got[name], ref[0], rtol=1e-4, atol=1e-5 * scale)


@FAST
@given(graphs(), st.sampled_from(TARGETS))
def test_random_graphs_compile_deterministically_and_match_onnxruntime(case, target):
    model, feeds = case
    check_random_graph(model, feeds, target)


@pytest.mark.slow
@LONG
@given(graphs(), st.sampled_from(TARGETS))
def test_random_graphs_fuzz(case, target):
    model, feeds = case
    check_random_graph(model, feeds, target)


# ---------------------------------------------------------------------------
# one field (or byte) of a valid model changed
# ---------------------------------------------------------------------------

def _base_models() -> list[onnx.ModelProto]:
    conv = bi._graph_model(
        [helper.make_node("Conv", ["input", "W"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
         helper.make_node("Gemm", ["f", "W2", "B2"], ["output"], name="fc", transB=1)],
        [bi._vi("input", ["N", 2, 6, 6])], [bi._vi("output", ["N", 5])],
        [numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32), "W"),
         numpy_helper.from_array(np.random.default_rng(1).standard_normal((5, 36)).astype(np.float32), "W2"),
         numpy_helper.from_array(np.zeros(5, np.float32), "B2")])
    return [bi.mlp_model(), conv]


BASES = [m.SerializeToString() for m in _base_models()]
FIELD_MUTATIONS = ("dim", "attr_int", "attr_ints", "data_type", "op_type", "input_name", "output_name",
                   "drop_node", "drop_initializer", "opset", "ir_version", "elem_type", "raw_byte", "dims")


def _mutate_field(model: onnx.ModelProto, kind: str, pick: int, value: int) -> None:
    g = model.graph
    node = g.node[pick % len(g.node)]
    init = g.initializer[pick % len(g.initializer)]
    huge = [0, -1, 1, 2, 7, 2**31 - 1, 2**40, 2**62, -2**63][value % 9]
    if kind == "dim":
        vi = list(g.input) + list(g.output)
        dims = vi[pick % len(vi)].type.tensor_type.shape.dim
        if dims:
            d = dims[value % len(dims)]
            d.Clear()
            d.dim_value = huge
    elif kind == "dims" and init.dims:
        init.dims[value % len(init.dims)] = huge
    elif kind in ("attr_int", "attr_ints") and node.attribute:
        a = node.attribute[value % len(node.attribute)]
        if a.type == onnx.AttributeProto.INT:
            a.i = huge
        elif a.type == onnx.AttributeProto.INTS and a.ints:
            a.ints[value % len(a.ints)] = huge
        else:
            a.type = onnx.AttributeProto.AttributeType.Value("INTS") if kind == "attr_ints" else a.type
    elif kind == "data_type":
        init.data_type = value % 30
    elif kind == "op_type":
        node.op_type = ["Relu", "Conv", "Gemm", "MatMul", "Loop", "If", "Unknown", "", "Softmax"][value % 9]
    elif kind == "input_name" and node.input:
        node.input[value % len(node.input)] = ["", "input", "output", "nowhere", node.output[0]][value % 5]
    elif kind == "output_name":
        node.output[0] = ["input", "", "output", "W1", "dup"][value % 5]
    elif kind == "drop_node":
        del g.node[pick % len(g.node)]
    elif kind == "drop_initializer":
        del g.initializer[pick % len(g.initializer)]
    elif kind == "opset":
        model.opset_import[0].version = [0, 1, 6, 7, 12, 13, 16, 18, 21, 99][value % 10]
    elif kind == "ir_version":
        model.ir_version = [0, 1, 3, 7, 9, 10, 11, 99][value % 8]
    elif kind == "elem_type":
        vi = list(g.input) + list(g.output)
        vi[pick % len(vi)].type.tensor_type.elem_type = value % 30
    elif kind == "raw_byte" and init.raw_data:
        raw = bytearray(init.raw_data)
        raw[value % len(raw)] = 0xFF     # 0xFF in the top byte of a float32: NaN
        init.raw_data = bytes(raw)


def _mutate_bytes(data: bytes, how: int, pos: int, value: int) -> bytes:
    pos %= len(data)
    if how == 0:
        return data[:pos] + bytes([data[pos] ^ (1 << (value % 8))]) + data[pos + 1:]
    if how == 1:
        return data[:pos] + bytes([value % 256]) + data[pos:]
    if how == 2:
        return data[:pos] + data[pos + 1:]
    return data[:pos]


def check_mutant(data: bytes, capfd_reader) -> None:
    """Compile the mutant into an OUT that holds a previous compile: success, or the error contract."""
    from acompile.cli import main
    with tempfile.TemporaryDirectory(prefix="acompile-mut-") as tmp:
        tmp = Path(tmp)
        path = tmp / "model.onnx"
        path.write_bytes(data)
        out = tmp / "OUT"
        (tmp / "good.onnx").write_bytes(BASES[0])
        assert main(["compile", str(tmp / "good.onnx"), "-t", "isaac", "-o", str(out), "-q"]) == 0
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        capfd_reader()
        rc = main(["compile", str(path), "-t", "isaac", "-o", str(out)])
        _, err = capfd_reader()
        assert "Traceback" not in err
        assert rc in (0, 1, 2), f"exit {rc}: {err}"
        if rc:
            lines = err.strip("\n").split("\n")
            assert len(lines) == 1 and lines[0].startswith("acompile: error: "), err
            assert not re.search(r"[\x00-\x1f\x7f]", lines[0]), lines[0]
            assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "a failing run changed OUT"
        assert sorted(os.listdir(tmp)) == ["OUT", "good.onnx", "model.onnx"], os.listdir(tmp)


@pytest.fixture
def limited(monkeypatch):
    """In-process runs: a 64 MiB tensor limit keeps whatever a mutant asks for small."""
    monkeypatch.setenv("ACOMPILE_MAX_TENSOR_MB", "64")


def _read(capfd):
    def reader():
        captured = capfd.readouterr()
        return captured.out, captured.err
    return reader


MUTATION = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(FIELD_MUTATIONS), st.integers(0, 50), st.integers(0, 1000)),
    st.tuples(st.just("bytes"), st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 255)),
)


def _apply(base: bytes, mutation) -> bytes:
    kind, a, b, c = mutation
    if kind == "bytes":
        return _mutate_bytes(base, a, b, c)
    model = onnx.ModelProto()
    model.ParseFromString(base)
    _mutate_field(model, a, b, c)
    return model.SerializeToString()


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(range(len(BASES))), MUTATION)
def test_one_changed_field_still_works_or_meets_the_contract(limited, capfd, base, mutation):
    check_mutant(_apply(BASES[base], mutation), _read(capfd))


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(range(len(BASES))), MUTATION)
def test_mutation_fuzz(limited, capfd, base, mutation):
    check_mutant(_apply(BASES[base], mutation), _read(capfd))
