"""The simulator program: ``program.json`` (the operations) and ``program.npz``
(the constants they read: float weights for ideal mode, biases, digital
operands).

``program.json`` is a versioned, sorted, indented JSON document that diffs
cleanly between two compiles: the graph inputs and outputs with shapes, every
analog layer's record (converter settings, scales, geometry), and the ordered
list of operations over named buffers -- ONNX operators for the digital units
and the ``acompile`` domain chain ToVectors, DAC, CrossbarRead, ADC, ShiftAdd,
Accumulate, Dequantize, FromVectors for each analog layer. :mod:`.program_reader` reads them back.
See docs/formats.md.
"""

from __future__ import annotations

import hashlib
import math
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import numerics
from ..errors import clean
from ..ir import DOMAIN, Graph, Node, OpaqueAttribute, Subgraph
from ..mapping import AnalogLayer, Mapping
from ..onnx_exec import narrow_dtype
from .archive import ArchiveWriter
from .device import Cancelled

PROGRAM_FORMAT = "acompile-program"
PROGRAM_VERSION = 3     # 3: a layer's model_quant.weight_scales may be "weight", the scales its weight is stored
#                           with; 2: program.npz identified by the sha256 of its index (constants_index_sha256)
MODEL_SCALES_OF_WEIGHT = "weight"


def chain_attrs(node: Node, layer: AnalogLayer, mapping: Mapping) -> dict:
    spec = layer.spec
    op = node.op_type
    if op == "DAC":
        return {"input_bits": spec.input_bits, "dac_bits": spec.dac_bits, "signed": layer.input_signed,
                "cycles": layer.input_cycles, "input_scale": layer.input_scale}
    if op == "CrossbarRead":
        bars = sorted(set(mapping.blocks.crossbar[layer.blocks].tolist()))
        return {"crossbars": _ranges(bars), "blocks": len(layer.blocks), "cell_bits": spec.cell_bits,
                "signed_weights": spec.signed_weights}
    if op == "ADC":
        full = layer.adc_full_scale or float(spec.worst_case_full_scale)
        return {"bits": spec.adc_bits, "full_scale": full, "step": numerics.adc_step(spec, full)}
    if op == "ShiftAdd":
        return {"cycle_weights": [float(w) for w in numerics.cycle_weights(spec, layer.input_signed)],
                "slice_shift_bits": spec.cell_bits}
    if op == "Accumulate":
        return {"row_blocks": layer.matrices[0].row_blocks}
    if op == "Dequantize":
        return {"input_scale": layer.input_scale, "weight_scales": "device:weight_scales"}
    if op in ("ToVectors", "FromVectors"):
        return {"layout": {"Conv": "im2col", "ConvTranspose": "pixels/col2im", "Linear": "last_axis"}[layer.op_type],
                "groups": layer.groups}
    return {}


