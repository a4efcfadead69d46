"""Device non-idealities (docs/analog.md, Non-idealities): the NoiseSpec, the programmed
conductance of every cell, each column's gain and each ADC's offset, and the scale of the
noise drawn on every read (read noise and kT/C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidDataError, InvalidTargetError
from .spec import AnalogSpec


@dataclass(frozen=True)
class NoiseSpec:
    """Device non-idealities (docs/analog.md); every field at its default means 'off'."""

    g_min_us: float = 0.0  # conductance of level 0 (finite on/off ratio when > 0)
    g_max_us: float = 1.0  # conductance of the top level
    programming_sigma: float = 0.0  # std of programming noise, fraction of the level range
    read_sigma: float = 0.0  # std of read noise per read, fraction of the ADC full scale F in use
    stuck_at_zero_rate: float = 0.0  # fraction of cells stuck at level 0 (g_min)
    stuck_at_max_rate: float = 0.0  # fraction of cells stuck at the top level (g_max)
    adc_offset_lsb: float = 0.0  # added to I/Δ before rounding
    adc_gain_error: float = 0.0  # I/Δ is multiplied by (1 + gain error)
    drift_nu_mean: float = 0.0  # drift exponent ν per cell ~ N(mean, std)
    drift_nu_std: float = 0.0
    drift_t0_s: float = 1.0  # time of programming-verify reference
    drift_time_s: float = 0.0  # time since programming at which the layer is read
    drift_compensation: bool = False  # multiply by the global factor (t/t0)^ν_mean
    column_gain_sigma: float = 0.0  # std of each column's gain error (capacitor mismatch), per array
    adc_offset_sigma_lsb: float = 0.0  # std of each ADC's own offset, drawn once per ADC
    ktc_sigma: float = 0.0  # std of kT/C noise per read, fraction of the worst-case full scale
    columns_per_adc: int = 1  # columns that share one ADC, and so its offset

    def __post_init__(self):
        def bad(name, expected):
            raise InvalidTargetError(f"{name}={getattr(self, name)!r}: expected {expected}",
                                     where=f"noise.{name}")

        for name in ("g_min_us", "g_max_us", "programming_sigma", "read_sigma", "adc_offset_lsb",
                     "adc_gain_error", "drift_nu_mean", "drift_nu_std", "drift_t0_s", "drift_time_s",
                     "stuck_at_zero_rate", "stuck_at_max_rate", "column_gain_sigma", "adc_offset_sigma_lsb",
                     "ktc_sigma"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
                bad(name, "a finite number")
        for name in ("g_min_us", "programming_sigma", "read_sigma", "drift_nu_std", "drift_time_s",
                     "stuck_at_zero_rate", "stuck_at_max_rate", "column_gain_sigma", "adc_offset_sigma_lsb",
                     "ktc_sigma"):
            if getattr(self, name) < 0:
                bad(name, "a value >= 0")
        if self.g_max_us <= self.g_min_us:
            bad("g_max_us", f"a value above g_min_us={self.g_min_us}")
        if self.stuck_at_zero_rate + self.stuck_at_max_rate > 1:
            bad("stuck_at_max_rate", "stuck-at rates that sum to at most 1")
        if self.drift_t0_s <= 0:
            bad("drift_t0_s", "a value > 0")
        if self.adc_gain_error <= -1:
            bad("adc_gain_error", "a value > -1")
        if isinstance(self.columns_per_adc, bool) or not isinstance(self.columns_per_adc, (int, np.integer)) \
                or self.columns_per_adc < 1:
            bad("columns_per_adc", "an integer >= 1")

    @property
    def drifts(self) -> bool:
        return (self.drift_time_s > self.drift_t0_s
                and (self.drift_nu_mean != 0 or self.drift_nu_std != 0))

    @property
    def programs_levels(self) -> bool:
        """Every cell holds its level's conductance, g_min's leak included: no programming noise,
        stuck cells or drift. The executors then read the integer levels and add the leak."""
        return (self.programming_sigma == 0 and self.stuck_at_zero_rate == 0 and self.stuck_at_max_rate == 0
                and not self.drifts)

    @property
    def programs_ideally(self) -> bool:
        """No programming-time effect: program_cells would return the levels unchanged."""
        return self.g_min_us == 0 and self.programs_levels

    @property
    def reads_ideally(self) -> bool:
        """No read-time effect (read or kT/C noise, column gains, ADC offsets or gain error)."""
        return (self.read_sigma == 0 and self.adc_offset_lsb == 0 and self.adc_gain_error == 0
                and self.ktc_sigma == 0 and self.column_gain_sigma == 0 and self.adc_offset_sigma_lsb == 0)

    @property
    def is_ideal(self) -> bool:
        return self.programs_ideally and self.reads_ideally


def generator(rng, what: str) -> np.random.Generator:
    """numpy's Generator for rng (a seed or a Generator); None is refused so results reproduce."""
    if rng is None:
        raise InvalidDataError(f"{what} needs a seeded numpy Generator (rng=...) so that "
                               "results are reproducible")
    return np.random.default_rng(rng)


