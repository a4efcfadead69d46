"""Safe ONNX loading: size limits, contained external data, checker, opset
normalisation and shape inference, then conversion to the IR.

Large weights never go through the checker, the version converter or shape
inference: those run on a *skeleton* of the model in which every large
initializer is replaced by a typed graph input, so they copy kilobytes rather
than the whole model.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import InvalidModelError, LimitError, UnsupportedError, clean
from ..ir import Graph, Node, TensorInfo

CANONICAL_OPSET = 17
OLDEST_OPSET = 7
SKELETON_KEEP_BYTES = 4096  # small initializers (shapes, axes) stay: shape inference reads their values


@dataclass(frozen=True)
class Limits:
    """Resource limits checked before work is attempted (all configurable)."""
    max_model_bytes: int = 2 * 1024**3
    max_tensor_bytes: int = 4 * 1024**3
    fold_budget_bytes: int = 1024**3
    max_nodes: int = 1_000_000

    @staticmethod
    def from_env() -> "Limits":
        mb = os.environ.get("ACOMPILE_MAX_TENSOR_MB")
        base = Limits()
        if mb:
            try:
                value = int(float(mb) * 1024**2)
            except (ValueError, OverflowError):      # "abc", "nan", "inf", "1e400"
                raise LimitError(f"ACOMPILE_MAX_TENSOR_MB={clean(mb, 40)!r} is not a number",
                                 hint="give the largest tensor size in MiB, e.g. 4096")
            if value <= 0:
                raise LimitError(f"ACOMPILE_MAX_TENSOR_MB={clean(mb, 40)!r} must be a positive number of MiB")
            return Limits(max_tensor_bytes=value, fold_budget_bytes=min(value, base.fold_budget_bytes))
        return base


def _size(nbytes: int) -> str:
    """A byte count for a message: MiB below a GiB, else GiB (3 significant digits)."""
    return f"{nbytes / 1024**2:.3g} MiB" if nbytes < 1024**3 else f"{nbytes / 1024**3:.3g} GiB"


# ---------------------------------------------------------------------------
# reading bytes
# ---------------------------------------------------------------------------

def _stat_model(p: Path, where: str, limits: Limits) -> os.stat_result:
    """Refuse a missing, irregular, empty or oversize model file before reading it."""
    try:
        st = p.stat()
    except OSError as e:
        raise InvalidModelError(f"cannot read model: {e.strerror}", where=where)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidModelError("not a regular file", where=where)
    if st.st_size > limits.max_model_bytes:
        raise LimitError(f"model file is {st.st_size / 1024**3:.1f} GiB; the limit is "
                         f"{limits.max_model_bytes / 1024**3:.0f} GiB (use external data for larger weights)",
                         where=where)
    if st.st_size == 0:
        raise InvalidModelError("the file is empty, not an ONNX model", where=where)
    return st


def _parse(data, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf raises several unrelated types (DecodeError, RecursionError, ...)
        raise InvalidModelError(f"not a valid ONNX protobuf ({type(e).__name__})", where=where,
                                hint="is the file truncated or not an .onnx model?")
    if not model.HasField("graph") or (model.ir_version == 0 and not model.opset_import):
        raise InvalidModelError("not an ONNX model (no graph or version)", where=where)
    _check_text(model, where)
    return model


def read_model_proto(path: str | os.PathLike, limits: Limits) -> onnx.ModelProto:
    """Parse an ONNX file, refusing oversize or unreadable files before reading them."""
    p = Path(path)
    where = clean(str(p))
    _stat_model(p, where, limits)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InvalidModelError(f"cannot read model: {e.strerror}", where=where)
    return _parse(data, where)


def read_model_lean(path: str | os.PathLike, limits: Limits) -> tuple[onnx.ModelProto, "Payloads | None"]:
    """:func:`read_model_proto` without the large raw initializer payloads.

    The file's protobuf structure is walked directly (:func:`_lean_bytes`); every initializer whose
    ``raw_data`` holds more than ``SKELETON_KEEP_BYTES`` of a plain numeric type is parsed without
    its payload, which is read later, once, straight into its numpy array (:class:`Payloads`).
    Parsing the whole file would hold the file, protobuf's copy and numpy's copy of every weight
    at once. Anything the walk does not expect falls back to :func:`read_model_proto`, so errors
    and results are the same either way.
    """
    p = Path(path)
    where = clean(str(p))
    st = _stat_model(p, where, limits)
    try:
        lean = _lean_bytes(p, st.st_size, limits)
    except (_Unexpected, OSError, ValueError, OverflowError):
        lean = None
    if lean is None:
        return read_model_proto(p, limits), None
    data, stripped = lean
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:   # the full parse reports it, exactly as it would have
        return read_model_proto(p, limits), None
    del data
    inits = model.graph.initializer
    if any(i >= len(inits) or inits[i].HasField("raw_data") for i in stripped):
        return read_model_proto(p, limits), None
    if not model.HasField("graph") or (model.ir_version == 0 and not model.opset_import):
        raise InvalidModelError("not an ONNX model (no graph or version)", where=where)
    _check_text(model, where)
    entries = {inits[i].name: e for i, e in stripped.items()}
    return model, Payloads(p, entries)


# The protobuf wire format, just enough of it to find initializer payloads:
# ModelProto.graph = 7, GraphProto.initializer = 5; TensorProto dims = 1, data_type = 2,
# name = 8, raw_data = 9, doc_string = 12, data_location = 14, metadata_props = 16.
_RAW_DTYPES = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16,
               TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.INT16: np.int16,
               TensorProto.UINT16: np.uint16, TensorProto.INT32: np.int32, TensorProto.UINT32: np.uint32,
               TensorProto.INT64: np.int64, TensorProto.UINT64: np.uint64}
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
    if raw is None or dtype not in _RAW_DTYPES or any(d >= 1 << 62 for d in dims):
        return None
    n = 1
    for d in dims:
        n *= d
    nbytes = raw[2] - raw[1]
    itemsize = np.dtype(_RAW_DTYPES[dtype]).itemsize
    if nbytes != n * itemsize or nbytes <= SKELETON_KEEP_BYTES or nbytes > limits.max_tensor_bytes:
        return None
    return raw[0], raw[1], raw[2], np.dtype(_RAW_DTYPES[dtype]), tuple(dims)


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
                lean = _lean_tensor(win, value, pos, limits)
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


def _pread_exact(fd: int, offset: int, n: int, into=None) -> bytes | None:
    """n bytes at offset (into a writable buffer when given); _Unexpected if the file is shorter."""
    if into is None:
        data = os.pread(fd, n, offset) if n else b""
        if len(data) != n:
            raise _Unexpected()
        return data
    view = memoryview(into).cast("B")
    done = 0
    while done < n:
        got = os.preadv(fd, [view[done:n]], offset + done)
        if got <= 0:
            raise _Unexpected()
        done += got
    return None


class Payloads:
    """Initializer payloads left in the model file by :func:`read_model_lean`, read on demand."""

    def __init__(self, path: Path, entries: dict):
        self.path, self.entries = path, entries      # name -> (offset, nbytes, dtype, dims)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> set[str]:
        return set(self.entries)

    def arrays(self, names, where: str) -> dict[str, np.ndarray]:
        """Read each named payload straight into its (read-only, as numpy_helper gives it) array."""
        out = {}
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise InvalidModelError(f"cannot read model: {e.strerror}", where=where)
        try:
            for name in names:
                offset, nbytes, dtype, dims = self.entries[name]
                arr = np.empty(nbytes // dtype.itemsize, dtype)
                try:
                    _pread_exact(fd, offset, nbytes, into=arr)
                except (_Unexpected, OSError):
                    raise InvalidModelError("the model file changed while it was read", where=where)
                arr = arr.reshape(dims)
                arr.flags.writeable = False
                out[name] = arr
        finally:
            os.close(fd)
        return out


def _is_repeated(fd) -> bool:
    flag = getattr(fd, "is_repeated", None)     # protobuf >= 6; older ones only have ``label``
    return bool(flag) if flag is not None else fd.label == fd.LABEL_REPEATED


def _check_text(model: onnx.ModelProto, where: str) -> None:
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
            repeated = _is_repeated(fd)
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


# ---------------------------------------------------------------------------
# external data, checked by us (never trusting onnx's own path handling)
# ---------------------------------------------------------------------------

def _all_tensors(model: onnx.ModelProto):
    """Every TensorProto in the model that can carry data, subgraphs included (iteratively)."""
    stack = [model.graph]
    while stack:
        g = stack.pop()
        yield from g.initializer
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)


def resolve_external_data(model: onnx.ModelProto, model_path: Path, limits: Limits) -> None:
    """Load external tensor data into the model, only from files inside the model's folder."""
    base = model_path.resolve().parent
    total = 0
    for t in _all_tensors(model):
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
        if total > limits.max_model_bytes:
            raise LimitError("external data exceeds the model size limit", where=where)
        with open(real, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length)
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]


