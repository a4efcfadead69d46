"""Per-layer error attribution (``simulate --per-layer``): each analog layer's own error.

An ideal run records the vectors every analog layer reads; each layer then computes, from
those same ideal inputs, its quantized (and noisy) output, so one layer's figures do not
carry the errors of the layers before it. The ADC's clipping is counted on the reference
executor's read currents (docs/analog.md, One read and the ADC); the inputs' clipping, on the
codes before the DAC's range (an input beyond the calibrated range).
"""

from __future__ import annotations

import math

import numpy as np

from ..numerics.adc import adc_step
from ..numerics.dac import input_chunks
from ..numerics.encoding import column_layout
from ..numerics.noise import program_cells
from ..numerics.quantise import input_range, quantize_inputs
from . import fast, reference
from .chain import offset_term
from .runtime import Simulator, WeightsFromGraph

MAX_VECTORS = 256      # per layer: a deterministic sample keeps the reference reads cheap


def layer_errors(graph, mapping, weights, feeds: dict, noise=None, seed: int = 0, instance: int = 0) -> list[dict]:
    """One record per analog layer: vectors, and per mode (quantized, plus noisy when ``noise``
    is given) SNR (dB), relative error, effective bits at the output, ADC clips and conversions.

    ``weights`` holds the programmed cells (a device file's reader, or the graph's weights encoded);
    the ideal outputs come from the program's float weights.
    """
    ideal_weights = WeightsFromGraph(graph, mapping)
    seen: dict[int, list[np.ndarray]] = {}

    def record(layer, v):
        seen.setdefault(layer.index, []).append(np.array(v, dtype=np.float64))

    Simulator(graph, mapping, ideal_weights, mode="ideal", capture=record).run(feeds)
    rng = np.random.default_rng([seed, instance, 12])
    chip = int(graph.meta.get("compile_seed", 0))       # programming draws: compile seed, instance
    out = []
    for layer in mapping.layers:
        if layer.index not in seen:
            continue
        v = np.concatenate([x.reshape(-1, *x.shape[-2:]) for x in seen[layer.index]])
        if v.shape[0] > MAX_VECTORS:
            v = v[np.sort(rng.choice(v.shape[0], MAX_VECTORS, replace=False))]
        entry = {"layer": layer.name, "op_type": layer.op_type, "vectors": int(v.shape[0]),
                 "quantized": _mode(layer, ideal_weights, weights, v, None, seed, instance, chip)}
        if noise is not None and not noise.is_ideal:
            entry["noisy"] = _mode(layer, ideal_weights, weights, v, noise, seed, instance, chip)
        out.append(entry)
    return out


def _mode(layer, ideal_weights, weights, v: np.ndarray, noise, seed: int, instance: int, chip: int = 0) -> dict:
    spec = layer.spec
    full = layer.adc_full_scale or None
    step = adc_step(spec, full)
    signal = err = 0.0
    clipped = conversions = inputs_clipped = 0
    lo, hi = input_range(spec.input_bits, layer.input_signed)
    for g in range(layer.groups):
        enc_obj = weights.encoded(layer, g)
        enc = enc_obj.enc
        ideal = v[:, g, :] @ ideal_weights.float_matrix(layer, g).astype(np.float64).T
        codes = np.rint(v[:, g, :] / layer.input_scale) + layer.input_offset     # before the DAC's clip
        inputs_clipped += int(np.count_nonzero((codes < lo) | (codes > hi)))
        x_q = quantize_inputs(v[:, g, :], layer.input_scale, spec.input_bits, layer.input_signed, layer.input_offset)
        cells = None
        if noise is not None:
            # the chip's cells as the simulator programs them (same compile seed, instance, layer, group)
            cells = program_cells(enc.levels, spec, noise, np.random.default_rng([chip, instance, layer.index, g, 0]))
        read_rng = np.random.default_rng([seed, instance, layer.index, g, 2])
        y = fast.mvm(x_q, enc, spec, layer.input_signed, full_scale=full, cells=cells, noise=noise, rng=read_rng)
        if layer.input_offset:
            y = y - offset_term(layer, enc)[None, :]
        y = y * (enc_obj.weight_scale[None, :] * layer.input_scale)
        signal += float(np.sum(ideal * ideal))
        err += float(np.sum((y - ideal) ** 2))
        reads = reference.read(input_chunks(x_q, spec, layer.input_signed), enc.levels if cells is None else cells,
                               spec, column_layout(enc, spec), noise, full, read_rng)
        for currents in (reads.data, reads.ref):
            if currents is None:
                continue
            codes = np.rint(np.asarray(currents, np.float64) / step)
            clipped += int(np.count_nonzero((codes < 0) | (codes > spec.max_code)))
            conversions += int(codes.size)
    snr = math.inf if err == 0 else (10 * math.log10(signal / err) if signal > 0 else -math.inf)
    return {"snr_db": snr, "relative_error": math.sqrt(err / signal) if signal > 0 else (0.0 if err == 0 else math.inf),
            "effective_bits": (snr - 1.76) / 6.02 if math.isfinite(snr) else snr,
            "adc_clipped": clipped, "adc_conversions": conversions,
            "inputs_clipped": inputs_clipped, "inputs": int(v.size)}
