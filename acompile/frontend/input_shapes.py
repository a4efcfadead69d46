"""Graph input shapes read cheaply from the file (its structure, not its weights), and the shapes that
given data fixes.

``--calibration`` data fixes the non-batch dimensions of dynamic inputs, ``run --input`` data every
dimension, so that compile, run and a sweep row compile the same program for the same data.
"""

from __future__ import annotations

import numpy as np

from ..limits import Limits
from .protobuf import read_model_skeleton


def model_inputs(model_path) -> tuple[list[str], list[str]]:
    """(graph inputs that take data, graph inputs the model also stores as initializers), from one read:
    ONNX (IR 4 on) lets a feed replace the second kind, and acompile compiles their stored values."""
    m = read_model_skeleton(model_path, Limits.from_env())
    inits = {t.name for t in m.graph.initializer}
    inputs = [i.name for i in m.graph.input]
    return [n for n in inputs if n not in inits], [n for n in inputs if n in inits]


def input_dims(model_path) -> dict[str, list | None]:
    """Graph inputs (not initializers) -> stored dims (int, or None where dynamic: symbolic, -1 or 0)."""
    m = read_model_skeleton(model_path, Limits.from_env())
    inits = {t.name for t in m.graph.initializer}
    out = {}
    for i in m.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        out[i.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                       for d in tt.shape.dim] if tt.HasField("shape") else None
    return out


def data_shapes(stored: dict[str, list | None], data: dict, whole: bool) -> dict:
    """Input shapes taken from data for the inputs with dynamic dimensions (``stored``: :func:`input_dims`):
    every dimension for ``run --input`` (``whole``), all but the leading (sample) one for ``--calibration``."""
    shapes = {}
    for name, dims in stored.items():
        arr = data.get(name)
        if dims is None or arr is None or np.ndim(arr) != len(dims) or all(d is not None for d in dims):
            continue
        if whole:
            shapes[name] = tuple(int(n) for n in np.shape(arr))
        elif any(d is None for d in dims[1:]):
            shapes[name] = (None, *(int(n) for n in np.shape(arr)[1:]))
    return shapes
