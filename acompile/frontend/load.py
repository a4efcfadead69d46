"""Safe ONNX loading, the entry points: read (size limits, lean protobuf), contained
external data, bound inputs, checker, opset normalisation and shape inference, then the IR.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InvalidModelError, clean
from ..ir import Graph
from ..limits import Limits
from ..onnx_core import ModelProto, from_array
from .external import resolve_external_data
from .convert import ai_onnx_opset
from .normalise import check_raw_sizes, normalise
from .protobuf import read_model_lean
from .sparse import densify
from .to_ir import to_ir

def load_model(path: str | os.PathLike, *, batch: int = 1, bind: dict | None = None,
               limits: Limits | None = None, input_shapes: dict | None = None) -> Graph:
    """Read, check, normalise and shape-infer an ONNX model, and return the IR (its large weights views of
    the file's mapping: :mod:`.file_bytes`)."""
    limits = limits or Limits.from_env()
    p = Path(path)
    where = clean(str(p))
    model, mapped = read_model_lean(p, limits)
    mapped.update(resolve_external_data(model, p, limits))
    return _load(model, batch, bind, limits, where, mapped, input_shapes)


def load_model_proto(model: ModelProto, *, batch: int = 1, bind: dict | None = None,
                     limits: Limits | None = None, where: str = "<model>",
                     input_shapes: dict | None = None) -> Graph:
    """The same as :func:`load_model` for an in-memory model (external data already resolved)."""
    return _load(model, batch, bind, limits or Limits.from_env(), where, {}, input_shapes)


def _load(model: ModelProto, batch: int, bind: dict | None, limits: Limits, where: str,
          mapped: dict[str, np.ndarray], input_shapes: dict | None = None) -> Graph:
    """``mapped``: the initializers whose data the model proto leaves out, as arrays viewing their files;
    ``input_shapes`` ({name: dims}, key None for a single-input model) fixes dynamic input dimensions."""
    if bind:
        bind_inputs(model, bind, where)
    check_raw_sizes(model, where, limits)
    densify(model, where, limits)
    written_opset = ai_onnx_opset(model, where)
    skel, heavy, batch_shapes = normalise(model, where, batch=batch, limits=limits, stripped=frozenset(mapped),
                                          input_shapes=input_shapes)
    del model
    graph = to_ir(skel, where, limits, heavy, mapped)
    graph.meta["dynamic_batch"] = batch_shapes is not None
    graph.meta["written_opset"] = written_opset     # what messages name (the graph itself is at opset 17)
    if batch_shapes is not None:
        # every value's shape at batch + 1, where the axes that follow the batch show (the passes infer more)
        for name in graph.inputs:
            shape = graph.tensors[name].shape
            if shape and name not in batch_shapes:
                batch_shapes[name] = (shape[0] + 1,) + tuple(shape[1:]) if isinstance(shape[0], int) else shape
        graph.meta["batch_shapes"] = batch_shapes
    return graph


def bind_inputs(model: ModelProto, values: dict[str, np.ndarray], where: str) -> None:
    """Turn graph inputs into initializers (weights that a model takes as inputs)."""
    names = {i.name for i in model.graph.input}
    for name in sorted(values):
        if name not in names:
            raise InvalidModelError(f"--bind names {clean(name)!r}, which is not a graph input "
                                    f"(inputs: {', '.join(sorted(clean(n) for n in names))})", where=where)
    for name in sorted(values):
        model.graph.initializer.append(from_array(np.asarray(values[name]), name))
    kept = [i for i in model.graph.input if i.name not in values]
    del model.graph.input[:]
    model.graph.input.extend(kept)
