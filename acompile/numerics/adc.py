"""The ADC (docs/analog.md, One read and the ADC): the step Δ, the conversion of read
currents to codes, shared by both executors so that they round alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidDataError
from .noise import NoiseSpec
from .spec import AnalogSpec


def adc_step(spec: AnalogSpec, full_scale: float | None = None) -> float:
    """Δ = max(1, F / (2^B_adc - 1)); F defaults to the worst case."""
    f = spec.worst_case_full_scale if full_scale is None else float(full_scale)
    if not math.isfinite(f) or f <= 0:
        raise InvalidDataError(f"ADC full scale {full_scale!r}: expected a finite value > 0")
    return max(1.0, f / spec.max_code)


@dataclass(frozen=True)
class Adc:
    """Everything one conversion needs; shared by both executors so they round alike."""

    step: float
    max_code: int
    min_code: int = 0  # -max_code for the bipolar ADC of analog offset subtraction
    gain: float = 0.0
    offset_lsb: float = 0.0
    integral: bool = False  # I/Δ is already an integer: rint would change nothing
    clip: bool = True  # False only when no code can leave [0, max_code]


def make_adc(spec: AnalogSpec, full_scale, noise: NoiseSpec | None, exact_reads: bool) -> Adc:
    """The ADC of a layer read at full scale F (None: worst case) with noise's offset and gain;
    exact_reads says every current is an integer (ideal cells, no read noise)."""
    step = adc_step(spec, full_scale)
    gain = offset = 0.0
    own_offsets = False
    if noise is not None:
        gain, offset = float(noise.adc_gain_error), float(noise.adc_offset_lsb)
        own_offsets = bool(noise.adc_offset_sigma_lsb)
    plain = exact_reads and gain == 0 and offset == 0 and not own_offsets
    dt = spec.read_dtype
    # Exact reads never exceed F_worst in magnitude; skip the clip when F_worst / Δ (as the
    # read dtype computes it) cannot round beyond the top code.
    top = spec.worst_case_full_scale / float(dt(step))
    return Adc(step, spec.max_code, spec.min_code, gain, offset, integral=plain and step == 1.0,
               clip=not (plain and top * (1 + 1e-6) < spec.max_code + 0.5))


def adc_codes(i: np.ndarray, adc: Adc, own_offsets: np.ndarray | None = None) -> np.ndarray:
    """Convert read currents to ADC codes, in place, in i's dtype.

    code = clip(rint(I / Δ * (1 + gain) + offset + own offset), min code, max code), the
    own offsets (LSB, each ADC's: ``ColumnErrors.offset_lsb``) broadcast against i. Δ is rounded to i's dtype first; every operation is an elementwise
    IEEE operation, so any caller with the same I gets the same codes whatever the array shape.
    """
    t = i.dtype.type
    if adc.step != 1.0:
        np.divide(i, t(adc.step), out=i)
    if adc.gain:
        np.multiply(i, t(1.0 + adc.gain), out=i)
    if adc.offset_lsb:
        np.add(i, t(adc.offset_lsb), out=i)
    if own_offsets is not None:
        np.add(i, own_offsets.astype(i.dtype, copy=False), out=i)
    if not adc.integral:
        np.rint(i, out=i)
    if adc.clip:
        np.clip(i, t(adc.min_code), t(adc.max_code), out=i)
    return i
