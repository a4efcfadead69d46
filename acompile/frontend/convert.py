"""Opsets: the ai.onnx opset a model is written at, and an older model brought to CANONICAL_OPSET, the
opset every pass is written for, by onnx's version converter, with what the converter gets wrong put
right and what it refuses named."""

from __future__ import annotations

from ..errors import InvalidModelError, UnsupportedError, clean, first_line
from ..onnx_core import (IR_VERSION, GraphProto, ModelProto, TensorProto, convert_version, make_attribute,
                         make_empty_tensor_value_info, make_graph, make_model, make_node, make_tensor_value_info,
                         opset_version)
from ..onnx_walk import all_nodes, hide_domains, node_bodies, unhide_domains
from .training_norm import spell_out_training_statistics

CANONICAL_OPSET = 17
OLDEST_OPSET = 1     # what onnx's converter starts from; a node it cannot bring forward is named


def ai_onnx_opset(model: ModelProto, where: str) -> int:
    """The ai.onnx opset the model imports, checked against what this onnx knows."""
    version = None
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            version = int(imp.version)
    if version is None:
        if any(n.domain in ("", "ai.onnx") for n in all_nodes(model.graph)):
            raise InvalidModelError("the model uses ai.onnx operators but imports no ai.onnx opset", where=where)
        # only ai.onnx.ml (or other) operators, as onnxmltools and CatBoost write them: nothing to convert,
        # and the ai.onnx operators the passes add are at CANONICAL_OPSET (_import_used_domains declares it)
        return CANONICAL_OPSET
    latest = opset_version()
    if version > latest:
        raise InvalidModelError(f"opset {version} is newer than this onnx ({latest}) knows", where=where,
                                hint="upgrade onnx or export at an older opset")
    if version < OLDEST_OPSET:
        raise InvalidModelError(f"opset {version} is older than the oldest supported ({OLDEST_OPSET})",
                                where=where)
    if model.ir_version > IR_VERSION:
        raise InvalidModelError(f"IR version {model.ir_version} is newer than this onnx supports "
                                f"({IR_VERSION})", where=where)
    return version


def convert(model: ModelProto, version: int, where: str) -> ModelProto:
    """The model at CANONICAL_OPSET, by onnx's version converter, with what it gets wrong put right:
    an IR 3 model's initializers are declared as inputs first (the converter wants them so), and an
    Upsample or Resize-10 keeps its asymmetric coordinates (the converter's Resize takes half_pixel,
    the new default), Pad-2's value attribute goes, and a Hardmax before opset 13 keeps its meaning
    (:func:`_hardmax_as_written`). A node the converter refuses is named: exit 1."""
    if model.ir_version < 4:
        declared = {i.name for i in model.graph.input}
        model.graph.input.extend(make_tensor_value_info(t.name, t.data_type, list(t.dims))
                                 for t in model.graph.initializer if t.name not in declared)
    _refuse_unconvertible(model, version, where)
    spell_out_training_statistics(model, version)
    legacy = {n.output[0]: n for n in model.graph.node
              if n.output and (n.op_type == "Upsample" or n.op_type == "Resize" and version <= 10)}
    try:
        converted = _convert_ai_onnx(model)
    except Exception as e:
        culprits = _unconvertible(model, version)
        raise UnsupportedError(f"cannot convert opset {version} to {CANONICAL_OPSET}: "
                               + ("; ".join(p.line() for p in culprits) or first_line(e)), where=where,
                               problems=culprits)
    for n in all_nodes(converted.graph):
        if n.op_type == "Pad" and n.domain in ("", "ai.onnx"):
            # Pad-2's value, once an input, is left behind as an attribute beside edge and reflect modes
            kept = [a for a in n.attribute if a.name != "value"]
            del n.attribute[:]
            n.attribute.extend(kept)
    if version < 13:
        _hardmax_as_written(converted.graph)
    for n in converted.graph.node:
        if n.op_type == "Resize" and n.output and n.output[0] in legacy \
                and not any(a.name == "coordinate_transformation_mode" for a in n.attribute):
            n.attribute.append(make_attribute("coordinate_transformation_mode", "asymmetric"))
            mode = next((a.s for a in n.attribute if a.name == "mode"), b"nearest")
            if mode == b"nearest" and not any(a.name == "nearest_mode" for a in n.attribute):
                n.attribute.append(make_attribute("nearest_mode", "floor"))
    return converted


def _hardmax_as_written(graph: GraphProto) -> None:
    """Hardmax before opset 13 takes the input as a matrix, the axes before ``axis`` (default 1) its rows and
    the others its columns; onnx's converter keeps ``axis`` as the single axis Hardmax-13 reduces over (it
    adapts Softmax and LogSoftmax, not Hardmax). Written out as that matrix: Flatten at ``axis``, Hardmax
    over its columns, Reshape to the input's shape. In sub-graphs too."""
    for n in graph.node:
        for body in node_bodies(n):
            _hardmax_as_written(body)
    if not any(n.op_type == "Hardmax" and n.domain in ("", "ai.onnx") for n in graph.node):
        return      # the graph's nodes are copied only when one changes (a Constant may hold megabytes)
    nodes = []
    for n in graph.node:
        if n.op_type != "Hardmax" or n.domain not in ("", "ai.onnx"):
            nodes.append(n)
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        x, y = n.input[0], n.output[0]
        rows, shape, columns = (f"{y}/acompile_hardmax_{part}" for part in ("rows", "shape", "columns"))
        nodes += [make_node("Flatten", [x], [rows], name=rows, axis=axis),
                  make_node("Hardmax", [rows], [columns], name=n.name or columns, axis=1),
                  make_node("Shape", [x], [shape], name=shape),
                  make_node("Reshape", [columns, shape], [y], name=f"{y}/acompile_hardmax")]
    del graph.node[:]
    graph.node.extend(nodes)


