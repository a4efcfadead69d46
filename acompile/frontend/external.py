"""External tensor data, checked by acompile (never trusting onnx's own path handling).

Only regular, single-link files inside the model's folder are read, within the byte
range the tensor's shape needs and the model size limit. A large weight of a plain
numeric type is mapped rather than read, as the model file's own are (:mod:`.protobuf`).
"""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

import numpy as np

from ..errors import InvalidModelError, clean
from ..limits import Limits
from ..onnx_core import ModelProto, TensorProto
from .normalise import stored_bytes
from .file_bytes import map_file, view
from .protobuf import RAW_DTYPES, SKELETON_KEEP_BYTES

def _all_tensors(model: ModelProto):
    """(TensorProto, whether it is one of the graph's own initializers) for every tensor in the model
    that can carry data, subgraphs included (iteratively)."""
    stack = [model.graph]
    while stack:
        g = stack.pop()
        top = g is model.graph
        for t in g.initializer:
            yield t, top
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t, False
                for t in a.tensors:
                    yield t, False
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)


def resolve_external_data(model: ModelProto, model_path: Path, limits: Limits) -> dict[str, np.ndarray]:
    """Load external tensor data into the model, only from files inside the model's folder; return the
    graph's large initializers of a plain numeric type apart, by name, as views of their files' bytes
    (the model keeps them without data, as :func:`.protobuf.read_model_lean` leaves its own)."""
    base = model_path.resolve().parent
    files: dict[Path, mmap.mmap | None] = {}    # each file's mapping; None: read by tensor
    mapped: dict[str, np.ndarray] = {}
    total = 0
    for t, top in _all_tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        where = f"{clean(model_path)}: initializer {clean(t.name)!r}"
        loc = info.get("location", "")
        if "\0" in loc:
            raise InvalidModelError(f"external data location {clean(loc)!r} holds a NUL byte", where=where)
        if not loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or "\\" in loc or ":" in loc:
            raise InvalidModelError(f"external data location {clean(loc)!r} must be a relative path", where=where)
        target = (base / loc)
        if ".." in Path(loc).parts:
            raise InvalidModelError(f"external data location {clean(loc)!r} leaves the model's folder", where=where)
        try:
            real = target.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            raise InvalidModelError(f"external data file {clean(loc)!r} does not exist", where=where)
        if base not in real.parents:
            raise InvalidModelError(f"external data location {clean(loc)!r} leaves the model's folder "
                                    "(through a link)", where=where)
        st = real.stat()
        if not stat.S_ISREG(st.st_mode):
            raise InvalidModelError(f"external data {clean(loc)!r} is not a regular file", where=where)
        if st.st_nlink > 1:
            raise InvalidModelError(f"external data file {clean(loc)!r} is a hard link; refusing a file that "
                                    "may live outside the model's folder", where=where)
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else st.st_size - offset
        except ValueError:
            raise InvalidModelError("external data offset/length is not an integer", where=where)
        if offset < 0 or length < 0 or offset + length > st.st_size:
            raise InvalidModelError(f"external data range [{offset}, {offset}+{length}) is outside the "
                                    f"{st.st_size}-byte file {clean(loc)!r}", where=where)
        expected = _expected_bytes(t)
        if expected is not None and expected != length:
            raise InvalidModelError(f"external data holds {length} bytes but the shape needs {expected}",
                                    where=where)
        total += length
        if total > limits.max_external_bytes:
            raise limits.refuse("max_external_bytes", "the model's external data", total, where)
        dtype = RAW_DTYPES.get(t.data_type) if top and length > SKELETON_KEEP_BYTES else None
        if dtype is not None and real not in files:
            files[real] = map_file(real, st)
        if dtype is not None and files[real] is not None:
            mapped[t.name] = view(files[real], offset, length, np.dtype(dtype), tuple(t.dims))
        else:           # read into memory: a tensor's limit
            if length > limits.max_tensor_bytes:
                raise limits.refuse("max_tensor_bytes", f"initializer {clean(t.name)!r}", length, where)
            with open(real, "rb") as f:
                f.seek(offset)
                t.raw_data = f.read(length)
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]
    return mapped


def _expected_bytes(t: TensorProto) -> int | None:
    if t.data_type in (TensorProto.STRING,):
        return None
    n = 1
    for d in t.dims:
        n *= int(d)
    try:
        return stored_bytes(t.data_type, n)
    except Exception:
        return None
