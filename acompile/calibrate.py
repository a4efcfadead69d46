"""Calibration: input scales and ADC ranges from real (or default) activations.

Runs the mapped program in ideal mode over the calibration inputs, records
each analog layer's input vectors, and sets ``s_x`` from a percentile of |x|
(``precision.input_percentile``) and, for ``adc.range = "calibrated"``, the ADC
full scale from a percentile of the column currents the quantised inputs
produce (``adc.percentile``). Without user data, a documented default is used:
8 seeded standard-normal samples per float input (zeros for integer inputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import AcompileError, InvalidDataError, LimitError, clean
from .frontend.load import Limits
from .ir import Graph
from .sim import analog
from .sim.runtime import Simulator, WeightsFromGraph

DEFAULT_SAMPLES = 8
MAX_VALUES_PER_LAYER = 1 << 20     # values kept per layer for percentiles
MAX_ADC_VECTORS = 1024             # vectors per matrix used to calibrate the ADC


def load_arrays(path: str | Path, input_names: list[str], what: str = "input") -> dict[str, np.ndarray]:
    """Read an .npz keyed by input name, or an .npy for a single-input model (no pickle)."""
    p = Path(path)
    where = clean(str(p))
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
            if len(input_names) != 1:
                raise InvalidDataError(f"an .npy {what} file fits a single-input model; this model has inputs "
                                       f"{', '.join(clean(n) for n in input_names)} (use an .npz)", where=where)
            return {input_names[0]: arr}
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except InvalidDataError:
        raise
    except FileNotFoundError:
        raise InvalidDataError(f"{what} file not found", where=where)
    except Exception as e:
        raise InvalidDataError(f"cannot read {what} data ({type(e).__name__}: {clean(str(e), 120)})", where=where,
                               hint="expected an .npy array or an .npz keyed by input name")


def default_data(graph: Graph, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {}
    for name in graph.inputs:
        info = graph.tensors[name]
        shape = [d if isinstance(d, int) else batch for d in (info.shape or ())]
        if shape and graph.meta.get("dynamic_batch"):
            shape[0] = DEFAULT_SAMPLES      # one batch of samples; a fixed-batch model gets one batch
        dtype = info.dtype or np.dtype(np.float32)
        nbytes = int(np.prod(shape, dtype=np.float64)) * 8
        if nbytes > Limits.from_env().max_tensor_bytes:
            raise LimitError(f"default calibration data for input {clean(name)!r} would take "
                             f"{nbytes / 1024**3:.3g} GiB", hint="pass --calibration DATA, or raise ACOMPILE_MAX_TENSOR_MB")
        if dtype.kind == "f":
            data[name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
        else:
            data[name] = np.zeros(shape, dtype)
    return data


class _Recorder:
    """Keeps, per layer, |x| statistics and (when asked) samples of values and vectors."""

    def __init__(self, seed: int, keep_values: bool, keep_vectors: bool):
        self.values: dict[int, list[np.ndarray]] = {}
        self.maxima: dict[int, float] = {}
        self.vectors: dict[int, list[np.ndarray]] = {}
        self.keep_values, self.keep_vectors = keep_values, keep_vectors
        self.rng = np.random.default_rng(seed)

    def __call__(self, layer, v: np.ndarray) -> None:
        i = layer.index
        peak = max(float(v.max()), -float(v.min())) if v.size else 0.0    # max|v| without a temporary |v|
        self.maxima[i] = max(self.maxima.get(i, 0.0), peak)
        if self.keep_values:
            flat = v.reshape(-1)
            if flat.size > MAX_VALUES_PER_LAYER:   # a uniform sample (with replacement: O(sample), not O(size))
                flat = flat[self.rng.integers(0, flat.size, MAX_VALUES_PER_LAYER)]
            self.values.setdefault(i, []).append(np.abs(flat))
        if self.keep_vectors:
            take = v if v.shape[0] <= MAX_ADC_VECTORS else v[np.sort(self.rng.choice(v.shape[0], MAX_ADC_VECTORS,
                                                                                       replace=False))]
            self.vectors.setdefault(i, []).append(np.array(take))


def calibrate(graph: Graph, target, data: dict[str, np.ndarray] | None, seed: int = 0) -> Graph:
    """Set every layer's input range/scale and ADC full scale from calibration activations."""
    mapping = graph.meta["mapping"]
    if not mapping.layers:
        return graph
    batch = graph.meta.get("batch", 1)
    user_data = data is not None
    if data is None:
        data = default_data(graph, batch, seed)
    percentile = float(target["precision.input_percentile"])
    calibrated_adc = target["adc.range"] == "calibrated"
    recorder = _Recorder(seed, keep_values=percentile < 100, keep_vectors=calibrated_adc)
    weights = WeightsFromGraph(graph, mapping)
    try:
        Simulator(graph, mapping, weights, mode="ideal", capture=recorder).run(data)
    except InvalidDataError as e:
        raise InvalidDataError(f"calibration data does not fit the model: {e.one_line()}")
    except AcompileError as e:
        if user_data:
            raise
        raise InvalidDataError(f"the default calibration inputs (random normal floats, zero integers) cannot run "
                               f"through this model: {e.one_line()}", hint="pass --calibration DATA with real inputs")
    for layer in mapping.layers:
        spec = layer.spec
        if percentile >= 100:
            rng_abs = recorder.maxima.get(layer.index, 0.0)
        else:
            rng_abs = float(np.percentile(np.concatenate(recorder.values.get(layer.index, [np.zeros(1)])),
                                          percentile))
        layer.input_range = rng_abs
        layer.input_scale = analog.input_scale(rng_abs, spec.input_bits, layer.input_signed)
        layer.adc_full_scale = float(spec.worst_case_full_scale) \
            if not calibrated_adc else _adc_range(layer, weights, recorder, float(target["adc.percentile"]))
    return graph


def _adc_range(layer, weights, recorder, percentile: float) -> float:
    vectors = np.concatenate(recorder.vectors[layer.index]) if layer.index in recorder.vectors else None
    if vectors is None:
        return float(layer.spec.worst_case_full_scale)
    full = 1.0
    for g in range(layer.groups):
        x_q = analog.quantize_inputs(vectors[:, g, :], layer.input_scale, layer.spec.input_bits, layer.input_signed)
        enc = weights.encoded(layer, g).enc
        full = max(full, analog.observe_full_scale(x_q, enc, layer.spec, layer.input_signed, percentile))
    return float(full)