def leak_levels(spec: AnalogSpec, noise: NoiseSpec | None) -> float:
    """g_min in level units, g_min / Δg: the conductance every cell has beyond its level's."""
    if noise is None or not noise.g_min_us:
        return 0.0
    return noise.g_min_us / ((noise.g_max_us - noise.g_min_us) / float(spec.max_level))


def program_cells(levels: np.ndarray, spec: AnalogSpec, noise: NoiseSpec, rng=None) -> np.ndarray:
    """Effective conductance of every cell after programming, in level units, float32 (K, P).

    Level l has conductance g_min + l*Δg, Δg = (g_max - g_min)/(2^cb - 1); in level units
    l + g_min/Δg. Draws from rng, only for the effects that are on, in this order:
    1. stuck-at: one uniform u per cell; u < rate0 -> stuck at level 0,
       rate0 <= u < rate0 + rate_max -> stuck at the top level;
    2. programming noise: l + N(0, σ_prog * (2^cb - 1)) per cell;
    3. drift: ν per cell ~ N(ν_mean, ν_std) (drawn only when ν_std > 0).
    Programmed conductances are clipped at 0 (a conductance is never negative), then
    drift scales them by (t/t0)^(-ν) (t > t0), times (t/t0)^(ν_mean) when compensated.
    Stuck cells take exactly the conductance of their level: no programming noise, no drift.
    """
    lv = np.asarray(levels)
    if lv.ndim != 2:
        raise InvalidDataError(f"levels must be 2-D (K, P), got shape {lv.shape}")
    if lv.size and lv.max() > spec.max_level:
        raise InvalidDataError(f"cell level {lv.max()} exceeds {spec.max_level}")
    g = lv.astype(np.float32)
    if noise.programs_ideally:
        return g
    top = float(spec.max_level)
    leak = np.float32(leak_levels(spec, noise))
    random = (noise.stuck_at_zero_rate or noise.stuck_at_max_rate or noise.programming_sigma
              or (noise.drifts and noise.drift_nu_std))
    gen = generator(rng, "program_cells with random non-idealities") if random else None
    stuck0 = stuck1 = None
    if noise.stuck_at_zero_rate or noise.stuck_at_max_rate:
        u = gen.random(g.shape, dtype=np.float32)
        r0 = np.float32(noise.stuck_at_zero_rate)
        stuck0 = u < r0
        stuck1 = (u >= r0) & (u < np.float32(noise.stuck_at_zero_rate + noise.stuck_at_max_rate))
        del u
    if noise.programming_sigma:
        g += gen.standard_normal(g.shape, dtype=np.float32) * np.float32(noise.programming_sigma * top)
    if leak:
        g += leak
    np.maximum(g, 0, out=g)
    if noise.drifts:
        ratio = noise.drift_time_s / noise.drift_t0_s
        if noise.drift_nu_std:
            nu = gen.standard_normal(g.shape, dtype=np.float32)
            nu *= np.float32(noise.drift_nu_std)
            nu += np.float32(noise.drift_nu_mean)
            g *= np.power(np.float32(ratio), -nu)
        else:
            g *= np.float32(ratio ** -noise.drift_nu_mean)
        if noise.drift_compensation:
            g *= np.float32(ratio ** noise.drift_nu_mean)
    if stuck0 is not None:
        g[stuck0] = leak
        g[stuck1] = np.float32(top) + leak
    return g