def _expected_bytes(t: TensorProto) -> int | None:
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        return None
    if t.data_type in (TensorProto.STRING,):
        return None
    n = 1
    for d in t.dims:
        n *= int(d)
    return n * itemsize


# ---------------------------------------------------------------------------
# checker, opset conversion, shape inference on a weight-less skeleton
# ---------------------------------------------------------------------------

def _ai_onnx_opset(model: onnx.ModelProto, where: str) -> int:
    version = None
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            version = int(imp.version)
    if version is None:
        raise InvalidModelError("the model imports no ai.onnx opset", where=where)
    latest = onnx.defs.onnx_opset_version()
    if version > latest:
        raise InvalidModelError(f"opset {version} is newer than this onnx ({latest}) knows", where=where,
                                hint="upgrade onnx or export at an older opset")
    if version < OLDEST_OPSET:
        raise InvalidModelError(f"opset {version} is older than the oldest supported ({OLDEST_OPSET})",
                                where=where)
    if model.ir_version > onnx.IR_VERSION:
        raise InvalidModelError(f"IR version {model.ir_version} is newer than this onnx supports "
                                f"({onnx.IR_VERSION})", where=where)
    return version


def _check_raw_sizes(model: onnx.ModelProto, where: str, limits: Limits) -> None:
    for t in model.graph.initializer:
        dims = list(t.dims)
        if any(d < 0 for d in dims):
            raise InvalidModelError(f"initializer {clean(t.name)!r} has a negative dimension", where=where)
        n = 1
        for d in dims:
            n *= int(d)
        if t.data_type == TensorProto.STRING:
            continue
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except Exception:
            raise InvalidModelError(f"initializer {clean(t.name)!r} has unknown data type {t.data_type}",
                                    where=where)
        if n * itemsize > limits.max_tensor_bytes:
            raise LimitError(f"initializer {clean(t.name)!r} would take {_size(n * itemsize)}; the limit is "
                             f"{_size(limits.max_tensor_bytes)}", where=where,
                             hint="set ACOMPILE_MAX_TENSOR_MB to raise it")
        if t.HasField("raw_data") and len(t.raw_data) != n * itemsize:
            raise InvalidModelError(f"initializer {clean(t.name)!r} holds {len(t.raw_data)} bytes but its "
                                    f"shape {dims} needs {n * itemsize}", where=where)


