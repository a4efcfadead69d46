"""Checker, opset conversion and shape inference on a weight-less *skeleton* of the model (every
large initializer a typed graph input, so they copy kilobytes, never the weights); a dynamic batch
is detected by inferring shapes at two batch sizes.
"""

from __future__ import annotations

from ..errors import InvalidModelError, LimitError, UsageError, clean, first_line
from ..limits import Limits, byte_size
from ..onnx_core import (ModelProto, TensorProto, ValidationError, check_model, infer_shapes,
                         inline_local_functions, make_attribute, make_opsetid, make_tensor_value_info,
                         tensor_dtype_to_np_dtype)
from ..onnx_walk import all_nodes
from .convert import CANONICAL_OPSET, ai_onnx_opset, convert
from .protobuf import SKELETON_KEEP_BYTES, is_repeated
from .value_sizes import check_input_sizes, check_value_sizes, value_info


def check_raw_sizes(model: ModelProto, where: str, limits: Limits) -> None:
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
            itemsize = tensor_dtype_to_np_dtype(t.data_type).itemsize
        except Exception:
            raise InvalidModelError(f"initializer {clean(t.name)!r} has unknown data type {t.data_type}",
                                    where=where)
        if n * itemsize > limits.max_tensor_bytes:
            raise LimitError(f"initializer {clean(t.name)!r} would take {byte_size(n * itemsize)}; the limit is "
                             f"{byte_size(limits.max_tensor_bytes)}", where=where,
                             hint="set ACOMPILE_MAX_TENSOR_MB to raise it")
        need = stored_bytes(t.data_type, n)
        if t.HasField("raw_data") and len(t.raw_data) != need:
            raise InvalidModelError(f"initializer {clean(t.name)!r} holds {len(t.raw_data)} bytes but its "
                                    f"shape {dims} needs {need}", where=where)


SUB_BYTE_BITS = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.FLOAT4E2M1: 4}
SUB_BYTE_BITS.update({getattr(TensorProto, k): 2 for k in ("INT2", "UINT2") if hasattr(TensorProto, k)})


def stored_bytes(data_type: int, n: int) -> int:
    """Bytes that ``n`` elements of an ONNX data type take in ``raw_data`` (4- and 2-bit types are packed)."""
    bits = SUB_BYTE_BITS.get(data_type)
    if bits is not None:
        return (n * bits + 7) // 8
    return n * tensor_dtype_to_np_dtype(data_type).itemsize


def _skeleton(model: ModelProto, stripped=frozenset()) -> tuple[ModelProto, dict[str, TensorProto]]:
    """A copy of the model whose large initializers are typed graph inputs instead.

    ``stripped`` names initializers whose payload :func:`read_model_lean` left in the file: heavy
    too. The heavy initializers are neither copied nor serialised (the copy is field by field).
    """
    heavy = {t.name: t for t in model.graph.initializer
             if t.name in stripped or len(t.raw_data) > SKELETON_KEEP_BYTES
             or _payload_bytes(t) > SKELETON_KEEP_BYTES}
    skel = ModelProto()
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
            skel.graph.input.append(make_tensor_value_info(name, t.data_type, list(t.dims)))
    return skel, heavy


def _inline_functions(skel: ModelProto, where: str) -> ModelProto:
    """The model's local functions (an exporter's modules, onnxscript's functions) expanded into its
    graph, as onnxruntime runs them: their Conv and MatMul nodes then map like any other."""
    # onnx's inliner drops a function's default attribute values (FunctionProto.attribute_proto) where a
    # call leaves them out; onnxruntime applies them: give every such call its defaults first
    defaults = {(f.domain, f.name): list(f.attribute_proto) for f in skel.functions if f.attribute_proto}
    for n in all_nodes(skel.graph, *skel.functions):
        given = {a.name for a in n.attribute}
        n.attribute.extend(a for a in defaults.get((n.domain, n.op_type), []) if a.name not in given)
    try:
        return inline_local_functions(skel)
    except Exception as e:
        raise InvalidModelError(f"its local functions cannot be expanded: {first_line(e)}", where=where)


def _import_used_domains(skel: ModelProto) -> None:
    """Declare, at version 1, an operator domain that nodes use but the model does not import: onnxruntime
    runs such a model (its transformer optimizer's output saved with onnx.save), the checker refuses it;
    and ai.onnx itself, at CANONICAL_OPSET, in a model that imports only other domains."""
    imported = {imp.domain or "" for imp in skel.opset_import}
    used = {node.domain or "" for node in all_nodes(skel.graph)}
    for domain in sorted(used - imported - {"", "ai.onnx"}):
        skel.opset_import.append(make_opsetid(domain, 1))
    if not imported & {"", "ai.onnx"}:      # a model of ai.onnx.ml operators only (see ai_onnx_opset)
        skel.opset_import.append(make_opsetid("", CANONICAL_OPSET))


