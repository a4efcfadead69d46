"""The mapped form of a model: analog layers, their weight matrices, the blocks
those matrices are cut into, and the crossbars and tiles the blocks occupy.

These records are what the passes build up and what every backend (program,
device file, report) reads, so the three always describe the same mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sim.analog import AnalogSpec


@dataclass
class Matrix:
    """One weight matrix of an analog layer (one group of a Conv): ``W`` is [n_out, k_in]."""
    group: int
    n_out: int
    k_in: int
    physical_cols: int = 0        # P: columns after slicing, sign encoding and the reference column
    row_blocks: int = 0
    col_blocks: int = 0


@dataclass
class Block:
    """A rectangle of one matrix's cell array that lives on one crossbar."""
    layer: int
    matrix: int
    row_block: int
    col_block: int
    row_start: int                # first row of the layer matrix (input index k)
    rows: int
    col_start: int                # first physical column p
    cols: int
    crossbar: int = -1
    row_offset: int = 0           # where the block sits inside its crossbar
    col_offset: int = 0
    replica: int = 0              # 0: the original; k > 0: the k-th copy made to share the layer's vectors


@dataclass
class Crossbar:
    index: int
    chip: int = 0
    tile: int = 0                 # global tile index
    core: int = 0                 # core within the tile
    slot: int = 0                 # crossbar within the core
    blocks: list[int] = field(default_factory=list)
    rows_used: int = 0
    cols_used: int = 0


@dataclass
class AnalogLayer:
    """Everything the backends need to know about one analog node."""
    index: int
    name: str                     # the IR node name
    op_type: str                  # Conv | ConvTranspose | Linear
    weight: str                   # constant holding the float weights, ONNX layout
    bias: str                     # constant holding the float bias [n_out]
    groups: int
    matrices: list[Matrix]
    n_vec: int                    # input vectors per inference (for the compile batch)
    in_channels: int
    out_channels: int
    spec: AnalogSpec | None = None
    input_signed: bool = True
    input_range: float = 0.0      # calibrated |x| range that sets s_x
    input_scale: float = 1.0      # s_x
    adc_full_scale: float = 0.0   # F used by the ADC (worst case or calibrated)
    geometry: dict = field(default_factory=dict)   # conv geometry: kernel, strides, pads, dilations, shapes
    blocks: list[int] = field(default_factory=list)
    replication: int = 1
    uses: int = 1                 # graph nodes sharing these crossbars (e.g. every time step of an RNN)

    @property
    def macs_per_vec(self) -> int:
        return sum(m.n_out * m.k_in for m in self.matrices)

    @property
    def weights(self) -> int:
        return self.macs_per_vec


@dataclass
class Mapping:
    layers: list[AnalogLayer] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    crossbars: list[Crossbar] = field(default_factory=list)
    tiles_used: int = 0
    chips_needed: int = 0
    calibration: str = "default"  # "default" (seeded random inputs) or the calibration file's name
