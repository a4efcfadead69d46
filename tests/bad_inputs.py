"""A deterministic generator of hostile inputs for acompile, written at test time.

Nothing large is committed: every case is a small function that writes its files
into a folder it is given (a pytest ``tmp_path`` sub-folder) and returns the path
to hand to the command line. The 2 GiB model is a sparse file (``truncate``),
never written in full.

Three families:

* :func:`model_cases` -- ONNX files for ``compile`` and ``check``;
* :func:`target_cases` -- target TOML files for ``targets validate`` and ``compile --target``;
* :func:`sim_cases` -- inputs and damaged OUT folders for ``simulate``.

Each case says which exit codes are acceptable (the contract: 1 or 2 for a
refusal, 0 where the input is legal, however odd) and a regular expression the
one-line error must match, so that "names the problem" is checked too. Used by
tests/test_adversarial.py; ``python tests/bad_inputs.py FOLDER`` writes every
case into FOLDER for manual poking.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
FLOAT = TensorProto.FLOAT
HOSTILE = ["../../escape", "a\nb", "\x1b[31mred\x1b[0m", "/etc/passwd", "..", "c:\\evil", "tab\there",
           "\u202enoisrever", "null\x00byte"]

REFUSED = frozenset({1, 2})
BAD = frozenset({2})
OK = frozenset({0})


@dataclass(frozen=True)
class Case:
    """One hostile input: ``build(folder) -> path``; ``expect`` are the allowed exit codes.

    ``message`` is a regular expression the one-line error must match (searched,
    case-insensitively); ``check_expect`` overrides ``expect`` for ``acompile check``
    (which stops before calibration, so a few refusals happen only in compile).
    """
    id: str
    build: Callable[[Path], Path]
    expect: frozenset = BAD
    message: str = ""
    check_expect: frozenset | None = None
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------
# valid building blocks
# ---------------------------------------------------------------------------

def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def mlp_model(n_in: int = 16, hidden: int = 32, n_out: int = 10, seed: int = 0, names: dict | None = None,
              weights: dict | None = None) -> onnx.ModelProto:
    """Gemm(transB) -> Relu -> Gemm(transB); input ``input`` [N, n_in], output ``output``.

    ``names`` renames tensors/nodes (for hostile names), ``weights`` replaces the
    arrays W1, B1, W2, B2 (for NaN, all-zero, zero-size or wrong-dtype weights).
    """
    rng = _rng(seed)
    n = {"input": "input", "output": "output", "W1": "W1", "B1": "B1", "W2": "W2", "B2": "B2", "h": "h", "r": "r",
         "gemm1": "gemm1", "relu": "relu", "gemm2": "gemm2", "graph": "mlp"}
    n.update(names or {})
    w = {"W1": (rng.standard_normal((hidden, n_in)) * np.sqrt(2 / n_in)).astype(np.float32),
         "B1": (rng.standard_normal(hidden) * 0.1).astype(np.float32),
         "W2": (rng.standard_normal((n_out, hidden)) * np.sqrt(1 / hidden)).astype(np.float32),
         "B2": (rng.standard_normal(n_out) * 0.1).astype(np.float32)}
    w.update(weights or {})
    inits = [numpy_helper.from_array(np.asarray(v), n[k]) for k, v in w.items()]
    nodes = [helper.make_node("Gemm", [n["input"], n["W1"], n["B1"]], [n["h"]], name=n["gemm1"], transB=1),
             helper.make_node("Relu", [n["h"]], [n["r"]], name=n["relu"]),
             helper.make_node("Gemm", [n["r"], n["W2"], n["B2"]], [n["output"]], name=n["gemm2"], transB=1)]
    graph = helper.make_graph(nodes, n["graph"], [helper.make_tensor_value_info(n["input"], FLOAT, ["N", n_in])],
                              [helper.make_tensor_value_info(n["output"], FLOAT, ["N", n_out])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def big_mlp_model(width: int = 1024, depth: int = 3, seed: int = 0) -> onnx.ModelProto:
    """A few-MB MLP (depth x width^2 float32 weights) whose compile takes about a second."""
    rng = _rng(seed)
    nodes, inits = [], []
    x = "input"
    for i in range(depth):
        w = (rng.standard_normal((width, width), dtype=np.float32) * np.float32(np.sqrt(2 / width)))
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(np.zeros(width, np.float32), f"B{i}")]
        y = "output" if i == depth - 1 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"B{i}"], [y], name=f"gemm{i}", transB=1))
        if i < depth - 1:
            nodes.append(helper.make_node("Relu", [y], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("input", FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("output", FLOAT, ["N", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def _graph_model(nodes, inputs, outputs, inits=(), opset: int = OPSET, ir_version: int = IR_VERSION,
                 extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return helper.make_model(graph, opset_imports=imports, ir_version=ir_version)


def _vi(name, shape, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def _write(data: bytes, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def valid_bytes() -> bytes:
    return mlp_model().SerializeToString()


# ---------------------------------------------------------------------------
# protobuf by hand (for nesting deeper than onnx.helper and upb like to build)
# ---------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field_no: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(field_no << 3 | 2) + _varint(len(payload)) + payload


def _vf(field_no: int, value: int) -> bytes:
    """A varint field."""
    return _varint(field_no << 3) + _varint(value)


def nested_if_bytes(depth: int, op: str = "If") -> bytes:
    """A model whose graph holds an If (or Loop) whose branch holds an If ... ``depth`` levels deep.

    Built iteratively from raw protobuf fields: GraphProto.node=1, .name=2,
    .output=12; NodeProto.input=1, .output=2, .op_type=4, .attribute=5;
    AttributeProto.name=1, .g=6, .type=20 (GRAPH=5); ModelProto.ir_version=1,
    .graph=7, .opset_import=8; TypeProto.tensor_type=1 with elem_type=1.
    """
    vi = _ld(1, b"y") + _ld(2, _ld(1, _vf(1, FLOAT)))                     # ValueInfo y: float tensor
    graph = _ld(2, b"leaf") + _ld(12, vi)
    for _ in range(depth):
        attr_name = b"then_branch" if op == "If" else b"body"
        attr = _ld(1, attr_name) + _ld(6, graph) + _vf(20, 5)
        node = _ld(1, b"cond") + _ld(2, b"y") + _ld(4, op.encode()) + _ld(5, attr)
        if op == "If":
            node += _ld(5, _ld(1, b"else_branch") + _ld(6, graph) + _vf(20, 5)) if depth < 8 else b""
        graph = _ld(1, node) + _ld(2, b"g") + _ld(11, _ld(1, b"cond") + _ld(2, _ld(1, _vf(1, TensorProto.BOOL)))) \
            + _ld(12, vi)
    opset = _ld(1, b"") + _vf(2, OPSET)
    return _vf(1, IR_VERSION) + _ld(7, graph) + _ld(8, opset)


# ---------------------------------------------------------------------------
# model cases
# ---------------------------------------------------------------------------

def _flip(data: bytes, seed: int, n: int = 4) -> bytes:
    rng = _rng(seed)
    b = bytearray(data)
    for pos in rng.integers(0, len(b), n):
        b[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(b)


def _huge_sparse(folder: Path) -> Path:
    path = folder / "huge.onnx"
    with open(path, "wb") as f:
        f.write(valid_bytes())
        f.truncate(2**31 + 1)       # sparse: no blocks are written past the header
    return path


def _cycle(folder: Path) -> Path:
    nodes = [helper.make_node("Add", ["input", "b"], ["a"], name="n1"),
             helper.make_node("Relu", ["a"], ["b"], name="n2"),
             helper.make_node("Relu", ["a"], ["output"], name="n3")]
    return _save(_graph_model(nodes, [_vi("input", [1, 4])], [_vi("output", [1, 4])]), folder)


def _dangling(folder: Path) -> Path:
    nodes = [helper.make_node("Add", ["input", "nowhere"], ["output"], name="add")]
    return _save(_graph_model(nodes, [_vi("input", [1, 4])], [_vi("output", [1, 4])]), folder)


def _dangling_output(folder: Path) -> Path:
    nodes = [helper.make_node("Relu", ["input"], ["r"], name="relu")]
    return _save(_graph_model(nodes, [_vi("input", [1, 4])], [_vi("not_produced", [1, 4])]), folder)


def _duplicate_outputs(folder: Path) -> Path:
    nodes = [helper.make_node("Relu", ["input"], ["output"], name="relu")]
    return _save(_graph_model(nodes, [_vi("input", [1, 4])], [_vi("output", [1, 4]), _vi("output", [1, 4])]), folder)


def _duplicate_producers(folder: Path) -> Path:
    nodes = [helper.make_node("Relu", ["input"], ["output"], name="r1"),
             helper.make_node("Sigmoid", ["input"], ["output"], name="r2")]
    return _save(_graph_model(nodes, [_vi("input", [1, 4])], [_vi("output", [1, 4])]), folder)


def _with(model_fn, mutate):
    def build(folder: Path) -> Path:
        m = model_fn()
        mutate(m)
        return _save(m, folder)
    return build


def _set_opset(version: int):
    def mutate(m):
        del m.opset_import[:]
        m.opset_import.append(helper.make_opsetid("", version))
    return mutate


def _set_ir(version: int):
    def mutate(m):
        m.ir_version = version
    return mutate


def _custom_domain(folder: Path) -> Path:
    nodes = [helper.make_node("Evil", ["input"], ["output"], name="evil", domain="com.evil")]
    return _save(_graph_model(nodes, [_vi("input", [1, 4])], [_vi("output", [1, 4])],
                              extra_opsets=[("com.evil", 1)]), folder)


def _undeclared_domain(folder: Path) -> Path:
    nodes = [helper.make_node("Evil", ["input"], ["output"], name="evil", domain="com.evil")]
    return _save(_graph_model(nodes, [_vi("input", [1, 4])], [_vi("output", [1, 4])]), folder)


def _no_shapes(folder: Path) -> Path:
    m = mlp_model()
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.ClearField("shape")
    return _save(m, folder)


def _no_type(folder: Path) -> Path:
    m = mlp_model()
    m.graph.input[0].ClearField("type")
    return _save(m, folder)


def _input_dims(dims):
    def build(folder: Path) -> Path:
        m = mlp_model()
        shape = m.graph.input[0].type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            shape.dim.add().dim_value = d
        return _save(m, folder)
    return build


def _initializer_dims_huge(folder: Path, dims=(2**62, 16)) -> Path:
    m = mlp_model()
    t = m.graph.initializer[0]
    del t.dims[:]
    t.dims.extend(dims)
    return _save(m, folder)


def _initializer_dims_beyond_float(folder: Path) -> Path:
    """Dimensions whose product (2^496) no float holds: the size in the message is an order of magnitude."""
    return _initializer_dims_huge(folder, [2**62] * 8)


def _constant_of_shape(dims, folder: Path) -> Path:
    """A weight computed by ConstantOfShape (shape from a Constant) that would take terabytes once folded."""
    shape = numpy_helper.from_array(np.array(dims, np.int64), "shape")
    nodes = [helper.make_node("Constant", [], ["shape_c"], name="shape_const", value=shape),
             helper.make_node("ConstantOfShape", ["shape_c"], ["W"], name="fill",
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("MatMul", ["input", "W"], ["output"], name="mm")]
    return _save(_graph_model(nodes, [_vi("input", [1, dims[0]])], [_vi("output", [1, dims[1]])]), folder)


def _expand_huge(folder: Path) -> Path:
    nodes = [helper.make_node("Expand", ["one", "shape"], ["W"], name="expand"),
             helper.make_node("MatMul", ["input", "W"], ["output"], name="mm")]
    inits = [numpy_helper.from_array(np.array([1.0], np.float32), "one"),
             numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "shape")]
    return _save(_graph_model(nodes, [_vi("input", [1, 1 << 20])], [_vi("output", [1, 1 << 20])], inits), folder)


def _late(op: str, size, rank: int):
    """``op`` sized by a value that passes through Abs, which shape inference's data propagation does not follow.

    So the whole-model inference cannot tell how large the folded weight would be;
    folding must find out before it allocates (terabytes here).
    """
    def build(folder: Path) -> Path:
        one = numpy_helper.from_array(np.ones((1, 1), np.float32), "one")
        size_arr = np.array(size, np.float32 if op in ("Range", "Resize") else np.int64)
        inits = [numpy_helper.from_array(size_arr, "size0")]
        if op == "Tile":
            gen = helper.make_node("Tile", ["one", "size"], ["W"])
            inits.append(one)
        elif op == "Pad":
            gen = helper.make_node("Pad", ["one", "size"], ["W"])
            inits.append(one)
        elif op == "Resize":
            gen = helper.make_node("Resize", ["one", "", "size"], ["W"])
            inits.append(one)
        elif op == "OneHot":
            gen = helper.make_node("OneHot", ["idx", "size", "vals"], ["W"])
            inits += [numpy_helper.from_array(np.arange(1024, dtype=np.int64), "idx"),
                      numpy_helper.from_array(np.array([0, 1], np.float32), "vals")]
        elif op == "Range":
            gen = helper.make_node("Range", ["zero", "size", "step"], ["W"])
            inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
                      numpy_helper.from_array(np.array(1, np.float32), "step")]
        else:
            gen = helper.make_node(op, ["size"], ["W"])
        nodes = [helper.make_node("Abs", ["size0"], ["size"], name="abs"), gen,
                 helper.make_node("Add", ["input", "W"], ["output"], name="add")]
        return _save(_graph_model(nodes, [_vi("input", [1])], [_vi("output", [f"d{i}" for i in range(rank)])],
                                  inits), folder)
    return build


def _raw_length(delta: int):
    def build(folder: Path) -> Path:
        m = mlp_model()
        t = m.graph.initializer[0]
        raw = t.raw_data
        t.raw_data = raw[:len(raw) + delta] if delta < 0 else raw + b"\0" * delta
        return _save(m, folder)
    return build


def _float_data_count(folder: Path) -> Path:
    m = mlp_model()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.float_data.extend([1.0, 2.0, 3.0])
    return _save(m, folder)


def _weights(**arrays):
    def build(folder: Path) -> Path:
        return _save(mlp_model(weights=arrays), folder)
    return build


def _string_weight(folder: Path) -> Path:
    m = mlp_model()
    t = helper.make_tensor("W1", TensorProto.STRING, [32, 16], [b"x"] * (32 * 16))
    m.graph.initializer[0].CopyFrom(t)
    return _save(m, folder)


def _string_initializer_unused(folder: Path) -> Path:
    m = mlp_model()
    m.graph.initializer.append(helper.make_tensor("labels", TensorProto.STRING, [2], [b"a", b"\xff\xfe"]))
    return _save(m, folder)


def _folded_scale_overflows(folder: Path) -> Path:
    """A BatchNormalization whose scale takes one channel of its Conv's weights past float32's largest value:
    the folded weight holds infinities (check sees it from the scale it keeps beside the weight)."""
    stats = {"gamma": [1, 1, 1e10, 1], "beta": [0] * 4, "mean": [0] * 4, "var": [1] * 4}
    inits = [numpy_helper.from_array(np.full((4, 1, 3, 3), 1e30, np.float32), "W")] + [
        numpy_helper.from_array(np.array(v, np.float32), k) for k, v in stats.items()]
    nodes = [helper.make_node("Conv", ["input", "W"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", *stats], ["output"], name="bn")]
    return _save(_graph_model(nodes, [_vi("input", [1, 1, 8, 8])], [_vi("output", [1, 4, 6, 6])], inits), folder)


def _int_conv(folder: Path) -> Path:
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.int32), "W")
    nodes = [helper.make_node("Conv", ["input", "W"], ["output"], name="conv")]
    return _save(_graph_model(nodes, [_vi("input", [1, 1, 8, 8], TensorProto.INT32)],
                              [_vi("output", [1, 4, 6, 6], TensorProto.INT32)], [w]), folder)


def _int_weight_float_input(folder: Path) -> Path:
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.int64), "W")
    nodes = [helper.make_node("Conv", ["input", "W"], ["output"], name="conv")]
    return _save(_graph_model(nodes, [_vi("input", [1, 1, 8, 8])], [_vi("output", [1, 4, 6, 6])], [w]), folder)


def _unknown_dtype(folder: Path) -> Path:
    m = mlp_model()
    m.graph.initializer[1].data_type = 77
    return _save(m, folder)


def _invalid_utf8_names(folder: Path) -> Path:
    """Node, tensor and graph names with bytes that are not UTF-8 (patched into the serialised model)."""
    m = mlp_model(names={"relu": "RELUNAME", "h": "HIDDENXX", "graph": "GRAPHNAM"})
    data = m.SerializeToString()
    for token in (b"RELUNAME", b"HIDDENXX", b"GRAPHNAM"):
        data = data.replace(token, b"\xff\xfe\xc3(" + token[4:])      # same length: lengths stay valid
    return _write(data, folder)


def _invalid_utf8_initializer(folder: Path) -> Path:
    """Only the weight's name (in the initializer and where Gemm reads it) is not UTF-8."""
    data = mlp_model(names={"W1": "WEIGHTNM"}).SerializeToString().replace(b"WEIGHTNM", b"W\xc0\xafGHTNM")
    return _write(data, folder)


