"""Run single ONNX operators with onnxruntime.

The digital units of an analog accelerator execute ordinary ONNX operators
(activations, pooling, normalisation, data movement). Their semantics, with
every attribute and opset variant, are exactly what onnxruntime implements, so
constant folding and the simulator's digital units both delegate here rather
than re-implementing forty operators with their own bugs. Sessions are cached
per (operator, attributes, input types) so a whole-model run builds each once.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from .errors import InvalidModelError, clean
from .files import interruption
from .ir import OpaqueAttribute, Subgraph
from .numerics.folded import FoldedIntegers
from .onnx_core import (GraphProto, TensorProto, ValueInfoProto, from_array, get_schema,
                        make_attribute, make_empty_tensor_value_info, make_graph, make_model, make_node,
                        make_opsetid, make_tensor_sequence_value_info, make_tensor_value_info,
                        np_dtype_to_tensor_dtype, opset_version, tensor_dtype_to_np_dtype)
from .onnx_walk import without_value_info

IR_VERSION = 8


def add_attributes(into, attrs: dict[str, Any], attr_types: dict[str, int] | None = None) -> None:
    """Add ``attrs`` to a node's ``attribute`` field ``into``, in name order, each built in place; ``attr_types``
    names the ONNX type of those whose value cannot tell (an empty list)."""
    types = attr_types or {}
    for key in sorted(attrs):
        value = attrs[key]
        if isinstance(value, np.ndarray):
            make_attribute(key, from_array(value), into=into.add())
        elif isinstance(value, OpaqueAttribute):
            proto = into.add()
            proto.ParseFromString(value.proto)
            proto.name = key
        else:
            make_attribute(key, value, attr_type=types.get(key), into=into.add())


def _freeze(attrs: dict[str, Any]) -> str:
    def enc(v):
        if isinstance(v, np.ndarray):
            return {"__array__": v.tolist(), "dtype": str(v.dtype), "shape": list(v.shape)}
        if isinstance(v, OpaqueAttribute):
            return {"__attribute__": v.proto.hex(), "kind": v.kind}
        return v
    return json.dumps({k: enc(v) for k, v in sorted(attrs.items())}, sort_keys=True, default=str)


def _thaw(frozen_attrs: str, attr_types: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The attributes and their ONNX types back from the strings that key the session caches."""
    attrs = json.loads(frozen_attrs)
    for k, v in list(attrs.items()):
        if isinstance(v, dict) and "__array__" in v:
            attrs[k] = np.array(v["__array__"], dtype=v["dtype"]).reshape(v["shape"])
        elif isinstance(v, dict) and "__attribute__" in v:
            attrs[k] = OpaqueAttribute(v["kind"], bytes.fromhex(v["__attribute__"]))
    return attrs, {k: int(v) for k, v in json.loads(attr_types).items()}


@lru_cache(maxsize=4096)
def _session(op_type: str, domain: str, opset: int, frozen_attrs: str, attr_types: str,
             in_types: tuple, n_outputs: int):
    import onnxruntime as ort
    attrs, types = _thaw(frozen_attrs, attr_types)
    in_names = [f"in{i}" if t is not None else "" for i, t in enumerate(in_types)]
    out_names = [f"out{i}" for i in range(n_outputs)]
    node = make_node(op_type, in_names, out_names, domain=domain or None)
    add_attributes(node.attribute, attrs, types)
    inputs = [_value_info(nm, t) for nm, t in zip(in_names, in_types) if t is not None]
    outputs = [make_empty_tensor_value_info(o) for o in out_names]
    graph = make_graph([node], op_type, inputs, outputs)
    imports = [make_opsetid("", opset if not domain else 17)]
    if domain:
        imports.append(make_opsetid(domain, opset or 1))
    model = make_model(graph, opset_imports=imports, ir_version=IR_VERSION)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=1)
def _kernels() -> dict[tuple[str, str], list[tuple[int, int]]]:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c
    table: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for k in ort_c.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            table.setdefault((k.domain, k.op_name), []).append(tuple(k.version_range))
    return table


def onnxruntime_runs(op_type: str, domain: str, opset: int) -> bool:
    """True when onnxruntime's CPU provider has a kernel for the operator at this opset, or ONNX defines
    it as a function of other operators (onnxruntime expands those)."""
    ranges = _kernels().get((domain or "", op_type))
    if ranges and (not opset or any(lo <= opset <= hi for lo, hi in ranges)):
        return True
    try:
        schema = get_schema(op_type, int(opset or opset_version()), domain or "")
    except Exception:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


