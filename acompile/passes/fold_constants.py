"""Constant folding: a node whose inputs are all constants becomes the constant it computes
(numpy for the weight-shaping ops, the shape arithmetic of exported models and a quantized model's
DequantizeLinear, else onnxruntime), so
weights built by Constant, Reshape, Transpose, Cast, ... reach the analog layers as initializers. The byte budget
(``options.limits``) is checked *before* each evaluation: folding never allocates without limit.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidModelError, LimitError
from ..frontend.ops import NON_DETERMINISTIC, SHAPED_BY_VALUES
from ..ir import Graph, Node, Subgraph, TensorInfo
from ..limits import Limits
from ..numerics.folded import DequantizedWeight, integers_of, note_folded
from ..onnx_exec import QUANTIZE_DOMAINS, dequantize_linear, run_node
from .base import CompileState, compile_pass
from .batch_values import at_next_batch, follows_batch, value_of
from .numpy_fold import fold_in_numpy
from .output_shapes import SIZE_FROM_VALUES, SMALL_INPUT_BYTES, inferred_output, probed_output

# a sequence or optional is no array: what makes one stays a node (graph.constants holds tensors)
NON_TENSOR_RESULT = {"SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceErase", "SplitToSequence",
                     "SequenceMap", "Optional"}
NEVER_FOLD = NON_DETERMINISTIC | NON_TENSOR_RESULT | {"If", "Loop", "Scan", "Dropout"}
# onnxruntime's own deterministic operators a quantizer writes on constant weights
FOLDABLE_CONTRIB = {("com.microsoft", "DequantizeLinear"), ("com.microsoft", "QuantizeLinear")}
def _sized_by_shapes(node: Node, args: list) -> bool:
    """True when ``node``'s output shapes follow from what ``args`` gives: every input whose values
    could size the output is a constant (an ai.onnx operator; another domain's, ai.onnx.ml's, are
    element-wise or sized by attributes)."""
    if node.domain not in ("", "ai.onnx"):
        return True
    if node.op_type not in SHAPED_BY_VALUES:
        return True
    which = SHAPED_BY_VALUES[node.op_type]
    indices = range(len(args)) if which is None else which
    return all(i >= len(args) or args[i] is None or not isinstance(args[i], tuple) for i in indices)


def _const_of_shape(node: Node, shape: np.ndarray, limits: Limits) -> np.ndarray:
    shape = [int(d) for d in np.asarray(shape).reshape(-1)]
    if any(d < 0 for d in shape):
        raise InvalidModelError(f"negative dimension in {shape}", where=node.describe())
    value = node.attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    _check_budget(node, shape, value.dtype.itemsize, limits)
    return np.full(shape, value[0], dtype=value.dtype)


def _check_budget(node: Node, shape, itemsize: int, limits: Limits) -> None:
    n = 1
    for d in shape:
        n *= int(d)
        if n * itemsize > limits.fold_budget_bytes:
            raise LimitError(f"folding would allocate more than the {limits.fold_budget_bytes / 1024**2:.0f} MiB "
                             f"budget (shape {list(shape)})", where=node.describe(),
                             hint="set ACOMPILE_MAX_TENSOR_MB to raise the limit")


def _fold_numpy(node: Node, args: list, limits: Limits, opset: int) -> list[np.ndarray] | None:
    """Cheap numpy implementations of the weight-shaping ops and of the shape arithmetic exporters write
    (:mod:`.numpy_fold`); None means 'use onnxruntime'."""
    op, a = node.op_type, node.attrs
    if op == "Constant":
        for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
            if key in a:
                v = a[key]
                if isinstance(v, float):
                    return [np.array(v, np.float32)]
                if isinstance(v, int):
                    return [np.array(v, np.int64)]
                if isinstance(v, list):
                    return [np.array(v, np.float32 if key == "value_floats" else np.int64)]
                return [np.asarray(v)]
        return None
    if op == "ConstantOfShape":
        return [_const_of_shape(node, args[0], limits)]
    if op == "Identity":
        return [args[0]]
    if op == "Transpose":
        perm = a.get("perm")
        return [np.ascontiguousarray(np.transpose(args[0], perm))]
    if op == "DequantizeLinear" and node.domain in QUANTIZE_DOMAINS:
        return _dequantized(node, args)
    return fold_in_numpy(op, a, args, opset) if node.domain in ("", "ai.onnx") else None


# (x - zero point) · scale computed as onnxruntime does (an exact integer difference, one rounding in the
# scale's type): a quantized model's weights fold without importing onnxruntime
_DEQUANTIZED = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32)}
_SCALES = {np.dtype(np.float32), np.dtype(np.float16)}


def _dequantized(node: Node, args: list) -> list[np.ndarray] | None:
    """A DequantizeLinear of numpy integers by float32 or float16 scales, in numpy; None for the other
    forms and for inputs that do not fit together (onnxruntime then says why)."""
    x, scale = np.asarray(args[0]), np.asarray(args[1])
    zero = args[2] if len(args) > 2 else None
    if x.dtype not in _DEQUANTIZED or scale.dtype not in _SCALES or node.attrs.get("output_dtype") \
            or zero is not None and np.asarray(zero).dtype != x.dtype or len(args) > 3:
        return None
    axis, block = int(node.attrs.get("axis", 1)), int(node.attrs.get("block_size", 0))
    per_tensor = scale.size == 1 and scale.ndim <= 1      # the axis is not read
    if not (per_tensor or -x.ndim <= axis < x.ndim) or block < 0:
        return None
    if zero is not None and not (np.size(zero) == 1 and np.ndim(zero) <= 1 if per_tensor
                                 else np.shape(zero) == scale.shape):
        return None         # a zero point of another shape than its scales': onnxruntime refuses it
    try:
        return [dequantize_linear(x, scale, zero, axis, block)]
    except ValueError:
        return None


@compile_pass(provides={"folded"})
def fold_constants(state: CompileState) -> None:
    """Replace every foldable all-constant node by the constant it produces."""
    graph, limits = state.graph, state.options.limits
    while _fold_once(graph, limits) | _fold_shapes(graph) or _inline_ifs(graph) or _propagate_shapes(graph, limits):
        pass
    graph.prune()
    _check_reshapes(graph, bool(getattr(state.options, "input_shapes", None)))


def _check_reshapes(graph: Graph, shapes_given: bool) -> None:
    """A Reshape whose constant target cannot hold its input's elements (ONNX's shape inference does
    not check; onnxruntime refuses to run it): bad input, said at compile time, not at calibration."""
    for node in graph.nodes:
        if node.op_type != "Reshape" or node.domain or len(node.inputs) < 2 or not graph.is_constant(node.inputs[1]):
            continue
        x = graph.static_shape(node.inputs[0])
        if x is None:
            continue
        target = [int(d) for d in np.asarray(graph.constants[node.inputs[1]]).reshape(-1)]
        if not node.attrs.get("allowzero", 0):
            target = [x[i] if d == 0 and i < len(x) else d for i, d in enumerate(target)]
        known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
        n = int(np.prod(x, dtype=np.int64))
        free = target.count(-1)
        if free > 1 or (free == 0 and known != n) or (free == 1 and (known == 0 or n % known)):
            raise InvalidModelError(
                f"cannot reshape {n} elements (shape {list(x)}) into {target}", where=node.describe(),
                hint="the shapes given with --input-shape do not fit this model's fixed sizes" if shapes_given else None)


def _inline_ifs(graph: Graph) -> bool:
    """An If whose condition is a constant becomes the nodes of the branch it takes (analog layers
    in it then map like any other). Branch names that clash with the graph's are renamed."""
    from ..frontend.control_flow import attach_outer, has_bodies
    from ..frontend.to_ir import initializer_array, to_node
    from ..frontend.value_sizes import value_info
    inlined = False
    for node in list(graph.nodes):
        if node.op_type != "If" or node.domain or not node.inputs or not graph.is_constant(node.inputs[0]):
            continue
        cond = np.asarray(graph.constants[node.inputs[0]]).reshape(-1)
        branch = node.attrs.get("then_branch" if cond.size and bool(cond[0]) else "else_branch")
        if not isinstance(branch, Subgraph) or branch.graph is None:
            continue
        body = branch.graph
        taken = set(graph.tensors) | set(graph.constants) | {o for n in graph.nodes for o in n.outputs}
        local = {t.name for t in body.initializer} | {o for n in body.node for o in n.output if o}
        outer = node.meta.get("outer", [])
        rename = dict(zip(outer, node.inputs[len(node.inputs) - len(outer):]))   # as the graph now names them
        rename.update({v: graph.unique_name(f"{node.name}/{v}" if v in taken else v) for v in sorted(local)})
        opsets = graph.meta.get("opsets", {"": graph.opset})
        for t in body.initializer:
            graph.constants[rename[t.name]] = initializer_array(t, graph.source)
        for vi in body.value_info:
            if vi.name in local:
                info = value_info(vi)
                graph.tensors[rename[vi.name]] = TensorInfo(rename[vi.name], info.dtype, info.shape)
        new = []
        for i, n in enumerate(body.node):
            inner = to_node(n, graph.unique_name(f"{node.name}/{n.name or n.op_type + str(i)}"), opsets)
            if has_bodies(inner):
                attach_outer(inner, opsets)
            inner.inputs = [rename.get(x, x) for x in inner.inputs]
            inner.outputs = [rename.get(x, x) for x in inner.outputs]
            new.append(inner)
        for out, bo in zip(node.outputs, body.output):
            if out:     # the branch's result under the If's output name (Identity: free data movement)
                new.append(Node(name=graph.unique_name(f"{node.name}/out"), op_type="Identity",
                                inputs=[rename.get(bo.name, bo.name)], outputs=[out], opset=graph.opset))
        at = graph.nodes.index(node)
        graph.nodes[at:at + 1] = new
        inlined = True
    if inlined:
        graph.toposort()
    return inlined


