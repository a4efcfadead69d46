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

Layers are encoded one at a time and streamed into ``levels.bin``, so memory
stays at one layer's cells however large the model. See docs/formats.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import InvalidDataError, clean
from ..mapping import Mapping
from ..passes.lower import layer_matrix
from ..sim import analog
from ..sim.runtime import Encoded
from .archive import ArchiveReader, ArchiveWriter, pack_levels, packed_size, unpack_levels

DEVICE_FORMAT = "acompile-device"
DEVICE_VERSION = 1


def spec_dict(spec: analog.AnalogSpec) -> dict:
    return {"weight_bits": spec.weight_bits, "input_bits": spec.input_bits, "dac_bits": spec.dac_bits,
            "cell_bits": spec.cell_bits, "adc_bits": spec.adc_bits, "rows": spec.rows,
            "signed_weights": spec.signed_weights, "input_encoding": spec.input_encoding}


def write_device(path: Path, compiled, program_sha256: str, dumps) -> None:
    graph, mapping, target = compiled.graph, compiled.mapping, compiled.target
    writer = ArchiveWriter(path)
    blocks_out = []
    scales = []
    offset = 0
    try:
        with writer.open_stream("levels.bin") as stream:
            for layer in mapping.layers:
                by_matrix: dict[int, list[int]] = {}
                for b in layer.blocks:
                    by_matrix.setdefault(mapping.blocks[b].matrix, []).append(b)
                for mi, matrix in enumerate(layer.matrices):
                    q_w, s_w = analog.quantize_weights(layer_matrix(graph.constants, layer, matrix.group),
                                                      layer.spec.weight_bits)
                    scales.append(np.asarray(s_w, np.float64))
                    levels = analog.encode_weights(q_w, layer.spec).levels
                    for b in by_matrix.get(mi, []):
                        blk = mapping.blocks[b]
                        cells = levels[blk.row_start:blk.row_start + blk.rows, blk.col_start:blk.col_start + blk.cols]
                        data = pack_levels(cells, layer.spec.cell_bits)
                        stream.write(data)
                        blocks_out.append(_block_record(blk, offset, len(data)))
                        offset += len(data)
                    del levels, q_w
        writer.add_array("weight_scales.npy", np.concatenate(scales) if scales else np.zeros(0))
        header = {
            "format": DEVICE_FORMAT, "version": DEVICE_VERSION, "target": target.name,
            "program_sha256": program_sha256,
            "levels_bytes": offset,
            "layers": [_layer_record(layer, target) for layer in mapping.layers],
            "crossbars": [{"index": c.index, "chip": c.chip, "tile": c.tile, "core": c.core, "slot": c.slot,
                           "blocks": c.blocks, "rows_used": c.rows_used, "cols_used": c.cols_used}
                          for c in mapping.crossbars],
            "blocks": blocks_out,
            "geometry": {"rows": int(target["crossbar.rows"]), "cols": int(target["crossbar.cols"]),
                         "crossbars_per_core": int(target["organisation.crossbars_per_core"]),
                         "cores_per_tile": int(target["organisation.cores_per_tile"]),
                         "tiles_per_chip": int(target["organisation.tiles_per_chip"])},
            "tiles_used": mapping.tiles_used, "chips_needed": mapping.chips_needed,
        }
        writer.add_json("header.json", header, dumps)
    finally:
        writer.close()


def _block_record(blk, offset: int, nbytes: int) -> dict:
    return {"layer": blk.layer, "matrix": blk.matrix, "row_block": blk.row_block, "col_block": blk.col_block,
            "row_start": blk.row_start, "rows": blk.rows, "col_start": blk.col_start, "cols": blk.cols,
            "crossbar": blk.crossbar, "row_offset": blk.row_offset, "col_offset": blk.col_offset,
            "offset": offset, "bytes": nbytes}


