"""A BatchNormalization before opset 14 that lists the statistics of training among its outputs (timm's
ScaledStdConv2d through TorchScript) normalises with the statistics of its own input, as onnxruntime
computes it; onnx's converter refuses it ("outputs 4 and 5 are not supported in Opset 14").

When nothing reads those statistics it becomes the operators that compute it, valid at the model's opset:
the mean and (population) variance of the input over every axis but the channels', then the scale and bias,
so the model converts, and a weight normalised so folds to a constant and maps. Otherwise the converter's
refusal names the node.
"""

from __future__ import annotations

import numpy as np

from ..onnx_core import ModelProto, from_array, infer_shapes, make_node, make_tensor_value_info
from ..onnx_walk import all_nodes


def spell_out_training_statistics(model: ModelProto, version: int) -> None:
    """Replace, in ``model``'s main graph, each BatchNormalization (opset < 14) whose training statistics are
    outputs nothing reads by the operators computing its output; one whose input rank is unknown stays, and
    so does one that says it is in test mode (``is_test``, before opset 7) or normalises per activation
    (``spatial`` = 0, before opset 9)."""
    if version >= 14:
        return
    read = {x for n in all_nodes(model.graph) for x in n.input} | {o.name for o in model.graph.output}
    found = {i for i, n in enumerate(model.graph.node) if n.op_type == "BatchNormalization"
             and n.domain in ("", "ai.onnx") and len(n.output) > 1 and not read & set(n.output[1:])
             and not any(a.name == "is_test" and a.i or a.name == "spatial" and not a.i for a in n.attribute)}
    if not found:
        return
    ranks = _ranks(model)
    nodes = []
    for i, n in enumerate(model.graph.node):
        if i in found and ranks.get(n.input[0], 0) >= 2:
            nodes += _batch_statistics(model, n, ranks[n.input[0]])
        else:
            nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _ranks(model: ModelProto) -> dict[str, int]:
    """The rank of every value onnx's shape inference (lenient, at the model's own opset) gives one."""
    try:
        inferred = infer_shapes(model).graph
    except Exception:       # what inference refuses, the converter is left to name
        inferred = model.graph
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in (*inferred.input, *inferred.value_info)
             if vi.type.tensor_type.HasField("shape")}
    ranks.update((t.name, len(t.dims)) for t in model.graph.initializer)
    return ranks


def _batch_statistics(model: ModelProto, n, rank: int) -> list:
    """(x - mean) / sqrt(var + epsilon) · scale + bias, mean and var over every axis but 1."""
    x, scale, bias = n.input[:3]
    y = n.output[0]
    eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
    axes = [0, *range(2, rank)]
    parts = ("mean", "centred", "square", "var", "shifted", "std", "normal", "shape", "scale", "bias", "scaled", "eps")
    v = {k: f"{y}/batch_{k}" for k in parts}
    constants = [from_array(np.asarray([1, -1] + [1] * (rank - 2), np.int64), v["shape"]),
                 from_array(np.asarray(eps, np.float32), v["eps"])]
    model.graph.initializer.extend(constants)
    if model.ir_version < 4:        # an initializer is a graph input there
        model.graph.input.extend(make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in constants)

    def op(kind, inputs, out, **attrs):
        return make_node(kind, inputs, [out], name=f"{n.name}/{out.rsplit('/', 1)[-1]}", **attrs)

    def mean(of, out):      # ReduceMean took its axes as an attribute until opset 18
        return op("ReduceMean", [of], out, axes=axes, keepdims=1)

    return [mean(x, v["mean"]), op("Sub", [x, v["mean"]], v["centred"]),
            op("Mul", [v["centred"], v["centred"]], v["square"]), mean(v["square"], v["var"]),
            op("Add", [v["var"], v["eps"]], v["shifted"]), op("Sqrt", [v["shifted"]], v["std"]),
            op("Div", [v["centred"], v["std"]], v["normal"]), op("Reshape", [scale, v["shape"]], v["scale"]),
            op("Reshape", [bias, v["shape"]], v["bias"]), op("Mul", [v["normal"], v["scale"]], v["scaled"]),
            op("Add", [v["scaled"], v["bias"]], y)]