@lru_cache(maxsize=256)
def _scoped_session(op_type: str, opsets: tuple, bodies: tuple, frozen_attrs: str, attr_types: str,
                    in_types: tuple, outer: tuple, n_outputs: int):
    """A model holding one control-flow node; the values its sub-graphs read from the enclosing graph
    (``outer``: (name as the sub-graphs spell it, type)) are inputs of the model's graph."""
    import onnxruntime as ort
    attrs, types = _thaw(frozen_attrs, attr_types)
    in_names = [f"acompile.in{i}" if t is not None else "" for i, t in enumerate(in_types)]
    out_names = [f"acompile.out{i}" for i in range(n_outputs)]
    node = make_node(op_type, in_names, out_names)
    add_attributes(node.attribute, attrs, types)
    node.attribute.extend(make_attribute(k, GraphProto.FromString(b)) for k, b in bodies)
    inputs = [_value_info(nm, t) for nm, t in zip(in_names, in_types) if t is not None]
    inputs += [_value_info(nm, t) for nm, t in outer]
    outputs = [make_empty_tensor_value_info(o) for o in out_names]
    graph = make_graph([node], op_type, inputs, outputs)
    model = make_model(graph, opset_imports=[make_opsetid(d, v) for d, v in opsets],
                       ir_version=IR_VERSION)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _type(x) -> int | tuple[str, int]:
    """The ONNX type of a value: a tensor's element type, or ("seq", element type) for a sequence
    (a Python list of arrays, as onnxruntime gives and takes them)."""
    if isinstance(x, TensorSequence):
        return ("seq", x.elem_type)
    if isinstance(x, list):
        return ("seq", _type(x[0]) if x else TensorProto.FLOAT)
    return np_dtype_to_tensor_dtype(np.asarray(x).dtype)


def _shaped_type(x) -> int | tuple:
    """:func:`_type` of a tensor with its shape: ("shape", element type, dims)."""
    t = _type(x)
    return t if isinstance(t, tuple) else ("shape", t, tuple(np.shape(x)))


def _value_info(name: str, t) -> ValueInfoProto:
    if isinstance(t, tuple) and t[0] == "shape":
        return make_tensor_value_info(name, t[1], list(t[2]))
    if isinstance(t, tuple):
        return make_tensor_sequence_value_info(name, t[1], None)
    return make_tensor_value_info(name, t, None)


def _runnable(body: Subgraph, branch: bool) -> bytes:
    """The sub-graph as onnxruntime is given it, serialised once per Subgraph: without inference's
    value_info (onnx_walk.without_value_info says why; ``branch``: an If's)."""
    if body.runnable is None:
        body.runnable = without_value_info(body.graph, branch).SerializeToString(deterministic=True)
    return body.runnable


def _run_scoped(op_type, attrs, inputs, n_outputs, opset, attr_types, outer, opsets) -> list[np.ndarray]:
    own = inputs[:len(inputs) - len(outer)]
    values = inputs[len(own):]
    plain = {k: v for k, v in attrs.items() if not isinstance(v, Subgraph)}
    bodies = tuple((k, _runnable(v, op_type == "If")) for k, v in sorted(attrs.items()) if isinstance(v, Subgraph))
    imports = dict(opsets or {})
    imports[""] = int(opset)
    sess = _scoped_session(op_type, tuple(sorted(imports.items())), bodies, _freeze(plain),
                           json.dumps(attr_types, sort_keys=True) if attr_types else "{}",
                           tuple(None if x is None else _type(x) for x in own),
                           tuple((name, _type(x)) for name, x in zip(outer, values)), n_outputs)
    feeds = {f"acompile.in{i}": _feed(x) for i, x in enumerate(own) if x is not None}
    feeds.update((name, _feed(x)) for name, x in zip(outer, values))
    return sess.run(None, feeds)


def narrow_dtype(dtype) -> bool:
    """One of ml_dtypes' types (int4, uint4, float8, bfloat16), which onnx's numpy_helper gives the
    narrow ONNX types and onnxruntime's Python binding refuses as an input."""
    return np.dtype(dtype).type.__module__ == "ml_dtypes"