def _layer_record(layer, target) -> dict:
    spec = layer.spec
    full = layer.adc_full_scale or float(spec.worst_case_full_scale)
    return {"index": layer.index, "name": clean(layer.name), "op_type": layer.op_type,
            "spec": spec_dict(spec),
            "dac": {"bits": spec.dac_bits, "cycles": len(analog.input_cycles(spec, layer.input_signed)),
                    "input_bits": spec.input_bits, "input_signed": layer.input_signed,
                    "input_scale": layer.input_scale, "input_range": layer.input_range},
            "adc": {"bits": spec.adc_bits, "full_scale": full, "step": analog.adc_step(spec, full),
                    "range": str(target["adc.range"]), "lossless": bool(2 ** spec.adc_bits - 1 >= spec.worst_case_full_scale)},
            "matrices": [{"group": m.group, "n_out": m.n_out, "k_in": m.k_in, "physical_cols": m.physical_cols,
                          "row_blocks": m.row_blocks, "col_blocks": m.col_blocks} for m in layer.matrices]}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DeviceReader:
    """Reads a device file back into per-matrix encoded weights for the simulator."""

    def __init__(self, path: Path, mapping: Mapping | None = None, program_sha256: str | None = None):
        self.path = Path(path)
        self.archive = ArchiveReader(self.path, "device")
        self.header = self.archive.json("header.json")
        h = self.header
        if not isinstance(h, dict) or h.get("format") != DEVICE_FORMAT:
            raise InvalidDataError("not an acompile device file (wrong format name)", where=clean(str(path)))
        if h.get("version") != DEVICE_VERSION:
            raise InvalidDataError(f"device file version {clean(h.get('version'))} is not supported "
                                   f"(this acompile reads version {DEVICE_VERSION})", where=clean(str(path)))
        if program_sha256 is not None and h.get("program_sha256") != program_sha256:
            raise InvalidDataError("device file belongs to another compile (its program checksum differs)",
                                   where=clean(str(path)), hint="simulate the OUT folder that compile wrote as a whole")
        self.levels = self.archive.bytes("levels.bin")
        if len(self.levels) != h.get("levels_bytes"):
            raise InvalidDataError("device file is truncated (levels size differs from its header)",
                                   where=clean(str(path)))
        self.scales = self.archive.array("weight_scales.npy")
        self.mapping = mapping
        self._cache: dict[tuple[int, int], Encoded] = {}
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
        maps = analog.encode_weights(np.zeros((m["n_out"], 1), np.int32), spec)
        enc = analog.EncodedWeights(levels=levels, col_out=maps.col_out, col_slice=maps.col_slice,
                                    col_sign=maps.col_sign)
        start, n = self._scale_offsets[key]
        self._cache[key] = Encoded(enc, self.scales[start:start + n])
        return self._cache[key]


def inspect_text(path: Path) -> str:
    reader = ArchiveReader(Path(path), "device")
    h = reader.json("header.json")
    if not isinstance(h, dict) or h.get("format") != DEVICE_FORMAT:
        raise InvalidDataError("not an acompile device file", where=clean(str(path)))
    lines = [f"{clean(str(path))}: acompile device file v{h['version']} for target {clean(h['target'])}",
             f"  program sha256 {h['program_sha256'][:16]}...",
             f"  {len(h['crossbars'])} crossbars of {h['geometry']['rows']}x{h['geometry']['cols']} on "
             f"{h['tiles_used']} tiles ({h['chips_needed']} chip(s)), {len(h['blocks'])} blocks, "
             f"{h['levels_bytes']:,} bytes of cell levels",
             f"  {'layer':<28} {'op':<13} {'spec (Bw/Bx/dac/cell/adc)':<26} {'scheme':<12} {'blocks':>6} {'ADC F':>9} {'s_x':>10}"]
    counts: dict[int, int] = {}
    for b in h["blocks"]:
        counts[b["layer"]] = counts.get(b["layer"], 0) + 1
    for layer in h["layers"]:
        s = layer["spec"]
        lines.append(f"  {layer['name'][:28]:<28} {layer['op_type']:<13} "
                     f"{s['weight_bits']}/{s['input_bits']}/{s['dac_bits']}/{s['cell_bits']}/{s['adc_bits']:<16} "
                     f"{s['signed_weights']:<12} {counts.get(layer['index'], 0):>6} {layer['adc']['full_scale']:>9.4g} "
                     f"{layer['dac']['input_scale']:>10.4g}")
    reader.close()
    return "\n".join(lines) + "\n"
