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
import math
import os
import threading
from pathlib import Path

import numpy as np

from .. import numerics
from ..errors import AcompileError, InvalidDataError, clean
from ..ir import DOMAIN, Graph, Node, OpaqueAttribute, Subgraph, TensorInfo
from ..mapping import AnalogLayer, BrokenMapping, Mapping
from ..onnx_core import AttributeProto, GraphProto
from ..onnx_exec import narrow_dtype
from ..data_schema import check_schema
from ..safe_read import parse_json, read_input, sha256_input
from .archive import ArchiveReader, ArchiveWriter
from .device import Cancelled
from .schemas import PROGRAM, RECOMPILE

PROGRAM_FORMAT = "acompile-program"
PROGRAM_VERSION = 2     # 2: program.npz identified by the sha256 of its index (constants_index_sha256)


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


def _attr_value(v, constants: dict):
    """An attribute back from program.json (:func:`_attr_json`)."""
    if not isinstance(v, dict):
        return v
    if "tensor" in v:
        return constants[v["tensor"]]
    if "graph" in v:
        return Subgraph(_graph_proto(constants[v["graph"]]))
    if "attribute" in v:
        return _opaque(constants[v["attribute"]], v.get("kind"))
    if "float" in v:
        return _float(v["float"])
    if "floats" in v:
        return [_float(x) for x in v["floats"]]
    return v


def _float(x) -> float:
    if isinstance(x, str) and x not in ("nan", "inf", "-inf"):
        raise ValueError(f"a float attribute holds {clean(x, 20)!r}")
    return float(x)


def _tensor_json(graph: Graph, name: str) -> dict:
    info = graph.tensors.get(name)
    return {"name": name, "dtype": str(info.dtype) if info and info.dtype is not None else None,
            "shape": list(info.shape) if info and info.shape is not None else None}


TARGET_FILE = "target.toml"


def write_constants(folder: Path, graph: Graph, mapping: Mapping | None = None,
                    stop: threading.Event | None = None) -> dict:
    """Write program.npz: every constant the program's operations read, in name order; return its
    listing for program.json (``constants``, ``constants_index_sha256``).

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
    listing, stored = {}, {}
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
            writer.add_array(entry, _storable(np.asarray(arr)))     # a weight held as integers: its product
    finally:
        writer.close()
        numerics.release_folded(graph.meta)     # their last reader: the model file's integers can go
    return {"constants": listing, "constants_index_sha256": writer.index_sha256()}


def _memory(arr) -> tuple | None:
    """What makes two arrays the same values: their memory, layout and type (None: not a plain array)."""
    if type(arr) is not np.ndarray or not arr.size:
        return None
    return arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str


def _constant(archive: ArchiveReader, meta: dict) -> np.ndarray:
    """A constant of program.npz as program.json lists it: stored whole, or as integers and scales."""
    arr = _typed(archive.array(meta["entry"]), meta["dtype"])
    if "scales" not in meta:
        return arr
    scales, axis, dtype = archive.array(meta["scales"]["entry"]), meta["scales"]["axis"], np.dtype(meta["dtype"])
    if arr.dtype.kind not in "iu" or dtype.kind != "f" or scales.dtype != dtype or scales.ndim != 1 \
            or axis >= arr.ndim or arr.shape[axis] != scales.size:
        raise ValueError(f"the integers and scales of a {clean(meta['dtype'], 20)} constant do not fit together "
                         f"({arr.dtype}{list(arr.shape)}, {scales.dtype}{list(scales.shape)} on axis {axis})")
    return numerics.scaled(arr, scales, axis, dtype)


def _storable(arr: np.ndarray) -> np.ndarray:
    """An ml_dtypes array (int4, float8: types .npy cannot name) as its storage integers;
    program.json keeps the type's name and :func:`_typed` views them back."""
    return arr.view(f"u{arr.dtype.itemsize}") if narrow_dtype(arr.dtype) else arr


def _typed(arr: np.ndarray, dtype: str) -> np.ndarray:
    if str(arr.dtype) == dtype or arr.dtype.kind != "u":
        return arr
    import ml_dtypes
    try:
        kind = np.dtype(getattr(ml_dtypes, dtype))
    except (AttributeError, TypeError):
        return arr           # the consistency check names the mismatch
    return arr.view(kind) if narrow_dtype(kind) and kind.itemsize == arr.dtype.itemsize else arr


def write_program(folder: Path, compiled, dumps, constants: dict | None = None) -> str:
    """Write program.npz (unless ``constants`` says it is written: :func:`write_constants`'s listing),
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
        **constants,
        "target_sha256": hashlib.sha256(target_text.encode("utf-8")).hexdigest(),
        "layers": [layer.to_dict() for layer in mapping.layers],
        "ops": ops,
    }
    text = dumps(program)
    (folder / "program.json").write_text(text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_program_target(folder: Path, graph: Graph):
    """The resolved target a program was compiled for, from its folder's target.toml (checksum verified)."""
    from ..target import load_target
    path = Path(folder) / TARGET_FILE
    want = graph.meta.get("target_sha256")
    if not want:
        raise InvalidDataError("this program predates target.toml beside it; compile it again",
                               where=clean(str(folder)))
    if not os.path.lexists(path):
        raise InvalidDataError(f"{TARGET_FILE} is missing beside program.json", where=clean(str(folder)))
    if sha256_input(path, "program target") != want:
        raise InvalidDataError(f"{TARGET_FILE} does not belong to program.json (checksum differs)",
                               where=clean(str(path)))
    return load_target(path)


