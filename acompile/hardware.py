"""The hardware formulas: one definition each, as pure functions of plain numbers.

The compiler (precision, partition, replicate), the simulator's ``AnalogSpec``, the
cost model and ``acompile targets show --summary`` all compute these figures here,
so they cannot disagree. Arguments are integers unless a name ends in ``_ns``.
"""

from __future__ import annotations

INPUT_ENCODINGS = ("twos_complement", "sign_magnitude")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def magnitude_bits(weight_bits: int, differential: bool) -> int:
    """Bm: bits of a stored weight magnitude, Bw-1 differential or Bw offset (docs/analog.md, Signed weights)."""
    return weight_bits - 1 if differential else weight_bits


def slices(magnitude_bits: int, cell_bits: int) -> int:
    """S = ceil(Bm / cell_bits): cells holding one weight magnitude (docs/analog.md, Signed weights)."""
    return _ceil_div(magnitude_bits, cell_bits)


def columns_per_weight(slices: int, differential: bool) -> int:
    """Physical columns of one output channel: S, twice for the differential pair (docs/analog.md)."""
    return slices * (2 if differential else 1)


def physical_columns(n_out: int, slices: int, differential: bool, reference: bool | None = None) -> int:
    """P = n_out columns per weight, plus the offset scheme's one reference column (docs/analog.md).

    ``reference`` False: the offset term is subtracted digitally from the input sum (ISAAC), no column.
    """
    has_ref = (not differential) if reference is None else reference
    return n_out * columns_per_weight(slices, differential) + (1 if has_ref else 0)


def row_blocks(k_in: int, rows: int) -> int:
    """ceil(K / rows): row blocks of a K-row matrix, read and accumulated separately (docs/analog.md, One read)."""
    return _ceil_div(k_in, rows)


def input_cycles(input_bits: int, dac_bits: int, signed: bool, encoding: str = "twos_complement") -> int:
    """T: DAC cycles per input vector (docs/analog.md, Bit-serial inputs).

    Unsigned: ceil(Bx/d). Signed two's complement: ceil((Bx-1)/d) cycles for the low bits and
    the sign bit alone in one more. Signed sign-magnitude: ceil((Bx-1)/d) per sign phase, two phases.
    """
    if not signed:
        return _ceil_div(input_bits, dac_bits)
    low = _ceil_div(input_bits - 1, dac_bits)
    return 2 * low if encoding == "sign_magnitude" else low + 1


def adcs_per_crossbar(cols: int, columns_per_adc: int) -> int:
    """ceil(cols / columns_per_adc): ADCs shared by a crossbar's columns (docs/cost.md)."""
    return _ceil_div(cols, columns_per_adc)


def cycle_time_ns(read_ns: float, columns: int, adcs: int, adc_ns: float,
                  hold_ns: float = 0.0, pipelined: bool = False) -> float:
    """One read cycle of `columns` columns (docs/cost.md, Timing).

    The stages are the read (t_read), the sample-and-hold (t_sh) and the conversions
    (ceil(columns / adcs) * t_adc). In series they add up; pipelined (the columns are sampled
    and held, so the next read overlaps the conversions, as in ISAAC) a cycle is the slowest stage.
    """
    stages = (read_ns, hold_ns, _ceil_div(columns, adcs) * adc_ns)
    return max(stages) if pipelined else sum(stages)


def pipeline_fill_ns(read_ns: float, columns: int, adcs: int, adc_ns: float,
                     hold_ns: float = 0.0, pipelined: bool = False) -> float:
    """Extra latency of the first read of a pipelined stream: all stages minus one cycle (0 in series)."""
    total = read_ns + hold_ns + _ceil_div(columns, adcs) * adc_ns
    return total - cycle_time_ns(read_ns, columns, adcs, adc_ns, hold_ns, pipelined)


def weights_per_crossbar(rows: int, cols: int, columns_per_weight: int) -> int:
    """Whole weights one crossbar holds: rows * floor(cols / columns per weight) (targets show --summary)."""
    return rows * (cols // columns_per_weight)


def macs_per_crossbar_cycle(rows: int, cols: int, columns_per_weight: int) -> float:
    """Multiply-accumulates one fully used crossbar does per read cycle (targets show --summary)."""
    return rows * cols / columns_per_weight


def peak_tops(crossbars: int, macs_per_cycle: float, input_cycles: int, cycle_ns: float) -> float:
    """Peak tera-operations/s: 2 ops per MAC on every crossbar, T cycles per vector (targets show --summary)."""
    return 2 * crossbars * macs_per_cycle / (input_cycles * cycle_ns) / 1e3


def encoding_ops(k_in: int, n_out: int, row_blocks: int, input_sum: bool, flipped: bool) -> int:
    """Digital additions a matrix's weight encoding needs per input vector (docs/cost.md, Encoding).

    ``offset_subtraction = "input_sum"``: the input's sum (k_in adds) and one subtraction of
    2^(Bw-1)*sum(x) per output. ``signed_weights = "flipped"``: the row blocks' input sums (the same
    k_in adds) and one correction per (row block, output), counted whether or not that output's
    columns in the block were flipped (the adder is there either way).
    """
    if not (input_sum or flipped):
        return 0
    return k_in + (n_out if input_sum else 0) + (row_blocks * n_out if flipped else 0)
