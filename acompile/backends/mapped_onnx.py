"""``mapped.onnx``: the mapped program as an ONNX model that Netron and ``onnx.checker`` open.

Digital nodes keep their original ONNX op; every analog layer is its chain of nodes in the
``acompile`` domain (ToVectors, DAC, CrossbarRead, ADC, ShiftAdd, Accumulate, Dequantize,
FromVectors) with the chain's settings as attributes and the layer's mapping and cost on its
CrossbarRead node; ``metadata_props`` holds the totals. Weights stay out unless asked for
(``--emit mapped-with-weights``): left-out constants are graph inputs carrying their shape.
docs/formats.md describes the attributes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._version import __version__
from ..frontend.control_flow import own_inputs, rename_outer
from ..ir import DOMAIN, OpaqueAttribute, Subgraph
from ..onnx_core import (ModelProto, NodeProto, ValueInfoProto, fill_node, from_array, make_attribute,
                         make_opsetid, make_tensor_value_info, np_dtype_to_tensor_dtype, set_model_props)
from ..onnx_exec import IR_VERSION, add_attributes
from ..onnx_walk import without_value_info
from .program import chain_attrs

DOMAIN_VERSION = 1
SMALL_CONSTANT = 64    # elements: shapes, axes and scalars that digital ops need stay in, even without weights

_CHAIN_DOC = {
    "ToVectors": "cut the input into the vectors the crossbars read (im2col for Conv)",
    "DAC": "quantise each vector to input_bits and stream it dac_bits per cycle over `cycles` cycles",
    "CrossbarRead": "analog multiply-accumulate on the crossbars holding this layer's blocks",
    "ADC": "convert each column current to a code (bits, full_scale, step)",
    "ShiftAdd": "weight each cycle's and cell slice's codes by their power of two and add them",
    "Accumulate": "add the partial sums of the row blocks",
    "Dequantize": "scale back to real values (input scale x per-channel weight scale)",
    "FromVectors": "reassemble the output tensor and add the bias",
}


def _attribute_value(value):
    """A chain attribute in a form ONNX attributes hold (bools as ints, ranges as text)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list) and value and isinstance(value[0], list):
        return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in value)
    if isinstance(value, (dict, list)) and not all(isinstance(v, (int, float)) for v in value):
        return json.dumps(value, sort_keys=True)
    return value


def _layer_cost_attrs(entry: dict | None) -> dict:
    if entry is None:
        return {}
    return {"layer_crossbars": entry["counts"]["crossbars"], "layer_blocks": entry["counts"]["blocks"],
            "layer_replication": entry["replication"], "layer_tiles": ",".join(map(str, entry["tiles"])),
            "layer_utilisation": float(entry["utilisation"]), "cost_energy_pj": float(entry["energy_total_pj"]),
            "cost_latency_ns": float(entry["latency_ns"]),
            "cost_energy_pj_by_component": json.dumps(entry["energy_pj"], sort_keys=True)}


def _analog_node(proto: NodeProto, node, graph, mapping, costs, keep) -> None:
    layer = mapping.layers[node.meta["layer"]]
    inputs = [i if i and (keep or not graph.is_constant(i)) else "" for i in node.inputs]
    while inputs and inputs[-1] == "":
        inputs.pop()
    attrs = {"layer": layer.name, "origin": node.meta.get("origin", layer.op_type)}
    attrs.update({k: _attribute_value(v) for k, v in chain_attrs(node, layer, mapping).items()})
    if node.op_type == "CrossbarRead":
        m = layer.matrices[0]
        attrs.update(matrix=[m.n_out, m.k_in], groups=layer.groups, weight_bits=layer.spec.weight_bits,
                     **_layer_cost_attrs(costs.get(layer.name)))
    fill_node(proto, node.op_type, inputs, node.outputs, name=node.name, domain=DOMAIN,
              doc_string=_CHAIN_DOC.get(node.op_type, ""))
    for k, v in sorted(attrs.items()):
        make_attribute(k, v, into=proto.attribute.add())