@dataclass(frozen=True, eq=False)
class ColumnErrors:
    """Static errors of one programmed matrix's columns, (row blocks, P) each, None when off:
    each column's gain factor (capacitor mismatch) and its ADC's offset in LSB."""

    gain: np.ndarray | None = None
    offset_lsb: np.ndarray | None = None


def column_errors(spec: AnalogSpec, noise: NoiseSpec, shape: tuple[int, int], rng) -> ColumnErrors | None:
    """The column errors of a (K, P) matrix, drawn once per programmed chip; None when off.

    Each row block is an array of its own. Draws from rng, only for the effects that are on:
    1. gain: max(0, 1 + σ_gain * z), one normal z per column, float64 (row blocks, P);
    2. offset: σ_offset * z LSB, one normal per ADC: columns c, c+1, ... of a group of
       ``columns_per_adc`` share theirs, (row blocks, ceil(P / columns_per_adc)).
    """
    if not (noise.column_gain_sigma or noise.adc_offset_sigma_lsb):
        return None
    gen = generator(rng, "column errors")
    blocks, p = spec.row_blocks(shape[0]), shape[1]
    gain = offset = None
    if noise.column_gain_sigma:
        gain = np.maximum(0.0, 1.0 + noise.column_gain_sigma * gen.standard_normal((blocks, p)))
    if noise.adc_offset_sigma_lsb:
        per = noise.columns_per_adc
        draws = gen.standard_normal((blocks, -(-p // per))) * noise.adc_offset_sigma_lsb
        offset = np.repeat(draws, per, axis=1)[:, :p]
    return ColumnErrors(gain, offset)


BOLTZMANN = 1.380649e-23  # J/K


def ktc_sigma(temperature_k: float, rows: int, unit_capacitance_ff: float, full_scale_mv: float) -> float:
    """kT/C noise of a charge-shared column as a fraction of its full-scale swing:
    sqrt(k T / (rows * C_unit)) / V_full_scale; 0 when the capacitance or swing is not given."""
    if unit_capacitance_ff <= 0 or full_scale_mv <= 0:
        return 0.0
    return math.sqrt(BOLTZMANN * temperature_k / (rows * unit_capacitance_ff * 1e-15)) / (full_scale_mv * 1e-3)


def read_noise_scale(spec: AnalogSpec, full_scale) -> float:
    """Read noise is relative to the ADC's full scale F in use (calibrated, else worst case):
    the signal range the column is designed for, as aihwkit's out_noise is relative to out_bound."""
    return spec.worst_case_full_scale if full_scale is None else float(full_scale)


def read_noise_sigma(spec: AnalogSpec, noise: NoiseSpec | None, full_scale) -> float:
    """Std of the noise drawn on every read, in read-current units: read noise (σ_read * F in
    use) and kT/C noise (σ_kTC * F_worst: a voltage on the column's physical swing, whatever
    range the ADC is calibrated to), independent, so their variances add."""
    if noise is None:
        return 0.0
    sigma = noise.read_sigma * read_noise_scale(spec, full_scale)
    if noise.ktc_sigma:
        sigma = math.hypot(sigma, noise.ktc_sigma * spec.worst_case_full_scale)
    return sigma
