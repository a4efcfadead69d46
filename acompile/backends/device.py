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

Matrices are encoded one row stripe at a time (:mod:`.cells`) and streamed into
``levels.bin``, so memory stays at one stripe's cells however large the model. See docs/formats.md.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import threading
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import numerics
from ..errors import InvalidDataError, clean
from ..jsonio import RawJSON, dumps_compact, table_json
from ..limits import available_memory, usable_cores
from ..mapping import BrokenMapping, Mapping, layer_matrix
from ..numerics.encoding import Encoded
from ..data_schema import check_schema
from ..units import count, decimal
from ..numerics.encoding import packed_size, unpack_levels
from .archive import ArchiveReader, ArchiveWriter
from .cells import stripe_cells
from .schemas import HEADER

DEVICE_FORMAT = "acompile-device"
DEVICE_VERSION = 2      # 2: levels.bin identified by its CRC-32 (levels_crc32) instead of a sha256
_WORKERS = min(4, usable_cores())   # row stripes encoded at once
# A row stripe of at most this many weights (128 rows of 2048 channels) is encoded on the writer's own thread:
# its numpy passes are too short for handing the GIL between threads to pay. On a 2-core machine a pool took
# 60-100 ms more CPU over a ResNet-50's stripes (every one of them this small) than one thread, and ended later.
POOLED_STRIPE_WEIGHTS = 1 << 18
# decoded matrices a DeviceReader keeps for the next read (repeats, chunks of a batch): at least this much, or
# half the memory available when it opens; past that the least recently read go (a 600 M-weight model held
# 12 GB once all were decoded)
MIN_CACHE_BYTES = 2 << 30
FLIP_ENTRY = "flip_marks.npy"   # packed bits, (row blocks, P) per matrix of the "flipped" scheme, in file order


class Cancelled(Exception):
    """The device writer stopped: the compile failed or was interrupted on another thread (the half-written
    file goes with the temporary folder)."""


def write_device(path: Path, compiled, program_sha256: Callable[[], str], stop: threading.Event | None = None) -> None:
    """Write the device file of ``compiled`` (a :class:`~acompile.compiler.Compiled`, or the compile's state
    once its mapping is final) to ``path``.

    ``program_sha256()`` gives the sha256 of the program.json it belongs to; it is called once the cells
    are written, before the header, so the program can be written (and the layers calibrated) on another
    thread meanwhile. Once ``stop`` is set (the compile failed or was interrupted on another thread),
    raises :class:`Cancelled` before the next row stripe.
    """
    graph, mapping, target = compiled.graph, compiled.mapping, compiled.target
    matrices = _stripe_blocks(mapping)
    writer = ArchiveWriter(path)
    sizes, scales, flips = [], [], []
    try:
        with writer.open_stream("levels.bin") as stream, ThreadPoolExecutor(_WORKERS) as pool:
            # the layout's records need only the mapping: encoded beside the cells, not after them
            layout = pool.submit(_layout_records, mapping, matrices)
            cells = _in_order(pool, stripe_cells, _stripes(graph, matrices, scales, stop), ahead=2 * _WORKERS,
                              pooled=_large_stripe)
            for _, group_sizes, pieces, flip in cells:
                if flip is not None:
                    flips.append(flip)
                for piece in pieces:
                    stream.write(piece)
                sizes += group_sizes
            crossbar_records, block_records, block_sizes = layout.result()
        if sizes != block_sizes:
            raise RuntimeError("the device file's cells are not the sizes its header gives them")
        writer.add_array("weight_scales.npy", np.concatenate(scales) if scales else np.zeros(0))
        marks = np.packbits(np.concatenate(flips)) if flips else None
        if marks is not None:       # the "flipped" scheme: which (row block, column) is stored complemented
            writer.add_array(FLIP_ENTRY, marks)
        header = {
            **({"flip_marks_sha256": hashlib.sha256(marks.tobytes()).hexdigest()} if marks is not None else {}),
            "format": DEVICE_FORMAT, "version": DEVICE_VERSION, "target": target.name,
            "levels_bytes": sum(sizes),
            "levels_crc32": writer.crc32("levels.bin"),     # zipfile's, taken as the bytes were written
            "crossbars": crossbar_records,
            "blocks": block_records,
            "geometry": mapping.fabric.to_dict(),
            "tiles_used": mapping.tiles_used, "chips_needed": mapping.chips_needed,
        }
        header["program_sha256"] = program_sha256()     # before the layer records: they hold what calibration sets
        header["layers"] = [_layer_record(layer, target) for layer in mapping.layers]
        writer.add_json("header.json", header, dumps_compact)   # compact: a record per block adds up
    finally:
        writer.close()


def _stripe_blocks(mapping: Mapping) -> list[tuple]:
    """Every weight matrix in file order, with its row stripes: (layer, matrix index, [the blocks of each
    stripe]).

    A stripe is the rows of one row block; its blocks are consecutive in the mapping's order
    (layer, matrix, row block, column block).
    """
    out = []
    for layer in mapping.layers:
        by_matrix: dict[int, list[int]] = {}
        for b in layer.blocks:
            by_matrix.setdefault(mapping.blocks[b].matrix, []).append(b)
        for mi in range(len(layer.matrices)):
            blocks = [mapping.blocks[b] for b in by_matrix.get(mi, [])]
            out.append((layer, mi, [list(g) for _, g in itertools.groupby(blocks, key=lambda b: (b.row_start, b.rows))]))
    return out


