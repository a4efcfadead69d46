"""AnalogSpec: the converter and cell configuration of one analog layer (docs/analog.md).

Every count it reports (slices, physical columns, input cycles, row blocks) is the
formula of :mod:`acompile.hardware`; the spec adds the validation and the levels,
codes and number formats the arithmetic needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import hardware
from ..errors import InvalidTargetError
from ..hardware import INPUT_ENCODINGS

SIGNED_WEIGHT_SCHEMES = ("differential", "offset", "flipped")
OFFSET_SUBTRACTIONS = ("digital", "analog", "input_sum")

F32_EXACT = 2.0**24  # float32 holds every integer of magnitude below this exactly
F64_EXACT = 2.0**53  # same for float64


@dataclass(frozen=True)
class AnalogSpec:
    """Converter and cell configuration of one analog layer (docs/analog.md)."""

    weight_bits: int  # Bw, signed weight precision
    input_bits: int  # Bx, input precision at the DAC
    dac_bits: int  # d, bits applied per cycle
    cell_bits: int  # cb, bits stored per cell
    adc_bits: int  # B_adc
    rows: int  # crossbar rows: the row-block size
    signed_weights: str  # "differential" | "offset" | "flipped" (offset, columns flipped per row block)
    input_encoding: str = "twos_complement"  # signed inputs: "twos_complement" | "sign_magnitude"
    offset_subtraction: str = "digital"  # offset scheme: reference column subtracted after the ADC or before,
    # or "input_sum": no reference column, 2^(Bw-1)·Σx subtracted digitally from the input buffer's sum

    def __post_init__(self):
        for name, lo, hi in (("weight_bits", 2, 24), ("input_bits", 1, 24), ("dac_bits", 1, 16),
                             ("cell_bits", 1, 8), ("adc_bits", 1, 24), ("rows", 1, 1 << 20)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise InvalidTargetError(f"{name}={v!r}: expected an integer in [{lo}, {hi}]",
                                         where=f"AnalogSpec.{name}")
        if self.input_encoding not in INPUT_ENCODINGS:
            raise InvalidTargetError(f"input_encoding={self.input_encoding!r}: expected one of "
                                     f"{', '.join(INPUT_ENCODINGS)}", where="AnalogSpec.input_encoding")
        if self.signed_weights not in SIGNED_WEIGHT_SCHEMES:
            raise InvalidTargetError(
                f"signed_weights={self.signed_weights!r}: expected one of {SIGNED_WEIGHT_SCHEMES}",
                where="AnalogSpec.signed_weights")
        if self.offset_subtraction not in OFFSET_SUBTRACTIONS or (
                self.offset_subtraction == "analog" and (self.differential or self.flipped or self.adc_bits < 2)):
            raise InvalidTargetError(f"offset_subtraction={self.offset_subtraction!r}: expected one of "
                                     f"{OFFSET_SUBTRACTIONS}; 'analog' needs the offset scheme and a bipolar "
                                     "ADC of at least 2 bits", where="AnalogSpec.offset_subtraction")

    def to_dict(self) -> dict:
        """The spec as program.json records it (a default offset_subtraction is left out)."""
        out = asdict(self)
        if self.offset_subtraction == "digital":
            del out["offset_subtraction"]
        return out

    @property
    def differential(self) -> bool:
        return self.signed_weights == "differential"

    @property
    def magnitude_bits(self) -> int:
        """Bm: bits of the stored unsigned magnitude (Bw-1 differential, Bw offset)."""
        return hardware.magnitude_bits(self.weight_bits, self.differential)

    @property
    def slices(self) -> int:
        """S = ceil(Bm / cell_bits)."""
        return hardware.slices(self.magnitude_bits, self.cell_bits)

    @property
    def signs(self) -> tuple[int, ...]:
        """Signs of a channel's column groups, in physical column order."""
        return (1, -1) if self.differential else (1,)

    @property
    def columns_per_channel(self) -> int:
        return hardware.columns_per_weight(self.slices, self.differential)

    @property
    def offset(self) -> int:
        """2^(Bw-1) for the offset scheme (added before storing), 0 for differential."""
        return 0 if self.differential else 1 << (self.weight_bits - 1)

    @property
    def analog_offset(self) -> bool:
        """The offset scheme's reference column is subtracted in analog, before a bipolar ADC."""
        return self.offset_subtraction == "analog"

    @property
    def flipped(self) -> bool:
        """ISAAC's encoding: the offset scheme, with every (row block, column) whose levels sum to more
        than half their maximum stored as max_level - level, and corrected digitally (docs/analog.md)."""
        return self.signed_weights == "flipped"

    @property
    def reference_column(self) -> bool:
        """The layer has the offset scheme's reference column (not with differential weights, nor when
        the offset term comes from the input sum)."""
        return not self.differential and self.offset_subtraction != "input_sum"

    @property
    def input_sum_offset(self) -> bool:
        """The offset term 2^(Bw-1)·Σx is subtracted digitally, from the input buffer's sum (ISAAC);
        differential weights have no offset, so nothing to subtract."""
        return self.offset_subtraction == "input_sum" and not self.differential

    @property
    def reference_level(self) -> int:
        """Level of the reference column's cells: 1, its read scaled by 2^(Bw-1) after the ADC; or,
        subtracted in analog from the top slice, the offset's share of it, 2^(Bw-1-(S-1)*cb)."""
        if self.analog_offset:
            return self.offset >> ((self.slices - 1) * self.cell_bits)
        return 1

    @property
    def max_level(self) -> int:
        return (1 << self.cell_bits) - 1

    @property
    def max_chunk(self) -> int:
        return (1 << self.dac_bits) - 1

    @property
    def max_code(self) -> int:
        """Top ADC code: 2^B - 1, or 2^(B-1) - 1 for the bipolar ADC of analog offset subtraction."""
        return (1 << (self.adc_bits - 1)) - 1 if self.analog_offset else (1 << self.adc_bits) - 1

    @property
    def min_code(self) -> int:
        """Bottom ADC code: 0, or -max_code for a bipolar ADC."""
        return -self.max_code if self.analog_offset else 0

    @property
    def worst_case_full_scale(self) -> float:
        """F_worst = rows * (2^d - 1) * (2^cb - 1): the largest possible read current; flipped columns
        hold at most half of their rows' levels, floor(rows * (2^cb - 1) / 2)."""
        if self.flipped:
            return float(self.max_chunk * (self.rows * self.max_level // 2))
        return float(self.rows * self.max_chunk * self.max_level)

    @property
    def adc_lossless(self) -> bool:
        """True when the ADC resolves every integer current of the worst-case range."""
        return self.max_code >= self.worst_case_full_scale

    @property
    def read_dtype(self) -> type:
        """float32 when every read current (and partial sum) is exact in it, else float64."""
        return np.float32 if self.worst_case_full_scale < F32_EXACT else np.float64

    def physical_columns(self, n_out: int) -> int:
        """P: data columns of n_out channels plus the offset scheme's reference column."""
        return hardware.physical_columns(n_out, self.slices, self.differential, self.reference_column)

    def row_blocks(self, k: int) -> int:
        return hardware.row_blocks(k, self.rows)

    def cycles(self, signed: bool) -> int:
        """T: input cycles (docs/analog.md: a signed input streams its sign bit alone, or, in
        sign-magnitude, its positive and negative magnitudes in two phases)."""
        return hardware.input_cycles(self.input_bits, self.dac_bits, signed, self.input_encoding)
