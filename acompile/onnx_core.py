"""The parts of the onnx package acompile uses, without the cost of ``import onnx``.

``import onnx`` runs the package's whole Python layer: on Python 3.11 its helper module pulls in
asyncio and ssl (typing_extensions' ``deprecated``), and the package imports ml_dtypes and
importlib.metadata. On the 2-core machine that is 100-150 ms, a third of an onnxruntime
session process, and every check and compile paid it. acompile needs two of its submodules: the
generated protobuf classes (``onnx.onnx_ml_pb2``) and the C++ extension (checker, shape
inference, version converter, inliner, operator schemas). They are imported under the onnx
package module, created as a plain import creates it, whose ``__init__`` runs the first time
anything asks that module for another name: ``import onnx`` elsewhere then gives the complete
package, and its classes are the ones here (a model built here is an ``onnx.ModelProto``).

The helpers below mirror onnx's ``helper`` and ``numpy_helper`` for what acompile builds and
reads. Element types numpy has natively are handled here; the others (bfloat16, float8, 4- and
2-bit integers), external data and segments are handed to onnx's own functions, which import
ml_dtypes.
"""

from __future__ import annotations

import importlib
import importlib.util
import numbers
import os
import sys
from collections import abc
import threading
import types
from typing import Any, Iterable, Sequence

import numpy as np

from .isolated import Crashed, in_child
from .onnx_walk import all_nodes, hide_domains, unhide_domains

_FIRST_USE = threading.RLock()


class _PackageBeforeInit(types.ModuleType):
    """The onnx package module before its ``__init__`` has run. Its submodules import as usual;
    the first other name asked of it runs ``__init__`` in this module, as ``import onnx`` would have."""

    def __getattr__(self, name: str):
        with _FIRST_USE:
            if type(self) is _PackageBeforeInit:
                self.__class__ = types.ModuleType
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    sys.modules.pop(self.__name__, None)    # as a failed import leaves it
                    raise
        return getattr(self, name)


def _submodules():
    if "onnx" not in sys.modules:
        spec = importlib.util.find_spec("onnx")
        if spec is None or spec.loader is None or not spec.submodule_search_locations:
            raise ImportError("acompile needs the onnx package")
        package = importlib.util.module_from_spec(spec)
        package.__class__ = _PackageBeforeInit
        sys.modules["onnx"] = package
    return importlib.import_module("onnx.onnx_ml_pb2"), importlib.import_module("onnx.onnx_cpp2py_export")


_pb, _C = _submodules()

ModelProto = _pb.ModelProto
GraphProto = _pb.GraphProto
NodeProto = _pb.NodeProto
TensorProto = _pb.TensorProto
AttributeProto = _pb.AttributeProto
ValueInfoProto = _pb.ValueInfoProto
TypeProto = _pb.TypeProto
OperatorSetIdProto = _pb.OperatorSetIdProto
SparseTensorProto = _pb.SparseTensorProto
IR_VERSION = int(_pb.IR_VERSION)
ValidationError = _C.checker.ValidationError


def _full(module: str):
    """One of onnx's own Python modules (importing it completes the package)."""
    return importlib.import_module(f"onnx.{module}")


# ---- the C++ extension: each takes and gives serialized models, as onnx's wrappers do

def infer_shapes(model: ModelProto, check_type: bool = False, strict_mode: bool = False,
                 data_prop: bool = False) -> ModelProto:
    """onnx's shape inference (``onnx.shape_inference.infer_shapes``).

    A model with ai.onnx.ml nodes is inferred in a forked child process: onnx 1.23's inference ends the
    process (SIGSEGV) on some of them (a LabelEncoder after a TreeEnsembleRegressor). When the child dies,
    the model is inferred again with those nodes hidden under another domain: their outputs then have
    no inferred type, which folding learns node by node from onnxruntime."""
    def run(data: bytes) -> bytes:
        return _C.shape_inference.infer_shapes(data, check_type, strict_mode, data_prop)

    if not any(n.domain == "ai.onnx.ml" for n in all_nodes(model.graph)) or not hasattr(os, "fork"):
        return ModelProto.FromString(run(model.SerializeToString()))
    try:
        return ModelProto.FromString(in_child(run, model.SerializeToString()))
    except Crashed:
        pass
    hidden = ModelProto()
    hidden.CopyFrom(model)
    hide_domains(hidden, {"ai.onnx.ml"})
    done = ModelProto.FromString(run(hidden.SerializeToString()))
    unhide_domains(done)
    return done