def _hostile_names(folder: Path) -> Path:
    names = {"relu": "../../evil\nrelu\x1b[2J", "h": "../h\x1b]0;title\x07", "gemm1": "/tmp/evil\r\nX",
             "gemm2": "\u202e\x00zero", "graph": "../../graph\x1b[31m", "W1": "..\\..\\W1"}
    return _save(mlp_model(names=names), folder, "mo\ndel\x1b[1m.onnx")


def _hostile_unsupported(folder: Path) -> Path:
    """An op acompile cannot map (TopK) whose node and tensor names are hostile (with --allow-unsupported)."""
    m = mlp_model()
    m.graph.initializer.append(numpy_helper.from_array(np.array([3], np.int64), "k\n\x1b[1m"))
    m.graph.node.append(helper.make_node("TopK", ["output", "k\n\x1b[1m"], ["top\rvalues", "../idx\x1b]0;t\x07"],
                                         name="../x\n\x1b[2Jnode", axis=-1))
    m.graph.output.append(_vi("top\rvalues", ["N", 3]))
    return _save(m, folder)


def _long_chain(n: int, batch=1):
    """MatMul then ``n`` Relus, and ``calib.npy`` (one sample) beside it.

    Calibration with the default data runs the program once per sample (16
    times); one calibration sample keeps the default suite quick.
    """
    def build(folder: Path) -> Path:
        np.save(folder / "calib.npy", _rng(2).standard_normal((1, 4)).astype(np.float32))
        rng = _rng(1)
        w = numpy_helper.from_array((rng.standard_normal((4, 4)) * 0.5).astype(np.float32), "W")
        nodes = [helper.make_node("MatMul", ["input", "W"], ["t0"], name="mm")]
        for i in range(n):
            nodes.append(helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}" if i < n - 1 else "output"], name=f"r{i}"))
        return _save(_graph_model(nodes, [_vi("input", [batch, 4])], [_vi("output", [batch, 4])], [w]), folder)
    return build


