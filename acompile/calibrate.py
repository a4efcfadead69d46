"""Calibration: input scales and ADC ranges from real (or default) activations.

Runs the mapped program in ideal mode (float32 GEMMs) over the calibration inputs,
records each analog layer's input vectors, and sets ``s_x`` from a percentile of |x|
(``precision.input_percentile``) and, for ``adc.range = "calibrated"``, the ADC
full scale from a percentile of the column currents the quantised inputs
produce (``adc.percentile``). Without user data, the documented default of
:mod:`.default_inputs` is used, with the next of its ``DEFAULT_FILLS`` while some analog
layer sees no finite input.
Only what the layers' inputs need is run: nothing after the last analog layer, and
with the default data not the last layers whose outputs no other layer reads (their
inputs are recorded after the run, in program order): the same activations, hence the
same scales, as the whole forward pass, for less. A quantized model whose every analog layer
brings its own input scale, on a target whose ADC range is the worst case, needs no activations:
nothing runs.
The ``calibrate`` pass runs last, on the mapped program (it simulates it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from pathlib import Path

import numpy as np

from .default_inputs import DEFAULT_FILLS, default_data
from .default_inputs import describe as describe_defaults
from .errors import AcompileError, InvalidDataError, NonFiniteCalibration, UnsupportedError, clean
from .ir import DOMAIN, Graph
from .numerics.quantise import input_scale, quantize_inputs
from .passes.base import CompileState, compile_pass
from .safe_read import read_arrays

MAX_VALUES_PER_LAYER = 1 << 20     # values kept per layer for percentiles
MAX_ADC_VECTORS = 1024             # vectors per matrix used to calibrate the ADC


def load_arrays(path: str | Path, input_names: list[str], what: str = "input",
                weights: Collection[str] = ()) -> dict[str, np.ndarray]:
    """Read an .npz keyed by input name, or an .npy for a single-input model (``input_names`` empty: any
    names); calibration data must be non-empty and finite. ``weights``: graph inputs the model also stores
    as initializers, which a feed cannot replace (their stored values are compiled)."""
    where = clean(str(path))
    data = read_arrays(path, what, names=set(input_names) | set(weights) if input_names else None)
    fed = sorted(set(data) & set(weights)) if isinstance(data, dict) else []
    if fed:
        raise InvalidDataError(f"the {what} file holds {clean(fed[0])!r}, a graph input the model also stores as an "
                               f"initializer: acompile compiles the stored value onto the crossbars, so a feed "
                               f"cannot replace it", where=where,
                               hint="leave it out of the file, or remove its initializer from the model and fix it "
                                    "with --bind")
    if isinstance(data, np.ndarray):
        if len(input_names) != 1:
            raise InvalidDataError(f"an .npy {what} file fits a single-input model; this model has inputs "
                                   f"{', '.join(clean(n) for n in input_names)} (use an .npz)", where=where)
        data = {input_names[0]: data}
    if what == "calibration":
        for name, arr in data.items():
            if arr.size == 0:
                raise InvalidDataError(f"calibration array {clean(name)!r} is empty", where=where)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise InvalidDataError(f"calibration array {clean(name)!r} holds NaN or infinity", where=where,
                                       hint="calibration ranges need finite sample inputs")
    return data


class _Recorder:
    """Keeps, per layer, |x| statistics and (when asked) samples of values and vectors."""

    def __init__(self, seed: int, keep_values: bool, keep_vectors: bool, finite_only: bool = False):
        self.values: dict[int, list[np.ndarray]] = {}
        self.maxima: dict[int, float] = {}
        self.vectors: dict[int, list[np.ndarray]] = {}
        self.keep_values, self.keep_vectors = keep_values, keep_vectors
        # synthetic data may drive a model where real data never goes (the log of a negative
        # number): its NaN and infinities are left out of the ranges, and the layers named; a layer
        # that sees no finite input at all is still refused
        self.finite_only = finite_only
        self.nonfinite: set[int] = set()
        self.rng = np.random.default_rng(seed)

    @property
    def conv_input(self):
        """When only max |x| is wanted, a Conv's input replaces its input vectors (the simulator then
        skips the patches): the same maximum, over the input elements some patch reads."""
        return None if self.keep_values or self.keep_vectors else self._conv_input

    def _conv_input(self, layer, x: np.ndarray, geo) -> None:
        for axis, size in enumerate(x.shape[2:]):
            used = _read_positions(size, geo.kernel[axis], geo.strides[axis], geo.dilations[axis],
                                   geo.pads[axis], geo.output_shape[2 + axis])
            if not used.all():          # strided convolutions skip some rows/columns
                x = np.compress(used, x, axis=2 + axis)
        self._peak(layer.index, x)

    def record(self, layer, x: np.ndarray) -> None:
        """What the simulator shows the recorder of a layer reading ``x`` (sim/chain.py, ``run_fused``):
        the Conv input itself when only maxima are kept, else the input vectors."""
        from .sim.vectors import to_vectors

        geo = layer.geometry.for_input(x.shape)
        if self.conv_input is not None and layer.op_type == "Conv" and x.ndim >= 3:
            self.conv_input(layer, x, geo)
        else:
            self(layer, to_vectors(x, layer.op_type, geo, layer.groups))

    def blind(self, i: int) -> bool:
        """Whether layer ``i`` saw no finite input at all (only NaN or infinities)."""
        return i in self.nonfinite and self.maxima.get(i, 0.0) == 0.0

    def _peak(self, i: int, v: np.ndarray) -> np.ndarray | None:
        """Fold max|v| into the layer's maximum. With non-finite values left out, return where v is
        finite when it is not everywhere (else None)."""
        # max|v| without a temporary |v|; np.maximum (not max) so that a NaN stays and is reported
        peak = float(np.maximum(v.max(), -v.min())) if v.size else 0.0
        finite = None
        if not math.isfinite(peak) and self.finite_only:
            self.nonfinite.add(i)
            finite = np.isfinite(v)
            kept = v[finite]
            peak = float(np.maximum(kept.max(), -kept.min())) if kept.size else 0.0
        self.maxima[i] = float(np.maximum(self.maxima.get(i, 0.0), peak))
        return finite

    def __call__(self, layer, v: np.ndarray) -> None:
        i = layer.index
        finite = self._peak(i, v)
        if self.keep_values:
            flat = v.reshape(-1) if finite is None else v[finite]
            if flat.size > MAX_VALUES_PER_LAYER:   # a uniform sample (with replacement: O(sample), not O(size))
                flat = flat[self.rng.integers(0, flat.size, MAX_VALUES_PER_LAYER)]
            self.values.setdefault(i, []).append(np.abs(flat))
        if self.keep_vectors:
            if finite is not None:                 # whole vectors only: an ADC reads a vector's sum
                v = v[finite.reshape(v.shape[0], -1).all(axis=1)]
            take = v if v.shape[0] <= MAX_ADC_VECTORS else v[np.sort(self.rng.choice(v.shape[0], MAX_ADC_VECTORS,
                                                                                       replace=False))]
            self.vectors.setdefault(i, []).append(np.array(take))


def _read_positions(size: int, kernel: int, stride: int, dilation: int, pad: int, out: int) -> np.ndarray:
    """Which of an axis' ``size`` input positions some output position reads (padding reads zeros)."""
    idx = (np.arange(out)[:, None] * stride + np.arange(kernel) * dilation - pad).ravel()
    used = np.zeros(size, bool)
    used[idx[(idx >= 0) & (idx < size)]] = True
    return used


