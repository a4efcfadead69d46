"""The device configuration file (``device.acdev``).

A ZIP container (stored entries, fixed timestamps: byte-identical across
runs) holding:

* ``header.json`` -- format name and version, the target, the program it
  belongs to (sha256 of ``program.json``), the converter settings and scales of
  every layer, every crossbar (chip, tile, core, slot) and every block (layer,
  matrix, row range = row map, physical column range = column map, crossbar,
  offset inside it, byte range in ``levels.bin``);
* ``levels.bin`` -- the conductance level (0 .. 2^cell_bits-1) of every cell
  of every block, row-major, ``cell_bits`` bits per cell, each block starting
  on a byte boundary;
* ``weight_scales.npy`` -- s_w of every output channel of every matrix,
  concatenated in layer/matrix order.

Matrices are encoded one row stripe at a time and streamed into ``levels.bin``,
so memory stays at one stripe's cells however large the model. See docs/formats.md.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import numerics
from ..errors import InvalidDataError, clean
from ..jsonio import dumps_compact
from ..mapping import BrokenMapping, Mapping, layer_matrix
from ..numerics.encoding import Encoded
from ..safe_read import check_schema
from ..units import count, decimal
from .archive import ArchiveReader, ArchiveWriter, pack_levels, packed_size, unpack_levels
from .schemas import HEADER

DEVICE_FORMAT = "acompile-device"
DEVICE_VERSION = 1
FLIP_ENTRY = "flip_marks.npy"   # packed bits, (row blocks, P) per matrix of the "flipped" scheme, in file order


def write_device(path: Path, compiled, program_sha256: str, dumps) -> None:
    graph, mapping, target = compiled.graph, compiled.mapping, compiled.target
    writer = ArchiveWriter(path)
    blocks_out = []
    scales = []
    offset = 0
    digest = hashlib.sha256()
    flips = []
    try:
        with writer.open_stream("levels.bin") as stream:
            for group, sizes, pieces, flip in map(_stripe_cells, _stripes(graph, mapping, scales)):
                if flip is not None:
                    flips.append(flip)
                for piece in pieces:
                    stream.write(piece)
                    digest.update(piece)
                for blk, size in zip(group, sizes):
                    blocks_out.append({**blk.to_dict(), "offset": offset, "bytes": size})
                    offset += size
        writer.add_array("weight_scales.npy", np.concatenate(scales) if scales else np.zeros(0))
        marks = np.packbits(np.concatenate(flips)) if flips else None
        if marks is not None:       # the "flipped" scheme: which (row block, column) is stored complemented
            writer.add_array(FLIP_ENTRY, marks)
        header = {
            **({"flip_marks_sha256": hashlib.sha256(marks.tobytes()).hexdigest()} if marks is not None else {}),
            "format": DEVICE_FORMAT, "version": DEVICE_VERSION, "target": target.name,
            "program_sha256": program_sha256,
            "levels_bytes": offset,
            "levels_sha256": digest.hexdigest(),
            "layers": [_layer_record(layer, target) for layer in mapping.layers],
            "crossbars": [c.to_dict() for c in mapping.crossbars],
            "blocks": blocks_out,
            "geometry": mapping.fabric.to_dict(),
            "tiles_used": mapping.tiles_used, "chips_needed": mapping.chips_needed,
        }
        writer.add_json("header.json", header, dumps_compact)   # compact: a record per block adds up
    finally:
        writer.close()


def _stripes(graph, mapping: Mapping, scales: list):
    """Every row stripe of every weight matrix, in file order: (W, s_w, spec, blocks of the stripe).

    A stripe is the rows of one row block; its blocks are consecutive in the mapping's order
    (layer, matrix, row block, column block). Appends each matrix's s_w to ``scales``.
    """
    for layer in mapping.layers:
        by_matrix: dict[int, list[int]] = {}
        for b in layer.blocks:
            by_matrix.setdefault(mapping.blocks[b].matrix, []).append(b)
        for mi, matrix in enumerate(layer.matrices):
            w = layer_matrix(graph.constants, layer, matrix.group)
            s_w = layer.weight_scales(matrix.group, w)
            scales.append(np.asarray(s_w, np.float64))
            blocks = [mapping.blocks[b] for b in by_matrix.get(mi, [])]
            for _, group in itertools.groupby(blocks, key=lambda b: (b.row_start, b.rows)):
                yield w, s_w, layer.spec, list(group)


def _stripe_cells(task) -> tuple[list, list[int], list, np.ndarray | None]:
    """(blocks, their packed sizes, arrays holding their packed cells in order, flip marks) of one
    row stripe; the flip marks (P,) only for the "flipped" scheme, whose stripes are encoded whole.

    The stripe's weights are quantised and, when every channel's slices fill whole bytes,
    packed straight from the magnitudes (:func:`_packed_rows`); a run of such blocks side by
    side is reordered block-major in one copy. Blocks that do not start and end on a byte
    boundary (the offset scheme's reference column, odd cell widths) are packed from their
    cell levels (:func:`_levels`) by ``pack_levels``. Either way the bytes are those of
    ``pack_levels`` applied to the block of ``numerics.encode_weights(q_w).levels``.
    """
    w, s_w, spec, group = task
    cb = spec.cell_bits
    data_cols = w.shape[0] * spec.columns_per_channel

    def aligned(blk) -> bool:
        return blk.col_start + blk.cols <= data_cols and blk.col_start * cb % 8 == 0 and blk.cols * cb % 8 == 0

    r0, rows = group[0].row_start, group[0].rows
    q = numerics.quantize_with_scales(w[:, r0:r0 + rows], s_w, spec.weight_bits)       # (N, rows)
    if spec.flipped:        # a stripe is one row block: encoding it alone flips as the whole matrix does
        enc = numerics.encode_weights(q, spec)
        sizes, pieces = [], []
        for i, j in _runs(group, lambda b: rows * b.cols * cb % 8 == 0):   # blocks of whole bytes
            c0, n = group[i].col_start, group[i].cols
            pieces.append(pack_levels(enc.levels[:, c0:c0 + (j - i) * n].reshape(rows, j - i, n)
                                      .transpose(1, 0, 2), cb))
            sizes += [len(pieces[-1]) // (j - i)] * (j - i)
        return group, sizes, pieces, enc.flip[0]
    packed = _packed_rows(q, spec) if any(aligned(b) for b in group) else None
    sizes, pieces = [], []
    for i, j in _runs(group, aligned if packed is not None else lambda b: False):
        blk = group[i]
        if packed is None or not aligned(blk):
            pieces.append(pack_levels(_levels(q, spec, blk.col_start, blk.col_start + blk.cols), cb))
            sizes.append(len(pieces[-1]))
            continue
        a, per = blk.col_start * cb // 8, blk.cols * cb // 8
        run = packed[:, a:a + (j - i) * per].reshape(rows, j - i, per).transpose(1, 0, 2)
        pieces.append(np.ascontiguousarray(run).reshape(-1))
        sizes += [rows * per] * (j - i)
    return group, sizes, pieces, None


def _runs(group: list, ok):
    """Spans (i, j) of group in order: a run of equal, adjacent blocks that all pass ok, packed
    block-major in one copy, or a single block."""
    i = 0
    while i < len(group):
        blk, j = group[i], i + 1
        if ok(blk):
            while (j < len(group) and ok(group[j]) and group[j].cols == blk.cols
                   and group[j].col_start == group[j - 1].col_start + blk.cols):
                j += 1
        yield i, j
        i = j


def _magnitudes(q: np.ndarray, spec: numerics.AnalogSpec, dtype) -> np.ndarray:
    """(rows, N, signs) stored magnitudes of q (N, rows): max(±q, 0) (differential) or q + offset."""
    n, rows = q.shape
    qt = q.T
    out = np.empty((rows, n, len(spec.signs)), dtype)
    if spec.differential:
        np.maximum(qt, 0, out=out[:, :, 0], casting="unsafe")
        np.maximum(np.negative(qt), 0, out=out[:, :, 1], casting="unsafe")
    else:
        np.add(qt, spec.offset, out=out[:, :, 0], casting="unsafe")
    return out


def _packed_rows(q: np.ndarray, spec: numerics.AnalogSpec) -> np.ndarray | None:
    """The data columns of a row stripe as ``pack_levels`` lays them out, or None.

    In the canonical column order a channel's sign group is S consecutive cells holding bits
    ``[j*cb, (j+1)*cb)`` of its magnitude, and cells pack least significant bits first, so when
    ``S*cb`` is a multiple of 8 the packed row is every (channel, sign) magnitude as a
    little-endian ``S*cb/8``-byte integer. q is (N, rows); the result is (rows, N*signs*S*cb/8).
    """
    bits = spec.slices * spec.cell_bits
    if bits % 8 or bits > 64:
        return None
    nb = bits // 8
    rows = q.shape[1]
    if nb in (1, 2, 4, 8):
        return _magnitudes(q, spec, f"<u{nb}").view(np.uint8).reshape(rows, -1)
    wide = _magnitudes(q, spec, "<u8").view(np.uint8)
    return wide.reshape(wide.shape[:2] + (-1, 8))[..., :nb].reshape(rows, -1)


def _levels(q: np.ndarray, spec: numerics.AnalogSpec, c0: int, c1: int) -> np.ndarray:
    """Cell levels (rows, c1-c0) of physical columns [c0, c1) of a row stripe, canonical order
    (as ``numerics.encode_weights`` lays them out, the offset scheme's reference column last)."""
    cpc, n_slices = spec.columns_per_channel, spec.slices
    p = np.arange(c0, c1)
    data = p < q.shape[0] * cpc
    out = np.full((q.shape[1], c1 - c0), spec.reference_level, np.uint8)   # the reference column's level
    if data.any():
        pd = p[data]
        channel, within = pd // cpc, pd % cpc
        lo = int(channel[0])
        mags = _magnitudes(q[lo:int(channel[-1]) + 1], spec, np.int64)
        shift = (within % n_slices) * spec.cell_bits
        out[:, data] = (mags[:, channel - lo, within // n_slices] >> shift) & spec.max_level
    return out


def _layer_record(layer, target) -> dict:
    spec = layer.spec
    full = layer.adc_full_scale or float(spec.worst_case_full_scale)
    return {"index": layer.index, "name": clean(layer.name), "op_type": layer.op_type,
            "spec": spec.to_dict(),
            "dac": {"bits": spec.dac_bits, "cycles": layer.input_cycles,
                    "input_bits": spec.input_bits, "input_signed": layer.input_signed,
                    "input_scale": layer.input_scale, "input_range": layer.input_range},
            "adc": {"bits": spec.adc_bits, "full_scale": full, "step": numerics.adc_step(spec, full),
                    "range": target.adc.range, "lossless": spec.adc_lossless},
            "matrices": [m.to_dict() for m in layer.matrices]}


def sha256_file(path: Path) -> str:
    """sha256 of a file read in 1 MiB pieces (memory stays small, a truncated file is just shorter)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DeviceReader:
    """Reads a device file back into per-matrix encoded weights for the simulator.

    ``mapping`` (the layers program.json holds) is completed in place with the blocks,
    crossbars and placement of the header, and verified.
    """

    def __init__(self, path: Path, mapping: Mapping, program_sha256: str | None = None):
        self.path = Path(path)
        self.archive = ArchiveReader(self.path, "device")
        self.header = h = _read_header(self.archive)
        if program_sha256 is not None and h.get("program_sha256") != program_sha256:
            raise InvalidDataError("device file belongs to another compile (its program checksum differs)",
                                   where=clean(str(path)), hint="simulate the OUT folder that compile wrote as a whole")
        self.levels = self.archive.bytes("levels.bin")
        if len(self.levels) != h.get("levels_bytes"):
            raise InvalidDataError("device file is truncated (levels size differs from its header)",
                                   where=clean(str(path)))
        if hashlib.sha256(self.levels).hexdigest() != h.get("levels_sha256"):
            raise InvalidDataError("device file's cell levels do not match their checksum (corrupted or edited)",
                                   where=clean(str(path)))
        self.scales = self.archive.array("weight_scales.npy")
        _complete(mapping, h, clean(str(path)))
        if [[m.to_dict() for m in x.matrices] for x in mapping.layers] != [x["matrices"] for x in h["layers"]] \
                or [x["index"] for x in h["layers"]] != list(range(len(h["layers"]))):
            raise InvalidDataError("device file's layers differ from the program's", where=clean(str(path)),
                                   hint="simulate the OUT folder that compile wrote as a whole")
        self.mapping = mapping
        self._cache: dict[tuple[int, int], Encoded] = {}
        self._flip_marks: dict | None = None
        self._scale_offsets = self._offsets()
        self._blocks: dict[tuple[int, int], list[dict]] = {}
        for blk in h["blocks"]:
            self._blocks.setdefault((blk["layer"], blk["matrix"]), []).append(blk)

    def _offsets(self) -> dict[tuple[int, int], tuple[int, int]]:
        out, pos = {}, 0
        for layer in self.header["layers"]:
            for mi, m in enumerate(layer["matrices"]):
                out[(layer["index"], mi)] = (pos, m["n_out"])
                pos += m["n_out"]
        if pos != self.scales.size:
            raise InvalidDataError("device file weight scales do not match its layers", where=clean(str(self.path)))
        return out

    def _flips(self) -> dict[tuple[int, int], np.ndarray]:
        """Flip marks (row blocks, P) of every matrix of the "flipped" scheme, in file order."""
        if self._flip_marks is None:
            self._flip_marks = {}
            shapes = [((x.index, mi), (x.spec.row_blocks(m.k_in), m.physical_cols))
                      for x in self.mapping.layers if x.spec.flipped for mi, m in enumerate(x.matrices)]
            if shapes:
                total = sum(r * p for _, (r, p) in shapes)
                packed = self.archive.array(FLIP_ENTRY)
                if packed.dtype != np.uint8 or packed.ndim != 1 or \
                        hashlib.sha256(packed.tobytes()).hexdigest() != self.header.get("flip_marks_sha256"):
                    raise InvalidDataError("device file's flip marks do not match their checksum",
                                           where=clean(str(self.path)))
                bits = np.unpackbits(packed).astype(bool)
                if bits.size < total or bits.size - total >= 8:
                    raise InvalidDataError("device file's flip marks do not match its layers",
                                           where=clean(str(self.path)))
                pos = 0
                for key, (r, p) in shapes:
                    self._flip_marks[key] = bits[pos:pos + r * p].reshape(r, p)
                    pos += r * p
        return self._flip_marks

    def float_matrix(self, layer, group):
        raise InvalidDataError("ideal mode needs the program's float weights, not the device file")

    def encoded(self, layer, group: int) -> Encoded:
        key = (layer.index, group)
        if key in self._cache:
            return self._cache[key]
        rec = self.header["layers"][layer.index]
        m = rec["matrices"][group]
        spec = layer.spec
        levels = np.zeros((m["k_in"], m["physical_cols"]), np.uint8)
        for blk in self._blocks.get(key, []):
            count = blk["rows"] * blk["cols"]
            if blk["bytes"] != packed_size(count, spec.cell_bits) or blk["offset"] + blk["bytes"] > len(self.levels):
                raise InvalidDataError(f"device file block of layer {layer.index} is corrupt", where=clean(str(self.path)))
            cells = unpack_levels(self.levels[blk["offset"]:blk["offset"] + blk["bytes"]], spec.cell_bits, count)
            levels[blk["row_start"]:blk["row_start"] + blk["rows"],
                   blk["col_start"]:blk["col_start"] + blk["cols"]] = cells.reshape(blk["rows"], blk["cols"])
        if levels.max(initial=0) >= 2 ** spec.cell_bits:
            raise InvalidDataError("device file holds a level above the cell's range", where=clean(str(self.path)))
        maps = numerics.encode_weights(np.zeros((m["n_out"], 1), np.int32), spec)
        enc = numerics.EncodedWeights(levels=levels, col_out=maps.col_out, col_slice=maps.col_slice,
                                    col_sign=maps.col_sign, flip=self._flips().get(key))
        start, n = self._scale_offsets[key]
        self._cache[key] = Encoded(enc, self.scales[start:start + n])
        return self._cache[key]


def _read_header(archive: ArchiveReader) -> dict:
    """The header, its format and version checked first (a clear word for another file), then every field."""
    h = archive.json("header.json")
    if not isinstance(h, dict) or h.get("format") != DEVICE_FORMAT:
        raise InvalidDataError("not an acompile device file (wrong format name)", where=archive.where)
    if h.get("version") != DEVICE_VERSION:
        raise InvalidDataError(f"device file version {clean(h.get('version'))} is not supported "
                               f"(this acompile reads version {DEVICE_VERSION})", where=archive.where)
    check_schema(h, HEADER, "device header", archive.where)
    return h


def _complete(mapping: Mapping, header: dict, where: str) -> None:
    """Give ``mapping`` the blocks, crossbars and placement the header records; check them."""
    try:
        full = Mapping.from_dict({"layers": [], "blocks": _mapping_order(header["blocks"], header["crossbars"]),
                                  "crossbars": header["crossbars"], "tiles_used": header["tiles_used"],
                                  "chips_needed": header["chips_needed"], "fabric": header["geometry"]},
                                 layers=mapping.layers)
        full.verify()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, BrokenMapping) as e:
        raise InvalidDataError(f"device file's mapping does not hold together ({clean(str(e), 120)})", where=where)
    for name in ("blocks", "crossbars", "tiles_used", "chips_needed", "fabric"):
        setattr(mapping, name, getattr(full, name))


def _mapping_order(blocks: list[dict], crossbars: list[dict]) -> list[dict]:
    """The header's block records (in file order, row stripe by row stripe) in mapping order.

    Every crossbar lists the mapping indices of its blocks in the order they were packed,
    which is the order of their row offsets (each block takes fresh rows).
    """
    on_bar: dict[int, list[dict]] = defaultdict(list)
    for rec in blocks:
        on_bar[rec["crossbar"]].append(rec)
    order: list = [None] * len(blocks)
    for bar in crossbars:
        recs = sorted(on_bar.pop(bar["index"], []), key=lambda r: r["row_offset"])
        if len(recs) != len(bar["blocks"]):
            raise ValueError(f"crossbar {bar['index']} lists {len(bar['blocks'])} blocks, the header {len(recs)}")
        for i, rec in zip(bar["blocks"], recs):
            order[i] = rec
    if on_bar or any(rec is None for rec in order):
        raise ValueError("a block is on no crossbar")
    return order


def inspect_summary(path: Path) -> dict:
    """The device file's summary as data (``inspect --format json``): its header without the per-block
    and per-crossbar records, which are counted instead."""
    reader = ArchiveReader(Path(path), "device")
    h = _read_header(reader)
    reader.close()
    counts: dict[int, int] = {}
    for b in h["blocks"]:
        counts[b["layer"]] = counts.get(b["layer"], 0) + 1
    return {"path": clean(str(path)), "version": h["version"], "target": h["target"],
            "program_sha256": h["program_sha256"], "crossbars": len(h["crossbars"]), "geometry": h["geometry"],
            "tiles_used": h["tiles_used"], "chips_needed": h["chips_needed"], "blocks": len(h["blocks"]),
            "levels_bytes": h["levels_bytes"],
            "layers": [{"name": layer["name"], "op_type": layer["op_type"], "spec": layer["spec"],
                        "blocks": counts.get(layer["index"], 0), "adc_full_scale": layer["adc"]["full_scale"],
                        "input_scale": layer["dac"]["input_scale"]} for layer in h["layers"]]}


def inspect_text(path: Path) -> str:
    reader = ArchiveReader(Path(path), "device")
    h = _read_header(reader)
    lines = [f"{clean(str(path))}: acompile device file v{h['version']} for target {clean(h['target'])}",
             f"  program sha256 {h['program_sha256'][:16]}...",
             f"  {len(h['crossbars'])} crossbars of {h['geometry']['rows']}x{h['geometry']['cols']} on "
             f"{count(h['tiles_used'], 'tile')} ({count(h['chips_needed'], 'chip')}), {count(len(h['blocks']), 'block')}, "
             f"{count(h['levels_bytes'], 'byte')} of cell levels",
             f"  {'layer':<28} {'op':<13} {'spec (Bw/Bx/dac/cell/adc)':<26} {'scheme':<12} {'blocks':>6} {'ADC F':>9} {'s_x':>10}"]
    counts: dict[int, int] = {}
    for b in h["blocks"]:
        counts[b["layer"]] = counts.get(b["layer"], 0) + 1
    for layer in h["layers"]:
        s = layer["spec"]
        lines.append(f"  {layer['name'][:28]:<28} {layer['op_type']:<13} "
                     f"{s['weight_bits']}/{s['input_bits']}/{s['dac_bits']}/{s['cell_bits']}/{s['adc_bits']:<16} "
                     f"{s['signed_weights']:<12} {counts.get(layer['index'], 0):>6} {decimal(layer['adc']['full_scale'], 4):>9} "
                     f"{decimal(layer['dac']['input_scale'], 4):>10}")
    reader.close()
    return "\n".join(lines) + "\n"
