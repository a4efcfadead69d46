"""The target-file schema as data: the Field type and the one table of fields.

Everything that knows what a target file may contain derives from ``FIELDS``
and ``TABLES`` (:mod:`.tables`): the validator (:mod:`.validate`), the typed sections of a
:class:`~acompile.target.model.Target`, the JSON Schema (:mod:`.json_schema`,
also ``targets/schema.json``) and the field reference in ``targets/README.md``
(scripts/gen_target_docs.py). Add a field here and all of them follow.

A path segment ``*`` stands for a name the author chooses (a component name, an
ONNX op type), e.g. ``core.components.*.power_mw``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .scaling import ANCHOR_FIELDS, RULE_FIELDS
from .tables import TABLES  # noqa: F401  (re-exported: the tables beside their fields)

SCHEMA_VERSION = 1

# Names an author may choose for a ``*`` segment: short, no dots or spaces, so
# that a dotted path stays unambiguous.
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"


class _Required:
    """Marker for a field with no default: the resolved target must set it."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Field:
    """One key of a target file.

    ``kind`` is one of int, float, bool, str, enum. ``lo``/``hi`` bound numbers
    (``*_open`` makes the bound exclusive). ``default`` is a value, REQUIRED, or
    -- with ``default_from`` -- the value of another field. ``inherit=False``
    marks per-file metadata that ``extends`` does not pass down. ``contract``
    marks the fields the compiler core reads (docs/ARCHITECTURE.md).
    """

    path: str
    kind: str
    doc: str
    unit: str = ""
    default: object = REQUIRED
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    max_len: int = 200
    inherit: bool = True
    contract: bool = False
    default_from: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and not self.default_from

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def table(self) -> str:
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""

    @property
    def python_type(self) -> object:
        """The Python type of a resolved value: what a typed target section holds."""
        if self.kind == "enum":
            return Literal[self.choices]
        return {"int": int, "float": float, "bool": bool, "str": str}[self.kind]

    def expected(self) -> str:
        """What a valid value looks like, for error messages and the docs."""
        unit = f" ({self.unit})" if self.unit else ""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return f"a string of at most {self.max_len} characters"
        if self.kind == "enum":
            return "one of " + ", ".join(f"'{c}'" for c in self.choices)
        noun = "an integer" if self.kind == "int" else "a number"
        return f"{noun} {self.range_text()}{unit}".replace("  ", " ").rstrip()

    def range_text(self) -> str:
        lo, hi = self.lo, self.hi
        if lo is not None and lo == hi:
            return f"= {number_text(lo)}"
        if lo is not None and hi is not None:
            if self.kind == "int":
                return f"in {int(lo)}..{int(hi)}"
            left = "(" if self.lo_open else "["
            right = ")" if self.hi_open else "]"
            return f"in {left}{number_text(lo)}, {number_text(hi)}{right}"
        if lo is not None:
            return f"{'>' if self.lo_open else '>='} {number_text(lo)}"
        if hi is not None:
            return f"{'<' if self.hi_open else '<='} {number_text(hi)}"
        return ""

    def in_range(self, value: float) -> bool:
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return False
        return True


def number_text(x: float) -> str:
    """Short text for a bound: 1e+06 rather than 1000000.0, 16 rather than 16.0."""
    if float(x).is_integer() and abs(x) < 1e5:
        return str(int(x))
    return f"{x:g}"


# --- small constructors keep the table below readable ------------------------

_BIG = 1e9          # generous upper bound for sizes and counts nobody builds
_E_MAX = 1e7        # pJ: 10 µJ for one event is already absurd
_T_MAX = 1e6        # ns: 1 ms for one event
_P_MAX = 1e6        # mW: 1 kW
_A_MAX_MM2 = 1e5    # mm²: a whole wafer
_A_MAX_UM2 = 1e8    # µm²: 100 mm²


def _int(path, doc, lo, hi, default=REQUIRED, **kw) -> Field:
    return Field(path, "int", doc, default=default, lo=lo, hi=hi, **kw)


def _float(path, doc, unit, lo, hi, default=REQUIRED, **kw) -> Field:
    return Field(path, "float", doc, unit=unit, default=default, lo=lo, hi=hi, **kw)


def _energy(path, doc, default=REQUIRED, **kw) -> Field:
    return _float(path, doc, "pJ", 0.0, _E_MAX, default, **kw)