@compile_pass(requires={"boundaries", "contiguous"}, provides={"calibrated"})
def calibrate(state: CompileState) -> None:
    """Set every layer's input range/scale and ADC full scale from calibration activations."""
    graph, mapping, target, options = state.graph, state.mapping, state.target, state.options
    if not mapping.layers:
        return
    calibrated_adc = target.adc.range == "calibrated"
    if _nothing_to_observe(mapping, calibrated_adc):
        for layer in mapping.layers:
            layer.input_range = _own_input_range(layer)
            layer.adc_full_scale = float(layer.spec.worst_case_full_scale)
        graph.meta["calibration_unneeded"] = True
        return
    # the simulator (and, through its digital ops, onnxruntime) is imported only when a compile observes
    # activations: check and the other commands that stop before calibration never pay for it
    from .sim.runtime import Simulator, WeightsFromGraph

    seed, data = options.seed, options.calibration
    user_data = data is not None
    percentile = target.precision.input_percentile

    def observe(data: dict) -> _Recorder:
        recorder = _Recorder(seed, keep_values=percentile < 100, keep_vectors=calibrated_adc,
                             finite_only=not user_data)
        _run(state, Simulator(view, mapping, weights, mode="ideal", capture=recorder), recorder, last, data)
        return recorder

    weights = WeightsFromGraph(graph, mapping)
    view, last = _calibration_view(graph, defer=not user_data)
    if user_data:
        recorder = observe(data)
    else:
        recorder = _observe_default(state, observe)
    for layer in mapping.layers:
        spec = layer.spec
        if percentile >= 100:
            rng_abs = recorder.maxima.get(layer.index, 0.0)
        else:
            rng_abs = float(np.percentile(np.concatenate(recorder.values.get(layer.index, [np.zeros(1)])),
                                          percentile))
        if layer.index in recorder.nonfinite and rng_abs == 0.0:
            rng_abs = math.nan  # not one finite input: the model itself overflows
        if not np.isfinite(rng_abs):
            tried = " (with 0 and 1 in its integer inputs, true and false in its boolean ones)" \
                if graph.meta.get("default_calibration_fills_tried", 1) > 1 else ""
            hint = "check the model's weights, or pass --calibration DATA with real inputs" + (
                "" if options.calibration else "; --input-range NAME:LO,HI bounds the default data of an input")
            raise NonFiniteCalibration(
                f"the inputs of analog layer {clean(layer.name)!r} reach {rng_abs} on the {options.calibration_name} "
                f"calibration data{tried}: the model overflows float32 (or computes NaN) before it",
                where=graph.source, hint=hint, reached=f"analog layer {clean(layer.name)!r} reads {rng_abs}")
        if _own_input_scale(layer):
            layer.input_range = _own_input_range(layer)
        else:
            layer.input_range = rng_abs
            layer.input_scale = input_scale(rng_abs, spec.input_bits, layer.input_signed)
        layer.adc_full_scale = float(spec.worst_case_full_scale) \
            if not calibrated_adc else _adc_range(layer, weights, recorder, target.adc.percentile)
    graph.meta["calibration_nonfinite"] = [clean(mapping.layers[i].name) for i in sorted(recorder.nonfinite)]