def _if_subgraph(folder: Path) -> Path:
    then = helper.make_graph([helper.make_node("Relu", ["input"], ["t"])], "then", [], [_vi("t", [1, 4])])
    other = helper.make_graph([helper.make_node("Neg", ["input"], ["e"])], "else", [], [_vi("e", [1, 4])])
    nodes = [helper.make_node("If", ["cond"], ["output"], name="if", then_branch=then, else_branch=other)]
    return _save(_graph_model(nodes, [_vi("input", [1, 4]), _vi("cond", [], TensorProto.BOOL)],
                              [_vi("output", [1, 4])]), folder)


def _no_nodes(folder: Path) -> Path:
    return _save(_graph_model([], [_vi("input", [1, 4])], [_vi("input", [1, 4])]), folder)


def _no_graph(folder: Path) -> Path:
    m = onnx.ModelProto()
    m.ir_version = IR_VERSION
    m.opset_import.append(helper.make_opsetid("", OPSET))
    return _save(m, folder)


def _zip_bytes() -> bytes:
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model.onnx", valid_bytes())
    return buf.getvalue()


# ---- external data ---------------------------------------------------------

def _external(location: str, offset=None, length=None, setup: Callable[[Path, bytes], None] | None = None):
    """The MLP with W1 stored externally at ``location`` (the model lives in ``folder/model/``)."""
    def build(folder: Path) -> Path:
        m = mlp_model()
        t = m.graph.initializer[0]
        payload = t.raw_data
        model_dir = folder / "model"
        model_dir.mkdir()
        outside = folder / "outside.bin"
        outside.write_bytes(payload)
        (model_dir / "inside.bin").write_bytes(payload)
        if setup is not None:
            setup(model_dir, payload)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        loc = location.replace("{OUTSIDE}", str(outside))
        entries = [("location", loc)]
        if offset is not None:
            entries.append(("offset", str(offset)))
        if length is not None:
            entries.append(("length", str(length)))
        for k, v in entries:
            e = t.external_data.add()
            e.key, e.value = k, v
        return _save(m, model_dir)
    return build