def _fold_gathered_dims(graph: Graph, gathers: list[Node], dims, batch: list[int]) -> list[Node]:
    """Fold the Gathers of a live ``Shape`` that read only axes the batch does not touch; return them."""
    folded, live = [], graph.meta.setdefault("live_gathers", set())    # names of Gathers that read the batch
    for user in gathers:
        if user.name in live:
            continue
        index = np.asarray(graph.constants[user.inputs[1]]).astype(np.int64)
        index = np.where(index < 0, index + len(dims), index)
        if np.any(np.isin(index, batch)) or np.any((index < 0) | (index >= len(dims))):
            live.add(user.name)
            continue
        graph.constants[user.outputs[0]] = np.asarray(dims, np.int64)[index]
        folded.append(user)
    return folded


def _propagate_shapes(graph: Graph, limits: Limits) -> bool:
    """Shapes whole-model inference could not follow (a Pad whose pads are computed by a chain that
    folding has now turned into a constant, an ai.onnx.ml Scaler): infer them node by node from the
    inputs known by now. With a dynamic batch, each node is inferred a second time at batch + 1 to
    record which axes of the new shape follow the batch (so folding its ``Shape`` keeps them live).

    One pass in program order that also folds what the shapes just inferred make constant (a
    ``Shape``, then the nodes it feeds) and records the values that follow the batch, so a chain of
    Reshapes whose targets are computed from shapes is followed in one pass, not one pass per link.
    """
    dynamic = bool(graph.meta.get("dynamic_batch"))
    values = graph.meta.setdefault("batch_values", {}) if dynamic else {}
    changed, folded, weights = False, [], weight_only(graph)
    for node in graph.nodes:
        if _shape_constant(graph, node) or _fold_node(graph, node, limits, weights) \
                or dynamic and value_of(graph, node, _not_a_value, SMALL_INPUT_BYTES):
            folded.append(node)
            continue
        if any(isinstance(v, Subgraph) for v in node.attrs.values()):
            continue
        missing = [k for k, o in enumerate(node.outputs) if o and graph.static_shape(o) is None]
        if not missing:
            continue
        args, bumped = [], []
        for i in node.inputs:
            if not i:
                arg = bump = None
            elif graph.is_constant(i):
                arg = bump = graph.constants[i]
            elif i in values:
                arg, bump, _ = values[i]
            elif graph.static_shape(i) is not None and graph.dtype(i) is not None:
                shape = graph.static_shape(i)
                arg = (shape, graph.dtype(i))
                bump = (at_next_batch(graph, i, shape), graph.dtype(i))
            else:
                break
            args.append(arg)
            bumped.append(bump)
        else:
            for k in missing:
                shape, dtype = inferred_output(node, args, k, graph.opset)
                infer = inferred_output
                if shape is None and _sized_by_shapes(node, args):
                    # no ONNX shape inference for it (ai.onnx.ml Scaler, GroupNormalization): ask
                    # onnxruntime, unless input values it is not given could size the output (NonZero on
                    # zeros would give a wrong, static shape)
                    shape, dtype = probed_output(node, args, k, graph.opset)
                    infer = probed_output
                if shape is None:
                    continue
                o = node.outputs[k]
                if dynamic:
                    other, _ = infer(node, bumped, k, graph.opset)
                    if other is None or len(other) != len(shape):
                        continue
                    follows_batch(graph, o, shape, other)
                graph.tensors[o] = TensorInfo(o, dtype if dtype is not None else graph.dtype(o), shape)
                changed = True
    if folded:
        graph.remove_nodes(folded)
    return changed or bool(folded)