def _run(state: CompileState, simulator, recorder: "_Recorder", last: list, data: dict) -> None:
    """Run the calibration view over ``data`` into ``recorder``; say in one line why it cannot run."""
    graph, mapping, options = state.graph, state.mapping, state.options
    try:
        with np.errstate(over="ignore", invalid="ignore"):     # a non-finite range is reported by layer
            seen = simulator.run(data)
        for node in last:       # the chains left out: their inputs, recorded in program order
            recorder.record(mapping.layers[node.meta["layer"]], seen[node.inputs[0]])
    except AcompileError as e:
        cannot_run = {p.node for p in state.problems if p.category in ("unsupported_op", "unsupported_input")}
        unrunnable = [n for n in graph.nodes if n.name in cannot_run]
        if all(layer.index in recorder.maxima for layer in mapping.layers) and options.allow_unsupported:
            return  # every layer was seen; what failed comes after them (an op --allow-unsupported let through)
        if unrunnable:
            # no data gets past such a node, so the layers after it have no input range
            names = ", ".join(f"{clean(n.name)!r} ({n.domain + '.' if n.domain else ''}{n.op_type})"
                              for n in unrunnable[:3])
            names += f" and {len(unrunnable) - 3} more" if len(unrunnable) > 3 else ""
            raise UnsupportedError(f"calibration cannot run through the node(s) --allow-unsupported let through "
                                   f"({names}), and analog layers come after them", where=graph.source,
                                   hint="'acompile check' estimates the cost without calibrating")
        if isinstance(e, InvalidDataError):
            raise InvalidDataError(f"calibration data does not fit the model: {e.one_line()}")
        if options.calibration is not None:
            raise
        raise InvalidDataError(f"the default calibration inputs (random normal floats; {_fill_text(DEFAULT_FILLS[0])}) "
                               f"cannot run through this model: {e.one_line()}",
                               hint="pass --calibration DATA with real inputs")


