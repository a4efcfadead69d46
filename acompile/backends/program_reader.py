"""Reading a simulator program back: ``program.json`` checked against its schema and its ``program.npz``
(:mod:`.program` writes both), into the Graph and Mapping the simulator runs. See docs/formats.md.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from .. import numerics
from ..data_schema import check_schema
from ..errors import AcompileError, InvalidDataError, clean
from ..ir import DOMAIN, Graph, Node, OpaqueAttribute, Subgraph, TensorInfo
from ..mapping import BrokenMapping, Mapping
from ..onnx_core import AttributeProto, GraphProto
from ..onnx_exec import narrow_dtype
from ..safe_read import parse_json, read_input, sha256_input
from .archive import ArchiveReader
from .program import MODEL_SCALES_OF_WEIGHT, PROGRAM_FORMAT, PROGRAM_VERSION, TARGET_FILE
from .schemas import PROGRAM, RECOMPILE


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


def _typed(arr: np.ndarray, dtype: str) -> np.ndarray:
    if str(arr.dtype) == dtype or arr.dtype.kind != "u":
        return arr
    import ml_dtypes
    try:
        kind = np.dtype(getattr(ml_dtypes, dtype))
    except (AttributeError, TypeError):
        return arr           # the consistency check names the mismatch
    return arr.view(kind) if narrow_dtype(kind) and kind.itemsize == arr.dtype.itemsize else arr


def _model_scales(prog: dict, archive: ArchiveReader) -> None:
    """Every layer's model_quant.weight_scales that names its weight's stored scales, as their values."""
    for layer in prog["layers"]:
        own = layer.get("model_quant")
        if isinstance(own, dict) and own.get("weight_scales") == MODEL_SCALES_OF_WEIGHT:
            scales = prog["constants"][layer["weight"]].get("scales")
            if scales is None:
                raise ValueError(f"layer {clean(layer['name'], 60)!r} names its weight's scales, but its weight is "
                                 "stored without scales")
            own["weight_scales"] = archive.array(scales["entry"]).astype(np.float64).tolist()


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
    _model_scales(prog, archive)
    mapping = Mapping.from_dict({"layers": prog["layers"]})
    _check_consistent(prog, constants, mapping)
    graph.meta["dynamic_batch"] = bool(prog.get("dynamic_batch"))
    graph.meta["target"] = prog["target"]
    graph.meta["target_sha256"] = prog.get("target_sha256")
    graph.meta["compile_seed"] = int(prog.get("seed", 0))     # programs written before it: seed 0
    return graph, mapping