def _not_a_value(node: Node) -> bool:
    """A node whose output is no small integer value computed from shapes: not run by batch_values."""
    return node.op_type in NEVER_FOLD or node.op_type in SIZE_FROM_VALUES or node.op_type == "ConstantOfShape" \
        or any(isinstance(v, Subgraph) for v in node.attrs.values())


def _fold_once(graph: Graph, limits: Limits) -> bool:
    empty = {o for n in graph.nodes if n.op_type == "Optional" and not n.domain and not any(n.inputs)
             for o in n.outputs}
    weights = weight_only(graph)
    folded = [node for node in graph.nodes
              if _fold_node(graph, node, limits, weights) or _has_element(graph, node, empty)]
    if folded:
        graph.remove_nodes(folded)
    return bool(folded)


def _has_element(graph: Graph, node: Node, empty: set[str]) -> bool:
    """Whether ``node`` asks if an optional built without a value (``Optional`` with only its type) has one,
    now the constant false: the If it steers then folds to the branch it takes."""
    if node.op_type != "OptionalHasElement" or node.domain or not node.inputs or node.inputs[0] not in empty \
            or node.outputs[0] in graph.outputs:
        return False
    graph.constants[node.outputs[0]] = np.array(False)
    return True


def _fold_node(graph: Graph, node: Node, limits: Limits, weights: set[str] = frozenset()) -> bool:
    """Whether ``node`` was folded: all its inputs constant, its outputs are constants now (a DequantizeLinear
    output in ``weights``, :func:`weight_only`, as its integers)."""
    if node.op_type in NEVER_FOLD or node.domain and (node.domain, node.op_type) not in FOLDABLE_CONTRIB:
        return False
    if any(isinstance(v, Subgraph) for v in node.attrs.values()):
        return False
    if not all((not i) or graph.is_constant(i) for i in node.inputs):
        return False
    if not node.outputs or any(o in graph.outputs for o in node.outputs):
        return False
    args = [graph.constants[i] if i else None for i in node.inputs]
    unknown = False
    for k, o in enumerate(node.outputs):
        shape = graph.static_shape(o) if o in graph.tensors else None
        dtype = graph.dtype(o)
        if shape is None and o:
            # Whole-model inference could not size it (a shape computed by an op data propagation
            # does not follow); the inputs are concrete now, so ask again for this one node.
            shape, dtype = inferred_output(node, args, k, graph.opset)
        if shape is not None:
            _check_budget(node, shape, (dtype.itemsize if dtype is not None else 8), limits)
        elif o:
            unknown = True
    held = _integers(node, args, DequantizedWeight) if node.outputs[0] in weights else None
    if held is not None:
        graph.constants[node.outputs[0]] = held
        return True
    values = _fold_numpy(node, args, limits, graph.opset)
    if values is None:
        if node.op_type in SIZE_FROM_VALUES and unknown:
            return False  # unknown output size: do not gamble on an allocation
        values = run_node(node.op_type, node.attrs, args, len(node.outputs),
                          node.opset if node.domain else graph.opset, domain=node.domain,
                          attr_types=node.meta.get("attr_types"), where=node.describe())
    if any(o and not isinstance(v, (np.ndarray, np.generic)) for o, v in zip(node.outputs, values)):
        return False        # a sequence or optional after all (a contrib op's): left to run
    for o, v in zip(node.outputs, values):
        if o:
            graph.constants[o] = np.asarray(v)
    if node.outputs[0]:     # a float DequantizeLinear output: its integers remembered beside it
        note_folded(graph.meta, graph.constants[node.outputs[0]], _integers(node, args))
    return True