def _observe_default(state: CompileState, observe) -> "_Recorder":
    """The recorder of the first default data (DEFAULT_FILLS) under which every analog layer sees a finite
    input; when none does, that of the first (whose NaN the caller reports). The fills differ only for a
    model with boolean or integer inputs."""
    graph, options = state.graph, state.options
    kinds = {(graph.tensors[n].dtype or np.dtype(np.float32)).kind for n in graph.inputs}
    fills = DEFAULT_FILLS if kinds - {"f"} else DEFAULT_FILLS[:1]
    first, failure = None, None
    for fill in fills:
        data = default_data(graph, options.batch, options.seed, options.limits, fill, options.input_ranges)
        try:
            recorder = observe(data)
        except InvalidDataError as e:
            failure = failure or e
            continue
        if not any(recorder.blind(layer.index) for layer in state.mapping.layers):
            if fill != DEFAULT_FILLS[0]:
                graph.meta["default_calibration_fill"] = _fill_text(fill)
            first = recorder
            break
        first = first or recorder
    else:
        if first is None:
            raise failure
        graph.meta["default_calibration_fills_tried"] = len(fills)    # none reached every layer
    # what the report says it calibrated on: the samples of the first input that has a batch dimension
    graph.meta["default_calibration_samples"] = next((int(a.shape[0]) for a in data.values() if a.ndim), 1)
    graph.meta["default_calibration_integers"] = describe_defaults(graph)
    return first


def _fill_text(fill: tuple[bool, int]) -> str:
    return f"{str(fill[0]).lower()} in boolean inputs and {fill[1]} in integer ones"


def observes_activations(mapping, target) -> bool:
    """Whether :func:`calibrate` runs the model to observe activations (not for a quantized model that gives
    every layer its input scale, on a worst-case ADC)."""
    return bool(mapping.layers) and not _nothing_to_observe(mapping, target.adc.range == "calibrated")


def _nothing_to_observe(mapping, calibrated_adc: bool) -> bool:
    """A quantized model that gives every layer its input scale, on a worst-case ADC: no activation
    sets a scale or a range."""
    return not calibrated_adc and all(map(_own_input_scale, mapping.layers))


def _own_input_scale(layer) -> bool:
    """Whether the layer streams a quantized model's own input codes (its s_x and zero point)."""
    return layer.model_quant is not None and "input_scale" in layer.model_quant


def _own_input_range(layer) -> float:
    """The largest input the model's own codes reach above their zero point: s_x · (q_max - zp)."""
    q = layer.model_quant
    return q["input_scale"] * ((1 << q["input_bits"]) - 1 - q["input_offset"])


def _calibration_view(graph: Graph, defer: bool) -> tuple[Graph, list]:
    """The program as calibration runs it, and the ToVectors nodes of the chains it leaves out.

    Calibration needs each analog layer's input, not its output. What no layer's input depends on
    is left out (the ops after the last layer; one nobody can run, kept under --allow-unsupported);
    with ``defer``, so are the chains after the last one whose output some later layer reads (the
    final classifier, the last projection of a block), only their inputs computed, as outputs of
    the view. They come last, so recording their inputs after the run keeps the recorder's order,
    in which it draws its samples. (Not for user data: the simulator may split that into chunks of
    the compiled batch, padded, and the recorder sees each chunk.)
    """
    need: set[str] = set()
    for node in reversed(graph.nodes):      # which values some analog layer's input depends on
        if node.domain == DOMAIN and node.op_type == "ToVectors":
            need.add(node.inputs[0])
        if any(o in need for o in node.outputs):
            need.update(i for i in node.inputs if i)
    chains = [(node, i) for i, node in enumerate(graph.nodes) if node.domain == DOMAIN
              and node.op_type in ("ToVectors", "FromVectors")]
    ends = [i for node, i in chains if node.op_type == "FromVectors" and node.outputs[0] in need]
    cut = (ends[-1] if ends else -1) if defer else len(graph.nodes)
    kept = [node.outputs[0] for node, i in chains if node.op_type == "FromVectors" and i <= cut]
    last = [node for node, i in chains if node.op_type == "ToVectors" and i > cut]
    outputs = list(dict.fromkeys(kept + [node.inputs[0] for node in last]))
    view = dataclasses.replace(graph, nodes=list(graph.nodes), outputs=outputs, meta=dict(graph.meta))
    view.prune()
    return view, last


