"""Ideal mode of a QOperator layer (QLinearConv, QLinearMatMul, QGemm): onnxruntime's integer kernel.

onnxruntime computes such an op's output codes from the exact integer sum Σ (x_q - zp_x)(w_q - zp_w),
plus its int32 bias, converted to float32 and times one float32 multiplier per output channel,
``(s_x · s_w) / s_y`` (a QGemm's alpha first), rounded half to even, clipped to the output type and
shifted by its zero point.
acompile rewrites the op as DequantizeLinear -> Conv/MatMul -> QuantizeLinear (passes/qoperator.py),
whose float product, rounded in its last bits and then divided by s_y, lands a step away from the
kernel's code wherever it lies within those bits of a rounding boundary; the layers after carry the
step on. So in ideal mode such a layer (``model_quant["requantize"]``) computes the kernel's code
``q`` and gives ``(q - zp_y) · s_y``, which the QuantizeLinear after it turns back into ``q`` exactly:
the rewritten model then equals onnxruntime's to the bit. Quantized and noisy modes requantize the
crossbars' sums so too (the digital units apply the op's own arithmetic): with a lossless ADC they equal
onnxruntime's integer execution.
"""

from __future__ import annotations

import numpy as np

from ..mapping import AnalogLayer, ConvGeometry
from . import conv
from .vectors import from_vectors, to_vectors


def in_layer(layer: AnalogLayer) -> bool:
    """Whether the layer's outputs are its QOperator op's codes (``model_quant["requantize"]``)."""
    return layer.model_quant is not None and "requantize" in layer.model_quant


def applies(sim, layer: AnalogLayer) -> bool:
    """Whether :func:`run` computes the layer: ideal mode with nothing captured (a capture reads the layer's
    input vectors on the chain's path; the other modes requantize the crossbars' sums, chain._dequantize)."""
    return sim.mode == "ideal" and sim.capture is None and in_layer(layer)


def run(sim, layer: AnalogLayer, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """The layer's float32 output, each value ``(q - zp_y) · s_y`` for the code ``q`` onnxruntime's kernel
    gives (its bias included)."""
    s_x = layer.model_quant["input_scale"]
    codes = np.rint(np.asarray(x, np.float64) / s_x)       # x_q - zp_x, exactly: x is their float32 product
    groups, n_out = layer.groups, layer.matrices[0].n_out
    weights = [layer.quantize(sim.weights.float_matrix(layer, g), layer.weight_scales(g, None)).astype(np.float64)
               for g in range(groups)]
    if layer.op_type == "Conv" and x.ndim >= 3:
        y = sim.take((x.shape[0], groups * n_out) + tuple(geo.output_shape[2:]))
        yv = y.reshape(x.shape[0], groups, n_out, -1)
        codes32 = codes.astype(np.float32)      # |code| <= 65535: exact, and what the patches are made of
        for i in range(x.shape[0]):
            cols = conv.image_patches(sim, geo, groups, codes32, i, 0)
            for g in range(groups):
                yv[i, g] = requantized(layer, weights[g] @ cols[g].astype(np.float64), g, (-1, 1))
        return y
    v = to_vectors(codes, layer.op_type, geo, groups)
    out = np.empty((v.shape[0], groups, n_out), np.float32)
    for g in range(groups):
        out[:, g, :] = requantized(layer, v[:, g, :] @ weights[g].T, g, (1, -1))
    return from_vectors(out, None, layer.op_type, geo, groups)


def requantized(layer: AnalogLayer, acc: np.ndarray, group: int, shape: tuple, out=None) -> np.ndarray:
    """(q - zp_y) · s_y in float32 for the sums ``acc`` of one group (exact integers in ideal mode, the
    crossbars' in the others), a per-channel vector reshaped to ``shape`` broadcasting along them; into
    ``out`` when given."""
    rq, quant = layer.model_quant["requantize"], layer.model_quant
    n = layer.matrices[0].n_out
    channels = slice(group * n, (group + 1) * n)
    s_w = np.asarray(quant["weight_scales"][channels], np.float32).reshape(shape)
    # in float32, in onnxruntime's order: ((alpha * s_x) * s_w) / s_y
    multiplier = (np.float32(rq.get("alpha", 1.0)) * np.float32(quant["input_scale"]) * s_w) \
        / np.float32(rq["output_scale"])
    if rq.get("bias"):
        acc = acc + np.asarray(rq["bias"][channels], np.float64).reshape(shape)
    scaled = acc.astype(np.float32) * multiplier        # an int32 sum as float32, rounded to nearest even
    zero = rq["output_zero_point"]
    steps = np.clip(np.rint(scaled), rq["output_min"] - zero, rq["output_max"] - zero)
    y = steps.astype(np.float32) * np.float32(rq["output_scale"])
    if out is not None:
        out[...] = y
    return y