def _skeleton(model: onnx.ModelProto, stripped=frozenset()) -> tuple[onnx.ModelProto, dict[str, TensorProto]]:
    """A copy of the model whose large initializers are typed graph inputs instead.

    ``stripped`` names initializers whose payload :func:`read_model_lean` left in the file: heavy
    too. The heavy initializers are neither copied nor serialised (the copy is field by field).
    """
    heavy = {t.name: t for t in model.graph.initializer
             if t.name in stripped or len(t.raw_data) > SKELETON_KEEP_BYTES
             or _payload_bytes(t) > SKELETON_KEEP_BYTES}
    skel = onnx.ModelProto()
    for fd, value in model.ListFields():
        if fd.name != "graph":
            _copy_field(skel, fd, value)
    skel.graph.SetInParent()
    for fd, value in model.graph.ListFields():
        if fd.name != "initializer":
            _copy_field(skel.graph, fd, value)
    skel.graph.initializer.extend(t for t in model.graph.initializer if t.name not in heavy)
    existing_inputs = {i.name for i in skel.graph.input}
    for name, t in heavy.items():
        if name not in existing_inputs:
            skel.graph.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
    return skel, heavy


def _copy_field(dst, fd, value) -> None:
    if _is_repeated(fd):
        getattr(dst, fd.name).extend(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(dst, fd.name).CopyFrom(value)
    else:
        setattr(dst, fd.name, value)


def _payload_bytes(t: TensorProto) -> int:
    return 8 * (len(t.float_data) + len(t.int32_data) + len(t.int64_data) + len(t.double_data))


def bind_inputs(model: onnx.ModelProto, values: dict[str, np.ndarray], where: str) -> None:
    """Turn graph inputs into initializers (weights that a model takes as inputs)."""
    names = {i.name for i in model.graph.input}
    for name in sorted(values):
        if name not in names:
            raise InvalidModelError(f"--bind names {clean(name)!r}, which is not a graph input "
                                    f"(inputs: {', '.join(sorted(clean(n) for n in names))})", where=where)
    for name in sorted(values):
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(values[name]), name))
    kept = [i for i in model.graph.input if i.name not in values]
    del model.graph.input[:]
    model.graph.input.extend(kept)