def _symlink_out(model_dir: Path, payload: bytes) -> None:
    os.symlink(model_dir.parent / "outside.bin", model_dir / "link.bin")


def _symlink_dev_zero(model_dir: Path, payload: bytes) -> None:
    os.symlink("/dev/zero", model_dir / "zero.bin")


def _hardlink_out(model_dir: Path, payload: bytes) -> None:
    os.link(model_dir.parent / "outside.bin", model_dir / "hard.bin")


def _subdir(model_dir: Path, payload: bytes) -> None:
    (model_dir / "sub").mkdir()


def _fifo(model_dir: Path, payload: bytes) -> None:
    os.mkfifo(model_dir / "pipe.bin")


def _dir_symlink_out(model_dir: Path, payload: bytes) -> None:
    os.symlink(model_dir.parent, model_dir / "up")


def _external_valid_ok(folder: Path) -> Path:
    return _external("inside.bin")(folder)


def _conv_attrs(wshape=(4, 1, 3, 3), **attrs):
    def build(folder: Path) -> Path:
        w = numpy_helper.from_array(np.ones(wshape, np.float32), "W")
        nodes = [helper.make_node("Conv", ["input", "W"], ["output"], name="conv", **attrs)]
        return _save(_graph_model(nodes, [_vi("input", [1, 1, 8, 8])], [_vi("output", ["a", "b", "c", "d"])], [w]),
                     folder)
    return build


def conv_attribute_cases() -> list[Case]:
    """Conv attributes that contradict the weights or ask for absurd padding (once exit-3 bugs)."""
    return [
        Case("conv_group_0", _conv_attrs(group=0), REFUSED, r"group"),
        Case("conv_kernel_shape_mismatch", _conv_attrs(kernel_shape=[5, 5]), REFUSED, r"kernel"),
        Case("conv_pads_2_40", _conv_attrs(strides=[2**40, 2**40], pads=[2**40] * 4, dilations=[2**30, 2**30]),
             REFUSED, r"pad|limit|GiB"),
    ]


