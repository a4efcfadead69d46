"""The lean protobuf reader: parse an ONNX file without copying its large weights.

Refuses missing, irregular, empty or oversize files before reading them; walks the
protobuf wire format to leave large raw initializer payloads out of the parse (numpy arrays
view them in a read-only mapping of the file: :mod:`.file_bytes`); refuses non-UTF-8 text fields.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np

from ..errors import InvalidModelError, LimitError, clean
from ..limits import Limits, byte_size
from ..onnx_core import NUMPY_TYPES, ModelProto, TensorProto
from .file_bytes import map_file, view

SKELETON_KEEP_BYTES = 4096  # small initializers (shapes, axes) stay: shape inference reads their values


def _stat_model(p: Path, where: str, limits: Limits) -> os.stat_result:
    """Refuse a missing, irregular, empty or oversize model file before reading it."""
    try:
        st = p.stat()
    except OSError as e:
        raise InvalidModelError(f"cannot read model: {e.strerror}", where=where)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidModelError("not a regular file", where=where)
    if st.st_size > limits.max_model_bytes:
        raise LimitError(f"model file is {byte_size(st.st_size)}; the limit is "
                         f"{byte_size(limits.max_model_bytes)} (use external data for larger weights)",
                         where=where)
    if st.st_size == 0:
        raise InvalidModelError("the file is empty, not an ONNX model", where=where)
    return st


def _parse(data, where: str) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf raises several unrelated types (DecodeError, RecursionError, ...)
        raise InvalidModelError(f"not a valid ONNX protobuf ({type(e).__name__})", where=where,
                                hint="is the file truncated or not an .onnx model?")
    if not model.HasField("graph") or (model.ir_version == 0 and not model.opset_import):
        raise InvalidModelError("not an ONNX model (no graph or version)", where=where)
    _check_text(model, where)
    return model


def read_model_proto(path: str | os.PathLike, limits: Limits) -> ModelProto:
    """Parse an ONNX file, refusing oversize or unreadable files before reading them."""
    p = Path(path)
    where = clean(str(p))
    _stat_model(p, where, limits)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InvalidModelError(f"cannot read model: {e.strerror}", where=where)
    return _parse(data, where)


def read_model_lean(path: str | os.PathLike, limits: Limits) -> tuple[ModelProto, dict[str, np.ndarray]]:
    """:func:`read_model_proto` without the large raw initializer payloads.

    The file's protobuf structure is walked directly (:func:`_lean_bytes`); every initializer whose
    ``raw_data`` holds more than ``SKELETON_KEEP_BYTES`` of a plain numeric type is parsed without
    its payload: returned apart, by initializer name, as a view of it in the file's bytes
    (:func:`map_file`). Parsing the whole file would hold the file, protobuf's copy and numpy's copy
    of every weight at once. Anything the walk does not expect falls back to
    :func:`read_model_proto`, so errors and results are the same either way.
    """
    p, where, st, lean = _walked(path, limits)
    if lean is None:
        return read_model_proto(p, limits), {}
    data, stripped = lean
    mapped = map_file(p, st)
    if mapped is None:      # not mappable, or changed since the walk: read it whole
        return read_model_proto(p, limits), {}
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:   # the full parse reports it, exactly as it would have
        model = None
    del data
    inits = model.graph.initializer if model is not None else ()
    if model is None or any(i >= len(inits) or inits[i].HasField("raw_data") for i in stripped):
        return read_model_proto(p, limits), {}
    if not model.HasField("graph") or (model.ir_version == 0 and not model.opset_import):
        raise InvalidModelError("not an ONNX model (no graph or version)", where=where)
    _check_text(model, where)
    return model, {inits[i].name: view(mapped, *entry) for i, entry in stripped.items()}


def read_model_skeleton(path: str | os.PathLike, limits: Limits) -> ModelProto:
    """The model as :func:`read_model_proto` parses it, less its large raw initializers' payloads (their names,
    types and dims stay): its graph inputs without its weights (``compile --calibration`` and ``run`` read a
    ResNet-50's 100 MB whole two or three times before compiling it). Errors are the whole file's parse's."""
    p, where, st, lean = _walked(path, limits)
    if lean is not None:
        try:
            return _parse(lean[0], where)
        except InvalidModelError:       # the whole file's parse reports it, exactly as it would have
            pass
    return read_model_proto(p, limits)


def _walked(path, limits: Limits) -> tuple[Path, str, os.stat_result, tuple | None]:
    """(path, its name for messages, its stat, :func:`_lean_bytes` of it, or None where the walk cannot
    take the file), the file refused first if it is missing, irregular, empty or oversize."""
    p = Path(path)
    where = clean(str(p))
    st = _stat_model(p, where, limits)
    try:
        return p, where, st, _lean_bytes(p, st.st_size, limits)
    except (_Unexpected, OSError, ValueError, OverflowError):
        return p, where, st, None


# The protobuf wire format, just enough of it to find initializer payloads:
# ModelProto.graph = 7, GraphProto.initializer = 5; TensorProto dims = 1, data_type = 2,
# name = 8, raw_data = 9, doc_string = 12, data_location = 14, metadata_props = 16.
RAW_DTYPES = {k: v for k, v in NUMPY_TYPES.items() if np.dtype(v).kind in "fiu"}   # viewed where they lie
_WINDOW = 1 << 16


class _Unexpected(Exception):
    """The walk met something it does not handle: parse the whole file instead."""


class _Window:
    """Reads a file through a small window with pread (never the large payloads it skips)."""

    def __init__(self, fd: int, size: int):
        self.fd, self.size, self.base, self.buf = fd, size, 0, b""

    def get(self, a: int, b: int) -> bytes:
        if a < 0 or b > self.size or a > b:
            raise _Unexpected()
        if a < self.base or b > self.base + len(self.buf):
            self.buf = os.pread(self.fd, min(max(b - a, _WINDOW), self.size - a), a)
            self.base = a
            if len(self.buf) < b - a:
                raise _Unexpected()     # the file shrank while being read
        return self.buf[a - self.base:b - self.base]

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        chunk = self.get(pos, min(end, pos + 10))
        value = 0
        for i, byte in enumerate(chunk):
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return value, pos + i + 1
        raise _Unexpected()

    def fields(self, pos: int, end: int):
        """(field, wire type, start, value, next): value is a varint's value or a payload's start."""
        while pos < end:
            start = pos
            tag, pos = self.varint(pos, end)
            field, wire = tag >> 3, tag & 7
            value = None
            if field == 0:
                raise _Unexpected()
            if wire == 0:
                value, pos = self.varint(pos, end)
            elif wire == 2:
                n, pos = self.varint(pos, end)
                value, pos = pos, pos + n
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:                       # groups: never in ONNX
                raise _Unexpected()
            if pos > end:
                raise _Unexpected()
            yield field, wire, start, value, pos


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _lean_tensor(win: _Window, a: int, b: int, limits: Limits):
    """(raw field start, raw payload start, end, dtype, dims) when this TensorProto's payload can be
    left in the file: one raw_data of a plain numeric type, the size its dims need, large but within
    the limits, and no other data, segment, external data or unknown fields. Else None."""
    dims, dtype, raw = [], None, None
    for field, wire, start, value, pos in win.fields(a, b):
        if field == 1 and wire == 0:
            dims.append(value)
        elif field == 1 and wire == 2:          # packed dims
            q = value
            while q < pos:
                d, q = win.varint(q, pos)
                dims.append(d)
        elif field == 2 and wire == 0:
            dtype = value
        elif field == 9 and wire == 2 and raw is None:
            raw = (start, value, pos)
        elif field in (8, 12, 16) and wire == 2 or field == 14 and wire == 0 and value == 0:
            pass
        else:
            return None
    if raw is None or dtype not in RAW_DTYPES or any(d >= 1 << 62 for d in dims):
        return None
    n = 1
    for d in dims:
        n *= d
    nbytes = raw[2] - raw[1]
    itemsize = np.dtype(RAW_DTYPES[dtype]).itemsize
    if nbytes != n * itemsize or nbytes <= SKELETON_KEEP_BYTES or nbytes > limits.max_tensor_bytes:
        return None
    return raw[0], raw[1], raw[2], np.dtype(RAW_DTYPES[dtype]), tuple(dims)


def _lean_bytes(p: Path, size: int, limits: Limits):
    """The model file's bytes without the payloads of large raw initializers, and where those are.

    Returns (bytes, {initializer index: (offset, nbytes, dtype, dims)}), or None when nothing is
    worth leaving out or the file holds what the walk does not handle (then it is parsed whole).
    """
    if sys.byteorder != "little":
        return None
    fd = os.open(p, os.O_RDONLY)
    try:
        win = _Window(fd, size)
        top = list(win.fields(0, size))
        graphs = [f for f in top if f[0] == 7]
        if len(graphs) != 1 or graphs[0][1] != 2:
            return None
        _, _, g_start, g_a, g_b = graphs[0]
        pieces: list = []        # bytes, or (a, b) ranges of the file
        stripped = {}
        index = 0
        for field, wire, start, value, pos in win.fields(g_a, g_b):
            if field == 5 and wire == 2:
                # no payload worth leaving out fits in a small tensor (a quantized model's scales, zero points)
                lean = _lean_tensor(win, value, pos, limits) if pos - value > SKELETON_KEEP_BYTES else None
                if lean is not None:
                    raw_start, raw_a, raw_b, dtype, dims = lean
                    body = (raw_start - value) + (pos - raw_b)
                    pieces += [_varint_bytes(5 << 3 | 2) + _varint_bytes(body), (value, raw_start), (raw_b, pos)]
                    stripped[index] = (raw_a, raw_b - raw_a, dtype, dims)
                    index += 1
                    continue
                index += 1
            pieces.append((start, pos))
        if not stripped:
            return None
        graph_len = sum(len(x) if isinstance(x, bytes) else x[1] - x[0] for x in pieces)
        pieces = [(0, g_start), _varint_bytes(7 << 3 | 2) + _varint_bytes(graph_len)] + pieces + [(g_b, size)]
        out = []
        for x in pieces:            # adjacent ranges are read in one go
            if not isinstance(x, bytes) and out and not isinstance(out[-1], bytes) and out[-1][1] == x[0]:
                out[-1] = (out[-1][0], x[1])
            else:
                out.append(x)
        data = b"".join(x if isinstance(x, bytes) else _pread_exact(fd, x[0], x[1] - x[0]) for x in out)
        return data, stripped
    finally:
        os.close(fd)


def _pread_exact(fd: int, offset: int, n: int) -> bytes:
    """n bytes at offset; _Unexpected if the file is shorter."""
    data = os.pread(fd, n, offset) if n else b""
    if len(data) != n:
        raise _Unexpected()
    return data


def is_repeated(fd) -> bool:
    flag = getattr(fd, "is_repeated", None)     # protobuf >= 6; older ones only have ``label``
    return bool(flag) if flag is not None else fd.label == fd.LABEL_REPEATED


def _check_text(model: ModelProto, where: str) -> None:
    """Refuse string fields (names, domains, locations) that are not valid UTF-8.

    protobuf hands such a proto2 ``string`` field back as ``bytes``, which would
    otherwise travel into the IR and crash whatever formats it. Walks the
    message tree iteratively, so nesting depth costs no recursion.
    """
    stack: list[tuple[object, str]] = [(model, "model")]
    while stack:
        msg, path = stack.pop()
        if isinstance(msg, TensorProto):     # never touch the payload (ListFields would copy raw_data)
            for field in ("name", "doc_string"):
                if isinstance(getattr(msg, field), bytes):
                    raise InvalidModelError(f"{path}.{field} is not valid UTF-8", where=where,
                                            hint="names and text fields must be UTF-8")
            stack.extend((e, f"{path}.external_data[{i}]") for i, e in enumerate(msg.external_data))
            continue
        for fd, value in msg.ListFields():
            repeated = is_repeated(fd)
            if fd.type == fd.TYPE_STRING:
                for v in (value if repeated else (value,)):
                    if isinstance(v, bytes):
                        raise InvalidModelError(f"{path}.{fd.name} {clean(v.decode('utf-8', 'replace'), 60)!r} "
                                                "is not valid UTF-8", where=where,
                                                hint="names and text fields must be UTF-8")
            elif fd.type == fd.TYPE_MESSAGE:
                if repeated:
                    stack.extend((m, f"{path}.{fd.name}[{i}]") for i, m in enumerate(value))
                else:
                    stack.append((value, f"{path}.{fd.name}"))
