"""The analog chain of one layer at run time, step by step or fused.

``passes/boundaries.py`` writes every analog layer as the chain
ToVectors -> DAC -> CrossbarRead -> ADC -> ShiftAdd -> Accumulate -> Dequantize -> FromVectors.
:data:`STEPS` runs each node on its own (the reference path of the quantized and noisy
modes): the values between ToVectors and FromVectors keep the vectors' leading shape
``lead`` (a Linear input's leading axes, or the batch and pixels of a Conv's output or a
ConvTranspose's input), from which FromVectors, with the layer's geometry, rebuilds the
ONNX layout. :func:`fuse_chain` is the one fusion: a complete chain becomes a single step
(:func:`run_fused`) that computes the same values with the vectorised kernel; with a lossless
ADC read ideally, as the exact integer product of :mod:`.exact`; in ideal mode, which has no
converters, as one float product per group. Convs of those two run in NCHW (:mod:`.conv`):
no vectors, the outputs written straight into their layout. In ideal mode, :func:`fuse_epilogue`
also hands a Conv chain the Add and Relu that alone read its output, applied by each worker to
the part it has just written (the same float operations as onnxruntime's, in the same order).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidDataError, clean
from ..ir import DOMAIN, Node
from ..mapping import AnalogLayer, ConvGeometry
from ..numerics.adc import adc_step, make_adc
from ..numerics.dac import cycle_weights, input_chunks
from ..numerics.encoding import column_layout, float_weights
from ..numerics.product import cell_leak, check_exact, digital_terms
from ..numerics.quantise import quantize_inputs
from ..passes.boundaries import CHAIN
from . import conv, exact, gemm, reference, requantize
from .fast import mvm
from .vectors import from_vectors, model_float_type, to_vectors, without_lost


@dataclass(frozen=True)
class Stream:
    """A value inside the chain between DAC and Accumulate: one part per group, for vectors of
    leading shape ``lead``."""
    lead: tuple[int, ...]
    parts: list
    # per group, what the digital side adds after the ADC step (numerics.product.digital_terms: the
    # input-sum offset term, the flipped columns' correction), added at Dequantize as the kernels do
    offsets: list | None = None
    # the vectors that held NaN or an infinity, which no DAC converts: read as zeros, their outputs NaN
    lost: np.ndarray | None = None


@dataclass(frozen=True)
class FusedChain:
    """A complete chain run as one step: its nodes, the layer, and the values it reads and writes;
    ``after``: the digital nodes (:data:`EPILOGUE`) applied to its output, each reading the one
    before (an Add's other operand is an input of the step)."""
    nodes: tuple[Node, ...]
    layer: int
    after: tuple[Node, ...] = ()

    @property
    def inputs(self) -> list[str]:
        own = [self.nodes[0].inputs[0], self.nodes[-1].inputs[1]]
        prev = self.nodes[-1].outputs[0]
        for node in self.after:
            own += [i for i in node.inputs if i != prev]
            prev = node.outputs[0]
        return own

    @property
    def outputs(self) -> list[str]:
        return [(self.after or self.nodes)[-1].outputs[0]]

    def epilogue(self) -> tuple:
        """(node, which of its inputs is the value before it) for each node ``after`` the chain."""
        prev, out = self.nodes[-1].outputs[0], []
        for node in self.after:
            out.append((node, node.inputs.index(prev)))
            prev = node.outputs[0]
        return tuple(out)


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


EPILOGUE = ("Add", "Relu")     # elementwise ops whose float32 result numpy computes as onnxruntime does


def fuse_epilogue(steps: list, keep: set[str], conv_layers: set[int]) -> list:
    """``steps`` (from :func:`fuse_chain`) with the Add, then Relu, that directly follow a chain of
    ``conv_layers`` moved into it, when each alone reads the value before it and that value is not
    in ``keep`` (graph outputs): the intermediate values then never exist."""
    readers: dict[str, int] = {}
    for step in steps:
        for name in step.inputs:
            readers[name] = readers.get(name, 0) + 1
    out: list = []
    i = 0
    while i < len(steps):
        step = steps[i]
        i += 1
        if not isinstance(step, FusedChain) or step.layer not in conv_layers:
            out.append(step)
            continue
        after: list[Node] = []
        prev = step.outputs[0]
        for op in EPILOGUE:
            node = steps[i] if i < len(steps) else None
            if (not isinstance(node, Node) or node.op_type != op or node.domain or node.attrs
                    or readers.get(prev) != 1 or prev in keep or len(node.outputs) != 1 or prev not in node.inputs
                    or len(node.inputs) != (2 if op == "Add" else 1) or "" in node.inputs
                    or (op == "Add" and node.inputs[0] == node.inputs[1])):
                continue
            after.append(node)
            prev = node.outputs[0]
            i += 1
        out.append(FusedChain(step.nodes, step.layer, tuple(after)) if after else step)
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


def offset_term(layer: AnalogLayer, enc) -> np.ndarray:
    """input_offset * sum_k q_w[n, k]: what streaming a quantized model's codes as x_q - q_min rather
    than x_q - zero point adds to each output (docs/analog.md, Quantized models), exact in float64."""
    return layer.input_offset * float_weights(enc, layer.spec)[0].sum(axis=1, dtype=np.float64)


def _dequantize(sim, layer: AnalogLayer, group: int, y_int: np.ndarray, out: np.ndarray) -> None:
    """y_int (codes times Δ, less the input offset's term) times s_w * s_x, into float32 ``out``.

    One pass: the product is taken in float64 and rounded once to float32 as it is stored, the
    values of ``(y_int * scale).astype(np.float32)`` without its float64 temporary."""
    w = sim.weights.encoded(layer, group)
    if layer.input_offset:
        y_int = y_int - offset_term(layer, w.enc)[None, :]
    if requantize.in_layer(layer):      # a QOperator op's codes, its int32 bias included (requantize.py)
        return requantize.requantized(layer, np.asarray(y_int, np.float64), group, (1, -1), out)
    np.multiply(y_int, (w.weight_scale * layer.input_scale)[None, :], out=out, dtype=np.float64,
                casting="same_kind")


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
    vectors, lost = without_lost(v.reshape(-1, layer.groups, v.shape[-1]))
    for g in range(layer.groups):
        x = vectors[:, g, :]
        x_q = quantize_inputs(x, layer.input_scale, spec.input_bits, layer.input_signed, layer.input_offset)
        parts.append(input_chunks(x_q, spec, layer.input_signed))
        enc = sim.weights.encoded(layer, g).enc
        offsets.append(digital_terms(x_q, enc, spec, column_layout(enc, spec)))
    return Stream(lead, parts, offsets if any(o is not None for o in offsets) else None, lost)


def _crossbar_read(sim, layer, s, weight):
    """CrossbarRead: every read current of every row block, cycle, slice and sign (read noise included)."""
    # the node's weight input is the float constant; the cells read are sim.weights' encoding (or the device file's)
    spec, parts = layer.spec, []
    for g, chunks in enumerate(s.parts):
        enc = sim.weights.encoded(layer, g).enc
        layout = column_layout(enc, spec)
        if chunks.shape[2] != enc.levels.shape[0]:
            raise InvalidDataError(f"inputs have {chunks.shape[2]} features, the weights {enc.levels.shape[0]} rows")
        check_exact(spec, chunks.shape[2], layer.input_signed)
        noise, cells, rng = sim.read_conditions(layer, g, enc)  # cells None: the levels, plus g_min's leak
        parts.append(reference.read(chunks, enc.levels if cells is None else cells, spec, layout, noise,
                                    layer.adc_full_scale or None, rng, sim.column_errors(layer, g, enc),
                                    cell_leak(cells, spec, noise)))
    return dataclasses.replace(s, parts=parts)


def _adc(sim, layer, s):
    """ADC: every current to its code."""
    # noisy runs read programmed cells, whose currents are not integers; quantized runs read levels
    adc = make_adc(layer.spec, layer.adc_full_scale or None, sim.noise if sim.noisy else None,
                   exact_reads=not sim.noisy)
    parts = []
    for g, r in enumerate(s.parts):
        enc = sim.weights.encoded(layer, g).enc
        parts.append(reference.convert(r, adc, sim.column_errors(layer, g, enc), column_layout(enc, layer.spec)))
    return dataclasses.replace(s, parts=parts)


def _shift_add(sim, layer, s):
    """ShiftAdd: each row block's codes recombined over cycles, slices and signs."""
    weights = cycle_weights(layer.spec, layer.input_signed)
    parts = []
    for g, c in enumerate(s.parts):
        enc = sim.weights.encoded(layer, g).enc
        parts.append(reference.shift_add(reference.unflip(c, enc, layer.spec, column_layout(enc, layer.spec)),
                                         layer.spec, weights))
    return dataclasses.replace(s, parts=parts)


def _accumulate(sim, layer, s):
    """Accumulate: the row blocks summed."""
    return dataclasses.replace(s, parts=[reference.accumulate(p) for p in s.parts])


def _dequantize_step(sim, layer, s):
    """Dequantize: code sums times Δ, then s_w * s_x: the [*lead, G, N] float32 outputs."""
    step = adc_step(layer.spec, layer.adc_full_scale or None)
    out = np.empty((math.prod(s.lead), layer.groups, layer.matrices[0].n_out), np.float32)
    for g, y in enumerate(s.parts):
        if step != 1.0:
            y *= step
        if s.offsets is not None and s.offsets[g] is not None:
            y += s.offsets[g]
        _dequantize(sim, layer, g, y, out[:, g, :])
    if s.lost is not None:
        out[s.lost] = np.nan
    return out.reshape(s.lead + out.shape[1:])


def _from_vectors(sim, layer, out, bias):
    """FromVectors: the ONNX layout of the outputs, bias added."""
    geo = _geometry(layer, out.shape[:-2])
    bias = None if requantize.in_layer(layer) else bias     # added with the codes (_dequantize; not ideal mode)
    return from_vectors(out.reshape((-1,) + out.shape[-2:]), bias, layer.op_type, geo, layer.groups)


STEPS = {"ToVectors": _to_vectors, "DAC": _dac, "CrossbarRead": _crossbar_read, "ADC": _adc,
         "ShiftAdd": _shift_add, "Accumulate": _accumulate, "Dequantize": _dequantize_step,
         "FromVectors": _from_vectors}


# ------------------------------------------------------------------ the fused chain

def run_fused(sim, layer: AnalogLayer, x, bias: np.ndarray, *operands, after: tuple = ()) -> np.ndarray:
    """A whole chain, input x to output: the values :data:`STEPS` would compute, vectorised; then
    the nodes ``after`` it (:class:`FusedChain`), whose other operands are ``operands``."""
    x = np.asarray(x)
    model_type = model_float_type(x)
    if model_type is not None:
        return _run_after(sim, after, _run_layer(sim, layer, x, bias).astype(model_type), operands)
    return _run_layer(sim, layer, x, bias, after, operands)


def _run_layer(sim, layer: AnalogLayer, x: np.ndarray, bias: np.ndarray, after: tuple = (), operands=()) -> np.ndarray:
    geo = layer.geometry.for_input(x.shape)
    if requantize.applies(sim, layer):
        return _run_after(sim, after, requantize.run(sim, layer, x, geo), operands)
    if sim.mode == "ideal" and layer.op_type == "Conv" and x.ndim >= 3 \
            and (sim.capture is None or getattr(sim.capture, "conv_input", None)):
        if sim.capture is not None:     # a capture that needs no vectors sees the Conv's input instead
            sim.capture.conv_input(layer, x, geo)
        y, done = conv.ideal(sim, layer, x, bias, geo, after, operands)
        return y if done else _run_after(sim, after, y, operands)
    if layer.op_type == "Conv" and x.ndim >= 3 and exact.applies(sim, layer):
        y, done = _conv_exact(sim, layer, x, bias, geo, after, operands)
        if y is not None:
            return y if done else _run_after(sim, after, y, operands)
    return _run_after(sim, after, _run_chain(sim, layer, x, bias, geo), operands)


def _run_after(sim, after: tuple, y: np.ndarray, operands) -> np.ndarray:
    """The nodes ``after`` a chain (:meth:`FusedChain.epilogue`), one by one on the digital units."""
    rest = iter(operands)
    for node, slot in after:
        y = sim.run_digital(node, [y if i == slot else next(rest) for i in range(len(node.inputs))])[0]
    return y


def _run_chain(sim, layer: AnalogLayer, x: np.ndarray, bias: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    if sim.mode == "ideal" and layer.op_type == "ConvTranspose" and gemm.follows_model(layer) and sim.capture is None:
        return from_vectors(conv.transposed_products(sim, layer, x), bias, layer.op_type, geo, layer.groups)
    lossless = exact.applies(sim, layer)
    v = _vectors(sim, layer, x, geo)
    lost = None
    if sim.mode != "ideal":
        v, lost = without_lost(v)
    out = np.empty((v.shape[0], layer.groups, layer.matrices[0].n_out), np.float32)
    bias_first = sim.mode == "ideal" and gemm.bias_first(layer)
    added = bias_first or (sim.mode != "ideal" and requantize.in_layer(layer))      # the bias is in out already
    for g in range(layer.groups):
        xg = v[:, g, :]
        if sim.mode == "ideal":
            w = sim.weights.float_matrix(layer, g)
            xf, wt = xg.astype(np.float32, copy=False), w.T.astype(np.float32, copy=False)
            product = gemm.ideal_product(layer)
            if bias_first:              # a single group, by gemm.bias_first
                product(xf, wt, out=out[:, 0, :], c=bias)
            elif layer.groups == 1:     # straight into the output (a contiguous view): no temporary
                product(xf, wt, out=out[:, 0, :])
            else:
                out[:, g, :] = product(xf, wt)
            continue
        if lossless:
            q = sim.scratch("codes", xg.size, np.float32)[:xg.size].reshape(xg.shape)
            qf, chunks = exact.layer_weights(sim, layer, g, exact.layer_codes(layer, xg, q))
            _dequantize(sim, layer, g, exact.product(q, qf, chunks), out[:, g, :])
            continue
        spec = layer.spec
        x_q = quantize_inputs(xg, layer.input_scale, spec.input_bits, layer.input_signed, layer.input_offset)
        enc = sim.weights.encoded(layer, g).enc
        noise, cells, rng = sim.read_conditions(layer, g, enc)
        y_int = mvm(x_q, enc, spec, layer.input_signed, full_scale=layer.adc_full_scale or None,
                    cells=cells, noise=noise, rng=rng, columns=sim.column_errors(layer, g, enc))
        _dequantize(sim, layer, g, y_int, out[:, g, :])
    if lost is not None:
        out[lost] = np.nan
    return from_vectors(out, None if added else bias, layer.op_type, geo, layer.groups)


def _conv_exact(sim, layer: AnalogLayer, x: np.ndarray, bias: np.ndarray, geo: ConvGeometry, after: tuple,
                operands) -> tuple[np.ndarray | None, bool]:
    """Quantized-mode Conv with a lossless ADC: each span of images quantised into float32 codes, each
    group's integer product by :func:`exact.matmul` over their patches (:mod:`.conv`), then Dequantize
    and the bias exactly as the vector path applies them (the same float64 products, rounded once to
    float32): bit for bit the values of the chain's steps; and the nodes ``after`` it, as conv.ideal runs
    them (True second when it did). The K chunks are planned for the largest code the DAC can take, so
    that no pass over the input precedes the spans: None for an x the codes find a NaN or an infinity
    in (a check beforehand on this thread kept the workers waiting)."""
    groups, n_out, spec = layer.groups, layer.matrices[0].n_out, layer.spec
    batch = x.shape[0]
    pad = exact.pad_code(layer.input_scale, spec.input_bits, layer.input_signed, layer.input_offset)
    xmax = exact.code_bound(spec.input_bits, layer.input_signed)
    y = sim.take((batch, groups * n_out) + tuple(geo.output_shape[2:]))
    yv = y.reshape(batch, groups, n_out, -1)
    b = conv.group_bias(bias, groups, n_out)
    inline = None if requantize.in_layer(layer) else conv.inline_epilogue(after, operands, y)
    others = [None if o is None else o.reshape(yv.shape) for o in inline or ()]
    parts = []
    for g in range(groups):
        enc = sim.weights.encoded(layer, g)
        offset = offset_term(layer, enc.enc)[:, None] if layer.input_offset else None
        scale = (enc.weight_scale * layer.input_scale)[:, None]
        parts.append(exact.layer_weights(sim, layer, g, xmax) + (scale, offset))

    def work(worker, span, single):
        b0, b1 = span
        src, inner = conv.padded(sim, f"conv codes {worker}", geo, b1 - b0, float(pad))
        for i in range(b0, b1):
            exact.layer_codes(layer, x[i], src[(inner[0], i - b0) + inner[2:]])
        cols = conv.patches(sim, geo, groups, src, worker)
        size = n_out * cols.shape[2]
        for g, (qf, chunks, scale, offset) in enumerate(parts):
            r = exact.matmul(qf, cols[g], chunks, sim.scratch(f"conv product {worker}", size, np.float32)[:size]
                             .reshape(n_out, -1), single)
            if offset is not None:
                r = r - offset
            dst = yv[b0:b1, g]
            if requantize.in_layer(layer):      # a QOperator op's codes, its bias included (_dequantize)
                requantize.requantized(layer, np.asarray(conv.nchw(r, b1 - b0), np.float64), g, (1, -1, 1), dst)
                continue
            np.multiply(conv.nchw(r, b1 - b0), scale, out=dst, dtype=np.float64, casting="same_kind")
            np.add(dst, b[g], out=dst, dtype=np.result_type(dst, b), casting="unsafe")
            conv.epilogue(after, dst, [None if o is None else o[b0:b1, g] for o in others])

    try:
        conv.spread(work, conv.spans(geo))
    except exact.NotFinite:     # the vector path sets the vectors holding it aside
        return None, False
    return y, inline is not None
