"""The analog chain of one layer at run time, step by step or fused.

``passes/boundaries.py`` writes every analog layer as the chain
ToVectors -> DAC -> CrossbarRead -> ADC -> ShiftAdd -> Accumulate -> Dequantize -> FromVectors.
:data:`STEPS` runs each node on its own (the reference path of the quantized and noisy
modes): the values between ToVectors and FromVectors keep the vectors' leading shape
``lead`` (a Linear input's leading axes, or the batch and pixels of a Conv's output or a
ConvTranspose's input), from which FromVectors, with the layer's geometry, rebuilds the
ONNX layout. :func:`fuse_chain` is the one fusion: a complete chain becomes a single step
(:func:`run_fused`) that computes the same values with the vectorised kernel, or, in ideal
mode, which has no converters, as one float product per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidDataError, clean
from ..ir import DOMAIN, Node
from ..mapping import AnalogLayer, ConvGeometry
from ..numerics.adc import adc_step, make_adc
from ..numerics.dac import cycle_weights, input_chunks
from ..numerics.encoding import column_layout, float_weights
from ..numerics.product import check_exact, digital_terms
from ..numerics.quantise import quantize_inputs
from ..passes.boundaries import CHAIN
from . import reference
from .fast import mvm
from .vectors import from_vectors, to_vectors, windows

_CHUNK_ELEMS = 1 << 22  # ideal-mode Conv: patch elements per chunk of images (at least one image)


@dataclass(frozen=True)
class Stream:
    """A value inside the chain between DAC and Accumulate: one part per group, for vectors of
    leading shape ``lead``."""
    lead: tuple[int, ...]
    parts: list
    # per group, what the digital side adds after the ADC step (numerics.product.digital_terms: the
    # input-sum offset term, the flipped columns' correction), added at Dequantize as the kernels do
    offsets: list | None = None


@dataclass(frozen=True)
class FusedChain:
    """A complete chain run as one step: its nodes, the layer, and the values it reads and writes."""
    nodes: tuple[Node, ...]
    layer: int

    @property
    def inputs(self) -> list[str]:
        return [self.nodes[0].inputs[0], self.nodes[-1].inputs[1]]

    @property
    def outputs(self) -> list[str]:
        return [self.nodes[-1].outputs[0]]


def fuse_chain(nodes: list[Node]) -> list:
    """The program with every analog chain replaced by one :class:`FusedChain` step.

    A chain is the run of ``acompile`` nodes sharing ``meta["chain"]``; it must hold the
    chain's eight ops in order, or the program is refused.
    """
    out: list = []
    i = 0
    while i < len(nodes):
        node = nodes[i]
        if node.domain != DOMAIN:
            out.append(node)
            i += 1
            continue
        run = nodes[i:i + len(CHAIN)]
        name = node.meta.get("chain")
        if (tuple(n.op_type for n in run) != CHAIN or any(n.domain != DOMAIN for n in run)
                or any(n.meta.get("chain") != name or n.meta.get("layer") != node.meta.get("layer") for n in run)):
            raise InvalidDataError(f"analog chain {clean(str(name))!r} is incomplete or out of order; "
                                   f"expected {' -> '.join(CHAIN)}", where=node.describe())
        out.append(FusedChain(tuple(run), node.meta["layer"]))
        i += len(CHAIN)
    return out


def _lead(layer: AnalogLayer, geo: ConvGeometry) -> tuple[int, ...]:
    if layer.op_type == "Linear":
        return tuple(geo.input_shape[:-1])
    if layer.op_type == "Conv":
        return (geo.input_shape[0],) + tuple(geo.output_shape[2:])
    return (geo.input_shape[0],) + tuple(geo.input_shape[2:])


def _geometry(layer: AnalogLayer, lead: tuple[int, ...]) -> ConvGeometry:
    """The layer's geometry for vectors of leading shape ``lead`` (the inverse of :func:`_lead`)."""
    if layer.op_type == "Linear":
        return layer.geometry.for_input(lead + (layer.matrices[0].k_in,))
    return layer.geometry.for_input((lead[0],) + tuple(layer.geometry.input_shape[1:]))


