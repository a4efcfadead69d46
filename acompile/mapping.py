"""The mapped form of a model: analog layers, their weight matrices, the blocks
those matrices are cut into, and the crossbars and tiles the blocks occupy.

The passes build these records up (checked by :meth:`Mapping.verify` after each one); every
backend writes them with ``to_dict`` and reads them back with ``from_dict``, so program, device
file and report describe the same mapping.
"""

from __future__ import annotations

from collections import defaultdict, namedtuple
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import chain
from operator import attrgetter, itemgetter

import numpy as np

from .hardware import input_cycles
from .numerics.quantise import quantize_with_scales, weight_scales, whole_multiples
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


@dataclass(slots=True)
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
        return dict(zip(_BLOCK_FIELDS, _block_record(self)))

    @classmethod
    def from_dict(cls, d: dict, replica: int = 0) -> Block:
        return cls(*_block_values(d), replica=replica)


_BLOCK_FIELDS = tuple(f.name for f in fields(Block) if f.name != "replica")
_block_record, _block_values = attrgetter(*_BLOCK_FIELDS), itemgetter(*_BLOCK_FIELDS)
# The fields of a list of blocks as int64 columns (``table.cols[i]`` is ``blocks[i].cols``): checks and
# sums over thousands of blocks in numpy rather than one attribute at a time.
BlockTable = namedtuple("BlockTable", [f.name for f in fields(Block)])
_block_row = attrgetter(*BlockTable._fields)


def block_table(blocks) -> BlockTable:
    """The :data:`BlockTable` of ``blocks``, in their order."""
    n, k = len(blocks), len(BlockTable._fields)
    flat = np.fromiter(chain.from_iterable(map(_block_row, blocks)), np.int64, count=n * k)
    return BlockTable(*np.ascontiguousarray(flat.reshape(n, k).T))