def _time(path, doc, default=REQUIRED, **kw) -> Field:
    return _float(path, doc, "ns", 0.0, _T_MAX, default, lo_open=True, **kw)


def _power(path, doc, default=0.0, **kw) -> Field:
    return _float(path, doc, "mW", 0.0, _P_MAX, default, **kw)


def _area_um2(path, doc, default=0.0, **kw) -> Field:
    return _float(path, doc, "µm²", 0.0, _A_MAX_UM2, default, **kw)


def _area_mm2(path, doc, default=0.0, **kw) -> Field:
    return _float(path, doc, "mm²", 0.0, _A_MAX_MM2, default, **kw)


def _components(level: str, where: str) -> list[Field]:
    """The named-component table of one hierarchy level."""
    base = f"{level}.components.*"
    return [
        _int(f"{base}.count", f"how many of this component one {where} has (0 removes an inherited one)",
             0, _BIG, default=1),
        _power(f"{base}.power_mw", "power of ONE unit, at the design's clock", default=REQUIRED),
        _area_mm2(f"{base}.area_mm2", "area of ONE unit", default=REQUIRED),
        _int(f"{base}.shared_by", f"how many {where}s share one unit (a router shared by 4 tiles: 4); "
             f"the {where} is charged power and area / shared_by", 1, 1e6, default=1),
        Field(f"{base}.spec", "str", "free text: what it is (\"8-bit SAR, 1.2 GS/s\")", default=""),
    ]