def check_model(model: ModelProto) -> None:
    """onnx's checker (``onnx.checker.check_model``); raises :data:`ValidationError`."""
    _C.checker.check_model(model.SerializeToString(), False, False, False)


def convert_version(model: ModelProto, version: int) -> ModelProto:
    """onnx's version converter (``onnx.version_converter.convert_version``)."""
    return ModelProto.FromString(_C.version_converter.convert_version(model.SerializeToString(), int(version)))


def inline_local_functions(model: ModelProto) -> ModelProto:
    """onnx's inliner (``onnx.inliner.inline_local_functions``)."""
    return ModelProto.FromString(_C.inliner.inline_local_functions(model.SerializeToString(), False))


def get_schema(op_type: str, version: int, domain: str = ""):
    """The operator's schema at an opset (``onnx.defs.get_schema``)."""
    return _C.defs.get_schema(op_type, version, domain)


def all_schemas():
    """Every operator schema at its latest version (``onnx.defs.get_all_schemas``)."""
    return _C.defs.get_all_schemas()


def opset_version() -> int:
    """The newest ai.onnx opset this onnx knows (``onnx.defs.onnx_opset_version``)."""
    return int(_C.defs.schema_version_map()[""][1])


# ---- element types

# the element types numpy has natively
NUMPY_TYPES = {
    TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16,
    TensorProto.INT8: np.int8, TensorProto.INT16: np.int16, TensorProto.INT32: np.int32,
    TensorProto.INT64: np.int64, TensorProto.UINT8: np.uint8, TensorProto.UINT16: np.uint16,
    TensorProto.UINT32: np.uint32, TensorProto.UINT64: np.uint64, TensorProto.BOOL: np.bool_,
    TensorProto.COMPLEX64: np.complex64, TensorProto.COMPLEX128: np.complex128,
    TensorProto.STRING: np.object_,
}
_ONNX_TYPES = {np.dtype(v): k for k, v in NUMPY_TYPES.items()}


def tensor_dtype_to_np_dtype(elem_type: int) -> np.dtype:
    """The numpy dtype of an ONNX element type (``onnx.helper.tensor_dtype_to_np_dtype``)."""
    found = NUMPY_TYPES.get(int(elem_type))
    if found is not None:
        return np.dtype(found)
    return _full("helper").tensor_dtype_to_np_dtype(elem_type)


def np_dtype_to_tensor_dtype(dtype) -> int:
    """The ONNX element type of a numpy dtype (``onnx.helper.np_dtype_to_tensor_dtype``)."""
    dtype = np.dtype(dtype)
    found = _ONNX_TYPES.get(dtype.newbyteorder("=") if dtype.byteorder in "<>" else dtype)
    if found is not None:
        return found
    if dtype.kind in "US":
        return TensorProto.STRING
    return int(_full("helper").np_dtype_to_tensor_dtype(dtype))


# ---- tensors

_INT32_STORED = {TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.UINT8,
                 TensorProto.UINT16, TensorProto.BOOL}


def to_array(tensor: TensorProto) -> np.ndarray:
    """A tensor's values (``onnx.numpy_helper.to_array``): a read-only view of ``raw_data`` where
    the values are stored there, else a new array from the typed field."""
    kind = tensor.data_type
    dtype = NUMPY_TYPES.get(kind)
    if dtype is None or tensor.data_location == TensorProto.EXTERNAL or tensor.HasField("segment"):
        return _full("numpy_helper").to_array(tensor)
    dims = tuple(tensor.dims)
    if kind == TensorProto.STRING:
        return np.array([s.decode("utf-8") for s in tensor.string_data], dtype=object).reshape(dims)
    if tensor.HasField("raw_data"):
        return np.frombuffer(tensor.raw_data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims)
    if kind == TensorProto.FLOAT16:   # stored as the half's bits in int32_data
        return np.array(tensor.int32_data, np.int32).astype(np.uint16).view(np.float16).reshape(dims)
    if kind in _INT32_STORED:
        return np.array(tensor.int32_data, np.int32).astype(dtype).reshape(dims)
    if kind == TensorProto.COMPLEX64:
        return np.array(tensor.float_data, np.float32).view(np.complex64).reshape(dims)
    if kind == TensorProto.COMPLEX128:
        return np.array(tensor.double_data, np.float64).view(np.complex128).reshape(dims)
    field = {TensorProto.FLOAT: tensor.float_data, TensorProto.DOUBLE: tensor.double_data,
             TensorProto.INT64: tensor.int64_data, TensorProto.UINT32: tensor.uint64_data,
             TensorProto.UINT64: tensor.uint64_data}[kind]
    return np.array(field, dtype).reshape(dims)