def _fix_batch(skel: onnx.ModelProto, batch: int, heavy) -> bool:
    """Give every graph input's leading symbolic dimension the batch size used for cost.

    Returns True when some input had a symbolic (dynamic) batch dimension.
    """
    dynamic = False
    for vi in skel.graph.input:
        if vi.name in heavy:
            continue
        tt = vi.type.tensor_type
        if not tt.HasField("shape") or not tt.shape.dim:
            continue
        d0 = tt.shape.dim[0]
        if not d0.HasField("dim_value") and len(tt.shape.dim) > 1:
            d0.Clear()
            d0.dim_value = batch
            dynamic = True
    return dynamic


def _infer(skel: onnx.ModelProto, where: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(skel, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        raise InvalidModelError(f"shape inference: {_first_line(e)}", where=where)


def _batch_axes(a: onnx.ModelProto, b: onnx.ModelProto) -> dict[str, list[int]]:
    """Axes of every value whose size changed between two inferences at different batch sizes."""
    sizes_b = {vi.name: _value_info(vi).shape for vi in list(b.graph.value_info) + list(b.graph.output)}
    out = {}
    for vi in list(a.graph.value_info) + list(a.graph.output):
        sa, sb = _value_info(vi).shape, sizes_b.get(vi.name)
        if sa is None or sb is None or len(sa) != len(sb):
            continue
        axes = [i for i, (x, y) in enumerate(zip(sa, sb)) if x != y]
        if axes:
            out[vi.name] = axes
    return out


def _check_input_sizes(skel: onnx.ModelProto, where: str, limits: "Limits") -> None:
    for vi in skel.graph.input:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        n = 1
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                if d.dim_value < 0:
                    raise InvalidModelError(f"input {clean(vi.name)!r} has a negative dimension", where=where)
                n *= int(d.dim_value)
        itemsize = (_np_dtype(tt.elem_type) or np.dtype(np.float32)).itemsize
        if n * itemsize > limits.max_tensor_bytes:
            raise LimitError(f"input {clean(vi.name)!r} would take {n * itemsize / 1024**3:.3g} GiB; the limit is "
                             f"{limits.max_tensor_bytes / 1024**3:.3g} GiB", where=where,
                             hint="set ACOMPILE_MAX_TENSOR_MB to raise it")


def _check_value_sizes(model: onnx.ModelProto, where: str, limits: "Limits") -> None:
    for vi in list(model.graph.value_info) + list(model.graph.output):
        info = _value_info(vi)
        if info.shape is None or info.dtype is None:
            continue
        n = 1
        for d in info.shape:
            if isinstance(d, int):
                n *= d
        if n * info.dtype.itemsize > limits.max_tensor_bytes:
            raise LimitError(f"tensor {clean(vi.name)!r} would take {n * info.dtype.itemsize / 1024**3:.3g} GiB; "
                             f"the limit is {limits.max_tensor_bytes / 1024**3:.3g} GiB", where=where,
                             hint="set ACOMPILE_MAX_TENSOR_MB to raise it")


def normalise_and_infer(model: onnx.ModelProto, where: str, batch: int = 1,
                        limits: "Limits | None" = None) -> tuple[onnx.ModelProto, dict[str, list[int]] | None]:
    """Checker, opset conversion to CANONICAL_OPSET (older models only), strict shape inference.

    Returns the inferred model and, for a model with a dynamic batch, the axes of every value
    that follow the batch size (found by inferring shapes at two batch sizes), else None.
    """
    skel, heavy, batch_axes = _normalise(model, where, batch, limits)
    skel.graph.initializer.extend(heavy.values())
    return skel, batch_axes


def _normalise(model: onnx.ModelProto, where: str, batch: int = 1, limits: "Limits | None" = None,
               stripped=frozenset()) -> tuple[onnx.ModelProto, dict[str, TensorProto], dict | None]:
    """:func:`normalise_and_infer`, returning the heavy initializers apart (never copied)."""
    limits = limits or Limits()
    version = _ai_onnx_opset(model, where)
    skel, heavy = _skeleton(model, stripped)
    unfixed = onnx.ModelProto()
    unfixed.CopyFrom(skel)
    dynamic = _fix_batch(skel, batch, heavy)
    _check_input_sizes(skel, where, limits)
    try:
        onnx.checker.check_model(skel)
    except onnx.checker.ValidationError as e:
        raise InvalidModelError(f"ONNX checker: {_first_line(e)}", where=where)
    except Exception as e:
        raise InvalidModelError(f"ONNX checker failed: {_first_line(e)}", where=where)
    if version < CANONICAL_OPSET:
        from onnx import version_converter
        try:
            skel = version_converter.convert_version(skel, CANONICAL_OPSET)
        except Exception as e:
            raise UnsupportedError(f"cannot convert opset {version} to {CANONICAL_OPSET}: {_first_line(e)}",
                                   where=where)
    batch_axes = None
    if dynamic:
        _fix_batch(unfixed, batch + 1, heavy)
        if version < CANONICAL_OPSET:
            from onnx import version_converter
            unfixed = version_converter.convert_version(unfixed, CANONICAL_OPSET)
    skel = _infer(skel, where)
    if dynamic:
        batch_axes = _batch_axes(skel, _infer(unfixed, where))
    _check_value_sizes(skel, where, limits)
    # The heavy initializers go back as constants (to_ir), not as inputs.
    real_inputs = {i.name for i in model.graph.input}
    keep_inputs = [i for i in skel.graph.input if i.name not in heavy or i.name in real_inputs]
    del skel.graph.input[:]
    skel.graph.input.extend(keep_inputs)
    return skel, heavy, batch_axes


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return clean(text[0] if text else type(e).__name__, limit=300)


# ---------------------------------------------------------------------------
# ONNX -> IR
# ---------------------------------------------------------------------------

def _attr_value(a: onnx.AttributeProto):
    kind = a.type
    A = onnx.AttributeProto
    if kind == A.FLOAT:
        return float(a.f)
    if kind == A.INT:
        return int(a.i)
    if kind == A.STRING:
        return a.s.decode("utf-8", errors="replace")
    if kind == A.TENSOR:
        return numpy_helper.to_array(a.t)
    if kind == A.FLOATS:
        return [float(x) for x in a.floats]
    if kind == A.INTS:
        return [int(x) for x in a.ints]
    if kind == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if kind in (A.GRAPH, A.GRAPHS):
        return Subgraph()
    return OpaqueAttribute(kind)


class Subgraph:
    """Marker for a graph-valued attribute (If/Loop/Scan bodies): not mapped."""
    def __repr__(self) -> str:
        return "<subgraph>"


class OpaqueAttribute:
    def __init__(self, kind):
        self.kind = kind

    def __repr__(self) -> str:
        return f"<attribute type {self.kind}>"


def _np_dtype(elem_type: int):
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None


def _value_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    tt = vi.type.tensor_type
    dtype = _np_dtype(tt.elem_type) if tt.elem_type else None
    shape = None
    if tt.HasField("shape"):
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(clean(d.dim_param, 64))
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorInfo(vi.name, dtype, shape)


def _initializer_array(t: TensorProto, where: str) -> np.ndarray:
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise InvalidModelError(f"initializer {clean(t.name)!r} cannot be decoded: {_first_line(e)}",
                                where=where)
    return arr


def to_ir(model: onnx.ModelProto, where: str, limits: Limits, heavy: dict[str, TensorProto] | None = None,
          payloads: Payloads | None = None) -> Graph:
    """The IR of an inferred model; ``heavy`` initializers (after the model's own) come from
    ``payloads`` when it holds them, else from their TensorProto."""
    g = model.graph
    opset = _ai_onnx_opset(model, where)
    if len(g.node) > limits.max_nodes:
        raise LimitError(f"{len(g.node)} nodes exceed the limit of {limits.max_nodes}", where=where)
    constants = {}
    for t in g.initializer:
        constants[t.name] = _initializer_array(t, where)
    heavy = heavy or {}
    from_file = payloads.arrays([n for n in heavy if n in payloads], where) if payloads is not None else {}
    for name, t in heavy.items():
        constants[name] = from_file[name] if name in from_file else _initializer_array(t, where)
    tensors: dict[str, TensorInfo] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tensors[vi.name] = _value_info(vi)
    inputs = [i.name for i in g.input if i.name not in constants]
    domains = {imp.domain or "": int(imp.version) for imp in model.opset_import}
    nodes = []
    seen_names: set[str] = set()
    for idx, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{idx}"
        if name in seen_names:
            name = f"{name}_{idx}"
        seen_names.add(name)
        dom = "" if n.domain in ("", "ai.onnx") else n.domain
        nodes.append(Node(name=name, op_type=n.op_type, inputs=list(n.input), outputs=list(n.output),
                          attrs={a.name: _attr_value(a) for a in n.attribute}, domain=dom,
                          opset=domains.get(dom, 0),
                          meta={"attr_types": {a.name: int(a.type) for a in n.attribute}}))
    outputs = [o.name for o in g.output]
    if len(set(outputs)) != len(outputs):
        raise InvalidModelError("duplicate graph output names", where=where)
    graph = Graph(name=clean(g.name or "model", 80), nodes=nodes, inputs=inputs, outputs=outputs,
                  tensors=tensors, constants=constants, opset=opset, source=where)
    graph.toposort()
    graph.verify()
    return graph


def load_model(path: str | os.PathLike, *, batch: int = 1, bind: dict | None = None,
               limits: Limits | None = None) -> Graph:
    """Read, check, normalise and shape-infer an ONNX model, and return the IR."""
    limits = limits or Limits.from_env()
    p = Path(path)
    where = clean(str(p))
    model, payloads = read_model_lean(p, limits)
    resolve_external_data(model, p, limits)
    return _load(model, batch, bind, limits, where, payloads)


def load_model_proto(model: onnx.ModelProto, *, batch: int = 1, bind: dict | None = None,
                     limits: Limits | None = None, where: str = "<model>") -> Graph:
    """The same as :func:`load_model` for an in-memory model (external data already resolved)."""
    return _load(model, batch, bind, limits or Limits.from_env(), where, None)


def _load(model: onnx.ModelProto, batch: int, bind: dict | None, limits: Limits, where: str,
          payloads: Payloads | None) -> Graph:
    if bind:
        bind_inputs(model, bind, where)
    _check_raw_sizes(model, where, limits)
    stripped = payloads.names() if payloads is not None else frozenset()
    skel, heavy, batch_axes = _normalise(model, where, batch=batch, limits=limits, stripped=stripped)
    del model
    graph = to_ir(skel, where, limits, heavy, payloads)
    graph.meta["dynamic_batch"] = batch_axes is not None
    if batch_axes is not None:
        graph.meta["batch_axes"] = batch_axes
        for name in graph.inputs:
            if graph.tensors[name].shape:
                batch_axes.setdefault(name, [0])
    return graph