@dataclass(slots=True)
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
    model_op: dict | None = None      # a QDQ layer's product as the model's op computes it, for ideal mode (sim/gemm.py)

    @property
    def macs_per_vec(self) -> int:
        return sum(m.n_out * m.k_in for m in self.matrices)

    @property
    def weights(self) -> int:
        return self.macs_per_vec

    @property
    def input_cycles(self) -> int:
        """T: DAC cycles per input vector (needs the spec, set by choose_precision)."""
        return input_cycles(self.spec.input_bits, self.spec.dac_bits, self.input_signed, self.spec.input_encoding)

    def to_dict(self) -> dict:
        """The layer's record in program.json (its blocks are the mapping's, listed there)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("blocks", "matrices")
               and (getattr(self, f.name) is not None or f.name not in ("model_quant", "model_op"))}
        out["geometry"] = self.geometry.to_dict()
        out["spec"] = self.spec.to_dict() if self.spec is not None else None
        out["matrices"] = [m.to_dict() for m in self.matrices]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> AnalogLayer:
        names = {f.name for f in fields(cls)} - {"blocks", "uses", "model_quant", "model_op"}
        values = {k: d[k] for k in names}
        values["geometry"] = ConvGeometry.from_dict(d["geometry"])
        values["spec"] = AnalogSpec(**d["spec"]) if d["spec"] is not None else None
        values["matrices"] = [Matrix.from_dict(m) for m in d["matrices"]]
        return cls(**values, uses=d.get("uses", 1), model_quant=d.get("model_quant"), model_op=d.get("model_op"))

    @property
    def input_offset(self) -> int:
        """What the DAC adds to round(x / s_x): the model's zero point less its type's minimum, else 0."""
        return int(self.model_quant.get("input_offset", 0)) if self.model_quant else 0

    def weight_scales(self, group: int, w: np.ndarray) -> np.ndarray:
        """s_w of one matrix: the quantized model's own, else acompile's (numerics.weight_scales)."""
        n = self.matrices[group].n_out
        return weight_scales(w, self.spec.weight_bits) if self.model_quant is None else \
            np.asarray(self.model_quant["weight_scales"][group * n:(group + 1) * n], np.float64)

    def quantize(self, w: np.ndarray, s_w: np.ndarray) -> np.ndarray:
        """q_w (int32) of some columns of one matrix (a row block, or all) for its :meth:`weight_scales`: the
        model's integers (checked whole multiples, in range) or acompile's."""
        own = self.model_quant is None
        return quantize_with_scales(w, s_w, self.spec.weight_bits, own_scales=True) if own else whole_multiples(w, s_w)


@dataclass
class Mapping:
    """The analog layers, the blocks cut from their matrices, and the crossbars holding them."""
    layers: list[AnalogLayer] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    crossbars: list[Crossbar] = field(default_factory=list)
    tiles_used: int = 0
    chips_needed: int = 0
    fabric: Fabric | None = None  # the hardware the blocks are cut for and placed on

    def to_dict(self) -> dict:
        return {"layers": [x.to_dict() for x in self.layers], "blocks": [b.to_dict() for b in self.blocks],
                "crossbars": [c.to_dict() for c in self.crossbars], "tiles_used": self.tiles_used,
                "chips_needed": self.chips_needed, "fabric": self.fabric.to_dict() if self.fabric else None}

    @classmethod
    def from_dict(cls, d: dict, layers: list[AnalogLayer] | None = None) -> Mapping:
        """The inverse of :meth:`to_dict`: ``layers`` alone (program.json) gives a mapping without blocks;
        ``layers`` given (already read) stand for ``d["layers"]``, their block lists rebuilt."""
        if layers is None:
            layers = [AnalogLayer.from_dict(x) for x in d["layers"]]
        for layer in layers:
            layer.blocks = []
        mapping = cls(layers, crossbars=[Crossbar.from_dict(c) for c in d.get("crossbars", [])],
                      tiles_used=d.get("tiles_used", 0), chips_needed=d.get("chips_needed", 0),
                      fabric=Fabric.from_dict(d["fabric"]) if d.get("fabric") else None)
        seen: dict[tuple, int] = defaultdict(int)
        for i, rec in enumerate(d.get("blocks", [])):
            key = (rec["layer"], rec["matrix"], rec["row_block"], rec["col_block"])
            mapping.blocks.append(Block.from_dict(rec, replica=seen[key]))
            seen[key] += 1
            mapping.layers[rec["layer"]].blocks.append(i)
        return mapping

    def verify(self) -> BlockTable:
        """Check the invariants of what the passes have built so far (raise :class:`BrokenMapping`); return
        the blocks' :data:`BlockTable` it checked, which the cost model sums over too. Layers and matrices
        are numbered in order; once blocks exist, each copy of each matrix is cut into a grid of blocks
        covering every cell (every weight's slices and signs) exactly once; once packed, every block is on
        one crossbar, inside it and overlapping no other; once placed, every crossbar has its own slot
        within the organisation. Blocks and crossbars are checked as numpy columns.
        """
        for i, layer in enumerate(self.layers):
            _check(layer.index == i and all(m.group == g for g, m in enumerate(layer.matrices)),
                   f"layer {layer.name!r} is numbered {layer.index} at position {i}, or its matrices out of order")
            _check(layer.uses >= 1 and 1 <= layer.replication, f"layer {layer.index} has {layer.uses} uses, "
                   f"{layer.replication} copies")
            for m in layer.matrices:
                _check(layer.spec is None or m.physical_cols == layer.spec.physical_columns(m.n_out),
                       f"layer {layer.index} matrix {m.group}: {m.physical_cols} physical columns for "
                       f"{m.n_out} outputs")
        t = block_table(self.blocks)
        bars = np.fromiter(chain.from_iterable(map(_bar_row, self.crossbars)), np.int64,
                           count=7 * len(self.crossbars)).reshape(-1, 7).T     # index, rows/cols used, place
        if self.blocks or any(layer.blocks for layer in self.layers):
            self._verify_blocks(t)
        if self.crossbars:
            self._verify_crossbars(t, *bars[:3])
        if self.tiles_used:
            self._verify_placement(*bars[3:])
        return t

    def _verify_blocks(self, t: BlockTable) -> None:
        n = len(self.blocks)
        listed = np.fromiter(chain.from_iterable(layer.blocks for layer in self.layers), np.int64)
        _check(listed.size == n and np.array_equal(np.sort(listed), np.arange(n)),
               "the layers' block lists do not name every block once")
        owner = np.repeat(np.arange(len(self.layers)), [len(layer.blocks) for layer in self.layers])
        _first(t.layer[listed] != owner, lambda k: f"block {listed[k]} is listed by layer {owner[k]}, not its own")
        # one grid per (layer, matrix, copy), numbered in that order; g: each block's grid
        grids = [(layer.index, mi, copy, m) for layer in self.layers for mi, m in enumerate(layer.matrices)
                 for copy in range(layer.replication)]
        nmat, copies = np.array([(len(x.matrices), x.replication) for x in self.layers], np.int64).reshape(-1, 2).T
        _first((t.matrix < 0) | (t.matrix >= nmat[t.layer]) | (t.replica < 0) | (t.replica >= copies[t.layer]),
               lambda b: f"block {b} is of a matrix or copy that does not exist")
        g = (np.cumsum(nmat * copies) - nmat * copies)[t.layer] + t.matrix * copies[t.layer] + t.replica
        R, C, K, P = np.array([(m.row_blocks, m.col_blocks, m.k_in, m.physical_cols) for *_, m in grids],
                              np.int64).reshape(-1, 4).T

        def where(j: int) -> str:
            return "layer {} matrix {} copy {}: the blocks do not cut {} rows x {} columns into {} x {} pieces, " \
                   "once each".format(*grids[j][:3], K[j], P[j], R[j], C[j])

        _first((R < 1) | (C < 1) | (np.bincount(g, minlength=len(grids)) != R * C), where)
        # each grid has its R*C blocks: block (r, c) must be the r-th row span and the c-th column span,
        # no cell twice, the spans cutting K rows (P columns) into consecutive non-empty pieces
        inside = (t.row_block >= 0) & (t.row_block < R[g]) & (t.col_block >= 0) & (t.col_block < C[g])
        _first(~inside, lambda b: where(g[b]))
        cell = (np.cumsum(R * C) - R * C)[g] + t.row_block * C[g] + t.col_block
        _first(np.bincount(cell, minlength=n)[cell] > 1, lambda b: where(g[b]))
        for piece, start, size, pieces, length in ((t.row_block, t.row_start, t.rows, R, K),
                                                   (t.col_block, t.col_start, t.cols, C, P)):
            first = np.cumsum(pieces) - pieces             # each grid's first span
            span = first[g] + piece
            starts, sizes = np.zeros((2, int(pieces.sum())), np.int64)
            starts[span], sizes[span] = start, size
            ends = starts + sizes
            follows = np.concatenate(([0], ends[:-1]))    # a span starts where the one before it ends, ...
            follows[first] = 0                             # ... a grid's first at 0
            ok = (starts == follows) & (sizes >= 1)
            ok[first + pieces - 1] &= ends[first + pieces - 1] == length
            _first((starts[span] != start) | (sizes[span] != size) | ~ok[span], lambda b: where(g[b]))

    def _verify_crossbars(self, t: BlockTable, index, rows_used, cols_used) -> None:
        bars, n = self.crossbars, len(self.blocks)
        _first(index != np.arange(len(bars)), lambda i: f"crossbar {bars[i].index} is at position {i}")
        held = np.fromiter(chain.from_iterable(bar.blocks for bar in bars), np.int64)   # entry k: block held[k]
        per_bar = np.array([len(bar.blocks) for bar in bars], np.int64)
        bar = np.repeat(np.arange(len(bars)), per_bar)                                  # on crossbar bar[k]
        _first((held < 0) | (held >= n), lambda k: f"crossbar {bar[k]} holds block {held[k]}, which does not exist")
        _first(np.bincount(held, minlength=n)[held] > 1, lambda k: f"block {held[k]} is on two crossbars")
        holder = np.full(n, -1, np.int64)
        holder[held] = bar
        _first(holder != t.crossbar, lambda b: f"block {b} names crossbar {t.crossbar[b]}, which does not hold it")
        r0, c0 = t.row_offset[held], t.col_offset[held]
        r1, c1 = r0 + t.rows[held], c0 + t.cols[held]
        _first((r0 < 0) | (c0 < 0) | (r1 > rows_used[bar]) | (c1 > cols_used[bar]),
               lambda k: f"a block of layer {t.layer[held[k]]} sticks out of crossbar {bar[k]}'s used area")
        if self.fabric is not None:
            f = self.fabric
            _first((rows_used > f.rows) | (cols_used > f.cols),
                   lambda i: f"crossbar {i} uses {rows_used[i]} x {cols_used[i]} cells of {f.rows} x {f.cols}")
        # crossbars holding two blocks or more: one layer's copy alone, or originals only; no shared cell
        k = np.flatnonzero(per_bar[bar] > 1)
        if not k.size:
            return
        k = k[np.lexsort((r0[k], bar[k]))]                  # by crossbar, then row offset
        b, on, top, bottom = held[k], bar[k], r0[k], r1[k]
        at = np.flatnonzero(np.concatenate(([True], on[1:] != on[:-1])))
        lo, hi = np.minimum.reduceat(t.replica[b], at), np.maximum.reduceat(t.replica[b], at)
        mixed = (lo != hi) | (np.minimum.reduceat(t.layer[b], at) != np.maximum.reduceat(t.layer[b], at))
        _first(mixed & ((lo != 0) | (hi != 0)), lambda j: f"crossbar {on[at[j]]} mixes a layer's copy with others")
        # by row offset, a block starting below the one before it shares no row with any (spans are
        # non-empty); on a crossbar where one does not, every pair is compared
        for j in sorted(set(on[1:][(on[1:] == on[:-1]) & (top[1:] < bottom[:-1])].tolist())):
            ordered = sorted((self.blocks[i] for i in bars[j].blocks), key=lambda x: x.row_offset)
            for i, a in enumerate(ordered):
                for x in ordered[i + 1:]:
                    if x.row_offset >= a.row_offset + a.rows:
                        break
                    _check(x.col_offset >= a.col_offset + a.cols or a.col_offset >= x.col_offset + x.cols,
                           f"two blocks overlap on crossbar {j}")

    def _verify_placement(self, chip, tile, core, slot) -> None:
        f = self.fabric
        _check(f is not None, "placed without a fabric")
        _first((slot < 0) | (slot >= f.crossbars_per_core) | (core < 0) | (core >= f.cores_per_tile)
               | (tile < 0) | (tile >= self.tiles_used) | (chip != tile // f.tiles_per_chip),
               lambda i: f"crossbar {i} at chip {chip[i]} tile {tile[i]} core {core[i]} slot {slot[i]} "
                         f"is outside the organisation")
        slots = np.sort((tile * f.cores_per_tile + core) * f.crossbars_per_core + slot)
        _check(not (slots[1:] == slots[:-1]).any(), "two crossbars share a slot")
        _check(self.tiles_used == -(-len(self.crossbars) // f.crossbars_per_tile)
               and self.chips_needed == -(-self.tiles_used // f.tiles_per_chip),
               f"{self.tiles_used} tiles and {self.chips_needed} chips for {len(self.crossbars)} crossbars")


_bar_row = attrgetter("index", "rows_used", "cols_used", "chip", "tile", "core", "slot")


def _check(ok: bool, what: str) -> None:
    if not ok:
        _fail(what)


def _first(bad: np.ndarray, what) -> None:
    """Fail with ``what(i)`` for the first position ``i`` where ``bad`` holds."""
    if bad.any():
        _fail(what(int(np.argmax(bad))))


def _fail(what: str):
    raise BrokenMapping(f"internal error, broken mapping: {what}")


def layer_matrix(graph_constants: dict, layer: AnalogLayer, group: int):
    """The float [n_out, k_in] matrix of one group, as the crossbar sees it (a view of the weight)."""
    w = graph_constants[layer.weight]
    g = layer.groups
    if layer.op_type == "Linear":
        return np.asarray(w)        # a weight held as its integers (numerics.folded) computed; an array itself
    if layer.op_type == "Conv":
        n = w.shape[0] // g
        return w[group * n:(group + 1) * n].reshape(n, -1)
    k = w.shape[0] // g
    block = w[group * k:(group + 1) * k]            # [cin_g, cout_g, *kernel]
    return block.reshape(k, -1).T