def from_array(array: np.ndarray, name: str | None = None) -> TensorProto:
    """A tensor holding ``array`` (``onnx.numpy_helper.from_array``): values little-endian in
    ``raw_data``, strings in ``string_data``."""
    array = np.asarray(array)
    if array.dtype.kind not in "OUS" and np.dtype(array.dtype).newbyteorder("=") not in _ONNX_TYPES:
        return _full("numpy_helper").from_array(array, name)
    tensor = TensorProto()
    tensor.dims.extend(array.shape)
    if name:
        tensor.name = name
    tensor.data_type = np_dtype_to_tensor_dtype(array.dtype)
    if tensor.data_type == TensorProto.STRING:
        for value in array.reshape(-1):
            if not isinstance(value, (str, bytes)):
                raise TypeError(f"a string tensor holds {type(value).__name__}, not str or bytes")
            tensor.string_data.append(value.encode("utf-8") if isinstance(value, str) else value)
        return tensor
    tensor.raw_data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return tensor


# ---- graphs

def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


# an attribute value's Python type, its kind and field, the kind and field of a list of such values
_KINDS = ((numbers.Integral, AttributeProto.INT, "i", AttributeProto.INTS, "ints"),
          (numbers.Real, AttributeProto.FLOAT, "f", AttributeProto.FLOATS, "floats"),
          ((str, bytes), AttributeProto.STRING, "s", AttributeProto.STRINGS, "strings"),
          (TensorProto, AttributeProto.TENSOR, "t", AttributeProto.TENSORS, "tensors"),
          (SparseTensorProto, AttributeProto.SPARSE_TENSOR, "sparse_tensor", AttributeProto.SPARSE_TENSORS,
           "sparse_tensors"),
          (GraphProto, AttributeProto.GRAPH, "g", AttributeProto.GRAPHS, "graphs"),
          (TypeProto, AttributeProto.TYPE_PROTO, "tp", AttributeProto.TYPE_PROTOS, "type_protos"))
_SCALAR = {AttributeProto.INT: int, AttributeProto.FLOAT: float, AttributeProto.STRING: _bytes}
# the rows of the plain Python types, found without the ABCs' isinstance (most of make_attribute's time)
_EXACT = {int: _KINDS[0], float: _KINDS[1], str: _KINDS[2], bytes: _KINDS[2]}
_FIELDS = {kind: field for _, one, f1, many, fn in _KINDS for kind, field in ((one, f1), (many, fn))}
_LISTS = {many for *_, many, _ in _KINDS}


def make_attribute(key: str, value: Any, attr_type: int | None = None,
                   into: AttributeProto | None = None) -> AttributeProto:
    """An attribute of the kind its value has (``onnx.helper.make_attribute``); ``attr_type`` names
    the kind of a list, which an empty one cannot tell. ``into``: an empty attribute to fill (one added to
    a node in place: copying a finished one into the node costs more than making it)."""
    a = AttributeProto() if into is None else into
    a.name = key
    one = _EXACT.get(type(value)) or next((row for row in _KINDS if isinstance(value, row[0])), None)
    if one is not None:
        _, a.type, field, _, _ = one
        if a.type in _SCALAR:
            setattr(a, field, _SCALAR[a.type](value))
        else:
            getattr(a, field).CopyFrom(value)
    elif isinstance(value, abc.Iterable):
        values = list(value)
        if attr_type is not None:
            many = next((row for row in _KINDS if row[3] == attr_type), None)
        elif not values:
            raise ValueError(f"attribute {key!r}: an empty list needs its type")
        else:
            kinds = {_EXACT.get(type(v)) for v in values}
            many = kinds.pop() if len(kinds) == 1 and None not in kinds else \
                next((row for row in _KINDS if all(isinstance(v, row[0]) for v in values)), None)
        if many is None:
            raise ValueError(f"attribute {key!r}: not a list of one attribute kind")
        a.type = many[3]
        getattr(a, many[4]).extend([_bytes(v) for v in values] if a.type == AttributeProto.STRINGS else values)
    else:
        raise TypeError(f"attribute {key!r}: {type(value).__name__} is not an attribute value")
    if attr_type is not None and a.type != attr_type:
        raise TypeError(f"attribute {key!r}: the value gives type {a.type}, not the {attr_type} asked for")
    return a