def _digital_node(proto: NodeProto, node) -> None:
    attrs = {k: v for k, v in node.attrs.items()
             if not isinstance(v, Subgraph) and not (isinstance(v, OpaqueAttribute) and not v.proto)}
    bodies = {k: without_value_info(v.graph, node.op_type == "If") for k, v in node.attrs.items()   # re-inferred
              if isinstance(v, Subgraph) and v.graph is not None}
    dropped = sorted(set(node.attrs) - set(attrs) - set(bodies))
    # a control-flow node's sub-graphs read the enclosing values by name: they are not node inputs in ONNX;
    # a pass that copied the node under new value names (an unrolled loop) renames those reads too
    inputs = own_inputs(node)
    rename = {o: a for o, a in zip(node.meta.get("outer", ()), node.inputs[len(inputs):]) if o != a}
    if rename:
        bodies = {k: rename_outer(g, rename) for k, g in bodies.items()}
    fill_node(proto, node.op_type, inputs, node.outputs, name=node.name, domain=node.domain or None,
              doc_string=f"attributes not shown: {', '.join(dropped)}" if dropped else "")
    add_attributes(proto.attribute, attrs, node.meta.get("attr_types"))
    for k, g in sorted(bodies.items()):
        make_attribute(k, g, into=proto.attribute.add())


def _info(vi: ValueInfoProto, graph, name) -> None:
    typed = graph.meta.get("non_tensor_outputs", {}).get(name)
    if typed is not None:
        vi.name = name
        vi.type.ParseFromString(typed)
        return
    t = graph.tensors.get(name)
    if t is None and graph.is_constant(name):
        value = np.asarray(graph.constants[name])
        make_tensor_value_info(name, np_dtype_to_tensor_dtype(value.dtype), list(value.shape), into=vi)
        return
    elem = np_dtype_to_tensor_dtype(np.dtype(t.dtype)) if t is not None and t.dtype is not None else 1
    shape = [d if isinstance(d, int) else str(d) for d in t.shape] if t is not None and t.shape is not None else None
    make_tensor_value_info(name, elem, shape, into=vi)


def mapped_model(compiled, report: dict, with_weights: bool = False) -> ModelProto:
    """The ONNX model of the mapped program (see the module docstring), built in place: a node, attribute or
    value info made apart and copied in took twice as long (an unrolled recurrent model has tens of thousands)."""
    graph, mapping = compiled.graph, compiled.mapping
    costs = {x["name"]: x for x in report.get("layers", [])}
    model = ModelProto()
    model.ir_version = IR_VERSION
    g = model.graph
    used = {}           # the values the nodes read, in order (a dict: a model's thousands of them)
    domains = {"": graph.opset, DOMAIN: DOMAIN_VERSION}
    for node in graph.nodes:
        proto = g.node.add()
        if node.domain == DOMAIN and mapping is not None and "layer" in node.meta:   # not an unmapped Linear
            _analog_node(proto, node, graph, mapping, costs, with_weights)
        else:
            _digital_node(proto, node)
            if node.domain:
                domains.setdefault(node.domain, node.opset or 1)
        outer = node.inputs[len(own_inputs(node)):]     # what its sub-graphs read, as this graph names it
        used.update(dict.fromkeys(i for i in (*proto.input, *outer) if i))
    used.update(dict.fromkeys(graph.outputs))       # a constant that is also a graph output
    g.name = graph.name or "model"
    g.doc_string = "mapped by acompile" + ("" if with_weights else "; weights left out: the inputs after the "
                                           "model's own stand for them (--emit mapped-with-weights keeps them)")
    for name in graph.inputs:
        _info(g.input.add(), graph, name)
    for name in used:
        if not graph.is_constant(name):
            continue
        value = np.asarray(graph.constants[name])
        if with_weights or value.size <= SMALL_CONSTANT:
            g.initializer.append(from_array(value, name))
        else:
            _info(g.input.add(), graph, name)
    for name in graph.outputs:
        _info(g.output.add(), graph, name)
    for name in dict.fromkeys(o for p in g.node for o in p.output):
        if name not in graph.outputs and graph.tensors.get(name) is not None and graph.tensors[name].shape is not None:
            _info(g.value_info.add(), graph, name)
    model.opset_import.extend(make_opsetid(d, v) for d, v in domains.items())
    model.producer_name, model.producer_version = "acompile", __version__
    totals = report.get("totals", {})
    meta = {"acompile.target": report["target"]["name"], "acompile.model": report["model"]["source"],
            "acompile.batch": str(report["options"]["batch"]), "acompile.domain_version": str(DOMAIN_VERSION)}
    for key, value in sorted(totals.items()):
        meta[f"acompile.totals.{key}"] = json.dumps(value, sort_keys=True) if isinstance(value, dict) else repr(value)
    set_model_props(model, meta)
    return model


def write_mapped(path, compiled, report: dict, with_weights: bool = False) -> None:
    Path(path).write_bytes(mapped_model(compiled, report, with_weights).SerializeToString())