def _exotic(x) -> bool:
    return x is not None and not isinstance(x, list) and narrow_dtype(np.asarray(x).dtype)


def integer_dtype(dtype) -> bool:
    """An integer type, numpy's own or ml_dtypes' (int4, uint4, int2, uint2)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "iu" or narrow_dtype(dtype) and dtype.name.startswith(("int", "uint"))


def integer_range(dtype) -> tuple[int, int, int]:
    """(min, max, bits) of an integer type, numpy's own or ml_dtypes' (imported only for those: 3 ms)."""
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else __import__("ml_dtypes").iinfo(dtype)
    return int(info.min), int(info.max), int(info.bits)


def _saturate(x: np.ndarray, dtype) -> np.ndarray:
    """x clipped to a narrow float type's largest finite value (infinities included)."""
    import ml_dtypes
    top = float(ml_dtypes.finfo(dtype).max)
    return np.clip(x, -top, top)


def _as_numbers(x: np.ndarray) -> np.ndarray:
    """The values of a quantized tensor in a type numpy computes with exactly (float8 and float4 are
    exact in float64)."""
    x = np.asarray(x)
    return x.astype(np.int64 if integer_dtype(x.dtype) else np.float64)


def dequantize_linear(x, scale, zero_point=None, axis: int = 1, block_size: int = 0,
                      output_dtype=None) -> np.ndarray:
    """ONNX DequantizeLinear, ``(x - zero_point) * scale``: per tensor (a one-element scale), per axis
    (a 1-D scale along ``axis``) or blocked (a scale of x's rank, one per ``block_size`` elements
    along ``axis``). Like onnxruntime, the difference is taken exactly and multiplied once in the
    scale's type."""
    x, scale = np.asarray(x), np.asarray(scale)
    out = np.dtype(output_dtype) if output_dtype is not None else scale.dtype
    work = np.float32 if out.itemsize <= 4 else np.float64
    scale = _broadcast(scale.astype(work), x, axis, block_size)
    if integer_dtype(x.dtype) and x.dtype.itemsize <= 2:
        # integers of 16 bits or fewer, and their differences, are exact in float32: no wider copy; without a
        # zero point, one pass that converts as it multiplies
        zero = None if zero_point is None else _broadcast(np.asarray(zero_point).astype(work), x, axis, block_size)
        if narrow_dtype(x.dtype):
            x = x.astype(work)
        if zero is None or not zero.any():
            return np.multiply(x, scale, dtype=work).astype(out, copy=False)
        diff = np.subtract(x, zero, dtype=work)
    else:
        diff = _as_numbers(x)
        if zero_point is not None:
            diff = diff - _broadcast(_as_numbers(zero_point), x, axis, block_size)
        diff = diff.astype(work)
    diff *= scale
    return diff.astype(out, copy=False)


def quantize_linear(x, scale, zero_point=None, axis: int = 1, block_size: int = 0, output_dtype=None,
                    saturate: bool = True) -> np.ndarray:
    """ONNX QuantizeLinear: ``x / scale`` rounded half to even, plus the zero point, saturated to the
    output type (the zero point's, else ``output_dtype``, else uint8). Scales broadcast as in
    :func:`dequantize_linear`; an 8-bit float output rounds to nearest and saturates unless told not to."""
    x, scale = np.asarray(x), np.asarray(scale)
    if output_dtype is not None:
        out = np.dtype(output_dtype)
    else:
        out = np.asarray(zero_point).dtype if zero_point is not None else np.dtype(np.uint8)
    ratio = x.astype(np.float32) / _broadcast(scale.astype(np.float32), x, axis, block_size)
    zero = _broadcast(_as_numbers(zero_point), x, axis, block_size) if zero_point is not None else 0
    if integer_dtype(out):
        low, high, _ = integer_range(out)
        return np.clip(np.rint(ratio).astype(np.float64) + zero, low, high).astype(out)
    y = ratio.astype(np.float64) + zero
    return (_saturate(y, out) if saturate else y).astype(out)