def _vectors(sim, layer: AnalogLayer, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    v = to_vectors(x, layer.op_type, geo, layer.groups)
    if sim.capture is not None:
        sim.capture(layer, v)
    return v


def _finite(layer: AnalogLayer, x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise InvalidDataError(f"a NaN or infinite value reaches analog layer {clean(layer.name)!r}; "
                               "the DAC cannot convert it", hint="check the inputs, or use --mode ideal")


def offset_term(layer: AnalogLayer, enc) -> np.ndarray:
    """input_offset * sum_k q_w[n, k]: what streaming a quantized model's codes as x_q - q_min rather
    than x_q - zero point adds to each output (docs/analog.md, Quantized models), exact in float64."""
    return layer.input_offset * float_weights(enc, layer.spec)[0].sum(axis=1, dtype=np.float64)


def _dequantize(sim, layer: AnalogLayer, group: int, y_int: np.ndarray) -> np.ndarray:
    """y_int (codes times Δ, less the input offset's term) times s_w * s_x, as float32."""
    w = sim.weights.encoded(layer, group)
    if layer.input_offset:
        y_int = y_int - offset_term(layer, w.enc)[None, :]
    return (y_int * (w.weight_scale[None, :] * layer.input_scale)).astype(np.float32)


# ------------------------------------------------------------------ one node at a time

def _to_vectors(sim, layer, x):
    """ToVectors: the input as the [*lead, G, K] vectors the crossbars read."""
    x = np.asarray(x)
    geo = layer.geometry.for_input(x.shape)
    v = _vectors(sim, layer, x, geo)
    return v.reshape(_lead(layer, geo) + v.shape[1:])


def _dac(sim, layer, v):
    """DAC: each group's vectors quantised (s_x) and cut into the (T, V, K) chunks of its cycles."""
    spec, lead = layer.spec, v.shape[:-2]
    parts, offsets = [], []
    for g in range(layer.groups):
        x = v.reshape(-1, layer.groups, v.shape[-1])[:, g, :]
        _finite(layer, x)
        x_q = quantize_inputs(x, layer.input_scale, spec.input_bits, layer.input_signed, layer.input_offset)
        parts.append(input_chunks(x_q, spec, layer.input_signed))
        enc = sim.weights.encoded(layer, g).enc
        offsets.append(digital_terms(x_q, enc, spec, column_layout(enc, spec)))
    return Stream(lead, parts, offsets if any(o is not None for o in offsets) else None)


def _crossbar_read(sim, layer, s, weight):
    """CrossbarRead: every read current of every row block, cycle, slice and sign (read noise included)."""
    # the node's weight input is the float constant; the cells read are sim.weights' encoding
    # (of those floats, or the device file's levels)
    spec, parts = layer.spec, []
    for g, chunks in enumerate(s.parts):
        enc = sim.weights.encoded(layer, g).enc
        layout = column_layout(enc, spec)
        if chunks.shape[2] != enc.levels.shape[0]:
            raise InvalidDataError(f"inputs have {chunks.shape[2]} features, the weights {enc.levels.shape[0]} rows")
        check_exact(spec, chunks.shape[2], layer.input_signed)
        noise, cells, rng = sim.read_conditions(layer, g, enc)
        parts.append(reference.read(chunks, enc.levels if cells is None else cells, spec, layout, noise,
                                    layer.adc_full_scale or None, rng, sim.column_errors(layer, g, enc)))
    return Stream(s.lead, parts, s.offsets)


def _adc(sim, layer, s):
    """ADC: every current to its code."""
    # noisy runs read programmed cells, whose currents are not integers; quantized runs read levels
    adc = make_adc(layer.spec, layer.adc_full_scale or None, sim.noise if sim.noisy else None,
                   exact_reads=not sim.noisy)
    parts = []
    for g, r in enumerate(s.parts):
        enc = sim.weights.encoded(layer, g).enc
        parts.append(reference.convert(r, adc, sim.column_errors(layer, g, enc), column_layout(enc, layer.spec)))
    return Stream(s.lead, parts, s.offsets)


def _shift_add(sim, layer, s):
    """ShiftAdd: each row block's codes recombined over cycles, slices and signs."""
    weights = cycle_weights(layer.spec, layer.input_signed)
    parts = []
    for g, c in enumerate(s.parts):
        enc = sim.weights.encoded(layer, g).enc
        parts.append(reference.shift_add(reference.unflip(c, enc, layer.spec, column_layout(enc, layer.spec)),
                                         layer.spec, weights))
    return Stream(s.lead, parts, s.offsets)


def _accumulate(sim, layer, s):
    """Accumulate: the row blocks summed."""
    return Stream(s.lead, [reference.accumulate(p) for p in s.parts], s.offsets)


def _dequantize_step(sim, layer, s):
    """Dequantize: code sums times Δ, then s_w * s_x: the [*lead, G, N] float32 outputs."""
    step = adc_step(layer.spec, layer.adc_full_scale or None)
    out = np.empty((math.prod(s.lead), layer.groups, layer.matrices[0].n_out), np.float32)
    for g, y in enumerate(s.parts):
        if step != 1.0:
            y *= step
        if s.offsets is not None and s.offsets[g] is not None:
            y += s.offsets[g]
        out[:, g, :] = _dequantize(sim, layer, g, y)
    return out.reshape(s.lead + out.shape[1:])


def _from_vectors(sim, layer, out, bias):
    """FromVectors: the ONNX layout of the outputs, bias added."""
    geo = _geometry(layer, out.shape[:-2])
    return from_vectors(out.reshape((-1,) + out.shape[-2:]), bias, layer.op_type, geo, layer.groups)


STEPS = {"ToVectors": _to_vectors, "DAC": _dac, "CrossbarRead": _crossbar_read, "ADC": _adc,
         "ShiftAdd": _shift_add, "Accumulate": _accumulate, "Dequantize": _dequantize_step,
         "FromVectors": _from_vectors}


# ------------------------------------------------------------------ the fused chain

def run_fused(sim, layer: AnalogLayer, x, bias: np.ndarray) -> np.ndarray:
    """A whole chain, input x to output: the values :data:`STEPS` would compute, vectorised."""
    x = np.asarray(x)
    geo = layer.geometry.for_input(x.shape)
    if sim.mode == "ideal" and layer.op_type == "Conv" and x.ndim >= 3 \
            and (sim.capture is None or getattr(sim.capture, "conv_input", None)):
        if sim.capture is not None:     # a capture that needs no vectors sees the Conv's input instead
            sim.capture.conv_input(layer, x, geo)
        return _conv_ideal(sim, layer, x, bias, geo)
    v = _vectors(sim, layer, x, geo)
    out = np.empty((v.shape[0], layer.groups, layer.matrices[0].n_out), np.float32)
    for g in range(layer.groups):
        xg = v[:, g, :]
        if sim.mode == "ideal":
            w = sim.weights.float_matrix(layer, g)
            xf, wt = xg.astype(np.float32, copy=False), w.T.astype(np.float32, copy=False)
            if layer.groups == 1:       # straight into the output (a contiguous view): no temporary
                np.matmul(xf, wt, out=out[:, 0, :])
            else:
                out[:, g, :] = xf @ wt
            continue
        _finite(layer, xg)
        spec = layer.spec
        x_q = quantize_inputs(xg, layer.input_scale, spec.input_bits, layer.input_signed, layer.input_offset)
        enc = sim.weights.encoded(layer, g).enc
        noise, cells, rng = sim.read_conditions(layer, g, enc)
        y_int = mvm(x_q, enc, spec, layer.input_signed, full_scale=layer.adc_full_scale or None,
                    cells=cells, noise=noise, rng=rng, columns=sim.column_errors(layer, g, enc))
        out[:, g, :] = _dequantize(sim, layer, g, y_int)
    return from_vectors(out, bias, layer.op_type, geo, layer.groups)


def _conv_ideal(sim, layer: AnalogLayer, x: np.ndarray, bias: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Ideal-mode Conv with its bias, computed as NCHW GEMMs, W (N, C·K) @ patches (C·K, pixels).

    The output comes out in its final layout (no vectors to reorder); a 1x1, stride-1,
    unpadded Conv needs no patches at all, and other patches are gathered a few images at
    a time into a buffer reused from chunk to chunk and layer to layer. The same products
    as the vector path (im2col -> GEMM -> from_vectors, which calibration still uses), summed
    by a differently shaped GEMM: equal up to float32 rounding.
    """
    groups, n_out = layer.groups, layer.matrices[0].n_out
    kernel, out_sp = geo.kernel, tuple(geo.output_shape[2:])
    batch, channels = x.shape[:2]
    pixels = math.prod(out_sp)
    y = sim.take((batch, groups * n_out) + out_sp)
    yv = y.reshape(batch, groups, n_out, pixels)
    weights = [sim.weights.float_matrix(layer, g).astype(np.float32, copy=False) for g in range(groups)]
    pointwise = (math.prod(kernel) == 1 and not any(geo.pads) and all(s == 1 for s in geo.strides)
                 and tuple(x.shape[2:]) == out_sp)
    if pointwise:
        xs = x.astype(np.float32, copy=False).reshape(batch, groups, channels // groups, pixels)
        for g in range(groups):
            np.matmul(weights[g], xs[:, g], out=yv[:, g])
    else:
        per_image = channels * math.prod(kernel) * pixels
        step = max(1, min(batch, _CHUNK_ELEMS // per_image))
        buf = sim.scratch("patches", step * per_image, np.float32)
        for b0 in range(0, batch, step):
            b1 = min(batch, b0 + step)
            patches = buf[:(b1 - b0) * per_image].reshape((b1 - b0, channels) + tuple(kernel) + out_sp)
            for offs, window in windows(x[b0:b1], geo):
                patches[(slice(None), slice(None)) + offs] = window
            pv = patches.reshape(b1 - b0, groups, per_image // (groups * pixels), pixels)
            for g in range(groups):
                np.matmul(weights[g], pv[:, g], out=yv[b0:b1, g])
    b = bias.reshape((1, -1) + (1,) * len(out_sp))
    np.add(y, b, out=y, dtype=np.result_type(y, b), casting="unsafe")
    return y
