"""The mapped form of a model: analog layers, their weight matrices, the blocks
those matrices are cut into, and the crossbars and tiles the blocks occupy.

The passes build these records up (checked by :meth:`Mapping.verify` after each
one); every backend writes them with ``to_dict`` and reads them back with
``from_dict``, so program, device file and report describe the same mapping.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from .hardware import cycle_time_ns, input_cycles, physical_columns, pipeline_fill_ns
from .numerics.quantise import weight_scales
from .numerics.spec import AnalogSpec


class BrokenMapping(RuntimeError):
    """A mapping that breaks one of its invariants: a bug in a pass (or a damaged file)."""


@dataclass(frozen=True)
class ConvGeometry:
    """Where a layer's input vectors come from: ``input_shape`` only for a Linear layer; for Conv
    and ConvTranspose also the output shape, kernel, strides, dilations, explicit ONNX pads
    [b1, b2, ..., e1, e2, ...] and output padding."""
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None = None
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    output_padding: tuple[int, ...] = ()

    def for_input(self, x_shape) -> ConvGeometry:
        """The geometry for an actual input, whose batch may differ from the compile batch."""
        if self.output_shape is None:
            return replace(self, input_shape=tuple(x_shape))
        b = x_shape[0]
        return replace(self, input_shape=(b,) + tuple(self.input_shape[1:]),
                       output_shape=(b,) + tuple(self.output_shape[1:]))

    def to_dict(self) -> dict:
        if self.output_shape is None:
            return {"input_shape": list(self.input_shape)}
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> ConvGeometry:
        if not isinstance(d, dict):
            raise TypeError("a layer's geometry must be an object")
        return cls(**{k: tuple(v) for k, v in d.items()})


@dataclass(frozen=True)
class Fabric:
    """The crossbar size and organisation a mapping is made for."""
    rows: int
    cols: int
    crossbars_per_core: int
    cores_per_tile: int
    tiles_per_chip: int

    @property
    def crossbars_per_tile(self) -> int:
        return self.crossbars_per_core * self.cores_per_tile

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Fabric:
        return cls(**d)


@dataclass
class Matrix:
    """One weight matrix of an analog layer (one group of a Conv): ``W`` is [n_out, k_in]."""
    group: int
    n_out: int
    k_in: int
    physical_cols: int = 0        # P: columns after slicing, sign encoding and the reference column
    row_blocks: int = 0
    col_blocks: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Matrix:
        return cls(**d)


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

    def to_dict(self) -> dict:
        """Every field but ``replica``, which :meth:`Mapping.from_dict` recounts (copies come after originals)."""
        # the fields read directly: asdict's deep copy costs seconds over the blocks of a ResNet-50
        return {name: getattr(self, name) for name in _BLOCK_FIELDS}

    @classmethod
    def from_dict(cls, d: dict, replica: int = 0) -> Block:
        return cls(*(d[f.name] for f in fields(cls)[:-1]), replica=replica)


_BLOCK_FIELDS = tuple(f.name for f in fields(Block) if f.name != "replica")


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

    def to_dict(self) -> dict:
        return {"index": self.index, "chip": self.chip, "tile": self.tile, "core": self.core, "slot": self.slot,
                "blocks": list(self.blocks), "rows_used": self.rows_used, "cols_used": self.cols_used}

    @classmethod
    def from_dict(cls, d: dict) -> Crossbar:
        return cls(**{**d, "blocks": list(d["blocks"])})


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
    geometry: ConvGeometry
    spec: AnalogSpec | None = None
    input_signed: bool = True
    input_range: float = 0.0      # calibrated |x| range that sets s_x
    input_scale: float = 1.0      # s_x
    adc_full_scale: float = 0.0   # F used by the ADC (worst case or calibrated)
    blocks: list[int] = field(default_factory=list)
    replication: int = 1
    uses: int = 1                 # graph nodes sharing these crossbars (e.g. every time step of an RNN)
    model_quant: dict | None = None   # a quantized model's own scales (passes/quantized_layers.py)

    @property
    def macs_per_vec(self) -> int:
        return sum(m.n_out * m.k_in for m in self.matrices)

    @property
    def weights(self) -> int:
        return self.macs_per_vec

    @property
    def input_cycles(self) -> int:
        """T: DAC cycles per input vector (needs the spec, set by choose_precision)."""
        s = self.spec
        return input_cycles(s.input_bits, s.dac_bits, self.input_signed, s.input_encoding)

    def to_dict(self) -> dict:
        """The layer's record in program.json (its blocks are the mapping's, listed there)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("blocks", "matrices")}
        if self.model_quant is None:
            del out["model_quant"]
        out["geometry"] = self.geometry.to_dict()
        out["spec"] = self.spec.to_dict() if self.spec is not None else None
        out["matrices"] = [m.to_dict() for m in self.matrices]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> AnalogLayer:
        names = {f.name for f in fields(cls)} - {"blocks", "uses", "model_quant"}
        values = {k: d[k] for k in names}
        values["geometry"] = ConvGeometry.from_dict(d["geometry"])
        values["spec"] = AnalogSpec(**d["spec"]) if d["spec"] is not None else None
        values["matrices"] = [Matrix.from_dict(m) for m in d["matrices"]]
        return cls(**values, uses=d.get("uses", 1), model_quant=d.get("model_quant"))

    @property
    def input_offset(self) -> int:
        """What the DAC adds to round(x / s_x): the model's zero point less its type's minimum, else 0."""
        return int(self.model_quant.get("input_offset", 0)) if self.model_quant else 0

    def weight_scales(self, group: int, w: np.ndarray) -> np.ndarray:
        """s_w of one matrix: the quantized model's own, else acompile's (numerics.weight_scales)."""
        if self.model_quant is None:
            return weight_scales(w, self.spec.weight_bits)
        n = self.matrices[group].n_out
        return np.asarray(self.model_quant["weight_scales"][group * n:(group + 1) * n], np.float64)


