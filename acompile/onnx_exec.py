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
import onnx
from onnx import helper, numpy_helper

from .errors import InvalidModelError, clean
from .files import interruption
from .ir import Subgraph

IR_VERSION = 8


def make_attributes(attrs: dict[str, Any], attr_types: dict[str, int] | None = None) -> list[onnx.AttributeProto]:
    out = []
    types = attr_types or {}
    for key in sorted(attrs):
        value = attrs[key]
        if isinstance(value, np.ndarray):
            out.append(helper.make_attribute(key, numpy_helper.from_array(value)))
        else:
            out.append(helper.make_attribute(key, value, attr_type=types.get(key)))
    return out


def _freeze(attrs: dict[str, Any]) -> str:
    def enc(v):
        if isinstance(v, np.ndarray):
            return {"__array__": v.tolist(), "dtype": str(v.dtype), "shape": list(v.shape)}
        return v
    return json.dumps({k: enc(v) for k, v in sorted(attrs.items())}, sort_keys=True, default=str)


def _thaw(frozen_attrs: str, attr_types: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The attributes and their ONNX types back from the strings that key the session caches."""
    attrs = json.loads(frozen_attrs)
    for k, v in list(attrs.items()):
        if isinstance(v, dict) and "__array__" in v:
            attrs[k] = np.array(v["__array__"], dtype=v["dtype"]).reshape(v["shape"])
    return attrs, {k: int(v) for k, v in json.loads(attr_types).items()}


@lru_cache(maxsize=4096)
def _session(op_type: str, domain: str, opset: int, frozen_attrs: str, attr_types: str,
             in_types: tuple, n_outputs: int):
    import onnxruntime as ort
    attrs, types = _thaw(frozen_attrs, attr_types)
    in_names = [f"in{i}" if t is not None else "" for i, t in enumerate(in_types)]
    out_names = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, in_names, out_names, domain=domain or None)
    node.attribute.extend(make_attributes(attrs, types))
    inputs = [helper.make_tensor_value_info(nm, t, None) for nm, t in zip(in_names, in_types) if t is not None]
    outputs = [helper.make_empty_tensor_value_info(o) for o in out_names]
    graph = helper.make_graph([node], op_type, inputs, outputs)
    imports = [helper.make_opsetid("", opset if not domain else 17)]
    if domain:
        imports.append(helper.make_opsetid(domain, opset or 1))
    model = helper.make_model(graph, opset_imports=imports, ir_version=IR_VERSION)
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
        schema = onnx.defs.get_schema(op_type, int(opset or onnx.defs.onnx_opset_version()), domain or "")
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
    node = helper.make_node(op_type, in_names, out_names)
    node.attribute.extend(make_attributes(attrs, types))
    node.attribute.extend(helper.make_attribute(k, onnx.GraphProto.FromString(b)) for k, b in bodies)
    inputs = [helper.make_tensor_value_info(nm, t, None) for nm, t in zip(in_names, in_types) if t is not None]
    inputs += [helper.make_tensor_value_info(nm, t, None) for nm, t in outer]
    outputs = [helper.make_empty_tensor_value_info(o) for o in out_names]
    graph = helper.make_graph([node], op_type, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                              ir_version=IR_VERSION)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _type(x) -> int:
    return helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype)


def _run_scoped(op_type, attrs, inputs, n_outputs, opset, attr_types, outer, opsets) -> list[np.ndarray]:
    own = inputs[:len(inputs) - len(outer)]
    values = inputs[len(own):]
    plain = {k: v for k, v in attrs.items() if not isinstance(v, Subgraph)}
    bodies = tuple((k, v.graph.SerializeToString(deterministic=True)) for k, v in sorted(attrs.items())
                   if isinstance(v, Subgraph))
    imports = dict(opsets or {})
    imports[""] = int(opset)
    sess = _scoped_session(op_type, tuple(sorted(imports.items())), bodies, _freeze(plain),
                           json.dumps(attr_types, sort_keys=True) if attr_types else "{}",
                           tuple(None if x is None else _type(x) for x in own),
                           tuple((name, _type(x)) for name, x in zip(outer, values)), n_outputs)
    feeds = {f"acompile.in{i}": np.asarray(x) for i, x in enumerate(own) if x is not None}
    feeds.update((name, np.asarray(x)) for name, x in zip(outer, values))
    return sess.run(None, feeds)


def run_node(op_type: str, attrs: dict[str, Any], inputs: Sequence[np.ndarray | None], n_outputs: int,
             opset: int, domain: str = "", attr_types: dict[str, int] | None = None,
             where: str = "", outer: Sequence[str] | None = None,
             opsets: dict[str, int] | None = None) -> list[np.ndarray]:
    """Execute one ONNX operator on numpy arrays and return its outputs.

    A control-flow node (If, Loop, Scan: attributes holding a sub-graph) gets the values its
    sub-graphs read from the enclosing graph as its last inputs, ``outer`` naming them as the
    sub-graphs do; ``opsets`` are the model's opset imports (the sub-graphs may use any domain).
    """
    in_types = tuple(None if x is None else helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype)
                     for x in inputs)
    try:
        if outer is not None:
            return _run_scoped(op_type, attrs, list(inputs), n_outputs, opset, attr_types, list(outer), opsets)
        # Most digital ops (Relu, Add, ...) have no attributes: skip the JSON that keys the session cache.
        sess = _session(op_type, domain, int(opset), _freeze(attrs) if attrs else "{}",
                        json.dumps(attr_types, sort_keys=True) if attr_types else "{}", in_types, n_outputs)
        feeds = {f"in{i}": np.asarray(x) for i, x in enumerate(inputs) if x is not None}
        return sess.run(None, feeds)
    except Exception as e:
        interrupt = interruption(e)
        if interrupt is not None:     # Ctrl-C/SIGTERM during onnxruntime's first import: not the model's fault
            raise interrupt
        raise InvalidModelError(f"{op_type} cannot be evaluated: {clean(str(e).splitlines()[0] if str(e) else type(e).__name__, 300)}",
                                where=where or None)