_ALL_FIELDS: list[Field] = [
    # --- top level -----------------------------------------------------------
    _int("schema_version", f"version of this schema; must be {SCHEMA_VERSION}", SCHEMA_VERSION,
         SCHEMA_VERSION, inherit=False),
    Field("name", "str", "short name of the target (shown in reports)", max_len=64, inherit=False),
    Field("description", "str", "one paragraph: what design this describes", default="",
          max_len=2000, inherit=False),
    Field("extends", "str", "a shipped target name (\"isaac\") or a path relative to this file; "
          "tables merge, values here replace", default="", inherit=False),
    # --- precision -----------------------------------------------------------
    _int("precision.weight_bits", "Bw: signed weight precision", 2, 16, contract=True),
    _int("precision.input_bits", "Bx: input (activation) precision at the DAC", 1, 16, contract=True),
    _float("precision.input_percentile", "percentile of |x| on calibration data that sets the input "
           "scale s_x (100 = max)", "%", 50.0, 100.0, default=100.0, lo_open=True, contract=True),
    # --- crossbar ------------------------------------------------------------
    Field("crossbar.device", "str", "device technology, free text (\"ReRAM\", \"PCM\", \"ECRAM\")", default=""),
    _int("crossbar.rows", "rows (inputs) per array", 2, 8192, contract=True),
    _int("crossbar.cols", "physical columns per array", 2, 8192, contract=True),
    _int("crossbar.cell_bits", "bits stored per cell", 1, 8, contract=True),
    Field("crossbar.signed_weights", "enum", "how signed weights are stored (docs/analog.md): two columns "
          "per weight; or unsigned with an offset (see offset_subtraction); or \"flipped\": the offset "
          "scheme with each column of a row block stored complemented when its levels sum past half their "
          "maximum, so the ADC sees at most half the range (ISAAC)",
          choices=("differential", "offset", "flipped"), contract=True),
    Field("crossbar.share_between_layers", "bool", "may blocks of different layers share one array",
          default=False, contract=True),
    _float("crossbar.g_min_us", "conductance of level 0 (finite on/off ratio; only g_min/g_max matters "
           "to the simulator)", "µS", 0.0, 1e6, default=0.0),
    _float("crossbar.g_max_us", "conductance of the top level", "µS", 0.0, 1e6, default=1.0, lo_open=True),
    _time("crossbar.read_latency_ns", "t_read: one analog read of the array", contract=True),
    _energy("crossbar.read_energy_pj", "one array read: all active rows and columns, one cycle", contract=True),
    _area_um2("crossbar.area_um2", "one array (cells only)", contract=True),
    _power("crossbar.power_mw", "one array while computing, at the design's read rate"),
    _power("crossbar.idle_power_mw", "one array held but idle (leakage; docs/cost.md, Idle power)"),
    Field("crossbar.storage", "enum", "what a cell holds: a programmed analog level (conductance, charge), or "
          "exact bits (SRAM), which have no programming noise, drift or stuck cells", default="analog",
          choices=("analog", "digital")),
    Field("crossbar.compute", "enum", "how a column sums its products: currents on a bitline, or charges on "
          "per-cell capacitors shared onto the column", default="current", choices=("current", "charge")),
    _float("crossbar.unit_capacitance_ff", "compute = \"charge\": one cell's capacitor; with rows it sets the "
           "kT/C noise of a column (0 = not modelled)", "fF", 0.0, 1e4, default=0.0, contract=True),
    _float("crossbar.full_scale_mv", "compute = \"charge\": column voltage at the worst-case full scale, for kT/C",
           "mV", 0.0, 1e5, default=0.0, contract=True),
    Field("crossbar.offset_subtraction", "enum", "signed_weights = \"offset\": the reference column is "
          "subtracted after the ADCs, or from each column's signal before its ADC, which then sees only the "
          "signed part (a bipolar ADC); or \"input_sum\": no reference column, the offset term 2^(Bw-1)·Σx "
          "is subtracted digitally from the input buffer's sum (ISAAC)", default="digital",
          choices=("digital", "analog", "input_sum"), contract=True),
    # --- dac -------------------------------------------------------------------
    _int("dac.bits", "DAC resolution: input bits applied per cycle", 1, 16, contract=True),
    Field("dac.kind", "enum", "\"none\": no DAC, input bits streamed one per cycle by the row drivers "
          "(needs bits = 1; the dac.* figures are then the row drivers')", default="dac", choices=("dac", "none")),
    Field("dac.input_encoding", "enum", "how signed inputs are streamed (docs/analog.md): two's complement "
          "with the sign bit in a cycle of its own, or sign-magnitude in a positive and a negative phase",
          choices=("twos_complement", "sign_magnitude"), default="twos_complement"),
    _energy("dac.energy_pj", "one conversion (one row driven for one cycle)", contract=True),
    _float("dac.latency_ns", "one conversion (0 = hidden in the read)", "ns", 0.0, _T_MAX, default=0.0),
    _area_um2("dac.area_um2", "one DAC; a crossbar has one per row"),
    _power("dac.power_mw", "one DAC while computing"),
    _power("dac.idle_power_mw", "one DAC held but idle (leakage)"),
    # --- adc -------------------------------------------------------------------
    _int("adc.bits", "ADC resolution", 1, 16, contract=True),
    _int("adc.columns_per_adc", "columns multiplexed onto one ADC; ADCs per crossbar = ceil(cols / this)",
         1, 8192, contract=True),
    _energy("adc.energy_pj", "one conversion", contract=True),
    _time("adc.conversion_ns", "t_adc: one conversion", contract=True),
    Field("adc.pipelined", "bool", "columns held after a read, so the next read overlaps the conversions: a "
          "cycle is the slowest of read, hold, conversions (docs/cost.md)", default=False, contract=True),
    _float("adc.sample_hold_ns", "t_sh: sampling the columns onto the hold capacitors (0 = part of the read)",
           "ns", 0.0, _T_MAX, default=0.0, contract=True),
    Field("adc.range", "enum", "how the full-scale range F is chosen: the worst case rows*(2^dac-1)*(2^cell-1), "
          "or calibrated on data", default="worst_case", choices=("worst_case", "calibrated"), contract=True),
    _float("adc.percentile", "for range = \"calibrated\": percentile of observed column values that sets F",
           "%", 50.0, 100.0, default=100.0, lo_open=True, contract=True),
    _area_um2("adc.area_um2", "one ADC"),
    _power("adc.power_mw", "one ADC while converting"),
    _power("adc.idle_power_mw", "one ADC held but idle (leakage)"),
    # --- shift_add -------------------------------------------------------------
    _energy("shift_add.energy_pj", "one shift-and-add operation", contract=True),
    _int("shift_add.units_per_core", "shift-and-add units per core (for power and area)", 0, _BIG, default=0),
    _area_um2("shift_add.area_um2", "one unit"),
    _power("shift_add.power_mw", "one unit"),
    # --- organisation ----------------------------------------------------------
    _int("organisation.crossbars_per_core", "arrays per core", 1, 65536, contract=True),
    _int("organisation.cores_per_tile", "cores per tile", 1, 4096, contract=True),
    _int("organisation.tiles_per_chip", "tiles per chip", 1, 1_000_000, contract=True),
    *_components("core", "core"),
    *_components("tile", "tile"),
    *_components("chip", "chip"),
    # --- digital ---------------------------------------------------------------
    _energy("digital.energy_pj", "default energy of one digital element-op", contract=True),
    _time("digital.latency_ns", "default latency of one digital op on one lane", contract=True),
    _int("digital.lanes_per_tile", "digital element-ops a tile runs in parallel", 1, _BIG, contract=True),
    _energy("digital.ops.*.energy_pj", "energy of one element-op of this ONNX op type",
            default_from="digital.energy_pj", contract=True),
    _time("digital.ops.*.latency_ns", "latency of one element-op of this ONNX op type on one lane",
          default_from="digital.latency_ns", contract=True),
    # --- buffer ----------------------------------------------------------------
    _float("buffer.size_kb", "capacity of one tile buffer (1 KB = 1024 bytes)", "KB", 0.0, 1e7, lo_open=True),
    _energy("buffer.energy_per_byte_pj", "read or write of one byte", contract=True),
    _area_mm2("buffer.area_mm2", "one tile buffer"),
    _power("buffer.power_mw", "one tile buffer"),
    # --- network ---------------------------------------------------------------
    Field("network.topology", "enum", "how tiles are connected", default="mesh", choices=("mesh",)),
    _energy("network.energy_per_byte_hop_pj", "moving one byte across one router hop", contract=True),
    _time("network.hop_latency_ns", "one hop", contract=True),
    _float("network.bytes_per_ns", "bandwidth of one link (1 B/ns = 1 GB/s)", "B/ns", 0.0, 1e6,
           lo_open=True, contract=True),
    _int("network.tiles_per_router", "tiles that share one router", 1, 1024, default=1),
    _power("network.router_power_mw", "one router"),
    _area_mm2("network.router_area_mm2", "one router"),
    # --- chip ------------------------------------------------------------------
    _float("chip.process_nm", "CMOS process node (0 = not stated)", "nm", 0.0, 1000.0, default=0.0),
    _int("chip.io_links", "chip-to-chip links", 0, 1024, default=0),
    _power("chip.io_link_power_mw", "one chip-to-chip link"),
    _area_mm2("chip.io_link_area_mm2", "one chip-to-chip link"),
    _energy("chip.io_energy_per_byte_pj", "moving one byte to another chip", contract=True),
    _float("chip.io_bytes_per_ns", "bandwidth of one link (0 = not modelled)", "B/ns", 0.0, 1e6, default=0.0),
    _power("chip.static_power_mw", "power not itemised anywhere else (leakage, clock tree...)"),
    # --- clock -----------------------------------------------------------------
    _float("clock.frequency_mhz", "digital clock", "MHz", 0.0, 1e5, lo_open=True, contract=True),
    # --- noise (docs/analog.md "Non-idealities") -------------------------------
    _float("noise.programming_sigma", "std of programming error, as a fraction of g_max - g_min; "
           "drawn once per cell", "", 0.0, 1.0, default=0.0, contract=True),
    _float("noise.read_sigma", "std of read noise on each column value, as a fraction of the ADC's full "
           "scale F in use (calibrated, else worst case); drawn every read", "", 0.0, 1.0, default=0.0,
           contract=True),
    _float("noise.stuck_at_zero_rate", "fraction of cells stuck at level 0", "", 0.0, 1.0, default=0.0,
           contract=True),
    _float("noise.stuck_at_max_rate", "fraction of cells stuck at the top level", "", 0.0, 1.0, default=0.0,
           contract=True),
    _float("noise.adc_offset_lsb", "ADC offset", "LSB", -16.0, 16.0, default=0.0, contract=True),
    _float("noise.adc_gain_error", "ADC gain error as a fraction (0.01 = +1 %)", "", -0.5, 0.5,
           default=0.0, contract=True),
    _float("noise.drift_nu_mean", "mean drift exponent nu in g*(t/t0)^(-nu)", "", 0.0, 1.0, default=0.0,
           contract=True),
    _float("noise.drift_nu_std", "std of nu across cells", "", 0.0, 1.0, default=0.0, contract=True),
    _float("noise.drift_t0_s", "t0: time after programming of the reference read", "s", 0.0, 1e9,
           default=0.0, contract=True),
    _float("noise.drift_time_s", "t: time after programming at which inference runs (0 = no drift)", "s",
           0.0, 1e10, default=0.0, contract=True),
    Field("noise.drift_compensation", "bool", "scale outputs by the global factor (t/t0)^nu_mean",
          default=False, contract=True),
    _float("noise.column_gain_sigma", "std of each column's gain error (capacitor mismatch), as a fraction; "
           "drawn once per column of each programmed array", "", 0.0, 0.5, default=0.0, contract=True),
    _float("noise.adc_offset_sigma_lsb", "std of each ADC's own offset; drawn once per ADC", "LSB", 0.0, 16.0,
           default=0.0, contract=True),
    _float("noise.temperature_k", "temperature of the kT/C noise (crossbar.unit_capacitance_ff); drawn every "
           "read", "K", 0.0, 1000.0, default=300.0, lo_open=True, contract=True),
    # --- scaling: the rules, their anchors and sources (names and docs beside the laws, in scaling.py) ---
    *(Field(f"scaling.{path}", "enum", doc, default="fixed", choices=choices) for path, doc, choices in RULE_FIELDS),
    *(_int(f"scaling.{c}.at_{p}", f"{c}.{p} at which the {c}.* figures are stated (0 = no rule)", 0, hi, default=0)
      for c, p, hi in ANCHOR_FIELDS),
    *(Field(f"scaling.{c}.source", "str", "where the rule comes from", default="", max_len=500)
      for c in ("adc", "dac", "crossbar")),
    # --- published -------------------------------------------------------------
    _float("published.peak_tops", "peak throughput the paper reports (0 = not published)", "TOPS",
           0.0, 1e6, default=0.0, inherit=False),
    _float("published.tops_per_w", "energy efficiency the paper reports", "TOPS/W", 0.0, 1e6, default=0.0,
           inherit=False),
    _float("published.tops_per_mm2", "area efficiency the paper reports", "TOPS/mm²", 0.0, 1e6, default=0.0,
           inherit=False),
    Field("published.source", "str", "where the published figures come from", default="", max_len=500,
          inherit=False),
    _float("published.power_w", "power the paper or product sheet reports (0 = not published)", "W", 0.0, 1e6,
           default=0.0, inherit=False),
    _int("published.weight_bits", "weight precision the figures were measured at (0 = precision.weight_bits); "
         "--summary scales them to the file's precision", 0, 16, default=0, inherit=False),
    _int("published.input_bits", "input precision the figures were measured at (0 = precision.input_bits)",
         0, 16, default=0, inherit=False),
    Field("published.scope", "enum", "what the figures cover: the whole chip, or only the analog macro "
          "(arrays and converters; the file then itemises only those)", default="chip",
          choices=("chip", "macro"), inherit=False),
]

