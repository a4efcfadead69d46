"""acompile.onnx_core: onnx's protobuf classes and C++ checker without the package's Python layer.

Its helpers must build and read exactly what onnx's own helpers do (compared byte for byte), and
check must not pay for ``import onnx``'s Python layer (asyncio, ml_dtypes, importlib.metadata).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from acompile import onnx_core

ROOT = Path(__file__).resolve().parents[1]

NATIVE = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
          np.uint32, np.uint64, np.bool_, np.complex64, np.complex128]


def _values(dtype, shape=(2, 3)):
    return (np.arange(int(np.prod(shape))) % 2 == 1 if dtype is np.bool_
            else (np.arange(int(np.prod(shape))) * 3 - 1).astype(dtype)).reshape(shape)


@pytest.mark.parametrize("dtype", NATIVE, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(2, 3), (), (0, 4)], ids=["matrix", "scalar", "empty"])
def test_from_array_writes_what_onnx_writes_and_to_array_reads_it_back(dtype, shape):
    a = _values(dtype, shape)
    ours = onnx_core.from_array(a, "t")
    assert ours.SerializeToString() == numpy_helper.from_array(a, "t").SerializeToString()
    back = onnx_core.to_array(ours)
    assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)


@pytest.mark.parametrize("dtype", [t for t in NATIVE if t is not np.float16], ids=lambda d: np.dtype(d).name)
def test_to_array_reads_the_typed_fields_as_onnx_does(dtype):
    a = _values(dtype)
    t = helper.make_tensor("t", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), a.shape, a.reshape(-1).tolist())
    assert not t.HasField("raw_data")
    want = numpy_helper.to_array(t)
    got = onnx_core.to_array(t)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_float16_in_int32_data_and_big_endian_and_strings():
    half = helper.make_tensor("h", TensorProto.FLOAT16, [3], np.float16([1.5, -2.0, 65504.0]))
    assert np.array_equal(onnx_core.to_array(half), numpy_helper.to_array(half))
    big = np.arange(4, dtype=">i4")     # onnx refuses a big-endian array; its values are written little-endian
    assert onnx_core.from_array(big, "b").SerializeToString() == \
        numpy_helper.from_array(big.astype("<i4"), "b").SerializeToString()
    text = np.array([["a", "bé"], ["", "xyz"]], dtype=object)
    t = onnx_core.from_array(text, "s")
    assert t.SerializeToString() == numpy_helper.from_array(text, "s").SerializeToString()
    assert onnx_core.to_array(t).tolist() == numpy_helper.to_array(t).tolist()


def test_element_types_numpy_lacks_go_to_onnx_own_helpers():
    bf = helper.make_tensor("b", TensorProto.BFLOAT16, [2], [1.0, 2.5])
    assert np.array_equal(onnx_core.to_array(bf).astype(np.float32), np.float32([1.0, 2.5]))
    assert onnx_core.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16) == helper.tensor_dtype_to_np_dtype(
        TensorProto.BFLOAT16)
    assert onnx_core.np_dtype_to_tensor_dtype(onnx_core.to_array(bf).dtype) == TensorProto.BFLOAT16


ATTRIBUTES = [(3, None), (np.int64(4), None), (True, None), (2.5, None), (np.float32(0.5), None), ("abc", None),
              (b"raw", None), ([1, 2], None), ([1.0, 2], None), (["a", b"b"], None), (np.array([1, 2]), None),
              ([1, np.int64(2)], None), ([2.5, np.float32(1.5)], None), ([0.5, 1.5], None),
              ([], AttributeProto.FLOATS), ([], AttributeProto.INTS), ([3, 4], AttributeProto.INTS),
              (numpy_helper.from_array(np.ones(2, np.float32)), None),
              ([numpy_helper.from_array(np.ones(2, np.float32))], None),
              (helper.make_graph([], "g", [], []), None)]


@pytest.mark.parametrize("value,kind", ATTRIBUTES, ids=[f"a{i}" for i in range(len(ATTRIBUTES))])
def test_make_attribute_and_get_attribute_value_match_onnx(value, kind):
    ours = onnx_core.make_attribute("k", value, attr_type=kind)
    assert ours.SerializeToString() == helper.make_attribute("k", value, attr_type=kind).SerializeToString()
    got, want = onnx_core.get_attribute_value(ours), helper.get_attribute_value(ours)
    assert type(got) is type(want) and got == want


@pytest.mark.parametrize("value,kind", [([], None), ([1, "a"], None), ([1.5], AttributeProto.INTS), (object(), None)])
def test_make_attribute_refuses_what_it_cannot_type(value, kind):
    with pytest.raises((TypeError, ValueError)):
        onnx_core.make_attribute("k", value, attr_type=kind)


def test_nodes_graphs_models_and_value_infos_match_onnx():
    node = dict(name="c", doc_string="d", domain="", strides=[1, 1], group=1, auto_pad=None)
    assert (onnx_core.make_node("Conv", ["x", "w"], ["y"], **node).SerializeToString()
            == helper.make_node("Conv", ["x", "w"], ["y"], **node).SerializeToString())
    for shape in (None, [], [1, "N", None]):
        for ours, theirs in ((onnx_core.make_tensor_value_info, helper.make_tensor_value_info),
                             (onnx_core.make_tensor_sequence_value_info, helper.make_tensor_sequence_value_info)):
            assert ours("v", TensorProto.FLOAT, shape).SerializeToString() == \
                theirs("v", TensorProto.FLOAT, shape).SerializeToString()
    parts = ([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", 1, [2])],
             [helper.make_empty_tensor_value_info("y")], [numpy_helper.from_array(np.ones(1, np.float32), "c")])
    g = onnx_core.make_graph(*parts, doc_string="doc", value_info=[helper.make_tensor_value_info("z", 1, [])])
    assert g.SerializeToString() == helper.make_graph(
        *parts, doc_string="doc", value_info=[helper.make_tensor_value_info("z", 1, [])]).SerializeToString()
    for kwargs in ({}, {"opset_imports": [helper.make_opsetid("", 13), helper.make_opsetid("x", 1)],
                        "ir_version": 8, "producer_name": "p"}):
        assert onnx_core.make_model(g, **kwargs).SerializeToString() == \
            helper.make_model(g, **kwargs).SerializeToString()
    m = onnx_core.make_model(g)
    onnx_core.set_model_props(m, {"a": "1", "b": "2"})
    want = helper.make_model(g)
    helper.set_model_props(want, {"a": "1", "b": "2"})
    assert m.SerializeToString() == want.SerializeToString()


def test_the_cxx_functions_match_onnx_wrappers():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [helper.make_empty_tensor_value_info("y")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])
    assert onnx_core.infer_shapes(m) == onnx.shape_inference.infer_shapes(m)
    assert onnx_core.convert_version(m, 13) == onnx.version_converter.convert_version(m, 13)
    assert onnx_core.opset_version() == onnx.defs.onnx_opset_version()
    assert onnx_core.get_schema("Relu", 13, "").since_version == 13
    assert {s.name for s in onnx_core.all_schemas()} == {s.name for s in onnx.defs.get_all_schemas()}
    bad = helper.make_model(helper.make_graph([helper.make_node("Relu", ["nope"], ["y"])], "g", [x],
                                              [helper.make_empty_tensor_value_info("y")]))
    with pytest.raises(onnx_core.ValidationError):
        onnx_core.check_model(bad)
    assert onnx.ModelProto is onnx_core.ModelProto and onnx.IR_VERSION == onnx_core.IR_VERSION


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _int8_weights_model(path: Path) -> str:
    """A MatMul on an int8 weight with per-column scales (a static-QDQ weight): numpy's own integer type."""
    q = np.random.default_rng(0).integers(-127, 128, size=(16, 8)).astype(np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=1),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                              [numpy_helper.from_array(q, "q"),
                               numpy_helper.from_array(np.full(8, 0.02, np.float32), "s")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return str(path)


@pytest.mark.parametrize("model", ["cnn", "int8 weights"])
@pytest.mark.parametrize("command", [["check"], ["compile", "-o", "{tmp}/out"]], ids=["check", "compile"])
def test_check_and_compile_do_not_run_the_onnx_package_python_layer(command, model, tmp_path):
    """Nor import ml_dtypes for a model whose integer types are numpy's own (int8 weights)."""
    path = "samples/cnn.onnx" if model == "cnn" else _int8_weights_model(tmp_path / "qdq.onnx")
    argv = [a.format(tmp=tmp_path) for a in command] + [path, "--target", "isaac", "-q"]
    got = _fresh(
        "import json, sys\n"
        "from acompile.cli import main\n"
        f"rc = main({argv!r})\n"
        "print(json.dumps({'rc': rc, 'package': type(sys.modules['onnx']).__name__,\n"
        "                  'loaded': sorted(m for m in ('onnx.helper', 'ml_dtypes', 'asyncio')\n"
        "                                   if m in sys.modules)}))\n")
    assert got == {"rc": 0, "package": "_PackageBeforeInit", "loaded": []}


def test_import_onnx_after_acompile_gives_the_whole_package_with_the_same_classes():
    got = _fresh(
        "import json, acompile.onnx_core as oc\n"
        "import onnx\n"
        "from onnx import helper, numpy_helper\n"
        "m = onnx.load('samples/cnn.onnx')\n"
        "onnx.checker.check_model(m)\n"
        "print(json.dumps({'same': onnx.ModelProto is oc.ModelProto and isinstance(m, oc.ModelProto),\n"
        "                  'helper': callable(helper.make_node), 'version': onnx.__version__ != ''}))\n")
    assert got == {"same": True, "helper": True, "version": True}