def _spell_defaults(skel: ModelProto) -> None:
    """Write out the attribute defaults that onnx's shape inference reads wrongly when they are absent:
    STFT's ``onesided`` (1: onnx 1.23 infers the full spectrum, onnxruntime computes the one-sided one)."""
    for node in all_nodes(skel.graph):
        if node.op_type == "STFT" and node.domain in ("", "ai.onnx") \
                and not any(a.name == "onesided" for a in node.attribute):
            node.attribute.append(make_attribute("onesided", 1))


def _copy_field(dst, fd, value) -> None:
    if is_repeated(fd):
        getattr(dst, fd.name).extend(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(dst, fd.name).CopyFrom(value)
    else:
        setattr(dst, fd.name, value)


def _payload_bytes(t: TensorProto) -> int:
    return 8 * (len(t.float_data) + len(t.int32_data) + len(t.int64_data) + len(t.double_data))


def _fix_batch(skel: ModelProto, batch: int, heavy) -> bool:
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


def _dynamic_dims(skel: ModelProto, heavy) -> None:
    """A graph input dimension of -1 or 0 is dynamic, as onnxruntime reads it (some exporters write that)."""
    for vi in skel.graph.input:
        if vi.name in heavy or not vi.type.tensor_type.HasField("shape"):
            continue
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value <= 0:
                d.Clear()
                d.dim_param = f"{vi.name}_dim{i}"


def _fix_shapes(skel: ModelProto, shapes: dict[str, tuple[int, ...]], heavy, where: str) -> None:
    """Give the named graph inputs the static shapes of ``--input-shape`` (fixed: never a dynamic batch);
    a None size keeps the model's own dimension."""
    inputs = {vi.name: vi for vi in skel.graph.input if vi.name not in heavy}
    for name, dims in shapes.items():
        vi = inputs.get(name)
        if vi is None:
            raise UsageError(f"--input-shape names {clean(name)!r}, which is not a graph input "
                             f"(inputs: {', '.join(sorted(clean(n) for n in inputs))})", where=where)
        tt = vi.type.tensor_type
        stored = list(tt.shape.dim) if tt.HasField("shape") else None
        if stored is not None and len(stored) != len(dims):
            raise UsageError(f"--input-shape gives {clean(name)!r} {len(dims)} dimensions; the model has "
                             f"{len(stored)}", where=where)
        for i, (d, n) in enumerate(zip(stored or [], dims)):
            if n is not None and d.HasField("dim_value") and d.dim_value != n:
                raise UsageError(f"--input-shape gives {clean(name)!r} size {n} on axis {i}; the model fixes "
                                 f"it to {d.dim_value}", where=where)
        for i, n in enumerate(dims):
            if n is None:          # from data: the leading axis (samples) stays the model's own
                continue
            if stored is None:
                tt.shape.dim.add()
            d = tt.shape.dim[i]
            d.Clear()
            d.dim_value = int(n)


def _infer(skel: ModelProto, where: str) -> ModelProto:
    def infer(model, strict=True):
        return infer_shapes(model, check_type=True, strict_mode=strict, data_prop=True)
    try:
        return infer(skel)
    except Exception as e:
        error = e
    # Exporters write stale intermediate / output shapes that onnxruntime ignores (a Reshape whose
    # declared output disagrees with inference): drop them and infer again before giving up.
    fresh = skel
    if skel.graph.value_info or any(o.type.tensor_type.HasField("shape") for o in skel.graph.output):
        fresh = ModelProto()
        fresh.CopyFrom(skel)
        del fresh.graph.value_info[:]
        for o in fresh.graph.output:
            o.type.tensor_type.ClearField("shape")
        try:
            return infer(fresh)
        except Exception:
            pass
    # ONNX's own inference fails on some models onnxruntime runs (MeanVarianceNormalization's
    # function body): keep what it infers leniently; folding infers the rest node by node.
    if _onnxruntime_loads(_checkable(skel)):
        try:
            return infer(fresh, strict=False)
        except Exception:
            pass
    raise InvalidModelError(f"shape inference: {first_line(error)}", where=where)


def _fill_output_types(skel: ModelProto) -> None:
    """Graph outputs declared without a type or shape (onnxruntime runs them; the checker refuses
    them): take both from a lenient shape inference (an empty shape would mean a scalar)."""
    bare = [o for o in skel.graph.output
            if not o.type.HasField("tensor_type") and not o.type.WhichOneof("value")
            or o.type.HasField("tensor_type") and (not o.type.tensor_type.elem_type
                                                   or not o.type.tensor_type.HasField("shape"))]
    if not bare:
        return
    try:
        inferred = infer_shapes(skel, data_prop=True)
        found = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    except Exception:
        found = {}
    for o in bare:
        vi = found.get(o.name)
        tt = vi.type.tensor_type if vi is not None and vi.type.HasField("tensor_type") else None
        if tt is not None and tt.elem_type and not o.type.tensor_type.elem_type:
            o.type.tensor_type.elem_type = tt.elem_type
        if tt is not None and tt.HasField("shape") and not o.type.tensor_type.HasField("shape"):
            o.type.tensor_type.shape.CopyFrom(tt.shape)


def _checkable(skel: ModelProto) -> ModelProto:
    """The model as the checker accepts it: a graph output whose shape even inference cannot give (an
    operator ONNX infers nothing for, GroupNormalization) gets an empty one in a copy. onnxruntime runs
    such models; acompile infers those shapes node by node after folding."""
    if all(o.type.tensor_type.HasField("shape") for o in skel.graph.output if o.type.HasField("tensor_type")):
        return skel
    copy = ModelProto()
    copy.CopyFrom(skel)
    for o in copy.graph.output:
        if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape"):
            o.type.tensor_type.shape.SetInParent()
    return copy


def _onnxruntime_loads(skel: ModelProto) -> bool:
    """True when onnxruntime builds a session for the model the checker refused: the checker is
    stricter in places (an operator version ONNX deprecated, GroupNormalization-18), and a model
    onnxruntime runs is one acompile must take."""
    try:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 4
        ort.InferenceSession(skel.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False


def _batch_shapes(a: ModelProto, b: ModelProto) -> dict[str, tuple]:
    """The shape at the second batch size of every value whose size changed between two inferences
    at different batch sizes (``a`` at the batch, ``b`` at batch + 1)."""
    sizes_b = {vi.name: value_info(vi).shape for vi in list(b.graph.value_info) + list(b.graph.output)}
    out = {}
    for vi in list(a.graph.value_info) + list(a.graph.output):
        sa, sb = value_info(vi).shape, sizes_b.get(vi.name)
        if sa is not None and sb is not None and len(sa) == len(sb) and sa != sb:
            out[vi.name] = sb
    return out


def normalise(model: ModelProto, where: str, batch: int = 1, limits: "Limits | None" = None,
              stripped=frozenset(), input_shapes: dict | None = None
              ) -> tuple[ModelProto, dict[str, TensorProto], dict | None]:
    """Checker, opset conversion to CANONICAL_OPSET (older models only), strict shape inference.

    Returns the inferred skeleton, the heavy initializers apart (never copied; ``stripped`` names
    those whose payload :func:`~.protobuf.read_model_lean` left in the file) and, for a model with
    a dynamic batch, the shape at batch + 1 of every value whose size follows the batch, else None.
    """
    limits = limits or Limits()
    if len(model.graph.node) > limits.max_nodes:    # before the checker and shape inference walk them all
        raise limits.refuse("max_nodes", "nodes in the graph", len(model.graph.node),
                            where=where)
    version = ai_onnx_opset(model, where)
    skel, heavy = _skeleton(model, stripped)
    if skel.functions:
        skel = _inline_functions(skel, where)
    _import_used_domains(skel)
    _spell_defaults(skel)
    _dynamic_dims(skel, heavy)
    unfixed = ModelProto()
    unfixed.CopyFrom(skel)
    shapes = _single_input(input_shapes or {}, skel, heavy, where)
    _fix_shapes(skel, shapes, heavy, where)
    dynamic = _fix_batch(skel, batch, heavy)
    check_input_sizes(skel, where, limits)
    _fill_output_types(skel)
    checkable = _checkable(skel)
    try:
        check_model(checkable)
    except ValidationError as e:
        if not _onnxruntime_loads(checkable):
            raise InvalidModelError(f"ONNX checker: {first_line(e)}", where=where)
    except Exception as e:
        raise InvalidModelError(f"ONNX checker failed: {first_line(e)}", where=where)
    if version < CANONICAL_OPSET:
        skel = convert(skel, version, where)
    batch_shapes = None
    if dynamic:
        _fix_shapes(unfixed, shapes, heavy, where)
        _fix_batch(unfixed, batch + 1, heavy)
        if version < CANONICAL_OPSET:
            unfixed = convert(unfixed, version, where)
    try:
        skel = _infer(skel, where)
    except InvalidModelError as e:
        if not dynamic:
            raise
        _infer(unfixed, where)      # fails too: the error is the model's, whatever its batch
        raise InvalidModelError(f"{e.message} (at batch {batch}: the model runs at batch {batch + 1}, not at "
                                f"{batch})", where=where,
                                hint="give it another batch: --input-shape NAME:N,... (compile: --batch N)") from None
    if dynamic:
        batch_shapes = _batch_shapes(skel, _infer(unfixed, where))
    check_value_sizes(skel, where, limits)
    # The heavy initializers go back as constants (to_ir), not as inputs.
    real_inputs = {i.name for i in model.graph.input}
    keep_inputs = [i for i in skel.graph.input if i.name not in heavy or i.name in real_inputs]
    del skel.graph.input[:]
    skel.graph.input.extend(keep_inputs)
    return skel, heavy, batch_shapes


def _single_input(shapes: dict, skel: ModelProto, heavy, where: str) -> dict:
    """A bare ``--input-shape D1,...`` (key None) names the model's only input."""
    if None not in shapes:
        return shapes
    names = [vi.name for vi in skel.graph.input if vi.name not in heavy]
    if len(names) != 1:
        raise UsageError(f"a bare --input-shape needs a model with one input; this one has {len(names)} "
                         f"({', '.join(clean(n) for n in names)})", where=where, hint="write NAME:D1,D2,...")
    return {names[0]: shapes[None], **{k: v for k, v in shapes.items() if k is not None}}