def model_cases() -> list[Case]:
    """Every hostile model; ``build(folder)`` writes it and returns the path to pass to compile/check."""
    good = valid_bytes()
    protobuf = r"protobuf|not an ONNX model|checker|empty"
    cases = [
        Case("empty_file", lambda d: _write(b"", d), BAD, r"empty"),
        Case("truncated_half", lambda d: _write(good[: len(good) // 2], d), BAD, protobuf),
        Case("truncated_tail", lambda d: _write(good[:-3], d), BAD, protobuf + r"|holds \d+ bytes"),
        Case("truncated_header", lambda d: _write(good[:7], d), BAD, protobuf),
        Case("non_onnx_text", lambda d: _write(b"hello, I am not a model\n" * 10, d), BAD, protobuf),
        Case("non_onnx_png", lambda d: _write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, d), BAD, protobuf),
        Case("non_onnx_zip", lambda d: _write(_zip_bytes(), d), BAD, protobuf),
        Case("random_bytes", lambda d: _write(_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(), d),
             BAD, protobuf),
        Case("over_2gib_sparse", _huge_sparse, BAD, r"GiB.*limit"),
        Case("a_directory", lambda d: (d / "dir.onnx").mkdir() or d / "dir.onnx", BAD, r"regular file|folder"),
        Case("missing_file", lambda d: d / "nope.onnx", BAD, r"cannot read|not found|no such"),
        Case("nested_if_3000", lambda d: _write(nested_if_bytes(3000), d), BAD, protobuf + r"|nest"),
        Case("nested_loop_3000", lambda d: _write(nested_if_bytes(3000, "Loop"), d), BAD, protobuf + r"|nest"),
        Case("nested_if_40", lambda d: _write(nested_if_bytes(40), d), REFUSED, r"."),
        Case("nested_if_5", lambda d: _write(nested_if_bytes(5), d), REFUSED, r"."),
        Case("if_subgraph", _if_subgraph, OK),     # a data-dependent If runs digitally through onnxruntime
        Case("cycle", _cycle, BAD, r"cycle|topolog|checker"),
        Case("dangling_input", _dangling, BAD, r"nowhere|checker"),
        Case("dangling_output", _dangling_output, BAD, r"not_produced|output|checker"),
        # a value listed twice as an output: onnxruntime returns it twice, acompile once, by name
        Case("duplicate_output_names", _duplicate_outputs, OK, r""),
        Case("duplicate_producers", _duplicate_producers, BAD, r"output|checker|SSA|more than once"),
        Case("opset_99", _with(mlp_model, _set_opset(99)), BAD, r"opset 99"),
        Case("opset_1", _with(mlp_model, _set_opset(1)), REFUSED, r"opset"),
        Case("no_opset", _with(mlp_model, lambda m: m.ClearField("opset_import")), BAD, r"opset|not an ONNX model"),
        Case("ir_version_99", _with(mlp_model, _set_ir(99)), BAD, r"IR version"),
        # the checker refuses IR version 0 but onnxruntime runs the model: acompile takes what onnxruntime runs
        Case("ir_version_0", _with(mlp_model, _set_ir(0)), OK, r""),
        Case("custom_domain", _custom_domain, REFUSED, r"Evil|com\.evil"),
        Case("undeclared_domain", _undeclared_domain, REFUSED, r"Evil|com\.evil|domain"),
        Case("no_graph", _no_graph, BAD, r"no graph|not an ONNX model"),
        Case("no_nodes", _no_nodes, frozenset({0, 1, 2}), r"."),
        Case("missing_shapes", _no_shapes, frozenset({0, 1, 2}), r"shape"),
        Case("missing_type", _no_type, REFUSED, r"type|checker|shape"),
        Case("input_dim_2_62", _input_dims([2**62, 16]), BAD, r"GiB|limit"),
        Case("input_dims_product_overflow", _input_dims([2**40, 2**40]), BAD, r"GiB|limit|16"),
        # onnxruntime reads any negative input dimension as dynamic, and so do we
        Case("input_dim_negative", _input_dims([-4, 16]), OK, r"."),
        Case("initializer_dims_2_62", _initializer_dims_huge, BAD, r"GiB|limit|bytes"),
        Case("initializer_dims_beyond_float", _initializer_dims_beyond_float, BAD, r"about 10\^\d+ bytes.*limit"),
        Case("constant_of_shape_terabytes", lambda d: _constant_of_shape([1 << 20, 1 << 20], d), BAD,
             r"GiB|limit|budget|MiB"),
        Case("constant_of_shape_late", _late("ConstantOfShape", [1 << 20, 1 << 20, 1 << 10], 3), BAD, r"budget"),
        Case("expand_terabytes", _expand_huge, BAD, r"GiB|limit|budget|MiB"),
        Case("tile_late_terabytes", _late("Tile", [1 << 20, 1 << 20], 2), BAD, r"budget"),
        Case("onehot_late_terabytes", _late("OneHot", [1 << 26], 2), BAD, r"budget"),
        Case("hann_window_late", _late("HannWindow", 1 << 34, 1), BAD, r"budget"),
        Case("range_late", _late("Range", 1e13, 1), BAD, r"budget"),
        Case("pad_late", _late("Pad", [1 << 20, 1 << 20, 0, 0], 2), BAD, r"budget"),
        Case("resize_late", _late("Resize", [1e6, 1e6], 2), BAD, r"budget"),
        Case("raw_data_short", _raw_length(-4), BAD, r"holds \d+ bytes"),
        Case("raw_data_long", _raw_length(+8), BAD, r"holds \d+ bytes"),
        Case("float_data_count_wrong", _float_data_count, BAD, r"W1|initializer|checker"),
        Case("nan_weights", _weights(W1=np.full((32, 16), np.nan, np.float32)), REFUSED, r"NaN|finite"),
        Case("inf_weights", _weights(W2=np.full((10, 32), np.inf, np.float32)), REFUSED, r"NaN|finite|inf"),
        Case("nan_bias", _weights(B1=np.full(32, np.nan, np.float32)), BAD, r"bias contains NaN"),
        Case("minus_inf_bias_masks_a_logit", _weights(B2=np.r_[-np.inf, np.zeros(9)].astype(np.float32)), OK),
        Case("folded_scale_overflows", _folded_scale_overflows, REFUSED, r"NaN|finite"),
        Case("zero_size_weights", _weights(W1=np.zeros((32, 0), np.float32)), REFUSED, r"."),
        Case("all_zero_weights", _weights(W1=np.zeros((32, 16), np.float32), W2=np.zeros((10, 32), np.float32)),
             OK),
        Case("string_weights", _string_weight, BAD, r"W1|type|checker|string"),
        Case("string_initializer_unused", _string_initializer_unused, frozenset({0, 1, 2}), r"."),
        Case("int_conv", _int_conv, REFUSED, r"Conv|type|int"),
        Case("int_weight_float_input", _int_weight_float_input, BAD, r"Conv|type|checker"),
        Case("unknown_dtype", _unknown_dtype, BAD, r"type|B1"),
        Case("invalid_utf8_names", _invalid_utf8_names, BAD, r"UTF-8"),
        Case("invalid_utf8_initializer_name", _invalid_utf8_initializer, BAD, r"UTF-8"),
        Case("hostile_names", _hostile_names, OK),
        Case("hostile_names_unsupported", _hostile_unsupported, OK, extra={"args": ["--allow-unsupported"]},
             check_expect=frozenset({0, 1})),
        Case("chain_20000", _long_chain(20_000), OK, extra={"args": ["--calibration", "{DIR}/calib.npy"]}),
        # external data: everything outside the model's folder is refused
        Case("ext_parent", _external("../outside.bin"), BAD, r"leaves the model's folder"),
        Case("ext_nested_parent", _external("a/../../outside.bin"), BAD, r"leaves the model's folder"),
        Case("ext_absolute", _external("{OUTSIDE}"), BAD, r"relative path"),
        Case("ext_symlink", _external("link.bin", setup=_symlink_out), BAD, r"leaves the model's folder"),
        Case("ext_dir_symlink", _external("up/outside.bin", setup=_dir_symlink_out), BAD,
             r"leaves the model's folder"),
        Case("ext_symlink_dev_zero", _external("zero.bin", setup=_symlink_dev_zero), BAD,
             r"leaves the model's folder|regular"),
        Case("ext_hardlink", _external("hard.bin", setup=_hardlink_out), BAD, r"hard link"),
        Case("ext_negative_offset", _external("inside.bin", offset=-1), BAD, r"outside the"),
        Case("ext_huge_length", _external("inside.bin", length=2**62), BAD, r"outside the"),
        Case("ext_huge_offset", _external("inside.bin", offset=2**62, length=16), BAD, r"outside the"),
        Case("ext_offset_not_int", _external("inside.bin", offset="1e3"), BAD, r"integer"),
        Case("ext_missing", _external("missing.bin"), BAD, r"does not exist"),
        Case("ext_directory", _external("sub", setup=_subdir), BAD, r"regular file"),
        Case("ext_fifo", _external("pipe.bin", setup=_fifo), BAD, r"regular file"),
        Case("ext_empty_location", _external(""), BAD, r"relative path"),
        Case("ext_nul_byte", _external("inside\x00.bin"), BAD, r"external data"),
        Case("ext_long_name", _external("x" * 5000), BAD, r"external data"),
        Case("ext_backslash", _external("..\\outside.bin"), BAD, r"relative path"),
        Case("ext_ok", _external_valid_ok, OK),
    ]
    for seed in range(6):
        cases.append(Case(f"bit_flip_{seed}", lambda d, s=seed: _write(_flip(good, s), d),
                          frozenset({0, 1, 2}), r"."))
    cases += conv_attribute_cases()
    return cases


# ---------------------------------------------------------------------------
# target cases (through the CLI; tests/test_target_bad.py covers the loader itself)
# ---------------------------------------------------------------------------

T_HEAD = 'schema_version = 1\nname = "t"\nextends = "isaac"\n'


def _toml(text: str | bytes, name: str = "t.toml"):
    def build(folder: Path) -> Path:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return _write(data, folder, name)
    return build


def _extends_cycle(folder: Path) -> Path:
    _write(b'schema_version = 1\nname = "a"\nextends = "b.toml"\n', folder, "a.toml")
    _write(b'schema_version = 1\nname = "b"\nextends = "a.toml"\n', folder, "b.toml")
    return folder / "a.toml"


def _extends_self(folder: Path) -> Path:
    return _write(b'schema_version = 1\nname = "s"\nextends = "s.toml"\n', folder, "s.toml")


def _extends_escape(where: str):
    def build(folder: Path) -> Path:
        sub = folder / "targets"
        sub.mkdir()
        _write((T_HEAD.replace('"isaac"', '"../../../../../../etc/passwd"')).encode(), folder, "outside.toml")
        text = f'schema_version = 1\nname = "e"\nextends = "{where}"\n'
        return _write(text.encode(), sub, "t.toml")
    return build


def _deep_toml(depth: int) -> str:
    return T_HEAD + "x = " + "[" * depth + "]" * depth + "\n"


def _deep_tables(depth: int) -> str:
    return T_HEAD + "[" + ".".join(f"a{i}" for i in range(depth)) + "]\nz = 1\n"


def _target_dir(folder: Path) -> Path:
    (folder / "dir.toml").mkdir()
    return folder / "dir.toml"


def target_cases() -> list[Case]:
    tc = r"field|expected|must|unknown|schema|extends|TOML|target|empty|UTF"
    return [
        Case("empty", _toml(""), BAD, r"empty|schema_version|missing|field"),
        Case("unknown_key", _toml(T_HEAD + "[crossbar]\nrowz = 64\n"), BAD, r"rowz"),
        Case("unknown_table", _toml(T_HEAD + "[flux_capacitor]\npower_gw = 1.21\n"), BAD, r"flux_capacitor"),
        Case("wrong_type", _toml(T_HEAD + '[crossbar]\nrows = "many"\n'), BAD, r"crossbar\.rows"),
        Case("bool_for_int", _toml(T_HEAD + "[crossbar]\nrows = true\n"), BAD, r"crossbar\.rows"),
        Case("float_for_int", _toml(T_HEAD + "[crossbar]\nrows = 64.5\n"), BAD, r"crossbar\.rows"),
        Case("nan", _toml(T_HEAD + "[adc]\nenergy_pj = nan\n"), BAD, r"adc\.energy_pj"),
        Case("inf", _toml(T_HEAD + "[dac]\nenergy_pj = inf\n"), BAD, r"dac\.energy_pj"),
        Case("negative", _toml(T_HEAD + "[crossbar]\nread_latency_ns = -1.0\n"), BAD, r"read_latency_ns"),
        Case("zero_rows", _toml(T_HEAD + "[crossbar]\nrows = 0\n"), BAD, r"crossbar\.rows"),
        Case("zero_tiles", _toml(T_HEAD + "[organisation]\ntiles_per_chip = 0\n"), BAD, r"tiles_per_chip"),
        Case("huge_rows", _toml(T_HEAD + "[crossbar]\nrows = 9223372036854775807\n"), BAD, r"crossbar\.rows"),
        Case("huge_float", _toml(T_HEAD + "[clock]\nfrequency_mhz = 1e308\n"), frozenset({0, 2}), r"frequency"),
        Case("huge_cell_bits", _toml(T_HEAD + "[crossbar]\ncell_bits = 64\n"), BAD, r"cell_bits"),
        Case("extends_cycle", _extends_cycle, BAD, r"extends|cycle"),
        Case("extends_self", _extends_self, BAD, r"extends|cycle"),
        Case("extends_escape_parent", _extends_escape("../outside.toml"), frozenset({0, 2}), tc),
        Case("extends_escape_absolute", _extends_escape("/etc/passwd"), BAD, tc),
        Case("extends_missing", _toml(T_HEAD.replace('"isaac"', '"nope_nope"')), BAD, r"nope_nope|extends"),
        Case("invalid_utf8", _toml(T_HEAD.encode() + b'description = "\xff\xfe"\n'), BAD, r"UTF|decode|encod"),
        Case("byte_order_mark", _toml("\ufeff" + T_HEAD), OK),
        Case("utf16", _toml(T_HEAD.encode("utf-16")), BAD, r"UTF|decode|encod|TOML"),
        Case("deep_arrays", _toml(_deep_toml(5000)), BAD, tc + r"|nest"),
        Case("deep_tables", _toml(_deep_tables(3000)), BAD, tc + r"|nest"),
        Case("not_toml", _toml(b"\x00\x01\x02 binary garbage \x89PNG"), BAD, r"TOML|UTF|parse|null|control"),
        Case("a_directory", _target_dir, BAD, r"folder|directory|read|regular"),
        Case("hostile_name", _toml(T_HEAD.replace('"t"', '"../../x\\n\\u001b[31m"')), frozenset({0, 2}), tc),
    ]


# ---------------------------------------------------------------------------
# simulator cases: need a compiled OUT folder (``base``) and, for some, another (``other``)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SimCase:
    """``build(folder, base_out, other_out) -> (out_folder, input_file)``; ``mode`` for simulate."""
    id: str
    build: Callable[[Path, Path, Path], tuple[Path, Path]]
    expect: frozenset = BAD
    message: str = ""
    mode: str = "ideal"
    nan_output: bool = False
    args: tuple = ()        # extra simulate arguments; "{IN}" is the case's input folder


def _copy_out(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in sorted(src.iterdir()):
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _npy(array, name: str = "x.npy"):
    def build(folder: Path, base: Path, other: Path):
        p = folder / name
        np.save(p, array, allow_pickle=False)
        return _copy_out(base, folder / "out"), p
    return build


def _npz(arrays: dict, name: str = "x.npz"):
    def build(folder: Path, base: Path, other: Path):
        p = folder / name
        np.savez(p, **arrays)
        return _copy_out(base, folder / "out"), p
    return build


def _raw_input(data: bytes, name: str = "x.npy"):
    def build(folder: Path, base: Path, other: Path):
        return _copy_out(base, folder / "out"), _write(data, folder, name)
    return build


def _damaged(damage: Callable[[Path, Path], None], array=None):
    def build(folder: Path, base: Path, other: Path):
        out = _copy_out(base, folder / "out")
        damage(out, other)
        p = folder / "x.npy"
        np.save(p, good_input() if array is None else array)
        return out, p
    return build


def good_input(batch: int = 3, n_in: int = 16) -> np.ndarray:
    return _rng(3).standard_normal((batch, n_in)).astype(np.float32)


def _npy_header_huge() -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 16), }"
    header = header + " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64


def _pickle_npy() -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _replace(name: str, data: bytes):
    def damage(out: Path, other: Path) -> None:
        (out / name).write_bytes(data)
    return damage


def _take_from_other(*names: str):
    def damage(out: Path, other: Path) -> None:
        for n in names:
            (out / n).write_bytes((other / n).read_bytes())
    return damage


def _truncate(name: str, keep: float):
    def damage(out: Path, other: Path) -> None:
        data = (out / name).read_bytes()
        (out / name).write_bytes(data[: int(len(data) * keep)])
    return damage


def _delete(name: str):
    def damage(out: Path, other: Path) -> None:
        (out / name).unlink()
    return damage


def _edit_program(edit: Callable[[dict], None]):
    """Edit program.json (keeping it valid JSON)."""
    import json

    def damage(out: Path, other: Path) -> None:
        prog = json.loads((out / "program.json").read_text())
        edit(prog)
        (out / "program.json").write_text(json.dumps(prog))
    return damage


def _set(path: list, value):
    def edit(prog: dict) -> None:
        node = prog
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


def _corrupt_levels(out: Path, other: Path) -> None:
    """Overwrite the device's level bytes with 0xFF (valid levels, wrong weights), the ZIP's CRC-32 rewritten to
    match: the header's levels_crc32 still gives the cells that were written."""
    import zipfile
    src = out / "device.acdev"
    with zipfile.ZipFile(src) as z:
        entries = [(i, z.read(i.filename)) for i in z.infolist()]
    tmp = out / "device.tmp"
    with zipfile.ZipFile(tmp, "w") as z:
        for info, data in entries:
            z.writestr(info, b"\xff" * len(data) if info.filename == "levels.bin" else data)
    os.replace(tmp, src)


def _flip_device(out: Path, other: Path) -> None:
    p = out / "device.acdev"
    p.write_bytes(_flip(p.read_bytes(), 11, n=16))


def _npy_bytes(array) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _ort_refuses() -> bytes:
    """The baseline's model at opset 99: a file onnxruntime refuses to load."""
    m = mlp_model()
    m.opset_import[0].version = 99
    return m.SerializeToString()


def _with_dir(name: str):
    def build(folder: Path, base: Path, other: Path):
        (folder / name).mkdir()
        return _npy(good_input())(folder, base, other)
    return build


def _with_file(name: str, data: bytes):
    """The baseline OUT, a good input, and ``name`` holding ``data`` (plus compare.onnx, a valid model)."""
    def build(folder: Path, base: Path, other: Path):
        _write(mlp_model().SerializeToString(), folder, "compare.onnx")
        _write(data, folder, name)
        p = folder / "x.npy"
        np.save(p, good_input())
        return _copy_out(base, folder / "out"), p
    return build


def sim_cases() -> list[SimCase]:
    x = good_input()
    names = r"input names|missing|unexpected"
    return [
        SimCase("ok", _npy(x), OK),
        SimCase("ok_quantized", _npy(x), OK, mode="quantized"),
        SimCase("wrong_shape", _npy(np.zeros((3, 15), np.float32)), BAD, r"shape"),
        SimCase("wrong_rank", _npy(np.zeros((3, 16, 1), np.float32)), BAD, r"shape"),
        SimCase("scalar_input", _npy(np.float32(1.0)), BAD, r"shape"),
        SimCase("wrong_dtype_string", _npy(np.array([["a"] * 16] * 3)), BAD, r"dtype"),
        SimCase("wrong_dtype_complex", _npy(np.zeros((3, 16), np.complex64)), BAD, r"dtype"),
        SimCase("wrong_dtype_bool", _npy(np.zeros((3, 16), bool)), frozenset({0, 2}), r"dtype"),
        SimCase("float64_input", _npy(x.astype(np.float64)), frozenset({0, 2}), r"dtype"),
        SimCase("missing_name", _npz({"other": x}), BAD, names),
        SimCase("extra_name", _npz({"input": x, "extra": x}), BAD, names),
        SimCase("empty_npz", _npz({}), BAD, names),
        SimCase("hostile_npz_key", _npz({"input\n\x1b[31m": x}), BAD, names),
        SimCase("nan_input_ideal", _npy(np.full((3, 16), np.nan, np.float32)), OK, nan_output=True),
        # no DAC converts NaN or infinity: the vectors holding one give NaN, as ideal mode's product does
        SimCase("nan_input_quantized", _npy(np.full((3, 16), np.nan, np.float32)), OK, mode="quantized",
                nan_output=True),
        SimCase("inf_input_quantized", _npy(np.full((3, 16), np.inf, np.float32)), OK, mode="quantized",
                nan_output=True),
        SimCase("nan_input_noisy", _npy(np.full((3, 16), np.nan, np.float32)), OK, mode="noisy", nan_output=True),
        SimCase("zero_batch", _npy(np.zeros((0, 16), np.float32)), frozenset({0, 2}), r"."),
        SimCase("input_not_npy", _raw_input(b"garbage, not numpy"), BAD, r"cannot read"),
        SimCase("input_pickle", _raw_input(_pickle_npy()), BAD, r"cannot read|pickle"),
        SimCase("input_header_2_62", _raw_input(_npy_header_huge()), BAD, r"cannot read|GiB|limit"),
        SimCase("input_truncated_npy", _raw_input(b"\x93NUMPY\x01\x00"), BAD, r"cannot read"),
        SimCase("input_missing", lambda d, b, o: (_copy_out(b, d / "out"), d / "none.npy"), BAD, r"not found"),
        SimCase("program_from_other_compile", _damaged(_take_from_other("program.json", "program.npz")), BAD,
                r"another compile|belong"),
        SimCase("program_from_other_compile_q", _damaged(_take_from_other("program.json", "program.npz")), BAD,
                r"another compile|belong", mode="quantized"),
        SimCase("device_from_other_compile", _damaged(_take_from_other("device.acdev")), BAD,
                r"another compile|belong"),
        SimCase("npz_from_other_compile", _damaged(_take_from_other("program.npz")), BAD, r"belong|checksum"),
        SimCase("device_truncated", _damaged(_truncate("device.acdev", 0.6)), BAD, r"device"),
        SimCase("device_truncated_q", _damaged(_truncate("device.acdev", 0.6)), BAD, r"device", mode="quantized"),
        SimCase("device_empty", _damaged(_replace("device.acdev", b"")), BAD, r"device"),
        SimCase("device_bitflips", _damaged(_flip_device), frozenset({0, 2}), r"device", mode="quantized"),
        SimCase("device_levels_garbage", _damaged(_corrupt_levels), BAD, r"checksum", mode="quantized"),
        SimCase("device_missing_quantized", _damaged(_delete("device.acdev")), BAD, r"device", mode="quantized"),
        SimCase("program_json_garbage", _damaged(_replace("program.json", b"\x00\xff{{not json")), BAD,
                r"program"),
        SimCase("program_json_empty", _damaged(_replace("program.json", b"")), BAD, r"program"),
        SimCase("program_json_truncated", _damaged(_truncate("program.json", 0.5)), BAD, r"program"),
        SimCase("program_json_list", _damaged(_replace("program.json", b"[1, 2, 3]")), BAD, r"program"),
        SimCase("program_json_deep", _damaged(_replace("program.json", b"[" * 100000 + b"]" * 100000)), BAD,
                r"program|nest"),
        SimCase("program_npz_missing", _damaged(_delete("program.npz")), BAD, r"program\.npz"),
        SimCase("program_ops_not_list", _damaged(_edit_program(_set(["ops"], 7))), BAD, r"program"),
        SimCase("program_ops_bad_op", _damaged(_edit_program(_set(["ops", 0, "op"], "NoSuchOp"))), BAD, r"."),
        SimCase("program_ops_bad_domain", _damaged(_edit_program(_set(["ops", 0, "domain"], "acompile"))), BAD,
                r"."),
        SimCase("program_layer_index", _damaged(_edit_program(_set(["ops", 0, "layer"], 10**9))), BAD, r"program"),
        SimCase("program_opset_string", _damaged(_edit_program(_set(["opset"], "seventeen"))), BAD, r"program|opset"),
        SimCase("program_input_shape", _damaged(_edit_program(_set(["inputs", 0, "shape"], [2**62, 16]))), BAD,
                r"."),
        SimCase("program_input_dtype", _damaged(_edit_program(_set(["inputs", 0, "dtype"], "object"))), BAD, r"."),
        SimCase("program_spec_bits", _damaged(_edit_program(_set(["layers", 0, "spec", "adc_bits"], 4096))), BAD,
                r".", mode="quantized"),
        SimCase("program_geometry_bad", _damaged(_edit_program(_set(["layers", 0, "geometry"], "x"))), BAD, r"."),
        SimCase("program_version_2", _damaged(_edit_program(_set(["version"], 2))), BAD, r"version"),
        SimCase("program_no_format", _damaged(_edit_program(lambda p: p.pop("format"))), BAD, r"format"),
        SimCase("compare_garbage", _with_file("compare.onnx", b"not a model"), BAD, r"comparison model",
                args=("--compare", "{IN}/compare.onnx")),
        SimCase("compare_onnxruntime_refuses", _with_file("compare.onnx", _ort_refuses()), BAD,
                r"comparison model", args=("--compare", "{IN}/compare.onnx")),
        SimCase("compare_other_shape", _with_file("compare.onnx", mlp_model(n_out=7).SerializeToString()), BAD,
                r"shape", args=("--compare", "{IN}/compare.onnx")),
        SimCase("compare_ok", _with_file("compare.onnx", mlp_model().SerializeToString()), OK,
                args=("--compare", "{IN}/compare.onnx")),
        SimCase("labels_garbage", _with_file("labels.npy", b"\x93NUMPY garbage"), BAD, r"labels",
                args=("--labels", "{IN}/labels.npy")),
        SimCase("labels_wrong_count", _with_file("labels.npy", _npy_bytes(np.zeros(5, np.int64))), BAD,
                r"labels", args=("--compare", "{IN}/compare.onnx", "--labels", "{IN}/labels.npy")),
        SimCase("result_in_missing_folder", _npy(x), BAD, r"No such file", args=("-r", "{IN}/missing/r.npz")),
        SimCase("result_is_a_folder", _with_dir("adir"), BAD, r"directory", args=("-r", "{IN}/adir")),
        SimCase("not_a_folder", lambda d, b, o: (_write(b"x", d, "file"), _npy(x)(d, b, o)[1]), BAD,
                r"folder"),
    ]


def write_all(root: Path) -> None:
    """Write every model and target case under ``root`` (for manual use)."""
    for family, cases in (("models", model_cases()), ("targets", target_cases())):
        for case in cases:
            folder = root / family / case.id
            folder.mkdir(parents=True, exist_ok=True)
            print(case.build(folder))


if __name__ == "__main__":
    write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "bad_inputs"))
