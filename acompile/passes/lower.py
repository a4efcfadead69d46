"""Lower analog nodes to weight matrices.

Matches every node classified ``analog`` (Conv, ConvTranspose, acompile.Linear)
and records an :class:`~acompile.mapping.AnalogLayer`: one [n_out, k_in] matrix
per group (im2col order ``(c, k1, k2, ...)`` for Conv; ``(c_in)`` rows and
``(c_out, k1, ...)`` columns for ConvTranspose), the explicit pads, and the
number of input vectors per inference. Creates ``state.mapping``; the graph's
nodes are not changed (each analog node's ``meta["layer"]`` names its layer).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidModelError, LimitError, UnsupportedError
from ..limits import Limits, byte_size
from ..ir import Graph, Node
from ..mapping import AnalogLayer, ConvGeometry, Fabric, Mapping, Matrix
from ..numerics.folded import folded_integers
from .base import CompileState, compile_pass


def conv_pads(node: Node, in_spatial, out_spatial, kernel, strides, dilations) -> list[int]:
    """Explicit ONNX-style pads [b1, b2, ..., e1, e2, ...] for a Conv, resolving auto_pad."""
    nd = len(kernel)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(nd):
            total = max((out_spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_spatial[i], 0)
            small, big = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else big)
            ends.append(big if auto == "SAME_UPPER" else small)
        return begins + ends
    if auto == "VALID":
        return [0] * (2 * nd)
    return list(node.attrs.get("pads", [0] * (2 * nd)))


def conv_transpose_pads(node: Node, in_spatial, out_spatial, kernel, strides, dilations) -> list[int]:
    nd = len(kernel)
    out_pad = node.attrs.get("output_padding", [0] * nd)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if "output_shape" in node.attrs or auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(nd):
            total = strides[i] * (in_spatial[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - out_spatial[i]
            if auto == "SAME_UPPER":
                b = total // 2
            else:
                b = total - total // 2
            begins.append(b)
            ends.append(total - b)
        return begins + ends
    if auto == "VALID":
        return [0] * (2 * nd)
    return list(node.attrs.get("pads", [0] * (2 * nd)))


AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _conv_geometry(graph: Graph, node: Node, limits: Limits) -> ConvGeometry:
    x = graph.static_shape(node.inputs[0])
    y = graph.static_shape(node.outputs[0])
    w = graph.constants[node.inputs[1]].shape
    if y is None:
        raise UnsupportedError("output shape cannot be inferred", where=node.describe())
    nd = len(w) - 2
    kernel = list(node.attrs.get("kernel_shape", w[2:]))
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    where = f"{graph.source}: {node.describe()}" if graph.source else node.describe()
    if kernel != list(w[2:]) or len(x) != nd + 2 or len(y) != nd + 2:
        raise InvalidModelError(f"kernel_shape {kernel} does not match the weight's shape {list(w)}", where=where)
    if len(strides) != nd or len(dilations) != nd or min(strides + dilations, default=1) < 1:
        raise InvalidModelError(f"strides {strides} and dilations {dilations} must be {nd} positive integers",
                                where=where)
    if node.attrs.get("auto_pad", "NOTSET") not in AUTO_PADS:
        raise InvalidModelError(f"auto_pad {node.attrs['auto_pad']!r} is not one of {', '.join(AUTO_PADS)}",
                                where=where)
    if node.op_type == "Conv":
        pads = conv_pads(node, x[2:], y[2:], kernel, strides, dilations)
    else:
        pads = conv_transpose_pads(node, x[2:], y[2:], kernel, strides, dilations)
    # ConvTranspose's output_shape may ask for more than the full output: negative pads then
    if len(pads) != 2 * nd or (node.op_type == "Conv" and min(pads, default=0) < 0):
        raise InvalidModelError(f"pads {pads} must be {2 * nd} non-negative integers", where=where)
    padded = x[0] * x[1] * math.prod(n + pads[i] + pads[i + nd] for i, n in enumerate(x[2:]))
    if padded * 4 > limits.max_tensor_bytes:
        raise LimitError(f"the padded input would take {byte_size(padded * 4)}; the limit is "
                         f"{byte_size(limits.max_tensor_bytes)}", where=where,
                         hint="set ACOMPILE_MAX_TENSOR_MB to raise it")
    return ConvGeometry(tuple(x), tuple(y), tuple(kernel), tuple(strides), tuple(dilations), tuple(pads),
                        tuple(node.attrs.get("output_padding", [0] * nd)))


def _all_finite(w: np.ndarray, step: int = 1 << 18) -> bool:
    """np.all(np.isfinite(w)) through one small reused buffer: a weight-sized boolean temporary costs
    its page faults, more than the test itself. Read in memory order: a transposed view is not copied."""
    flat = w.ravel(order="K")
    buf = np.empty(min(flat.size, step), bool)
    for a in range(0, flat.size, step):
        chunk = flat[a:a + step]
        if not np.isfinite(chunk, out=buf[:chunk.size]).all():
            return False
    return True


def lower_layer(graph: Graph, node: Node, index: int, limits: Limits, pending=None) -> AnalogLayer:
    """The analog layer of ``node``; ``pending``, a fold_affine.PendingScale its weight is still to be
    multiplied by (``check``)."""
    w = graph.constants[node.inputs[1]]
    where = f"{graph.source}: {node.describe()}" if graph.source else node.describe()
    known = folded_integers(graph.meta, w)
    if known is not None:
        finite = known.finite()
    else:
        finite = pending.finite(w, _all_finite) if pending is not None else _all_finite(w)
    if not finite:
        raise InvalidModelError("weights contain NaN or infinity", where=where)
    bias = node.inputs[2]
    # a NaN bias makes its channels NaN whatever the input (calibration would find every later layer's inputs
    # so): refused here, where check sees it too; an infinite one can be meant (-inf masks a logit out)
    if bias and graph.is_constant(bias) and np.isnan(graph.constants[bias]).any():
        raise InvalidModelError("bias contains NaN", where=where)
    if node.op_type == "Linear":
        x = graph.static_shape(node.inputs[0])
        n_out, k_in = w.shape
        if x[-1] != k_in:
            raise UnsupportedError(f"input has {x[-1]} features but the weight expects {k_in}",
                                   where=node.describe())
        return AnalogLayer(index, node.name, "Linear", node.inputs[1], bias, 1, [Matrix(0, n_out, k_in)],
                           n_vec=math.prod(x[:-1]), in_channels=k_in, out_channels=n_out,
                           geometry=ConvGeometry(tuple(x)))
    groups = int(node.attrs.get("group", 1))
    if groups < 1:
        raise InvalidModelError(f"group={groups}: expected a positive integer", where=where)
    geo = _conv_geometry(graph, node, limits)
    x, y = geo.input_shape, geo.output_shape
    ksize = math.prod(geo.kernel)
    if node.op_type == "Conv":
        c_out, cin_g = w.shape[0], w.shape[1]
        if c_out % groups or x[1] != cin_g * groups:
            raise UnsupportedError(f"channels do not divide into {groups} groups", where=node.describe())
        mats = [Matrix(g, c_out // groups, cin_g * ksize) for g in range(groups)]
        n_vec = y[0] * math.prod(y[2:])
        if n_vec * x[1] * ksize * 4 > limits.max_tensor_bytes:
            raise LimitError(f"the im2col input vectors would take {byte_size(n_vec * x[1] * ksize * 4)}",
                             where=where, hint="set ACOMPILE_MAX_TENSOR_MB to raise the limit")
        return AnalogLayer(index, node.name, "Conv", node.inputs[1], bias, groups, mats, n_vec=n_vec,
                           in_channels=x[1], out_channels=c_out, geometry=geo)
    c_in, cout_g = w.shape[0], w.shape[1]
    if c_in % groups or x[1] != c_in:
        raise UnsupportedError(f"channels do not divide into {groups} groups", where=node.describe())
    mats = [Matrix(g, cout_g * ksize, c_in // groups) for g in range(groups)]
    n_vec = x[0] * math.prod(x[2:])
    return AnalogLayer(index, node.name, "ConvTranspose", node.inputs[1], bias, groups, mats, n_vec=n_vec,
                       in_channels=c_in, out_channels=cout_g * groups, geometry=geo)


@compile_pass(requires={"classified"}, provides={"mapping"})
def lower_analog(state: CompileState) -> None:
    """Create the Mapping with one AnalogLayer per analog weight (graph nodes unchanged).

    Nodes that read the same weight constant (the time steps of an unrolled RNN, the
    iterations of an unrolled Loop or Scan, tied weights) share one layer -- one set of
    crossbars -- whose vector count is the sum over its uses: any Linear, a Conv or
    ConvTranspose with the same geometry.
    """
    graph = state.graph
    mapping = Mapping(fabric=fabric(state.target))
    shared: dict[str, int] = {}
    for node in graph.nodes:
        if node.kind != "analog":
            continue
        layer = lower_layer(graph, node, len(mapping.layers), state.options.limits,
                            state.pending_scales.get(node.inputs[1]))
        owner = mapping.layers[shared[node.inputs[1]]] if node.inputs[1] in shared else None
        if owner is not None and owner.op_type == layer.op_type and owner.groups == layer.groups and \
                (node.op_type == "Linear" or owner.geometry == layer.geometry):
            owner.n_vec += layer.n_vec
            owner.uses += 1
            node.meta["layer"] = owner.index
            continue
        shared.setdefault(node.inputs[1], layer.index)
        node.meta["layer"] = layer.index
        mapping.layers.append(layer)
    state.mapping = mapping


def fabric(target) -> Fabric:
    """The crossbar size and organisation of ``target``, as the mapping records them."""
    org = target.organisation
    return Fabric(target.crossbar.rows, target.crossbar.cols, org.crossbars_per_core, org.cores_per_tile,
                  org.tiles_per_chip)
