"""Reading a device file (``device.acdev``, written by :mod:`.device`) back: per-matrix encoded weights for
the simulator, with every part checked against the header and the program, and ``inspect``'s summary."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .. import numerics
from ..data_schema import check_schema
from ..errors import InvalidDataError, clean
from ..limits import available_memory
from ..mapping import BrokenMapping, Fabric, Mapping
from ..numerics.encoding import Encoded, packed_size, unpack_levels
from ..units import count, decimal
from .archive import ArchiveReader
from .device import BLOCKS_ENTRY, CROSSBARS_ENTRY, DEVICE_FORMAT, DEVICE_VERSION, FLIP_ENTRY
from .layout import BLOCK_COLUMNS, CROSSBAR_COLUMNS, mapping_from_tables
from .schemas import HEADER, RECOMPILE

# decoded matrices a DeviceReader keeps for the next read (repeats, chunks of a batch): at least this much, or
# half the memory available when it opens; past that the least recently read go (a 600 M-weight model held
# 12 GB once all were decoded)
MIN_CACHE_BYTES = 2 << 30


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
        if self.archive.crc32("levels.bin") not in (h["levels_crc32"], None):    # None: reading it says so
            raise InvalidDataError("device file's cell levels do not match their checksum (edited)",
                                   where=clean(str(path)))
        self.levels = self.archive.bytes("levels.bin")      # checked against its CRC-32 as it is read
        if len(self.levels) != h.get("levels_bytes"):
            raise InvalidDataError("device file is truncated (levels size differs from its header)",
                                   where=clean(str(path)))
        self.scales = self.archive.array("weight_scales.npy")
        self.blocks = self.archive.array(BLOCKS_ENTRY)
        _complete(mapping, h, self.blocks, self.archive.array(CROSSBARS_ENTRY), clean(str(path)))
        if [[m.to_dict() for m in x.matrices] for x in mapping.layers] != [x["matrices"] for x in h["layers"]] \
                or [x["index"] for x in h["layers"]] != list(range(len(h["layers"]))):
            raise InvalidDataError("device file's layers differ from the program's", where=clean(str(path)),
                                   hint="simulate the OUT folder that compile wrote as a whole")
        self.mapping = mapping
        self._cache: OrderedDict[tuple[int, int], Encoded] = OrderedDict()     # least recently read first
        self._cache_bytes = max(MIN_CACHE_BYTES, available_memory() // 2)
        self._flip_marks: dict | None = None
        self._scale_offsets = self._offsets()
        self._blocks: dict[tuple[int, int], list[list[int]]] = {}     # rows of blocks.npy by (layer, matrix)
        for row in self.blocks.tolist():
            self._blocks.setdefault((row[0], row[1]), []).append(row)

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
            self._cache.move_to_end(key)
            return self._cache[key]
        rec = self.header["layers"][layer.index]
        m = rec["matrices"][group]
        spec = layer.spec
        levels = np.zeros((m["k_in"], m["physical_cols"]), np.uint8)
        for blk in self._blocks.get(key, []):
            row_start, rows, col_start, cols, offset, size = (blk[_COLUMN[c]] for c in _READ)
            count = rows * cols
            if size != packed_size(count, spec.cell_bits) or offset + size > len(self.levels):
                raise InvalidDataError(f"device file block of layer {layer.index} is corrupt",
                                       where=clean(str(self.path)))
            cells = unpack_levels(self.levels[offset:offset + size], spec.cell_bits, count)
            levels[row_start:row_start + rows, col_start:col_start + cols] = cells.reshape(rows, cols)
        if levels.max(initial=0) >= 2 ** spec.cell_bits:
            raise InvalidDataError("device file holds a level above the cell's range", where=clean(str(self.path)))
        maps = numerics.encode_weights(np.zeros((m["n_out"], 1), np.int32), spec)
        enc = numerics.EncodedWeights(levels=levels, col_out=maps.col_out, col_slice=maps.col_slice,
                                    col_sign=maps.col_sign, flip=self._flips().get(key))
        start, n = self._scale_offsets[key]
        self._cache[key] = made = Encoded(enc, self.scales[start:start + n])
        while len(self._cache) > 1 and sum(map(_held_bytes, self._cache.values())) > self._cache_bytes:
            self._cache.popitem(last=False)
        return made


_COLUMN = {name: i for i, name in enumerate(BLOCK_COLUMNS)}
_READ = ("row_start", "rows", "col_start", "cols", "offset", "bytes")


def _held_bytes(encoded: Encoded) -> int:
    """The bytes a decoded matrix holds: its cell levels and what was derived from them (its integer and float
    weights, cached on the encoding)."""
    derived = [v for x in encoded.enc._cache.values() for v in (x if isinstance(x, tuple) else (x,))]
    return encoded.enc.levels.nbytes + sum(v.nbytes for v in derived if isinstance(v, np.ndarray))


def _read_header(archive: ArchiveReader) -> dict:
    """The header, its format and version checked first (a clear word for another file), then every field."""
    h = archive.json("header.json")
    if not isinstance(h, dict) or h.get("format") != DEVICE_FORMAT:
        raise InvalidDataError("not an acompile device file (wrong format name)", where=archive.where)
    if h.get("version") != DEVICE_VERSION:
        raise InvalidDataError(f"device file version {clean(h.get('version'))} is not supported "
                               f"(this acompile reads version {DEVICE_VERSION})", where=archive.where,
                               hint=RECOMPILE)
    check_schema(h, HEADER, "device header", archive.where)
    return h


def _complete(mapping: Mapping, header: dict, blocks: np.ndarray, crossbars: np.ndarray, where: str) -> None:
    """Give ``mapping`` the blocks, crossbars and placement the layout tables and the header record; check them."""
    if header["block_columns"] != list(BLOCK_COLUMNS) or header["crossbar_columns"] != list(CROSSBAR_COLUMNS):
        raise InvalidDataError("device file's layout tables have other columns than this acompile writes", where=where,
                               hint=RECOMPILE)
    try:
        full = mapping_from_tables(mapping.layers, blocks, crossbars, Fabric.from_dict(header["geometry"]),
                                   header["tiles_used"], header["chips_needed"])
        full.verify()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, BrokenMapping) as e:
        raise InvalidDataError(f"device file's mapping does not hold together ({clean(str(e), 120)})", where=where)
    for name in ("blocks", "crossbars", "tiles_used", "chips_needed", "fabric"):
        setattr(mapping, name, getattr(full, name))


def inspect_summary(path: Path) -> dict:
    """The device file's summary as data (``inspect --format json``): its header, with the blocks and
    crossbars of its layout tables counted."""
    reader = ArchiveReader(Path(path), "device")
    try:
        h = _read_header(reader)
        blocks, crossbars = reader.array(BLOCKS_ENTRY), reader.array(CROSSBARS_ENTRY)
    finally:
        reader.close()
    n = len(h["layers"])
    if blocks.ndim != 2 or blocks.shape[1] != len(BLOCK_COLUMNS) or blocks.dtype.kind not in "iu" \
            or crossbars.ndim != 2 or (blocks.size and not 0 <= blocks[:, 0].min() <= blocks[:, 0].max() < n):
        raise InvalidDataError("device file's layout tables do not match its header", where=reader.where)
    counts = np.bincount(blocks[:, 0].astype(np.int64), minlength=n).tolist()
    return {"path": clean(str(path)), "version": h["version"], "target": h["target"],
            "program_sha256": h["program_sha256"], "crossbars": len(crossbars), "geometry": h["geometry"],
            "tiles_used": h["tiles_used"], "chips_needed": h["chips_needed"], "blocks": len(blocks),
            "levels_bytes": h["levels_bytes"],
            "layers": [{"name": layer["name"], "op_type": layer["op_type"], "spec": layer["spec"],
                        "blocks": counts[i], "adc_full_scale": layer["adc"]["full_scale"],
                        "input_scale": layer["dac"]["input_scale"]} for i, layer in enumerate(h["layers"])]}


def inspect_text(path: Path) -> str:
    d = inspect_summary(path)
    lines = [f"{d['path']}: acompile device file v{d['version']} for target {clean(d['target'])}",
             f"  program sha256 {d['program_sha256'][:16]}...",
             f"  {d['crossbars']} crossbars of {d['geometry']['rows']}x{d['geometry']['cols']} on "
             f"{count(d['tiles_used'], 'tile')} ({count(d['chips_needed'], 'chip')}), "
             f"{count(d['blocks'], 'block')}, "
             f"{count(d['levels_bytes'], 'byte')} of cell levels",
             f"  {'layer':<28} {'op':<13} {'spec (Bw/Bx/dac/cell/adc)':<26} {'scheme':<12} {'blocks':>6} "
             f"{'ADC F':>9} {'s_x':>10}"]
    for layer in d["layers"]:
        s = layer["spec"]
        lines.append(f"  {layer['name'][:28]:<28} {layer['op_type']:<13} "
                     f"{s['weight_bits']}/{s['input_bits']}/{s['dac_bits']}/{s['cell_bits']}/{s['adc_bits']:<16} "
                     f"{s['signed_weights']:<12} {layer['blocks']:>6} "
                     f"{decimal(layer['adc_full_scale'], 4):>9} "
                     f"{decimal(layer['input_scale'], 4):>10}")
    return "\n".join(lines) + "\n"