@dataclass
class Mapping:
    """The analog layers, the blocks cut from their matrices, and the crossbars holding them."""
    layers: list[AnalogLayer] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    crossbars: list[Crossbar] = field(default_factory=list)
    tiles_used: int = 0
    chips_needed: int = 0
    fabric: Fabric | None = None  # the hardware the blocks are cut for and placed on

    def cycle_ns(self, layer: AnalogLayer, read_ns: float, adcs: int, adc_ns: float,
                 hold_ns: float = 0.0, pipelined: bool = False) -> float:
        """One input cycle of ``layer``: its crossbars are read at once, blocks sharing one in turn
        (copies are left out: they read other vectors at the same time)."""
        per_bar: dict[int, float] = defaultdict(float)
        for b in layer.blocks:
            blk = self.blocks[b]
            if blk.replica == 0:
                per_bar[blk.crossbar] += cycle_time_ns(read_ns, blk.cols, adcs, adc_ns, hold_ns, pipelined)
        return max(per_bar.values(), default=0.0)

    def fill_ns(self, layer: AnalogLayer, read_ns: float, adcs: int, adc_ns: float,
                hold_ns: float = 0.0, pipelined: bool = False) -> float:
        """The pipeline's fill before ``layer``'s first cycle completes (0 when reads and conversions are in series)."""
        return max((pipeline_fill_ns(read_ns, self.blocks[b].cols, adcs, adc_ns, hold_ns, pipelined)
                    for b in layer.blocks), default=0.0)

    def to_dict(self) -> dict:
        return {"layers": [x.to_dict() for x in self.layers], "blocks": [b.to_dict() for b in self.blocks],
                "crossbars": [c.to_dict() for c in self.crossbars], "tiles_used": self.tiles_used,
                "chips_needed": self.chips_needed, "fabric": self.fabric.to_dict() if self.fabric else None}

    @classmethod
    def from_dict(cls, d: dict, layers: list[AnalogLayer] | None = None) -> Mapping:
        """The inverse of :meth:`to_dict`: ``layers`` alone (program.json) gives a mapping without blocks.

        ``layers`` given (already read) stand for ``d["layers"]``; their block lists are rebuilt.
        """
        if layers is None:
            layers = [AnalogLayer.from_dict(x) for x in d["layers"]]
        for layer in layers:
            layer.blocks = []
        mapping = cls(layers,
                      crossbars=[Crossbar.from_dict(c) for c in d.get("crossbars", [])],
                      tiles_used=d.get("tiles_used", 0), chips_needed=d.get("chips_needed", 0),
                      fabric=Fabric.from_dict(d["fabric"]) if d.get("fabric") else None)
        seen: dict[tuple, int] = defaultdict(int)
        for i, rec in enumerate(d.get("blocks", [])):
            key = (rec["layer"], rec["matrix"], rec["row_block"], rec["col_block"])
            mapping.blocks.append(Block.from_dict(rec, replica=seen[key]))
            seen[key] += 1
            mapping.layers[rec["layer"]].blocks.append(i)
        return mapping

    def verify(self) -> None:
        """Check the invariants of what the passes have built so far; raise :class:`BrokenMapping`.

        Layers and matrices are numbered in order; once blocks exist, each copy of each matrix is
        cut into a grid of blocks covering every cell (every weight's slices and signs) exactly once;
        once packed, every block is on one crossbar, inside it and overlapping no other; once
        placed, every crossbar has its own slot within the organisation.
        """
        for i, layer in enumerate(self.layers):
            _check(layer.index == i and all(m.group == g for g, m in enumerate(layer.matrices)),
                   f"layer {layer.name!r} is numbered {layer.index} at position {i}, or its matrices out of order")
            _check(layer.uses >= 1 and 1 <= layer.replication, f"layer {layer.index} has {layer.uses} uses, "
                   f"{layer.replication} copies")
            for m in layer.matrices:
                _check(layer.spec is None
                       or m.physical_cols == layer.spec.physical_columns(m.n_out),
                       f"layer {layer.index} matrix {m.group}: {m.physical_cols} physical columns for "
                       f"{m.n_out} outputs")
        if self.blocks or any(layer.blocks for layer in self.layers):
            self._verify_blocks()
        if self.crossbars:
            self._verify_crossbars()
        if self.tiles_used:
            self._verify_placement()

    def _verify_blocks(self) -> None:
        owned = sorted(b for layer in self.layers for b in layer.blocks)
        _check(owned == list(range(len(self.blocks))), "the layers' block lists do not name every block once")
        cover: dict[tuple[int, int, int], list[Block]] = defaultdict(list)
        for layer in self.layers:
            for b in layer.blocks:
                blk = self.blocks[b]
                if blk.layer != layer.index:
                    _fail(f"block {b} is listed by layer {layer.index} but names layer {blk.layer}")
                cover[(blk.layer, blk.matrix, blk.replica)].append(blk)
        for layer in self.layers:
            for mi, m in enumerate(layer.matrices):
                for copy in range(layer.replication):
                    _check_grid(cover.pop((layer.index, mi, copy), []), m,
                                f"layer {layer.index} matrix {mi} copy {copy}")
        _check(not cover, f"blocks of a matrix or copy that does not exist: {sorted(cover)[:3]}")

    def _verify_crossbars(self) -> None:
        rows, cols = (self.fabric.rows, self.fabric.cols) if self.fabric else (None, None)
        holder = [-1] * len(self.blocks)
        for i, bar in enumerate(self.crossbars):
            if bar.index != i:
                _fail(f"crossbar {bar.index} is at position {i}")
            for b in bar.blocks:
                if not 0 <= b < len(holder) or holder[b] != -1:
                    _fail(f"block {b} is on crossbar {i} and {holder[b] if 0 <= b < len(holder) else 'unknown'}")
                holder[b] = i
            _check_crossbar([self.blocks[b] for b in bar.blocks], bar, rows, cols)
        for b, blk in enumerate(self.blocks):
            if holder[b] != blk.crossbar:
                _fail(f"block {b} names crossbar {blk.crossbar}, which does not hold it")

    def _verify_placement(self) -> None:
        f = self.fabric
        _check(f is not None, "placed without a fabric")
        chip, tile, core, slot = np.array([(b.chip, b.tile, b.core, b.slot) for b in self.crossbars],
                                          np.int64).reshape(-1, 4).T
        outside = (slot < 0) | (slot >= f.crossbars_per_core) | (core < 0) | (core >= f.cores_per_tile) \
            | (tile < 0) | (tile >= self.tiles_used) | (chip != tile // f.tiles_per_chip)
        if outside.any():
            bar = self.crossbars[int(np.argmax(outside))]
            _fail(f"crossbar {bar.index} at chip {bar.chip} tile {bar.tile} core {bar.core} slot {bar.slot} "
                  f"is outside the organisation")
        _check(np.unique((tile * f.cores_per_tile + core) * f.crossbars_per_core + slot).size == tile.size,
               "two crossbars share a slot")
        _check(self.tiles_used == -(-len(self.crossbars) // f.crossbars_per_tile)
               and self.chips_needed == -(-self.tiles_used // f.tiles_per_chip),
               f"{self.tiles_used} tiles and {self.chips_needed} chips for {len(self.crossbars)} crossbars")


def _check(ok: bool, what: str) -> None:
    if not ok:
        _fail(what)


def _fail(what: str):
    raise BrokenMapping(f"internal error, broken mapping: {what}")


def _runs(spans: set[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The (start, size) spans sorted, if they cut [0, length) into consecutive pieces; else []."""
    ordered = sorted(spans)
    ends = [s + n for s, n in ordered]
    ok = ordered and ordered[0][0] == 0 and ends[-1] == length and all(n > 0 for _, n in ordered) \
        and all(ordered[i + 1][0] == ends[i] for i in range(len(ordered) - 1))
    return ordered if ok else []


def _check_grid(blocks: list[Block], m: Matrix, where: str) -> None:
    """The blocks are the full grid of row spans x column spans of the k_in x P cell array."""
    rows = {span: i for i, span in enumerate(_runs({(b.row_start, b.rows) for b in blocks}, m.k_in))}
    cols = {span: i for i, span in enumerate(_runs({(b.col_start, b.cols) for b in blocks}, m.physical_cols))}
    _check(bool(rows) and bool(cols) and (m.row_blocks, m.col_blocks) == (len(rows), len(cols)),
           f"{where}: the blocks do not cut {m.k_in} rows x {m.physical_cols} columns into "
           f"{m.row_blocks} x {m.col_blocks} pieces")
    cells = {(b.row_block, b.col_block) for b in blocks
             if (b.row_block, b.col_block) == (rows[(b.row_start, b.rows)], cols[(b.col_start, b.cols)])}
    _check(len(blocks) == len(cells) == len(rows) * len(cols), f"{where}: a cell is in no block or in two")


def _check_crossbar(blocks: list[Block], bar: Crossbar, rows: int | None, cols: int | None) -> None:
    """The blocks fit the crossbar's used area (and the crossbar), no two overlap, and a layer's
    copy has its crossbars to itself."""
    for b in blocks:
        if b.row_offset < 0 or b.col_offset < 0 or b.row_offset + b.rows > bar.rows_used \
                or b.col_offset + b.cols > bar.cols_used:
            _fail(f"a block of layer {b.layer} sticks out of crossbar {bar.index}'s used area")
    if rows is not None and (bar.rows_used > rows or bar.cols_used > cols):
        _fail(f"crossbar {bar.index} uses {bar.rows_used} x {bar.cols_used} cells of {rows} x {cols}")
    if len(blocks) < 2:
        return
    owners = {(b.layer, b.replica) for b in blocks}
    _check(len(owners) == 1 or all(copy == 0 for _, copy in owners),
           f"crossbar {bar.index} mixes a layer's copy with other blocks: {sorted(owners)}")
    ordered = sorted(blocks, key=lambda b: b.row_offset)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.row_offset >= a.row_offset + a.rows:
                break
            if b.col_offset < a.col_offset + a.cols and a.col_offset < b.col_offset + b.cols:
                _fail(f"two blocks overlap on crossbar {bar.index}")


def layer_matrix(graph_constants: dict, layer: AnalogLayer, group: int):
    """The float [n_out, k_in] matrix of one group, as the crossbar sees it (a view of the weight)."""
    w = graph_constants[layer.weight]
    g = layer.groups
    if layer.op_type == "Linear":
        return w
    if layer.op_type == "Conv":
        n = w.shape[0] // g
        return w[group * n:(group + 1) * n].reshape(n, -1)
    k = w.shape[0] // g
    block = w[group * k:(group + 1) * k]            # [cin_g, cout_g, *kernel]
    return block.reshape(k, -1).T