def _ranges(values: list[int]) -> list[list[int]]:
    """[[first, last], ...] runs of consecutive integers (keeps the listing short)."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return runs


def _attr_key(node: Node, name: str) -> str:
    """The program.npz constant holding attribute ``name`` of ``node``."""
    return f"attr/{node.name}/{name}"


def _attr_arrays(node: Node) -> dict[str, np.ndarray]:
    """The constants program.npz holds for ``node``'s attributes: tensors, and control-flow bodies as the
    serialised GraphProto they run as."""
    out = {}
    for k, v in node.attrs.items():
        if isinstance(v, np.ndarray):
            out[_attr_key(node, k)] = v
        elif isinstance(v, Subgraph) and v.graph is not None:
            out[_attr_key(node, k)] = np.frombuffer(v.graph.SerializeToString(deterministic=True), np.uint8)
        elif isinstance(v, OpaqueAttribute) and v.proto:
            out[_attr_key(node, k)] = np.frombuffer(v.proto, np.uint8)
    return out


def _attr_json(node: Node) -> dict:
    out = {}
    for k, v in sorted(node.attrs.items()):
        if isinstance(v, np.ndarray):
            out[k] = {"tensor": _attr_key(node, k)}
        elif isinstance(v, Subgraph) and v.graph is not None:
            out[k] = {"graph": _attr_key(node, k)}
        elif isinstance(v, OpaqueAttribute) and v.proto:
            out[k] = {"attribute": _attr_key(node, k), "kind": v.kind}
        elif isinstance(v, (Subgraph, OpaqueAttribute)):
            out[k] = {"unsupported": repr(v)}
        elif isinstance(v, float) and not math.isfinite(v):
            out[k] = {"float": repr(v)}          # JSON has no NaN or infinity (an imputer's NaN, -inf alpha)
        elif isinstance(v, list) and any(isinstance(x, float) and not math.isfinite(x) for x in v):
            out[k] = {"floats": [x if math.isfinite(x) else repr(x) for x in v]}
        else:
            out[k] = v
    return out


def _tensor_json(graph: Graph, name: str) -> dict:
    info = graph.tensors.get(name)
    return {"name": name, "dtype": str(info.dtype) if info and info.dtype is not None else None,
            "shape": list(info.shape) if info and info.shape is not None else None}


TARGET_FILE = "target.toml"


class StoredConstants(NamedTuple):
    """What :func:`write_constants` wrote: program.json's ``constants`` listing, ``constants_index_sha256``, and
    the scales each constant stored as integers and scales was stored with (float64)."""
    listing: dict
    index_sha256: str
    scales: dict

    def json(self) -> dict:
        return {"constants": self.listing, "constants_index_sha256": self.index_sha256}


def write_constants(folder: Path, graph: Graph, mapping: Mapping | None = None,
                    stop: threading.Event | None = None) -> StoredConstants:
    """Write program.npz: every constant the program's operations read, in name order; return what it holds.

    The weight of a layer that keeps a quantized model's own scales (``mapping``) is stored as its
    integers and scales when their product gives it back bit for bit (``numerics.integer_form``).
    Calibration changes none of them, so ``acompile compile`` writes this file while it calibrates. The
    integers remembered beside float weights (``numerics.folded``) are let go once it is written.
    Once ``stop`` is set (the compile failed on another thread), stops before the next array.
    """
    constants: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        if not (node.domain == DOMAIN and "layer" in node.meta):
            constants.update(_attr_arrays(node))
    used = {i for n in graph.nodes for i in n.inputs if i} | set(graph.outputs)   # a constant may be an output
    constants.update((name, graph.constants[name]) for name in graph.constants if name in used)
    model_scales = {layer.weight: layer.model_quant["weight_scales"] for layer in (mapping.layers if mapping else [])
                    if layer.model_quant and layer.weight in constants}
    listing, stored, stored_scales = {}, {}, {}
    npz = folder / "program.npz"
    writer = ArchiveWriter(npz)
    try:
        for i, name in enumerate(sorted(constants)):
            if stop is not None and stop.is_set():
                raise Cancelled
            arr, entry = constants[name], f"c{i:06d}.npy"
            # a weight several layers share (one initializer, each MatMul's transposed view of it) is stored once
            same = _memory(arr) if name not in model_scales else None
            listing[name] = {"entry": stored.setdefault(same, entry) if same else entry, "dtype": str(arr.dtype),
                             "shape": list(arr.shape)}
            if listing[name]["entry"] != entry:
                continue
            known = numerics.folded_integers(graph.meta, arr)
            form = numerics.integer_form(arr, np.asarray(model_scales[name]), known) if name in model_scales else None
            if form is not None:
                ints, scales, axis = form
                arr = ints
                listing[name]["scales"] = {"entry": f"c{i:06d}.scales.npy", "axis": axis}
                writer.add_array(f"c{i:06d}.scales.npy", scales)
                stored_scales[name] = scales.astype(np.float64)
            writer.add_array(entry, _storable(np.asarray(arr)))     # a weight held as integers: its product
    finally:
        writer.close()
        numerics.release_folded(graph.meta)     # their last reader: the model file's integers can go
    return StoredConstants(listing, writer.index_sha256(), stored_scales)


def _memory(arr) -> tuple | None:
    """What makes two arrays the same values: their memory, layout and type (None: not a plain array)."""
    if type(arr) is not np.ndarray or not arr.size:
        return None
    return arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str


def _storable(arr: np.ndarray) -> np.ndarray:
    """An ml_dtypes array (int4, float8: types .npy cannot name) as its storage integers;
    program.json keeps the type's name and :func:`_typed` views them back."""
    return arr.view(f"u{arr.dtype.itemsize}") if narrow_dtype(arr.dtype) else arr


