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

def read_model_proto(path: str | os.PathLike, limits: Limits) -> onnx.ModelProto:
    """Parse an ONNX file, refusing oversize or unreadable files before reading them."""
    p = Path(path)
    where = clean(str(p))
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
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InvalidModelError(f"cannot read model: {e.strerror}", where=where)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf raises several unrelated types (DecodeError, RecursionError, ...)
        raise InvalidModelError(f"not a valid ONNX protobuf ({type(e).__name__})", where=where,
                                hint="is the file truncated or not an .onnx model?")
    del data
    if not model.HasField("graph") or (model.ir_version == 0 and not model.opset_import):
        raise InvalidModelError("not an ONNX model (no graph or version)", where=where)
    _check_text(model, where)
    return model


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


def _skeleton(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, TensorProto]]:
    """A copy of the model whose large initializers are typed graph inputs instead."""
    heavy = {t.name: t for t in model.graph.initializer
             if len(t.raw_data) > SKELETON_KEEP_BYTES or _payload_bytes(t) > SKELETON_KEEP_BYTES}
    skel = onnx.ModelProto()
    graph = model.graph
    # Copy everything but the heavy initializers without serialising them.
    kept = [t for t in graph.initializer if t.name not in heavy]
    saved = list(graph.initializer)
    del graph.initializer[:]
    try:
        skel.CopyFrom(model)
    finally:
        graph.initializer.extend(saved)
    skel.graph.initializer.extend(kept)
    existing_inputs = {i.name for i in skel.graph.input}
    for name, t in heavy.items():
        if name not in existing_inputs:
            skel.graph.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
    return skel, heavy


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
    limits = limits or Limits()
    version = _ai_onnx_opset(model, where)
    skel, heavy = _skeleton(model)
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
    # Put the heavy initializers back (they were never copied).
    keep_inputs = [i for i in skel.graph.input if i.name not in heavy or _was_real_input(model, i.name)]
    del skel.graph.input[:]
    skel.graph.input.extend(keep_inputs)
    skel.graph.initializer.extend(heavy.values())
    return skel, batch_axes


def _was_real_input(model: onnx.ModelProto, name: str) -> bool:
    return any(i.name == name for i in model.graph.input)


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
        return _Subgraph()
    return _Opaque(kind)


class _Subgraph:
    """Marker for a graph-valued attribute (If/Loop/Scan bodies): not mapped."""
    def __repr__(self) -> str:
        return "<subgraph>"


class _Opaque:
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


def to_ir(model: onnx.ModelProto, where: str, limits: Limits) -> Graph:
    g = model.graph
    opset = _ai_onnx_opset(model, where)
    if len(g.node) > limits.max_nodes:
        raise LimitError(f"{len(g.node)} nodes exceed the limit of {limits.max_nodes}", where=where)
    constants = {}
    for t in g.initializer:
        constants[t.name] = _initializer_array(t, where)
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
    model = read_model_proto(p, limits)
    resolve_external_data(model, p, limits)
    return load_model_proto(model, batch=batch, bind=bind, limits=limits, where=where)


def load_model_proto(model: onnx.ModelProto, *, batch: int = 1, bind: dict | None = None,
                     limits: Limits | None = None, where: str = "<model>") -> Graph:
    """The same as :func:`load_model` for an in-memory model (external data already resolved)."""
    limits = limits or Limits.from_env()
    if bind:
        bind_inputs(model, bind, where)
    _check_raw_sizes(model, where, limits)
    model, batch_axes = normalise_and_infer(model, where, batch=batch, limits=limits)
    graph = to_ir(model, where, limits)
    graph.meta["dynamic_batch"] = batch_axes is not None
    if batch_axes is not None:
        graph.meta["batch_axes"] = batch_axes
        for name in graph.inputs:
            if graph.tensors[name].shape:
                batch_axes.setdefault(name, [0])
    return graph
