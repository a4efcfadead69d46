"""The device configuration file (``device.acdev``).

A ZIP container (stored entries, fixed timestamps: byte-identical across
runs) holding:

* ``header.json`` -- format name and version, the target, the program it
  belongs to (sha256 of ``program.json``), the geometry, the converter settings and scales of
  every layer;
* ``blocks.npy`` and ``crossbars.npy`` -- the layout (:mod:`.layout`): every block (layer, matrix,
  row range = row map, physical column range = column map, crossbar, offset inside it, byte range in
  ``levels.bin``) and every crossbar (chip, tile, core, slot), one integer row each;
* ``levels.bin`` -- the conductance level (0 .. 2^cell_bits-1) of every cell
  of every block, row-major, ``cell_bits`` bits per cell, each block starting
  on a byte boundary;
* ``weight_scales.npy`` -- s_w of every output channel of every matrix,
  concatenated in layer/matrix order.

Matrices are encoded one row stripe at a time (:mod:`.cells`) and streamed into
``levels.bin``, so memory stays at one stripe's cells however large the model; the layout and the
header are added once calibration is done. :mod:`.device_reader` reads the file back. See docs/formats.md.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .. import numerics
from ..errors import clean
from ..jsonio import dumps_lines
from ..lazy import LazyThreads
from ..limits import usable_cores
from ..mapping import Mapping, layer_matrix
from .archive import ArchiveWriter
from .cells import Stripe, stripe_cells
from .layout import BLOCK_COLUMNS, CROSSBAR_COLUMNS, layout_tables, matrix_blocks

DEVICE_FORMAT = "acompile-device"
DEVICE_VERSION = 3      # 3: the layout as two integer tables, not JSON records; 2: levels.bin identified
#                           by its CRC-32 (levels_crc32) instead of a sha256
_WORKERS = min(4, usable_cores())   # row stripes encoded at once
# A row stripe of at most this many weights (128 rows of 2048 channels) is encoded on the writer's own thread:
# its numpy passes are too short for handing the GIL between threads to pay. On a 2-core machine a pool took
# 60-100 ms more CPU over a ResNet-50's stripes (every one of them this small) than one thread, and ended later.
POOLED_STRIPE_WEIGHTS = 1 << 18
BATCHED_STRIPE_WEIGHTS = 1 << 18
BLOCKS_ENTRY, CROSSBARS_ENTRY = "blocks.npy", "crossbars.npy"
FLIP_ENTRY = "flip_marks.npy"   # packed bits, (row blocks, P) per matrix of the "flipped" scheme, in file order


class Cancelled(Exception):
    """The device writer stopped: the compile failed or was interrupted on another thread (the half-written
    file goes with the temporary folder)."""


def write_device(path: Path, compiled, program_sha256: str, stop: threading.Event | None = None) -> None:
    """Write the device file of ``compiled`` (a :class:`~acompile.compiler.Compiled`, or the compile's state
    once its mapping is final) to ``path``, for the program.json whose sha256 is ``program_sha256``:
    :func:`write_cells`, then :func:`add_header`. Once ``stop`` is set (the compile failed or was interrupted
    on another thread), raises :class:`Cancelled` before the next row stripe.
    """
    cells = write_cells(path, compiled, stop)
    add_header(path, cells, header_parts(compiled), program_sha256)


def write_cells(path: Path, compiled, stop: threading.Event | None = None) -> dict:
    """Write every member of the device file but its header -- levels.bin, weight_scales.npy and, in the
    "flipped" scheme, the flip marks -- as a complete archive that :func:`add_header` finishes. Return what
    the header says of them (plain data, which a forked writer sends back): ``block_bytes`` (each block's
    size in levels.bin, file order) and ``flip_marks`` (their packed bytes, which the header names by their
    sha256; None without flip marks). The hashing is add_header's: a forked writer then never loads hashlib
    (OpenSSL's, 3 ms of its path).

    Nothing calibration sets is read: the cells can be written from the moment the mapping is final. The
    layout tables are not built here: the mapping alone decides them (:func:`.layout.layout_tables`), and a
    compile builds them while this runs in a forked process.
    """
    graph, mapping = compiled.graph, compiled.mapping
    matrices = _stripe_blocks(mapping)
    writer = ArchiveWriter(path)
    sizes, scales, flips = [], [], []
    try:
        with writer.open_stream("levels.bin") as stream, LazyThreads(_WORKERS) as pool:
            cells = _in_order(pool, stripe_cells, _stripes(graph, matrices, scales, stop), ahead=2 * _WORKERS,
                              pooled=_large_stripe)
            for _, group_sizes, pieces, flip in cells:
                if flip is not None:
                    flips.append(flip)
                for piece in pieces:
                    stream.write(piece)
                sizes += group_sizes
        writer.add_array("weight_scales.npy", np.concatenate(scales) if scales else np.zeros(0))
        marks = np.packbits(np.concatenate(flips)) if flips else None
        if marks is not None:       # the "flipped" scheme: which (row block, column) is stored complemented
            writer.add_array(FLIP_ENTRY, marks)
    finally:
        writer.close()
    return {"block_bytes": sizes, "flip_marks": marks.tobytes() if marks is not None else None}


def header_parts(compiled) -> tuple:
    """What the device file adds to its cells that the cells do not decide: :func:`.layout.layout_tables` of the
    mapping and the header's fields, calibration's scales included. A compile builds them while the cells are
    still being written, so that only :func:`add_header`'s writing waits for the cells."""
    mapping, target = compiled.mapping, compiled.target
    fields = {"format": DEVICE_FORMAT, "version": DEVICE_VERSION, "target": target.name,
              "block_columns": list(BLOCK_COLUMNS), "crossbar_columns": list(CROSSBAR_COLUMNS),
              "geometry": mapping.fabric.to_dict(),
              "tiles_used": mapping.tiles_used, "chips_needed": mapping.chips_needed,
              "layers": [_layer_record(layer, target) for layer in mapping.layers]}
    return layout_tables(mapping), fields


def add_header(path: Path, cells: dict, parts: tuple, program_sha256: str) -> None:
    """Append the layout tables and header.json to the device file :func:`write_cells` wrote (``cells``: what it
    returned), once calibration is done (``parts``: :func:`header_parts`) and ``program_sha256`` names the
    program.json it belongs to."""
    import hashlib
    (blocks, crossbars, block_sizes), fields = parts
    if cells["block_bytes"] != block_sizes:
        raise RuntimeError("the device file's cells are not the sizes its layout gives them")
    writer = ArchiveWriter(path, append=True)
    try:
        writer.add_array(BLOCKS_ENTRY, blocks)
        writer.add_array(CROSSBARS_ENTRY, crossbars)
        marks = cells["flip_marks"]
        header = {
            **({"flip_marks_sha256": hashlib.sha256(marks).hexdigest()} if marks is not None else {}),
            **fields, "levels_bytes": sum(block_sizes),
            "levels_crc32": writer.crc32("levels.bin"),     # zipfile's, taken as the bytes were written
            "program_sha256": program_sha256,
        }
        writer.add_json("header.json", header, dumps_lines)
    finally:
        writer.close()


def _stripe_blocks(mapping: Mapping) -> list[tuple]:
    """Every weight matrix in file order (:func:`.layout.matrix_blocks`), with its row stripes: (layer, matrix
    index, [:class:`.cells.Stripe` of each row block]).

    A stripe is the rows of one row block; its blocks are consecutive in the mapping's order
    (layer, matrix, row block, column block).
    """
    t, matrices = mapping.blocks, matrix_blocks(mapping)
    order = np.fromiter(itertools.chain.from_iterable(blocks for *_, blocks in matrices), np.int64)
    which = np.repeat(np.arange(len(matrices)), [len(blocks) for *_, blocks in matrices])
    row_start, rows = t.row_start[order], t.rows[order]
    first = np.ones(len(order), bool)
    first[1:] = (which[1:] != which[:-1]) | (row_start[1:] != row_start[:-1]) | (rows[1:] != rows[:-1])
    at = np.flatnonzero(first)
    starts, widths = t.col_start[order].tolist(), t.cols[order].tolist()
    out = [(layer, mi, []) for layer, mi, _ in matrices]
    for a, b, m, r0, r in zip(at.tolist(), at[1:].tolist() + [len(order)], which[at].tolist(), row_start[at].tolist(),
                              rows[at].tolist()):
        out[m][2].append(Stripe(r0, r, starts[a:b], widths[a:b]))
    return out


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
    w, _, _, stripe = task
    return w.shape[0] * stripe.rows * stripe.count > POOLED_STRIPE_WEIGHTS


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Cancelled


def _stripes(graph, matrices: list, scales: list, stop: threading.Event | None):
    """The work of every row stripe of :func:`_stripe_blocks`' matrices, in file order: (W, s_w, layer,
    :class:`.cells.Stripe`), W the model's integers themselves where :func:`_model_integers` has them. Appends every
    matrix's s_w to ``scales``; checks ``stop`` before each stripe."""
    differences = None
    for layer, mi, stripes in matrices:
        if mi == 0:     # a layer's first matrix: its integers, once for all its groups
            differences = _model_integers(graph, layer)
        group = layer.matrices[mi].group
        w = layer_matrix(differences or graph.constants, layer, group)
        s_w = layer.weight_scales(group, w)
        scales.append(np.asarray(s_w, np.float64))
        for stripe in _alike(stripes, w.shape[0]):
            _check_stop(stop)
            yield w, s_w, layer, stripe


def _alike(stripes: list[Stripe], channels: int) -> Iterator[Stripe]:
    """A matrix's row stripes, consecutive ones laid out alike joined into one :class:`.cells.Stripe` of up to
    BATCHED_STRIPE_WEIGHTS weights (``channels`` per row)."""
    most = max(1, BATCHED_STRIPE_WEIGHTS // max(1, channels * stripes[0].rows)) if stripes else 1
    i = 0
    while i < len(stripes):
        first, j = stripes[i], i + 1
        while j < len(stripes) and j - i < most and stripes[j][1:] == first[1:] \
                and stripes[j].row_start == first.row_start + (j - i) * first.rows:
            j += 1
        yield first._replace(count=j - i)
        i = j


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