def _integers(node: Node, args: list, kind: type | None = None):
    """A DequantizeLinear's output as its integers and scales (numerics.folded), or None for a form that
    has none (blocked scales, a float input, another output type)."""
    if node.op_type != "DequantizeLinear" or node.domain not in QUANTIZE_DOMAINS or node.attrs.get("block_size") \
            or node.attrs.get("output_dtype") or len(args) > 3:
        return None
    x = np.asarray(args[0])
    axis = int(node.attrs.get("axis", 1))
    if not -x.ndim <= axis < x.ndim or np.ndim(args[1]) > 1:
        return None
    return integers_of(x, args[1], args[2] if len(args) > 2 else None, axis % x.ndim, kind)


def weight_only(graph: Graph) -> set[str]:
    """Outputs of DequantizeLinear nodes that only the weight input of a Conv, ConvTranspose, Gemm or MatMul
    reads: folding holds them as their integers (numerics.folded.DequantizedWeight), never as floats."""
    readers: dict[str, list] = {}
    for n in graph.nodes:
        for k, i in enumerate(n.inputs):
            readers.setdefault(i, []).append((n, k))
    return {n.outputs[0] for n in graph.nodes if n.op_type == "DequantizeLinear" and n.outputs
            and n.outputs[0] not in graph.outputs and readers.get(n.outputs[0])
            and all(r.op_type in _WEIGHTED and r.domain in ("", "ai.onnx") and k == 1 for r, k in readers[n.outputs[0]])}


