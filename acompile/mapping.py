"""The mapped form of a model: analog layers, their weight matrices, the blocks
those matrices are cut into, and the crossbars and tiles the blocks occupy.

The passes build these records up (checked by :meth:`Mapping.verify` once the last has run, after each
one with ACOMPILE_VERIFY_EACH_PASS=1); the blocks and crossbars are tables (:mod:`.blocks`). program.json
holds the layers (``to_dict``), the device file's layout tables the blocks and crossbars
(``backends.layout``), so program, device file and report describe the same mapping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from itertools import chain

import numpy as np

from .blocks import Blocks, Crossbars, replica_numbers
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


# a block's record in a mapping's dictionary: replica is recounted from the order (copies follow originals)
_RECORDED = tuple(name for name in Blocks.FIELDS if name != "replica")


@dataclass
class Mapping:
    """The analog layers, the blocks cut from their matrices, and the crossbars holding them (both tables:
    :mod:`.blocks`)."""
    layers: list[AnalogLayer] = field(default_factory=list)
    blocks: Blocks = field(default_factory=Blocks)
    crossbars: Crossbars = field(default_factory=Crossbars)
    tiles_used: int = 0
    chips_needed: int = 0
    fabric: Fabric | None = None  # the hardware the blocks are cut for and placed on

    def held(self) -> list[list[int]]:
        """The blocks on each crossbar, in the order of their row offsets (packing gives each block fresh rows)."""
        bar = self.blocks.crossbar
        on_bar = np.lexsort((self.blocks.row_offset, bar))
        on_bar = on_bar[bar[on_bar] >= 0].tolist()
        ends = np.cumsum(np.bincount(bar[bar >= 0], minlength=len(self.crossbars))).tolist()
        return [on_bar[a:b] for a, b in zip([0] + ends, ends)]

    def to_dict(self) -> dict:
        return {"layers": [x.to_dict() for x in self.layers], "blocks": self.blocks.records(_RECORDED),
                "crossbars": self.crossbars.records(), "tiles_used": self.tiles_used,
                "chips_needed": self.chips_needed, "fabric": self.fabric.to_dict() if self.fabric else None}

    @classmethod
    def from_dict(cls, d: dict, layers: list[AnalogLayer] | None = None) -> Mapping:
        """The inverse of :meth:`to_dict`: ``layers`` alone (program.json) gives a mapping without blocks;
        ``layers`` given (already read) stand for ``d["layers"]``, their block lists rebuilt."""
        if layers is None:
            layers = [AnalogLayer.from_dict(x) for x in d["layers"]]
        blocks = Blocks.from_records(d.get("blocks", []))
        blocks.replica = replica_numbers(blocks.stack(_RECORDED[:4]))
        mapping = cls(layers, blocks, Crossbars.from_records(d.get("crossbars", [])),
                      tiles_used=d.get("tiles_used", 0), chips_needed=d.get("chips_needed", 0),
                      fabric=Fabric.from_dict(d["fabric"]) if d.get("fabric") else None)
        mapping.list_layer_blocks()
        return mapping

    def list_layer_blocks(self) -> None:
        """Set each layer's ``blocks`` from the blocks table: the indices of the blocks naming it, in table order
        (a block naming no layer is in no list: :meth:`verify` names it)."""
        at = np.flatnonzero((self.blocks.layer >= 0) & (self.blocks.layer < len(self.layers)))
        of = self.blocks.layer[at]
        listed = at[np.argsort(of, kind="stable")].tolist()
        ends = np.cumsum(np.bincount(of, minlength=len(self.layers))).tolist()
        for layer, a, b in zip(self.layers, [0] + ends, ends):
            layer.blocks = listed[a:b]

    def verify(self) -> None:
        """Check the invariants of what the passes have built so far (raise :class:`BrokenMapping`). Layers
        and matrices are numbered in order; once blocks exist, each copy of each matrix is cut into a grid of
        blocks covering every cell (every weight's slices and signs) exactly once; once packed, every block is
        on a crossbar, inside it and overlapping no other; once placed, every crossbar has its own slot within
        the organisation.
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
        if len(self.blocks) or any(layer.blocks for layer in self.layers):
            self._verify_blocks(self.blocks)
        if len(self.crossbars):
            self._verify_crossbars(self.blocks, self.crossbars)
        if self.tiles_used:
            self._verify_placement(self.crossbars)

    def _verify_blocks(self, t: Blocks) -> None:
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

    def _verify_crossbars(self, t: Blocks, bars: Crossbars) -> None:
        n = len(bars)
        _first(bars.index != np.arange(n), lambda i: f"crossbar {bars.index[i]} is at position {i}")
        bar = t.crossbar
        _first((bar < 0) | (bar >= n), lambda b: f"block {b} is on crossbar {bar[b]}, which does not exist")
        r0, c0 = t.row_offset, t.col_offset
        r1, c1 = r0 + t.rows, c0 + t.cols
        _first((r0 < 0) | (c0 < 0) | (r1 > bars.rows_used[bar]) | (c1 > bars.cols_used[bar]),
               lambda b: f"a block of layer {t.layer[b]} sticks out of crossbar {bar[b]}'s used area")
        if self.fabric is not None:
            f, rows_used, cols_used = self.fabric, bars.rows_used, bars.cols_used
            _first((rows_used > f.rows) | (cols_used > f.cols),
                   lambda i: f"crossbar {i} uses {rows_used[i]} x {cols_used[i]} cells of {f.rows} x {f.cols}")
        # crossbars holding two blocks or more: one layer's copy alone, or originals only; no shared cell
        k = np.flatnonzero(np.bincount(bar, minlength=n)[bar] > 1)
        if not k.size:
            return
        k = k[np.lexsort((r0[k], bar[k]))]                  # by crossbar, then row offset
        on, top, bottom = bar[k], r0[k], r1[k]
        at = np.flatnonzero(np.concatenate(([True], on[1:] != on[:-1])))
        lo, hi = np.minimum.reduceat(t.replica[k], at), np.maximum.reduceat(t.replica[k], at)
        mixed = (lo != hi) | (np.minimum.reduceat(t.layer[k], at) != np.maximum.reduceat(t.layer[k], at))
        _first(mixed & ((lo != 0) | (hi != 0)), lambda j: f"crossbar {on[at[j]]} mixes a layer's copy with others")
        # by row offset, a block starting below the one before it shares no row with any (spans are
        # non-empty); on a crossbar where one does not, every pair is compared
        for j in sorted(set(on[1:][(on[1:] == on[:-1]) & (top[1:] < bottom[:-1])].tolist())):
            ordered = sorted(t.take(bar == j), key=lambda x: x.row_offset)
            for i, a in enumerate(ordered):
                for x in ordered[i + 1:]:
                    if x.row_offset >= a.row_offset + a.rows:
                        break
                    _check(x.col_offset >= a.col_offset + a.cols or a.col_offset >= x.col_offset + x.cols,
                           f"two blocks overlap on crossbar {j}")

    def _verify_placement(self, bars: Crossbars) -> None:
        f = self.fabric
        _check(f is not None, "placed without a fabric")
        chip, tile, core, slot = bars.chip, bars.tile, bars.core, bars.slot
        _first((slot < 0) | (slot >= f.crossbars_per_core) | (core < 0) | (core >= f.cores_per_tile)
               | (tile < 0) | (tile >= self.tiles_used) | (chip != tile // f.tiles_per_chip),
               lambda i: f"crossbar {i} at chip {chip[i]} tile {tile[i]} core {core[i]} slot {slot[i]} "
                         f"is outside the organisation")
        slots = np.sort((tile * f.cores_per_tile + core) * f.crossbars_per_core + slot)
        _check(not (slots[1:] == slots[:-1]).any(), "two crossbars share a slot")
        _check(self.tiles_used == -(-len(self.crossbars) // f.crossbars_per_tile)
               and self.chips_needed == -(-self.tiles_used // f.tiles_per_chip),
               f"{self.tiles_used} tiles and {self.chips_needed} chips for {len(self.crossbars)} crossbars")


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
