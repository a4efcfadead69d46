"""The reference executor of an analog layer's product: docs/analog.md written as loops.

One function per step of the analog chain, so that the runtime's reference path runs
each node of a chain on its own (:mod:`acompile.sim.chain`): :func:`read` (CrossbarRead:
one read per row block r, cycle t, slice j and sign s, read noise included), :func:`convert`
(ADC), :func:`shift_add` (cycles, slices and signs of each row block recombined) and
:func:`accumulate` (row blocks summed). :func:`mvm_reference` chains them. Codes are
integers summed exactly in float64 (``product.check_exact`` bounds them below 2^53), so
the order of the sums cannot change a result and the fast executor agrees bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..numerics.adc import Adc, adc_codes, make_adc
from ..numerics.dac import cycle_weights, input_chunks
from ..numerics.encoding import EncodedWeights
from ..numerics.noise import ColumnErrors, NoiseSpec, generator, read_noise_sigma
from ..numerics.product import cell_leak, check_cells, finish, prepare, reads_exactly
from ..numerics.spec import AnalogSpec


@dataclass(frozen=True)
class Reads:
    """Read currents (or, after the ADC, codes) of one matrix for V vectors.

    ``data[r, t, j, si]`` is the (V, N) read of slice j, sign ``spec.signs[si]`` of every
    channel in row block r at cycle t; ``ref[r, t]`` the (V,) read of the offset scheme's
    reference column (None for differential weights, and when it is subtracted in analog).
    """

    data: np.ndarray
    ref: np.ndarray | None


def read(chunks: np.ndarray, cells: np.ndarray, spec: AnalogSpec, layout: dict,
         noise: NoiseSpec | None = None, full_scale: float | None = None, rng=None,
         columns: ColumnErrors | None = None, leak: float = 0.0) -> Reads:
    """CrossbarRead: I = chunk_t(x)[rows of r] @ g[rows of r, column (n, s, j)] for all n at once.

    chunks: (T, V, K) DAC chunks; cells: levels or programmed conductances (K, P); layout:
    ``encoding.column_layout``. ``leak`` (g_min in level units, when the cells are the levels:
    ``numerics.product.cell_leak``) adds leak * Σ x_t over the block's rows to every read of
    (r, t), rounded once in the read dtype. Read noise is drawn in loop order as
    standard_normal((V, N), read dtype) * σ per (r, t, j, s), σ from ``read_noise_sigma``,
    then standard_normal(V) for the reference column after each (r, t). ``columns.gain``
    multiplies each column's read first. With analog offset subtraction the top slice
    (j = S-1) is then read less the reference column, before its noise, and the reference
    column itself is not converted (no draw, ``ref`` None).
    """
    noise_sigma = read_noise_sigma(spec, noise, full_scale)
    gen = generator(rng, "read noise") if noise_sigma else None
    dt = spec.read_dtype
    sigma = dt(noise_sigma)
    chunks = chunks.astype(dt)
    t_count, v, k = chunks.shape
    col, ref_col = layout["col"], layout["ref"]
    nb = spec.row_blocks(k)
    data = np.empty((nb, t_count, spec.slices, len(spec.signs), v, layout["n_out"]), dt)
    analog = spec.analog_offset
    ref = None if ref_col is None or analog else np.empty((nb, t_count, v), dt)
    gain = None if columns is None or columns.gain is None else columns.gain.astype(dt)

    def gained(current, r, cols, leaks):
        if leaks is not None:    # per vector: (V,) for the reference column, (V, N) for the channels
            current += leaks if current.ndim == 1 else leaks[:, None]
        if gain is not None:
            current *= gain[r, cols]
        return current

    def noisy(current):
        if gen is not None:
            current += gen.standard_normal(current.shape, dtype=dt) * sigma
        return current

    for r in range(nb):
        rows = slice(r * spec.rows, min(k, (r + 1) * spec.rows))
        g_r = cells[rows].astype(dt)
        for t in range(t_count):
            x_t = chunks[t][:, rows]
            leaks = x_t.sum(axis=1) * dt(leak) if leak else None
            i_ref = gained(x_t @ g_r[:, ref_col], r, ref_col, leaks) if analog else None
            for j in range(spec.slices):
                for si in range(len(spec.signs)):
                    current = gained(x_t @ g_r[:, col[:, si, j]], r, col[:, si, j], leaks)  # every channel
                    if analog and j == spec.slices - 1:
                        current -= i_ref[:, None]
                    data[r, t, j, si] = noisy(current)
            if ref is not None:
                ref[r, t] = noisy(gained(x_t @ g_r[:, ref_col], r, ref_col, leaks))
    return Reads(data, ref)


def convert(reads: Reads, adc: Adc, columns: ColumnErrors | None = None, layout: dict | None = None) -> Reads:
    """ADC: every read current to its code, in place (elementwise, as the fast path rounds).

    ``columns.offset_lsb``: each ADC's own offset (row blocks, P), placed by ``layout``
    (``encoding.column_layout``) on the columns each read comes from.
    """
    own = own_ref = None
    if columns is not None and columns.offset_lsb is not None:
        offsets = columns.offset_lsb
        own = offsets[:, layout["col"]].transpose(0, 3, 2, 1)[:, None, :, :, None, :]  # (R, 1, S, signs, 1, N)
        if layout["ref"] is not None:
            own_ref = offsets[:, layout["ref"]][:, None, None]
    adc_codes(reads.data, adc, own)
    if reads.ref is not None:
        adc_codes(reads.ref, adc, own_ref)
    return reads


def unflip(codes: Reads, enc: EncodedWeights, spec: AnalogSpec, layout: dict) -> Reads:
    """The "flipped" scheme: the codes of flipped (row block, column) reads negated, in place
    (``numerics.product.digital_terms`` adds their m·S back after the ADC step)."""
    if enc.flip is None:
        return codes
    col, ref = layout["col"], layout["ref"]
    for r in range(enc.flip.shape[0]):
        for j in range(spec.slices):
            for si in range(len(spec.signs)):
                neg = enc.flip[r, col[:, si, j]]
                if neg.any():
                    codes.data[r, :, j, si][:, :, neg] *= -1
        if ref is not None and codes.ref is not None and enc.flip[r, ref]:
            codes.ref[r] *= -1
    return codes


def shift_add(codes: Reads, spec: AnalogSpec, weights: list[float]) -> np.ndarray:
    """ShiftAdd: (R, V, N) integer sums Σ s * w_t * 2^(j*cb) * code per row block, less the
    offset scheme's 2^(Bw-1) * Σ w_t * reference code; float64, exact."""
    nb, _, _, _, v, n = codes.data.shape
    out = np.zeros((nb, v, n))
    for r in range(nb):
        for t, w_t in enumerate(weights):
            for j in range(spec.slices):
                for si, s in enumerate(spec.signs):
                    out[r] += (s * w_t * 2.0 ** (j * spec.cell_bits)) * codes.data[r, t, j, si].astype(np.float64)
        if codes.ref is not None and spec.offset:
            ref = np.zeros(v)
            for t, w_t in enumerate(weights):
                ref += w_t * codes.ref[r, t].astype(np.float64)
            out[r] -= spec.offset * ref[:, None]
    return out