def write_program(folder: Path, compiled, dumps, constants: StoredConstants | None = None) -> str:
    """Write program.npz (unless ``constants`` says it is written: what :func:`write_constants` returned),
    target.toml and program.json; return the sha256 of program.json.

    target.toml is the fully resolved target the program was compiled for (``--set`` applied);
    program.json holds its sha256, so the program's checksum covers it and simulate uses it,
    never a target name or path read from the program.
    """
    from ..target import dumps_toml
    graph, mapping = compiled.graph, compiled.mapping
    if constants is None:
        constants = write_constants(folder, graph, mapping)
    target_text = dumps_toml(compiled.target.data)
    (folder / TARGET_FILE).write_text(target_text)
    ops = []
    for node in graph.nodes:
        entry = {"name": node.name, "op": node.op_type, "domain": node.domain, "opset": node.opset or graph.opset,
                 "inputs": node.inputs, "outputs": node.outputs, "kind": node.kind}
        if node.meta.get("chain"):
            entry["chain"] = node.meta["chain"]
        if node.domain == DOMAIN and "layer" in node.meta:
            layer = mapping.layers[node.meta["layer"]]
            entry["layer"] = layer.index
            entry["attrs"] = chain_attrs(node, layer, mapping)
        else:
            entry["attrs"] = _attr_json(node)
            if node.meta.get("attr_types"):
                entry["attr_types"] = node.meta["attr_types"]
            if node.meta.get("unknown"):
                entry["unknown"] = True
            if "outer" in node.meta:
                entry["outer"], entry["opsets"] = node.meta["outer"], node.meta["opsets"]
        shape = graph.shape(node.outputs[0]) if node.outputs and node.outputs[0] else None
        entry["shape"] = list(shape) if shape is not None else None
        ops.append(entry)
    program = {
        "format": PROGRAM_FORMAT, "version": PROGRAM_VERSION,
        "target": compiled.target.name, "batch": compiled.options.batch, "opset": graph.opset,
        "seed": compiled.options.seed,
        "dynamic_batch": bool(graph.meta.get("dynamic_batch")),
        "model": clean(Path(graph.source).name if graph.source else "<model>"),
        "inputs": [_tensor_json(graph, n) for n in graph.inputs],
        "outputs": [_tensor_json(graph, n) for n in graph.outputs],
        **constants.json(),
        "target_sha256": hashlib.sha256(target_text.encode("utf-8")).hexdigest(),
        "layers": [_layer_json(layer, constants.scales) for layer in mapping.layers],
        "ops": ops,
    }
    text = dumps(program)
    (folder / "program.json").write_text(text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _layer_json(layer: AnalogLayer, stored_scales: dict) -> dict:
    """A layer's record; a quantized model's per-channel scales named (``"weight"``) where they are the very
    scales program.npz stores its weight with: an int8 ResNet-50's 26,000 scales were 70% of program.json, and
    writing them 12 ms of its compile."""
    record = layer.to_dict()
    own = record.get("model_quant")
    scales = stored_scales.get(layer.weight)
    if own and scales is not None and isinstance(own.get("weight_scales"), list) \
            and np.array_equal(np.asarray(own["weight_scales"], np.float64), scales):
        record["model_quant"] = {**own, "weight_scales": MODEL_SCALES_OF_WEIGHT}
    return record
