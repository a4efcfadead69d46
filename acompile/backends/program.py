"""The simulator program: ``program.json`` (the operations) and ``program.npz``
(the constants they read: float weights for ideal mode, biases, digital
operands).

``program.json`` is a versioned, sorted, indented JSON document that diffs
cleanly between two compiles: the graph inputs and outputs with shapes, every
analog layer's record (converter settings, scales, geometry), and the ordered
list of operations over named buffers -- ONNX operators for the digital units
and the ``acompile`` domain chain ToVectors, DAC, CrossbarRead, ADC, ShiftAdd,
Accumulate, Dequantize, FromVectors for each analog layer. See docs/formats.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import InvalidDataError, clean
from ..frontend.load import OpaqueAttribute, Subgraph
from ..ir import Graph, Node, TensorInfo
from ..mapping import AnalogLayer, Mapping, Matrix
from ..sim import analog
from .archive import ArchiveReader, ArchiveWriter
from .device import sha256_file, spec_dict

PROGRAM_FORMAT = "acompile-program"
PROGRAM_VERSION = 1


def _chain_attrs(node: Node, layer: AnalogLayer, mapping: Mapping) -> dict:
    spec = layer.spec
    op = node.op_type
    if op == "DAC":
        return {"input_bits": spec.input_bits, "dac_bits": spec.dac_bits, "signed": layer.input_signed,
                "cycles": len(analog.input_cycles(spec, layer.input_signed)), "input_scale": layer.input_scale}
    if op == "CrossbarRead":
        bars = sorted({mapping.blocks[b].crossbar for b in layer.blocks})
        return {"crossbars": _ranges(bars), "blocks": len(layer.blocks), "cell_bits": spec.cell_bits,
                "signed_weights": spec.signed_weights}
    if op == "ADC":
        full = layer.adc_full_scale or float(spec.worst_case_full_scale)
        return {"bits": spec.adc_bits, "full_scale": full, "step": analog.adc_step(spec, full)}
    if op == "ShiftAdd":
        return {"cycle_weights": [float(w) for w in analog.input_cycles(spec, layer.input_signed)],
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


def _attr_json(node: Node, constants: dict[str, np.ndarray]) -> dict:
    out = {}
    for k, v in sorted(node.attrs.items()):
        if isinstance(v, np.ndarray):
            key = f"attr/{node.name}/{k}"
            constants[key] = v
            out[k] = {"tensor": key}
        elif isinstance(v, (Subgraph, OpaqueAttribute)):
            out[k] = {"unsupported": repr(v)}
        else:
            out[k] = v
    return out


def _layer_json(layer: AnalogLayer) -> dict:
    return {"index": layer.index, "name": layer.name, "op_type": layer.op_type, "weight": layer.weight,
            "bias": layer.bias, "groups": layer.groups, "n_vec": layer.n_vec, "in_channels": layer.in_channels,
            "out_channels": layer.out_channels, "spec": spec_dict(layer.spec), "input_signed": layer.input_signed,
            "input_range": layer.input_range, "input_scale": layer.input_scale,
            "adc_full_scale": layer.adc_full_scale, "geometry": layer.geometry, "replication": layer.replication,
            "uses": layer.uses,
            "matrices": [{"group": m.group, "n_out": m.n_out, "k_in": m.k_in, "physical_cols": m.physical_cols,
                          "row_blocks": m.row_blocks, "col_blocks": m.col_blocks} for m in layer.matrices]}


def _tensor_json(graph: Graph, name: str) -> dict:
    info = graph.tensors.get(name)
    return {"name": name, "dtype": str(info.dtype) if info and info.dtype is not None else None,
            "shape": list(info.shape) if info and info.shape is not None else None}


def write_program(folder: Path, compiled, dumps) -> str:
    """Write program.npz and program.json; return the sha256 of program.json."""
    graph, mapping = compiled.graph, compiled.mapping
    constants: dict[str, np.ndarray] = {}
    ops = []
    for node in graph.nodes:
        entry = {"name": node.name, "op": node.op_type, "domain": node.domain, "opset": node.opset or graph.opset,
                 "inputs": node.inputs, "outputs": node.outputs, "kind": node.kind}
        if node.meta.get("chain"):
            entry["chain"] = node.meta["chain"]
        if node.domain == "acompile":
            layer = mapping.layers[node.meta["layer"]]
            entry["layer"] = layer.index
            entry["attrs"] = _chain_attrs(node, layer, mapping)
        else:
            entry["attrs"] = _attr_json(node, constants)
            if node.meta.get("attr_types"):
                entry["attr_types"] = node.meta["attr_types"]
            if node.meta.get("unknown"):
                entry["unknown"] = True
        shape = graph.shape(node.outputs[0]) if node.outputs and node.outputs[0] else None
        entry["shape"] = list(shape) if shape is not None else None
        ops.append(entry)
    used = {i for n in graph.nodes for i in n.inputs if i}
    for name in sorted(graph.constants):
        if name in used:
            constants[name] = graph.constants[name]
    npz = folder / "program.npz"
    writer = ArchiveWriter(npz)
    try:
        for i, name in enumerate(sorted(constants)):
            writer.add_array(f"c{i:06d}.npy", constants[name])
    finally:
        writer.close()
    program = {
        "format": PROGRAM_FORMAT, "version": PROGRAM_VERSION,
        "target": compiled.target.name, "batch": compiled.options.batch, "opset": graph.opset,
        "dynamic_batch": bool(graph.meta.get("dynamic_batch")),
        "model": clean(Path(graph.source).name if graph.source else "<model>"),
        "inputs": [_tensor_json(graph, n) for n in graph.inputs],
        "outputs": [_tensor_json(graph, n) for n in graph.outputs],
        "constants": {name: {"entry": f"c{i:06d}.npy", "dtype": str(constants[name].dtype),
                             "shape": list(constants[name].shape)} for i, name in enumerate(sorted(constants))},
        "constants_sha256": sha256_file(npz),
        "layers": [_layer_json(layer) for layer in mapping.layers],
        "ops": ops,
    }
    text = dumps(program)
    (folder / "program.json").write_text(text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_program(folder: Path) -> tuple[Graph, Mapping, str]:
    """Read program.json + program.npz back into a runnable (Graph, Mapping); also return the json sha256."""
    folder = Path(folder)
    path = folder / "program.json"
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidDataError(f"cannot read the program: {e.strerror}", where=clean(str(path)),
                               hint="pass the OUT folder written by acompile compile")
    try:
        prog = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidDataError(f"program is not valid JSON ({clean(str(e), 80)})", where=clean(str(path)))
    if not isinstance(prog, dict) or prog.get("format") != PROGRAM_FORMAT:
        raise InvalidDataError("not an acompile program (wrong format name)", where=clean(str(path)))
    if prog.get("version") != PROGRAM_VERSION:
        raise InvalidDataError(f"program version {clean(prog.get('version'))} is not supported", where=clean(str(path)))
    npz = folder / "program.npz"
    try:
        digest = sha256_file(npz)
    except OSError:
        raise InvalidDataError("program.npz is missing beside program.json", where=clean(str(folder)))
    if digest != prog.get("constants_sha256"):
        raise InvalidDataError("program.npz does not belong to program.json (checksum differs)",
                               where=clean(str(npz)))
    try:
        graph, mapping = _build(prog, ArchiveReader(npz, "program constants"))
        return graph, mapping, hashlib.sha256(raw).hexdigest()
    except InvalidDataError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise InvalidDataError(f"program is malformed ({type(e).__name__}: {clean(str(e), 80)})",
                               where=clean(str(path)))


def _build(prog: dict, archive: ArchiveReader):
    constants = {name: archive.array(meta["entry"]) for name, meta in prog["constants"].items()}
    tensors = {}
    for t in prog["inputs"] + prog["outputs"]:
        tensors[t["name"]] = TensorInfo(t["name"], np.dtype(t["dtype"]) if t["dtype"] else None,
                                        tuple(t["shape"]) if t["shape"] is not None else None)
    nodes = []
    for op in prog["ops"]:
        attrs = {}
        for k, v in op["attrs"].items():
            attrs[k] = constants[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
        meta = {"attr_types": op.get("attr_types", {})}
        if "layer" in op:
            meta["layer"] = op["layer"]
            meta["chain"] = op.get("chain", op["name"].rsplit("/", 1)[0])
            attrs = {}
        nodes.append(Node(op["name"], op["op"], list(op["inputs"]), list(op["outputs"]), attrs,
                          op["domain"], op["opset"], op.get("kind", ""), meta))
        if op.get("shape") is not None and op["outputs"] and op["outputs"][0] not in tensors:
            tensors[op["outputs"][0]] = TensorInfo(op["outputs"][0], None, tuple(op["shape"]))
    graph = Graph(prog.get("model", "model"), nodes, [t["name"] for t in prog["inputs"]],
                  [t["name"] for t in prog["outputs"]], tensors, constants, prog["opset"])
    graph.verify()
    mapping = Mapping()
    for rec in prog["layers"]:
        s = rec["spec"]
        layer = AnalogLayer(rec["index"], rec["name"], rec["op_type"], rec["weight"], rec["bias"], rec["groups"],
                            [Matrix(m["group"], m["n_out"], m["k_in"], m["physical_cols"], m["row_blocks"],
                                    m["col_blocks"]) for m in rec["matrices"]],
                            rec["n_vec"], rec["in_channels"], rec["out_channels"],
                            spec=analog.AnalogSpec(**s), input_signed=rec["input_signed"],
                            input_range=rec["input_range"], input_scale=rec["input_scale"],
                            adc_full_scale=rec["adc_full_scale"], geometry=rec["geometry"],
                            replication=rec["replication"], uses=rec.get("uses", 1))
        mapping.layers.append(layer)
    graph.meta["mapping"] = mapping
    graph.meta["batch"] = prog["batch"]
    graph.meta["dynamic_batch"] = bool(prog.get("dynamic_batch"))
    graph.meta["target"] = prog["target"]
    return graph, mapping