def _refuse_unconvertible(model: ModelProto, version: int, where: str) -> None:
    """Scan before opset 9 runs over a batch axis that onnx's converter drops (from the graph's inputs and
    outputs too), so the converted model takes other shapes; Dropout before opset 10 gives a mask of the
    data's type, which the converter makes boolean under the same declared type. Every such node is
    named, exit 1 (a Dropout only where its mask is read)."""
    from .ops import Problem
    read = {x for n in all_nodes(model.graph) for x in n.input} | {o.name for o in model.graph.output}
    changed = [(n, why) for n in all_nodes(model.graph) if n.domain in ("", "ai.onnx")
               for why in [_changed_by_converter(n, version, read)] if why]
    problems = [Problem(clean(n.name or n.op_type), n.op_type, "", version, "unsupported_attribute", why)
                for n, why in changed]
    if problems:
        raise UnsupportedError(f"cannot convert opset {version} to {CANONICAL_OPSET}: "
                               + "; ".join(p.line() for p in problems), where=where, problems=problems)


def _changed_by_converter(n, version: int, read: set[str]) -> str | None:
    """Why onnx's converter would change what node ``n`` computes, or None."""
    if n.op_type == "Scan" and version < 9:
        return ("Scan-8 runs over a batch axis, which onnx's version converter drops; export the model at opset 9 "
                "or later")
    if n.op_type == "Dropout" and version < 10 and len(n.output) > 1 and n.output[1] in read:
        return "the mask of Dropout before opset 10 has the data's type, which onnx's version converter changes to bool"
    return None


def _unconvertible(model: ModelProto, version: int) -> list:
    """Every node onnx's converter refuses, converted alone, as problems."""
    from .ops import Problem
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.input) + list(model.graph.value_info)}
    types.update((t.name, t.data_type) for t in model.graph.initializer)
    found, why_of = [], {}
    for i, n in enumerate(model.graph.node):
        # the converter's verdict follows from what it reads of the node: converted once per kind of node
        kind = (n.op_type, n.domain, tuple(types.get(x) for x in n.input), tuple(bool(o) for o in n.output),
                tuple(a.SerializeToString(deterministic=True) for a in n.attribute))
        if kind not in why_of:
            why_of[kind] = _refusal(n, types, model)
        if why_of[kind] is not None:
            found.append(Problem(clean(n.name or f"{n.op_type}_{i}"), clean(n.op_type), n.domain, version,
                                 "unsupported_attribute",
                                 f"onnx cannot convert it to opset {CANONICAL_OPSET}: {why_of[kind]}"))
    return found


def _refusal(n, types: dict, model: ModelProto) -> str | None:
    """Why onnx's converter refuses node ``n`` converted alone, or None."""
    inputs = [make_tensor_value_info(x, types.get(x) or TensorProto.FLOAT, None) for x in n.input if x]
    outputs = [make_empty_tensor_value_info(o) for o in n.output if o]
    one = make_model(make_graph([n], "one", inputs, outputs), opset_imports=list(model.opset_import),
                     ir_version=max(model.ir_version, 4))
    try:
        _convert_ai_onnx(one)
    except Exception as e:
        return first_line(e).rsplit(": ", 1)[-1]
    return None


# onnxruntime's own operators in the ONNX domain (its transformer optimizer writes them at any opset), which
# onnx's converter has no adapter for: LayerNormalization before opset 17 is LayerNormalization-17 (the same
# inputs, outputs and attributes), SimplifiedLayerNormalization is in no opset
ONNXRUNTIME_ONNX_OPS = {"LayerNormalization", "SimplifiedLayerNormalization"}
_PASSED_BY = "acompile.onnxruntime_onnx_ops"


def _convert_ai_onnx(model: ModelProto) -> ModelProto:
    """onnx's converter to CANONICAL_OPSET, its ai.onnx nodes only: nodes of every other domain are hidden
    from it (it adapts none of them, and on some ai.onnx.ml graphs, a TreeEnsembleRegressor feeding a
    LabelEncoder, onnx 1.23's converter ends the process with SIGSEGV), and so are onnxruntime's own
    ONNX-domain operators. ``model`` is left as it was."""
    own = [n for n in all_nodes(model.graph) if n.domain in ("", "ai.onnx") and n.op_type in ONNXRUNTIME_ONNX_OPS]
    for n in own:
        n.domain = _PASSED_BY
    hide_domains(model, {n.domain for n in all_nodes(model.graph) if n.domain not in ("", "ai.onnx")})
    try:
        converted = convert_version(model, CANONICAL_OPSET)
    finally:
        unhide_domains(model)
        _restore_onnx_domain(model)
    unhide_domains(converted)
    _restore_onnx_domain(converted)
    return converted


def _restore_onnx_domain(model: ModelProto) -> None:
    for n in all_nodes(model.graph):
        if n.domain == _PASSED_BY:
            n.domain = ""
    kept = [imp for imp in model.opset_import if imp.domain != _PASSED_BY]
    del model.opset_import[:]
    model.opset_import.extend(kept)