def _broadcast(p: np.ndarray, x: np.ndarray, axis: int, block_size: int) -> np.ndarray:
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    axis = axis % max(x.ndim, 1)
    if p.ndim == 1:
        if p.shape[0] != x.shape[axis]:
            raise ValueError(f"a per-axis scale of {p.shape[0]} values for axis {axis} of size {x.shape[axis]}")
        return p.reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    if p.ndim != x.ndim or block_size <= 0:
        raise ValueError(f"a scale of shape {list(p.shape)} for an input of shape {list(x.shape)}"
                         + ("" if block_size > 0 else " needs block_size"))
    blocks = -(-x.shape[axis] // block_size)
    if p.shape[axis] != blocks or any(p.shape[a] != x.shape[a] for a in range(x.ndim) if a != axis):
        raise ValueError(f"a blocked scale of shape {list(p.shape)} for an input of shape {list(x.shape)} "
                         f"with block_size {block_size} along axis {axis}")
    return np.repeat(p, block_size, axis=axis).take(np.arange(x.shape[axis]), axis=axis)


# onnxruntime's contrib QuantizeLinear/DequantizeLinear (com.microsoft) compute what ONNX's do
QUANTIZE_DOMAINS = ("", "ai.onnx", "com.microsoft")
# operators that may have a narrow type on their output only (a Cast to float8, a 4-bit output_dtype)
NUMPY_FIRST = ("Cast", "CastLike", "QuantizeLinear")


def _numpy_op(op_type: str, domain: str, attrs: dict, inputs: Sequence) -> list[np.ndarray] | None:
    """The operators onnxruntime's Python binding cannot be fed (sub-byte and 8-bit float
    quantized tensors), computed in numpy; None for every other case."""
    out = tensor_dtype_to_np_dtype(int(attrs["output_dtype"])) if attrs.get("output_dtype") else None
    axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
    if op_type == "DequantizeLinear" and domain in QUANTIZE_DOMAINS and inputs and _exotic(inputs[0]):
        zero_point = inputs[2] if len(inputs) > 2 else None
        return [dequantize_linear(inputs[0], inputs[1], zero_point, axis, block, out)]
    if op_type == "QuantizeLinear" and domain in QUANTIZE_DOMAINS and (
            len(inputs) > 2 and _exotic(inputs[2]) or out is not None and narrow_dtype(np.dtype(out))):
        zero_point = inputs[2] if len(inputs) > 2 else None
        return [quantize_linear(inputs[0], inputs[1], zero_point, axis, block, out, bool(attrs.get("saturate", 1)))]
    if op_type in ("Cast", "CastLike") and domain in ("", "ai.onnx") and ("to" in attrs or len(inputs) > 1):
        x = np.asarray(inputs[0])
        to = np.asarray(inputs[1]).dtype if op_type == "CastLike" else \
            np.dtype(tensor_dtype_to_np_dtype(int(attrs["to"])))
        if not narrow_dtype(x.dtype) and not narrow_dtype(to) or to.name == "float8_e8m0fnu":
            return None     # e8m0's round_mode is onnxruntime's to honour (or refuse)
        if narrow_dtype(to) and to.name.startswith("float") and x.dtype.kind == "f" and attrs.get("saturate", 1):
            x = _saturate(x, to)
        return [x.astype(to)]
    return None


# Operators whose outputs are their inputs' elements moved, bit for bit: on an ml_dtypes tensor they run
# on its storage integers, whatever onnxruntime's Python binding can take.
MOVES_BITS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Gather", "GatherElements",
              "GatherND", "Slice", "Concat", "Split", "Expand", "Tile", "DepthToSpace", "SpaceToDepth",
              "Compress", "ReverseSequence", "Where", "ScatterND", "ScatterElements", "Pad"}


def _storage_run(op_type: str, attrs: dict, inputs: Sequence, run) -> list | None:
    """Run a MOVES_BITS operator on exotic inputs of one type through their storage integers."""
    kinds = {np.asarray(x).dtype for x in inputs if _exotic(x)}
    if len(kinds) != 1 or attrs.get("reduction", "none") != "none":
        return None
    kind = kinds.pop()
    storage = np.dtype(f"u{kind.itemsize}")
    outs = run([np.asarray(x).view(storage) if _exotic(x) else x for x in inputs])
    return [o.view(kind) if isinstance(o, np.ndarray) and o.dtype == storage else o for o in outs]