def _layout_records(mapping: Mapping, matrices: list) -> tuple[RawJSON, RawJSON, list[int]]:
    """The header's crossbar and block records, and the blocks' sizes in levels.bin (file order): what the
    mapping alone decides, each block's cells packed on whole bytes."""
    blocks = [(blk, layer.spec.cell_bits) for layer, _, stripes in matrices for stripe in stripes for blk in stripe]
    sizes = [packed_size(blk.rows * blk.cols, bits) for blk, bits in blocks]
    return _crossbar_records(mapping.crossbars), _block_records([blk for blk, _ in blocks], sizes), sizes


def _in_order(pool, fn, items, ahead: int, pooled: Callable[[object], bool]):
    """``map(fn, items)`` with up to ``ahead`` of the ``pooled`` items' calls running on ``pool`` meanwhile:
    large row stripes are encoded in parallel (their numpy passes release the GIL) and written in order, with
    memory bounded by ``ahead`` stripes; the others are encoded on this thread, once those before them are
    done."""
    pending: deque = deque()
    for item in items:
        if not pooled(item):
            while pending:
                yield pending.popleft().result()
            yield fn(item)
            continue
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _large_stripe(task) -> bool:
    """Whether a row stripe's work (see :func:`_stripes`) has more than POOLED_STRIPE_WEIGHTS weights."""
    w, _, _, blocks = task
    return w.shape[0] * blocks[0].rows > POOLED_STRIPE_WEIGHTS


def _block_records(blocks: list, sizes: list[int]) -> RawJSON:
    """The header's block records in file order: each block's ``to_dict()`` with the ``offset`` and
    ``bytes`` of its cells in levels.bin, encoded as one table (ten thousand of them on a ResNet-50)."""
    names = tuple(blocks[0].to_dict()) if blocks else ()
    columns = dict(zip(names, zip(*map(operator.attrgetter(*names), blocks)))) if blocks else {}
    columns["offset"] = list(itertools.accumulate(sizes, initial=0))[:-1]
    columns["bytes"] = sizes
    return table_json(columns)


def _crossbar_records(crossbars: list) -> RawJSON:
    """The header's crossbar records: each crossbar's ``to_dict()``, encoded as one table."""
    names = tuple(n for n in crossbars[0].to_dict() if n != "blocks") if crossbars else ()
    columns = dict(zip(names, zip(*map(operator.attrgetter(*names), crossbars)))) if crossbars else {}
    columns["blocks"] = ["[" + ",".join(map(str, c.blocks)) + "]" for c in crossbars]
    return table_json(columns)


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Cancelled


def _stripes(graph, matrices: list, scales: list, stop: threading.Event | None):
    """The work of every row stripe of :func:`_stripe_blocks`' matrices, in file order: (W, s_w, layer, blocks
    of the stripe), W the model's integers themselves where :func:`_model_integers` has them. Appends every
    matrix's s_w to ``scales``; checks ``stop`` before each stripe."""
    differences = None
    for layer, mi, stripes in matrices:
        if mi == 0:     # a layer's first matrix: its integers, once for all its groups
            differences = _model_integers(graph, layer)
        group = layer.matrices[mi].group
        w = layer_matrix(differences or graph.constants, layer, group)
        s_w = layer.weight_scales(group, w)
        scales.append(np.asarray(s_w, np.float64))
        for blocks in stripes:
            _check_stop(stop)
            yield w, s_w, layer, blocks


def _model_integers(graph, layer) -> dict | None:
    """{weight name: its integers less their zero points} for a layer that keeps a quantized model's integers,
    when its weight is held (or remembered) as them with one scale per output channel or one for all (a Conv
    or Linear weight scaled along its rows): its cells then come from the integers, not their float product
    divided back. None otherwise."""
    if layer.model_quant is None or layer.op_type not in ("Conv", "Linear"):
        return None
    known = numerics.folded_integers(graph.meta, graph.constants[layer.weight])
    if known is None or known.axis != 0:
        return None
    rows = np.broadcast_to(known.scales.astype(np.float64), known.ints.shape[:1])
    if not np.array_equal(rows, np.asarray(layer.model_quant["weight_scales"], np.float64)):
        return None
    return {layer.weight: known.differences()}


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
        _complete(mapping, h, clean(str(path)))
        if [[m.to_dict() for m in x.matrices] for x in mapping.layers] != [x["matrices"] for x in h["layers"]] \
                or [x["index"] for x in h["layers"]] != list(range(len(h["layers"]))):
            raise InvalidDataError("device file's layers differ from the program's", where=clean(str(path)),
                                   hint="simulate the OUT folder that compile wrote as a whole")
        self.mapping = mapping
        self._cache: OrderedDict[tuple[int, int], Encoded] = OrderedDict()     # least recently read first
        self._cache_bytes = max(MIN_CACHE_BYTES, available_memory() // 2)
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
            self._cache.move_to_end(key)
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
        self._cache[key] = made = Encoded(enc, self.scales[start:start + n])
        while len(self._cache) > 1 and sum(map(_held_bytes, self._cache.values())) > self._cache_bytes:
            self._cache.popitem(last=False)
        return made


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
                               hint="compile the model again with this acompile")
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