def get_attribute_value(a: AttributeProto):
    """An attribute's value (``onnx.helper.get_attribute_value``)."""
    field = _FIELDS.get(a.type)
    if field is None:
        raise ValueError(f"attribute {a.name!r} has no type")
    value = getattr(a, field)
    return list(value) if a.type in _LISTS else value


def make_node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None,
              doc_string: str | None = None, domain: str | None = None, **attributes) -> NodeProto:
    """A node (``onnx.helper.make_node``); its attributes in name order."""
    node = fill_node(NodeProto(), op_type, inputs, outputs, name, doc_string, domain)
    for k, v in sorted(attributes.items()):
        if v is not None:
            make_attribute(k, v, into=node.attribute.add())
    return node


def fill_node(node: NodeProto, op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None,
              doc_string: str | None = None, domain: str | None = None) -> NodeProto:
    """``node`` (an empty one, such as a graph's ``node.add()``) given its op, inputs, outputs, name, doc string and
    domain; returned."""
    node.op_type = op_type
    node.input.extend(inputs)
    node.output.extend(outputs)
    if name:
        node.name = name
    if doc_string:
        node.doc_string = doc_string
    if domain is not None:
        node.domain = domain
    return node


def make_opsetid(domain: str, version: int) -> OperatorSetIdProto:
    opset = OperatorSetIdProto()
    opset.domain = domain
    opset.version = int(version)
    return opset


def _set_shape(tensor_type, shape) -> None:
    if shape is None:
        return
    dims = tensor_type.shape
    dims.SetInParent()   # an empty list is a scalar's shape, not an unknown one
    for d in shape:
        dim = dims.dim.add()
        if type(d) is int or isinstance(d, numbers.Integral):     # the ABC's check only for numpy's integers
            dim.dim_value = int(d)
        elif isinstance(d, str):
            dim.dim_param = d


def make_tensor_value_info(name: str, elem_type: int, shape: Sequence | None,
                           into: ValueInfoProto | None = None) -> ValueInfoProto:
    """A tensor's value info (``onnx.helper.make_tensor_value_info``): ``shape`` None for an
    unknown rank, a dimension None or a name for an unknown size; ``into`` an empty one to fill."""
    vi = ValueInfoProto() if into is None else into
    vi.name = name
    vi.type.tensor_type.elem_type = int(elem_type)
    _set_shape(vi.type.tensor_type, shape)
    return vi


def make_tensor_sequence_value_info(name: str, elem_type: int, shape: Sequence | None) -> ValueInfoProto:
    """A sequence of tensors' value info (``onnx.helper.make_tensor_sequence_value_info``)."""
    vi = ValueInfoProto()
    vi.name = name
    tensor_type = vi.type.sequence_type.elem_type.tensor_type
    tensor_type.elem_type = int(elem_type)
    _set_shape(tensor_type, shape)
    return vi


def make_empty_tensor_value_info(name: str) -> ValueInfoProto:
    vi = ValueInfoProto()
    vi.name = name
    return vi


def make_graph(nodes: Iterable[NodeProto], name: str, inputs: Iterable[ValueInfoProto],
               outputs: Iterable[ValueInfoProto], initializer: Iterable[TensorProto] | None = None,
               doc_string: str | None = None, value_info: Iterable[ValueInfoProto] | None = None) -> GraphProto:
    g = GraphProto()
    g.node.extend(nodes)
    g.name = name
    if doc_string:
        g.doc_string = doc_string
    g.input.extend(inputs)
    g.output.extend(outputs)
    g.initializer.extend(initializer or [])
    g.value_info.extend(value_info or [])
    return g


def make_model(graph: GraphProto, *, opset_imports: Iterable[OperatorSetIdProto] | None = None,
               ir_version: int | None = None, **fields) -> ModelProto:
    """A model (``onnx.helper.make_model``): the ai.onnx opset this onnx knows unless given, other
    fields (producer_name, ...) set as named."""
    m = ModelProto()
    m.ir_version = IR_VERSION if ir_version is None else int(ir_version)
    m.graph.CopyFrom(graph)
    if opset_imports is None:
        m.opset_import.add().version = opset_version()
    else:
        m.opset_import.extend(opset_imports)
    for k, v in fields.items():
        setattr(m, k, v)
    return m


def set_model_props(model: ModelProto, props: dict[str, str]) -> None:
    """The model's metadata_props replaced by ``props``."""
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