def _feed(x) -> Any:
    """A numpy array as onnxruntime takes it: an 8- or 16-bit ml_dtypes type (float8, bfloat16) goes
    by its storage bits, typed with its ONNX type."""
    if isinstance(x, list):            # a sequence
        return x
    x = np.asarray(x)
    if not narrow_dtype(x.dtype):
        return x
    if x.dtype.name.startswith(("int", "uint", "float4")):
        # ml_dtypes keeps one 4- or 2-bit value a byte; onnxruntime reads them packed: never mislabel
        raise ValueError(f"onnxruntime cannot take a {x.dtype.name} tensor here")
    import onnxruntime as ort
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
        np.ascontiguousarray(x).view(f"u{x.dtype.itemsize}"), np_dtype_to_tensor_dtype(x.dtype))


@lru_cache(maxsize=4096)
def _float8_outputs(sess) -> tuple:
    """(index, dtype) of a session's 8-bit float outputs, which onnxruntime returns as uint8 storage."""
    return tuple((i, tensor_dtype_to_np_dtype(getattr(TensorProto, o.type[7:-1].upper())))
                 for i, o in enumerate(sess.get_outputs()) if o.type.startswith("tensor(float8"))


class TensorSequence(list):
    """A sequence value as onnxruntime gives it (a list of arrays) with its element type, which an empty
    one cannot tell by itself (a Loop carrying a list that starts empty needs it)."""
    elem_type: int = TensorProto.FLOAT


def _typed_outputs(sess, values: list) -> list:
    """Give 8-bit float outputs their type back, and sequences their element type."""
    for i, dtype in _float8_outputs(sess):
        if isinstance(values[i], np.ndarray):
            values[i] = values[i].view(dtype)
    for i, out in enumerate(sess.get_outputs()):
        if isinstance(values[i], list) and out.type.startswith("seq(tensor("):
            values[i] = TensorSequence(values[i])
            values[i].elem_type = TensorProto.DataType.Value(out.type[len("seq(tensor("):-2].upper())
    return values


def run_node(op_type: str, attrs: dict[str, Any], inputs: Sequence[np.ndarray | None], n_outputs: int,
             opset: int, domain: str = "", attr_types: dict[str, int] | None = None,
             where: str = "", outer: Sequence[str] | None = None,
             opsets: dict[str, int] | None = None) -> list[np.ndarray]:
    """Execute one ONNX operator on numpy arrays and return its outputs.

    A control-flow node (If, Loop, Scan: attributes holding a sub-graph) gets the values its
    sub-graphs read from the enclosing graph as its last inputs, ``outer`` naming them as the
    sub-graphs do; ``opsets`` are the model's opset imports (the sub-graphs may use any domain).
    """
    inputs = [np.asarray(x) if isinstance(x, FoldedIntegers) else x for x in inputs]     # a weight held as integers
    try:
        exotic = any(map(_exotic, inputs))
        values = _numpy_op(op_type, domain, attrs, inputs) if exotic or op_type in NUMPY_FIRST else None
        if values is None and exotic and op_type in MOVES_BITS and domain in ("", "ai.onnx") and outer is None:
            values = _storage_run(op_type, attrs, inputs, lambda args: run_node(
                op_type, attrs, args, n_outputs, opset, domain, attr_types, where))
        if values is not None:
            return values
        if outer is not None:
            return _run_scoped(op_type, attrs, list(inputs), n_outputs, opset, attr_types, list(outer), opsets)
        in_types = tuple(None if x is None else _type(x) for x in inputs)
        # Most digital ops (Relu, Add, ...) have no attributes: skip the JSON that keys the session cache.
        key = (op_type, domain, int(opset), _freeze(attrs) if attrs else "{}",
               json.dumps(attr_types, sort_keys=True) if attr_types else "{}")
        try:
            sess = _session(*key, in_types, n_outputs)
        except Exception as e:
            if interruption(e) is not None:
                raise
            # an operator whose shape inference needs its inputs' shapes (com.microsoft MatMulNBits' bias):
            # declared with the shapes of these values, in a session of their own
            sess = _session(*key, tuple(None if x is None else _shaped_type(x) for x in inputs), n_outputs)
        feeds = {f"in{i}": _feed(x) for i, x in enumerate(inputs) if x is not None}
        return _typed_outputs(sess, sess.run(None, feeds))
    except Exception as e:
        interrupt = interruption(e)
        if interrupt is not None:     # Ctrl-C/SIGTERM during onnxruntime's first import: not the model's fault
            raise interrupt
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidModelError(f"{op_type} cannot be evaluated: {clean(why, 300)}",
                                where=where or None)