def load_program(folder: Path) -> tuple[Graph, Mapping, str]:
    """Read program.json + program.npz back into a runnable (Graph, Mapping); also return the json sha256.

    program.json holds the mapping's layers; the device file (:class:`~.device_reader.DeviceReader`)
    adds their blocks, crossbars and placement.
    """
    folder = Path(folder)
    path = folder / "program.json"
    raw = read_input(path, "program", "max_json_bytes")
    prog = parse_json(raw, "program", clean(str(path)))
    if not isinstance(prog, dict) or prog.get("format") != PROGRAM_FORMAT:
        raise InvalidDataError("not an acompile program (wrong format name)", where=clean(str(path)))
    if prog.get("version") != PROGRAM_VERSION:
        raise InvalidDataError(f"program version {clean(prog.get('version'))} is not supported (this acompile reads "
                               f"version {PROGRAM_VERSION})", where=clean(str(path)),
                               hint=RECOMPILE)
    check_schema(prog, PROGRAM, "program", clean(str(path)))
    npz = folder / "program.npz"
    if not os.path.lexists(npz):
        raise InvalidDataError("program.npz is missing beside program.json", where=clean(str(folder)))
    archive = ArchiveReader(npz, "program constants")
    try:
        if archive.index_sha256() != prog.get("constants_index_sha256"):
            raise InvalidDataError("program.npz does not belong to program.json (checksum of its index differs)",
                                   where=clean(str(npz)))
        graph, mapping = _build(prog, archive)
        return graph, mapping, hashlib.sha256(raw).hexdigest()
    except InvalidDataError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, BrokenMapping,
            AcompileError) as e:
        raise InvalidDataError(f"program is malformed ({type(e).__name__}: {clean(str(e), 80)})",
                               where=clean(str(path)))
    finally:
        archive.close()


# inputs of each analog-chain operation (the runtime reads exactly these)
CHAIN_INPUTS = {"ToVectors": 1, "DAC": 1, "CrossbarRead": 2, "ADC": 1, "ShiftAdd": 1, "Accumulate": 1,
                "Dequantize": 1, "FromVectors": 2}


def _check_consistent(prog: dict, constants: dict, mapping: Mapping) -> None:
    """What the schema cannot see: constants as program.json describes them, analog layers' weights the
    size of their matrices, every chain operation of a known kind with its inputs and an existing layer."""
    for name, meta in prog["constants"].items():
        arr = constants[name]
        # sizes, not shapes: a 0-d constant is stored with shape [1] (np.ascontiguousarray)
        if arr.size != math.prod(meta["shape"]) or str(arr.dtype) != meta["dtype"]:
            raise ValueError(f"constant {clean(name, 60)!r} is {arr.dtype}{list(arr.shape)} in program.npz, "
                             f"{clean(meta['dtype'], 20)}{meta['shape']} in program.json")
    for i, layer in enumerate(mapping.layers):
        if layer.index != i:
            raise ValueError(f"layer {i} has index {layer.index}")
        weight, bias = constants.get(layer.weight), constants.get(layer.bias)
        if weight is None or weight.size != sum(m.n_out * m.k_in for m in layer.matrices):
            raise ValueError(f"layer {i}'s weight does not match its matrices")
        if bias is not None and bias.size != layer.out_channels:
            raise ValueError(f"layer {i}'s bias does not have out_channels values")
    for op in prog["ops"]:
        if op["domain"] != DOMAIN:
            continue
        if CHAIN_INPUTS.get(op["op"]) != len(op["inputs"]) or op.get("layer", -1) >= len(mapping.layers) \
                or "layer" not in op:
            raise ValueError(f"operation {clean(op['name'], 60)!r} ({clean(op['op'], 30)}) is not a known analog "
                             "chain step of an existing layer with its inputs")


def _graph_proto(data: np.ndarray) -> GraphProto:
    try:
        return GraphProto.FromString(np.ascontiguousarray(data, dtype=np.uint8).tobytes())
    except Exception as e:      # protobuf's DecodeError: a damaged body is bad input, not a crash
        raise ValueError(f"a sub-graph attribute cannot be decoded ({type(e).__name__})") from None


def _opaque(data: np.ndarray, kind) -> OpaqueAttribute:
    """An attribute program.npz keeps as its serialised AttributeProto (checked to decode as one)."""
    proto = np.ascontiguousarray(data, dtype=np.uint8).tobytes()
    try:
        decoded = AttributeProto.FromString(proto)
    except Exception as e:      # protobuf's DecodeError
        raise ValueError(f"an attribute cannot be decoded ({type(e).__name__})") from None
    if not isinstance(kind, int) or decoded.type != kind:
        raise ValueError(f"an attribute of type {decoded.type} is listed as type {clean(str(kind), 20)}")
    return OpaqueAttribute(kind, proto)


def _build(prog: dict, archive: ArchiveReader):
    constants = {name: _constant(archive, meta) for name, meta in prog["constants"].items()}
    tensors = {}
    for t in prog["inputs"] + prog["outputs"]:
        tensors[t["name"]] = TensorInfo(t["name"], np.dtype(t["dtype"]) if t["dtype"] else None,
                                        tuple(t["shape"]) if t["shape"] is not None else None)
    nodes = []
    for op in prog["ops"]:
        attrs = {}
        for k, v in op["attrs"].items():
            attrs[k] = _attr_value(v, constants)
        meta = {"attr_types": op.get("attr_types", {})}
        if "outer" in op:
            meta["outer"], meta["opsets"] = list(op["outer"]), dict(op.get("opsets", {}))
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
    mapping = Mapping.from_dict({"layers": prog["layers"]})
    _check_consistent(prog, constants, mapping)
    graph.meta["dynamic_batch"] = bool(prog.get("dynamic_batch"))
    graph.meta["target"] = prog["target"]
    graph.meta["target_sha256"] = prog.get("target_sha256")
    graph.meta["compile_seed"] = int(prog.get("seed", 0))     # programs written before it: seed 0
    return graph, mapping