_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def _fold_shapes(graph: Graph) -> bool:
    """``Shape`` of a statically shaped tensor is a constant; fold it and what then becomes constant."""
    gathers: dict[str, list[Node]] = {}     # a value -> the Gathers on its axis 0 at constant indices
    for n in graph.nodes:
        if n.op_type == "Gather" and not n.domain and n.attrs.get("axis", 0) == 0 and len(n.inputs) >= 2 \
                and graph.is_constant(n.inputs[1]) and n.outputs[0] not in graph.outputs:
            gathers.setdefault(n.inputs[0], []).append(n)
    doomed = []
    for node in graph.nodes:
        if _shape_constant(graph, node):
            doomed.append(node)
        elif node.op_type == "Shape" and node.outputs[0] in gathers and graph.static_shape(node.inputs[0]):
            # the model's batch is dynamic: the shape computation stays live, but a Gather of the other
            # axes (``x.shape[1]``) is a constant
            shape = graph.static_shape(node.inputs[0])
            start, end = node.attrs.get("start", 0), node.attrs.get("end")
            doomed += _fold_gathered_dims(graph, gathers[node.outputs[0]], shape[start:end],
                                          [a - start for a in graph.batch_axes(node.inputs[0]) if a >= start])
    if doomed:
        graph.remove_nodes(doomed)
    return bool(doomed)


def _shape_constant(graph: Graph, node: Node) -> bool:
    """Whether ``node`` is a ``Shape`` of a statically shaped value that no batch axis of it makes live,
    now folded to its constant."""
    if node.op_type != "Shape" or node.domain or not node.inputs or graph.is_constant(node.inputs[0]):
        return False
    shape = graph.static_shape(node.inputs[0])
    if shape is None:
        return False
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    if any(a in range(len(shape))[start:end] for a in graph.batch_axes(node.inputs[0])):
        return False
    graph.constants[node.outputs[0]] = np.array(shape[start:end], np.int64)
    return True