FIELDS: tuple[Field, ...] = tuple(_ALL_FIELDS)

# Key-name suffix -> unit. Every numeric key that has a unit says it in its name.
UNIT_SUFFIXES: dict[str, str] = {
    "_pj": "pJ", "_ns": "ns", "_mw": "mW", "_um2": "µm²", "_mm2": "mm²", "_us": "µS",
    "_mhz": "MHz", "_kb": "KB", "_s": "s", "_lsb": "LSB", "_nm": "nm", "bytes_per_ns": "B/ns",
    "_percentile": "%", "percentile": "%", "_tops": "TOPS", "tops_per_w": "TOPS/W", "tops_per_mm2": "TOPS/mm²",
    "_ff": "fF", "_mv": "mV", "_k": "K", "_w": "W",
}


@lru_cache(maxsize=1)
def field_index() -> dict[str, Field]:
    """Fields by path (wildcard paths keep their ``*``)."""
    return {f.path: f for f in FIELDS}


@lru_cache(maxsize=1)
def tree() -> dict:
    """The schema as nested dicts: a Field at each leaf, ``"*"`` for named entries."""
    root: dict = {}
    for f in FIELDS:
        node = root
        *tables, key = f.path.split(".")
        for part in tables:
            node = node.setdefault(part, {})
        node[key] = f
    return root


def table_paths() -> list[str]:
    """Every table path (with ``*``), outer to inner, in schema order."""
    seen: list[str] = []
    for f in FIELDS:
        parts = f.path.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            p = ".".join(parts[:i])
            if p not in seen:
                seen.append(p)
    return seen


def leaf_paths() -> list[str]:
    return [f.path for f in FIELDS]
