"""What one matrix-vector product of an encoded layer needs, whichever executor computes
it: the checked arguments, the bound that keeps integer code sums exact, and the
shift-and-add factor of each column (docs/analog.md, One read and the ADC).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidDataError, UnsupportedError
from .dac import check_inputs, cycle_weights
from .encoding import EncodedWeights, column_layout
from .noise import NoiseSpec, leak_levels
from .spec import F64_EXACT, AnalogSpec


def check_exact(spec: AnalogSpec, k: int, signed: bool) -> None:
    """Refuse a layer whose exact integer code sums could reach 2^53."""
    w = sum(abs(c) for c in cycle_weights(spec, signed))
    reads = spec.row_blocks(k) * spec.max_code * w
    bound = reads * len(spec.signs) * sum(1 << (j * spec.cell_bits) for j in range(spec.slices))
    bound += reads * spec.offset
    if bound >= F64_EXACT:
        raise UnsupportedError(f"a layer with K={k} and this spec could need integers up to "
                               f"{bound:.3g}, beyond float64's exact range 2^53")


def coefficients(spec: AnalogSpec) -> np.ndarray:
    """Shift-and-add factor sign * 2^(j*cb) of a channel's columns, canonical order."""
    return np.array([s * float(1 << (j * spec.cell_bits)) for s in spec.signs
                     for j in range(spec.slices)])


def prepare(x_q, enc: EncodedWeights, spec: AnalogSpec, signed: bool) -> tuple[np.ndarray, dict]:
    """Checked int64 inputs (V, K) and the encoding's column layout, for a product of the two."""
    x = check_inputs(x_q, spec, signed)
    info = column_layout(enc, spec)
    if x.shape[1] != enc.levels.shape[0]:
        raise InvalidDataError(f"inputs have {x.shape[1]} features, the weights {enc.levels.shape[0]} rows")
    check_exact(spec, x.shape[1], signed)
    return x, info


def check_cells(cells, enc: EncodedWeights, noise: NoiseSpec | None) -> np.ndarray | None:
    """The programmed cells to read, checked against the encoding; None: the levels (g_min's
    leak, when on, is added to their reads: :func:`cell_leak`)."""
    if cells is None:
        if noise is not None and not noise.programs_levels:
            raise InvalidDataError("noise has programming-time effects (programming noise, stuck-at, "
                                   "drift) but no cells were given",
                                   hint="pass cells=program_cells(enc.levels, spec, noise, rng)")
        return None
    cells = np.asarray(cells)
    if cells.shape != enc.levels.shape:
        raise InvalidDataError(f"cells have shape {cells.shape}, the encoding {enc.levels.shape}")
    return cells


def cell_leak(cells, spec: AnalogSpec, noise: NoiseSpec | None) -> float:
    """What every read of the levels (cells None) adds per unit of input, in level units: g_min's
    leak, I = Σ x·l + leak·Σ x over the row block. Programmed cells hold it already: 0."""
    return leak_levels(spec, noise) if cells is None else 0.0


def reads_exactly(cells, leak: float, noise: NoiseSpec | None) -> bool:
    """Every read current is an integer: the levels read (cells None) with no leak and no
    read-time effect, so the ADC need not round or clip what cannot leave its range."""
    return cells is None and not leak and (noise is None or noise.reads_ideally)


def digital_terms(x: np.ndarray, enc: EncodedWeights, spec: AnalogSpec, layout: dict) -> np.ndarray | None:
    """(V, N) float64 the digital side adds to Δ·Σ(codes), exactly; None when there is nothing.

    * offset_subtraction = "input_sum": − 2^(Bw-1)·Σ_k x_k, the offset term from the input
      buffer's sum (no reference column).
    * the "flipped" scheme: a flipped (row block r, column) reads I' = m·S − I, S the block's input
      chunk sum; its codes enter the shift-and-add negated and m·S is added back here. Over the
      cycles the chunk sums rebuild X_r = Σ_{k in r} x_k, so this adds m·Σ_r X_r·G_r[n], G_r[n] the
      shift-and-add coefficients of channel n's flipped columns in block r (the reference column's
      counted with its − 2^(Bw-1)).
    Both executors add them through :func:`finish`, after multiplying by Δ, so they add alike.
    """
    if not spec.input_sum_offset and enc.flip is None:
        return None
    xi = np.asarray(x, dtype=np.int64)
    v, k = xi.shape
    n = layout["n_out"]
    total = np.zeros((v, n), dtype=np.int64)
    if spec.input_sum_offset:
        total -= spec.offset * xi.sum(axis=1)[:, None]
    if enc.flip is not None:
        col, ref = layout["col"], layout["ref"]
        blocks = [xi[:, r * spec.rows:(r + 1) * spec.rows].sum(axis=1) for r in range(enc.flip.shape[0])]
        x_r = np.stack(blocks, axis=1)                                        # (V, R)
        g = np.zeros((enc.flip.shape[0], n), dtype=np.int64)
        for si, sign in enumerate(spec.signs):
            for j in range(spec.slices):
                g += enc.flip[:, col[:, si, j]].astype(np.int64) * (sign << (j * spec.cell_bits))
        if ref is not None:
            g -= enc.flip[:, ref].astype(np.int64)[:, None] * spec.offset
        total += spec.max_level * (x_r @ g)
    return total.astype(np.float64)


def finish(y: np.ndarray, step: float, x: np.ndarray, enc: EncodedWeights, spec: AnalogSpec,
           layout: dict) -> np.ndarray:
    """y (V, N) float64, Σ(codes) after the shift-and-add, scaled in place by the ADC step Δ and
    given the digital terms: the end of a layer's product, shared by both executors."""
    if step != 1.0:
        y *= step
    extra = digital_terms(x, enc, spec, layout)
    if extra is not None:
        y += extra
    return y