def accumulate(partials: np.ndarray) -> np.ndarray:
    """Accumulate: the row blocks' partial sums (R, V, N) added, in block order: (V, N)."""
    out = np.zeros(partials.shape[1:])
    for part in partials:
        out += part
    return out


def mvm_reference(x_q: np.ndarray, enc: EncodedWeights, spec: AnalogSpec, signed: bool, *,
                  full_scale: float | None = None, cells: np.ndarray | None = None,
                  noise: NoiseSpec | None = None, rng=None, columns: ColumnErrors | None = None) -> np.ndarray:
    """Integer layer output y_int (V, N), float64, for quantised inputs x_q (V, K): the chain's
    steps in turn, then the sum of codes times Δ (which equals summing code * Δ).

    Same arguments as :func:`acompile.sim.fast.mvm`; works for any valid column layout.
    """
    x, layout = prepare(x_q, enc, spec, signed)
    cells = check_cells(cells, enc, noise)
    leak = cell_leak(cells, spec, noise)
    adc = make_adc(spec, full_scale, noise, exact_reads=reads_exactly(cells, leak, noise))
    reads = read(input_chunks(x, spec, signed), enc.levels if cells is None else cells, spec, layout,
                 noise, full_scale, rng, columns, leak)
    codes = unflip(convert(reads, adc, columns, layout), enc, spec, layout)
    y = accumulate(shift_add(codes, spec, cycle_weights(spec, signed)))
    return finish(y, adc.step, x, enc, spec, layout)