def _adc_range(layer, weights, recorder, percentile: float) -> float:
    from .sim.fast import observe_full_scale

    vectors = np.concatenate(recorder.vectors[layer.index]) if layer.index in recorder.vectors else None
    if vectors is None:
        return float(layer.spec.worst_case_full_scale)
    full = 1.0
    for g in range(layer.groups):
        x_q = quantize_inputs(vectors[:, g, :], layer.input_scale, layer.spec.input_bits, layer.input_signed,
                              layer.input_offset)
        enc = weights.encoded(layer, g).enc
        full = max(full, observe_full_scale(x_q, enc, layer.spec, layer.input_signed, percentile))
    return float(full)


def calibration_notes(graph: Graph) -> list[str]:
    """One line for the layers whose inputs the default calibration data drove to NaN or infinity."""
    names = graph.meta.get("calibration_nonfinite", [])
    if not names:
        return []
    return [f"the default calibration inputs give NaN or infinity at the input of {len(names)} analog layer(s) "
            f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): their input ranges come from the "
            f"finite values only; pass --calibration DATA with real inputs"]


def adc_warnings(mapping) -> list[str]:
    """One line per analog layer whose ADC is far from lossless for its range.

    Every conversion of step Δ = F / (2^B - 1) > 1 (docs/analog.md) rounds with an error of
    variance Δ²/12; the shift-and-add scales it by each slice's and cycle's weight, so the layer's
    integer output carries an rms error of Δ/√12 · sqrt(row blocks · Σ_t w_t² · Σ_j 4^(cb·j))
    (plus the offset scheme's reference column, × 2^(Bw-1)). Against the largest output,
    K · (2^(Bw-1) - 1) · (largest input code), that leaves log2(y_max / (rms·√12)) effective bits;
    a layer is flagged when they fall short of the smaller of its weight and input bits.
    ``simulate --per-layer`` measures the effect on data.
    """
    from .numerics import cycle_weights
    from .numerics.adc import adc_step

    out = []
    for layer in mapping.layers:
        spec = layer.spec
        full = layer.adc_full_scale or float(spec.worst_case_full_scale)
        step = adc_step(spec, full)
        if step <= 1.0:
            continue
        cycles = float(np.sum(np.square(np.asarray(cycle_weights(spec, layer.input_signed), dtype=np.float64))))
        slices = sum(4.0 ** (spec.cell_bits * j) for j in range(spec.slices))
        if spec.reference_column:
            slices += 4.0 ** (spec.weight_bits - 1)
        m = layer.matrices[0]
        rms = step / np.sqrt(12.0) * np.sqrt(m.row_blocks * cycles * slices)
        x_top = (1 << (spec.input_bits - (1 if layer.input_signed else 0))) - 1
        y_max = m.k_in * ((1 << (spec.weight_bits - 1)) - 1) * x_top
        bits = float(np.log2(y_max / (rms * np.sqrt(12.0))))
        want = min(spec.weight_bits, spec.input_bits)
        if bits < want:
            out.append(f"layer {layer.name}: {spec.adc_bits}-bit ADC over a column range of {full:.6g} "
                       f"(step {step:.3g}): about {max(bits, 0.0):.1f} effective bits at its output, below "
                       f"the {want} of its weights and inputs ({int(np.ceil(np.log2(full + 1)))} ADC bits "
                       f"would be exact)")
    return out
