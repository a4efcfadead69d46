"""The device file's bytes against their definition (docs/formats.md): every block's cells are
``pack_levels`` of that block of ``encode_weights(q_w).levels`` (flip marks included), whatever the
scheme, cell width, reference column or block cut; the layout tables are the mapping's blocks and
crossbars, and read back into the same mapping."""

from __future__ import annotations

import json
import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import models
from acompile import numerics
from acompile.backends.archive import ArchiveReader
from acompile.numerics.encoding import pack_levels
from acompile.backends.cells import _magnitudes
from acompile.backends.device import Cancelled, add_header, header_parts, write_cells, write_device
from acompile.backends.device_reader import DeviceReader
from acompile.backends.layout import BLOCK_COLUMNS, layout_tables, mapping_from_tables
from acompile.backends.program import write_program
from acompile.jsonio import dumps_json, dumps_lines
from acompile.mapping import layer_matrix
from acompile.target import apply_overrides, load_target, parse_settings
from helpers import compiled

SCHEMES = [  # (signed_weights, offset_subtraction, cell_bits, weight_bits, rows)
    ("flipped", "input_sum", 2, 16, 128),     # isaac itself: 2-byte magnitudes, no reference column
    ("flipped", "digital", 2, 8, 64),         # flipped with a reference column
    ("flipped", "digital", 4, 8, 100),
    ("flipped", "input_sum", 1, 6, 64),       # 6 one-bit slices: a channel fills no whole byte (levels path)
    ("flipped", "digital", 3, 8, 64),         # 3-bit cells straddle bytes: levels, not packed magnitudes
    ("flipped", "input_sum", 8, 8, 64),       # one cell per byte
    ("offset", "digital", 2, 8, 64),
    ("offset", "analog", 2, 16, 100),
    ("offset", "digital", 4, 12, 64),         # 3-byte magnitudes (wider than a power of two)
    ("differential", "digital", 2, 8, 64),
    ("differential", "digital", 1, 8, 100),   # 7 slices: odd widths, every block from its levels
    ("differential", "digital", 8, 16, 64),
]


def _target(scheme, cell_bits, weight_bits, rows, how):
    return apply_overrides(load_target("isaac"), parse_settings([
        f"crossbar.signed_weights={scheme}", f"crossbar.offset_subtraction={how}", f"crossbar.cell_bits={cell_bits}",
        f"precision.weight_bits={weight_bits}", f"crossbar.rows={rows}", "crossbar.cols=96", "adc.columns_per_adc=96"]))


@pytest.mark.parametrize("scheme,how,cell_bits,weight_bits,rows", SCHEMES)
def test_every_block_holds_the_packed_levels_of_encode_weights(tmp_path, scheme, how, cell_bits, weight_bits, rows):
    target = _target(scheme, cell_bits, weight_bits, rows, how)
    for model in (models.mlp((13, 37, 10)), models.grouped_conv(), models.mlp((150, 130, 7))):
        comp = compiled(model, target)
        sha = write_program(tmp_path, comp, dumps_json)
        write_device(tmp_path / "device.acdev", comp, sha)
        archive = ArchiveReader(tmp_path / "device.acdev", "device")
        blocks, levels = archive.array("blocks.npy"), archive.bytes("levels.bin")
        archive.close()
        reader = DeviceReader(tmp_path / "device.acdev", comp.mapping, program_sha256=sha)
        for layer in comp.mapping.layers:
            spec = layer.spec
            for g, matrix in enumerate(layer.matrices):
                q, s_w = numerics.quantize_weights(layer_matrix(comp.graph.constants, layer, g), spec.weight_bits)
                want = numerics.encode_weights(q, spec)
                got = reader.encoded(layer, g)
                np.testing.assert_array_equal(got.enc.levels, want.levels)
                if spec.flipped:
                    np.testing.assert_array_equal(got.enc.flip, want.flip)
                np.testing.assert_array_equal(got.weight_scale, s_w)
                for blk in (dict(zip(BLOCK_COLUMNS, row)) for row in blocks.tolist() if row[:2] == [layer.index, g]):
                    cells = want.levels[blk["row_start"]:blk["row_start"] + blk["rows"],
                                        blk["col_start"]:blk["col_start"] + blk["cols"]]
                    assert levels[blk["offset"]:blk["offset"] + blk["bytes"]] == pack_levels(cells, spec.cell_bits)


def test_a_reader_keeps_decoded_matrices_within_its_memory_and_decodes_again_what_it_let_go(tmp_path, monkeypatch):
    """Decoded matrices stay for the next read up to the reader's budget (half the memory available, at least
    MIN_CACHE_BYTES); past it the least recently read go, and reading one again decodes the same cells."""
    from acompile.backends import device_reader
    from acompile.numerics.encoding import float_weights
    comp = compiled(models.mlp((150, 130, 70, 7)), "isaac")
    sha = write_program(tmp_path, comp, dumps_json)
    write_device(tmp_path / "device.acdev", comp, sha)
    layers = comp.mapping.layers
    whole = DeviceReader(tmp_path / "device.acdev", comp.mapping, program_sha256=sha)
    want = [whole.encoded(layer, 0) for layer in layers]
    assert all(whole.encoded(layer, 0) is w for layer, w in zip(layers, want))          # all kept
    monkeypatch.setattr(device_reader, "MIN_CACHE_BYTES", 1)      # room for none: the latest read stays alone
    monkeypatch.setattr(device_reader, "available_memory", lambda: 0)
    small = DeviceReader(tmp_path / "device.acdev", comp.mapping, program_sha256=sha)
    first = small.encoded(layers[0], 0)
    float_weights(first.enc, layers[0].spec)
    for layer in layers[1:]:
        small.encoded(layer, 0)
    assert list(small._cache) == [(layers[-1].index, 0)]
    again = small.encoded(layers[0], 0)
    assert again is not first and np.array_equal(again.enc.levels, want[0].enc.levels)
    assert np.array_equal(float_weights(again.enc, layers[0].spec)[0], float_weights(want[0].enc, layers[0].spec)[0])


@pytest.mark.parametrize("dtype", ["<u1", "<u2", "<u4"])
def test_differential_magnitudes_are_max_of_q_and_minus_q(dtype):
    """Both signs' magnitudes come from one integer twice as wide: the extremes, zero and every sign."""
    top = (1 << (8 * np.dtype(dtype).itemsize - 1)) - 1
    q = np.random.default_rng(3).integers(-top, top + 1, (37, 19))
    q[0, :3] = top, -top, 0
    spec = SimpleNamespace(differential=True, signs=(1, -1))
    got = _magnitudes(q.astype(np.int32 if top < 2**31 else np.int64), spec, dtype)
    want = np.stack([np.maximum(q.T, 0), np.maximum(-q.T, 0)], axis=-1).astype(dtype)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("narrow", [np.int8, np.int16])
@pytest.mark.parametrize("dtype", ["<u1", "<u2", "<u4", "<u8", "<i8"])
@pytest.mark.parametrize("differential", [False, True])
def test_magnitudes_of_a_models_narrow_integers_are_those_of_the_same_integers_widened(narrow, dtype, differential):
    """A quantized model's own integers (int8, int16) are read in their own type: offset (their own bias, or a
    wider weight's, as isaac's 2^15 for int8 weights) or signs, the stored magnitudes are those of the same
    integers as int64, their extremes (-128 in int8) included."""
    info, width = np.iinfo(narrow), 8 * np.dtype(dtype).itemsize
    if width < info.bits:
        pytest.skip("a type narrower than the integers")
    q = np.random.default_rng(5).integers(info.min, info.max + 1, (23, 17)).astype(narrow)
    q[0, :3] = info.min, info.max, 0
    wide = q.astype(np.int64).T
    for offset in {1 << (info.bits - 1), 1 << (min(width, 32) - 1)}:
        spec = SimpleNamespace(differential=differential, signs=(1, -1) if differential else (1,), offset=offset)
        want = np.stack([np.maximum(wide, 0), np.maximum(-wide, 0)], axis=-1) if differential else \
            (wide + offset)[:, :, None]
        got = _magnitudes(q, spec, dtype)
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want.astype(dtype))


@pytest.mark.parametrize("tile", [1, 100, 1 << 15])
def test_magnitudes_are_transposed_tile_by_tile_into_the_whole_transpose(monkeypatch, tile):
    from acompile.backends import cells
    monkeypatch.setattr(cells, "TRANSPOSE_TILE_BYTES", tile)
    for dtype, shape in (("<u2", (300, 128)), ("<i4", (7, 64)), ("<u8", (129, 3))):
        a = np.random.default_rng(1).integers(0, 1 << 15, shape).astype(dtype)
        out = np.zeros(shape[::-1], dtype)
        cells._transposed(a, out)
        assert np.array_equal(out, a.T)


def test_the_layout_tables_are_the_mappings_own_and_read_back_into_it(tmp_path):
    """blocks.npy is the mapping's blocks in its order, with their cells' byte ranges following each other in
    levels.bin; crossbars.npy its crossbars; read back on the same layers they give the same mapping, block
    lists, copies and crossbar lists included."""
    comp = compiled(models.grouped_conv(), "isaac", replicate="auto")
    mapping = comp.mapping
    assert mapping.blocks.replica.any() and max(map(len, mapping.held())) > 1
    sha = write_program(tmp_path, comp, dumps_json)
    write_device(tmp_path / "device.acdev", comp, sha)
    archive = ArchiveReader(tmp_path / "device.acdev", "device")
    header, blocks, crossbars = archive.json("header.json"), archive.array("blocks.npy"), archive.array("crossbars.npy")
    archive.close()
    assert header["block_columns"] == list(BLOCK_COLUMNS) and blocks.dtype == crossbars.dtype == np.int64
    records = [dict(zip(BLOCK_COLUMNS, row)) for row in blocks.tolist()]
    assert [{k: r[k] for k in BLOCK_COLUMNS[:-2]} for r in records] == mapping.blocks.records(BLOCK_COLUMNS[:-2])
    assert [dict(zip(header["crossbar_columns"], row)) for row in crossbars.tolist()] == mapping.crossbars.records()
    spans = sorted((r["offset"], r["bytes"]) for r in records)
    assert spans[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
    assert sum(n for _, n in spans) == header["levels_bytes"]
    layers = [type(x).from_dict(x.to_dict()) for x in mapping.layers]
    again = mapping_from_tables(layers, blocks, crossbars, mapping.fabric, mapping.tiles_used, mapping.chips_needed)
    assert again.to_dict() == mapping.to_dict()
    again.verify()


@pytest.mark.parametrize("damage,message", [
    (lambda b, c: (b.astype(np.int32), c), "not int64"),
    (lambda b, c: (b[:, :-1], c), "not int64"),
    (lambda b, c: (b - 2, c), "out of range"),
    (lambda b, c: (np.where(np.arange(b.shape[1]) == 0, 99, b), c), "does not exist"),
    (lambda b, c: (np.where(np.arange(b.shape[1]) == 8, len(c), b), c), "does not exist"),
])
def test_layout_tables_that_cannot_describe_a_mapping_are_refused(damage, message):
    comp = compiled(models.small_cnn(), "isaac")
    mapping = comp.mapping
    blocks, crossbars, _ = layout_tables(mapping)
    with pytest.raises(ValueError, match=message):
        mapping_from_tables(mapping.layers, *damage(blocks, crossbars), mapping.fabric, mapping.tiles_used,
                            mapping.chips_needed)


def test_dumps_lines_writes_the_document_dumps_json_writes_a_line_per_value_below_its_depth():
    doc = {"b": [{"x": np.float32(0.1), "y": [1, 2]}, {"z": {}}], "a": {"k2": np.arange(3), "k1": "é"},
           "c": 2**70, "d": [], "e": {}, "f": {10: None, 9: 1.5}}
    text = dumps_lines(doc)
    assert json.loads(text) == json.loads(dumps_json(doc))
    assert text.splitlines() == [
        "{", '  "a": {', '    "k1": "\\u00e9",', '    "k2": [0, 1, 2]', "  },",
        '  "b": [', '    {"x": 0.10000000149011612, "y": [1, 2]},', '    {"z": {}}', "  ],",
        f'  "c": {2**70},', '  "d": [],', '  "e": {},', '  "f": {', '    "9": 1.5,', '    "10": null', "  }", "}"]
    assert dumps_lines([1, [2]], depth=1) == "[\n  1,\n  [2]\n]\n" and dumps_lines(5) == "5\n"
    with pytest.raises(ValueError):
        dumps_lines({"a": [float("nan")]})


def test_a_program_holds_each_constant_op_and_layer_on_a_line_of_its_own(tmp_path):
    comp = compiled(models.small_cnn(), "isaac")
    write_program(tmp_path, comp, dumps_lines)
    text = (tmp_path / "program.json").read_text()
    program = json.loads(text)
    write_program(tmp_path, comp, dumps_json)
    assert program == json.loads((tmp_path / "program.json").read_text())
    lines = text.splitlines()
    for key in ("constants", "ops", "layers"):
        assert len(program[key]) > 1
        first = lines.index(f'  "{key}": ' + ("{" if key == "constants" else "["))
        assert lines[first + 1 + len(program[key])].startswith(("  }", "  ]"))


def test_the_header_goes_only_on_cells_of_the_sizes_the_layout_gives_them(tmp_path):
    """A compile builds the layout tables and the header's fields while the cells are written elsewhere:
    add_header checks that the cells are what those tables say before it finishes the file."""
    comp = compiled(models.small_cnn(), "isaac")
    write_device(tmp_path / "whole.acdev", comp, "0" * 64)
    path = tmp_path / "device.acdev"
    cells = write_cells(path, comp)
    parts = header_parts(comp)
    with pytest.raises(RuntimeError, match="not the sizes"):
        add_header(path, {**cells, "block_bytes": cells["block_bytes"][:-1] + [0]}, parts, "0" * 64)
    add_header(path, cells, parts, "0" * 64)
    assert path.read_bytes() == (tmp_path / "whole.acdev").read_bytes()


def test_the_device_writer_stops_when_told(tmp_path):
    """compile writes the device file on another thread and sets ``stop`` when it fails or is interrupted:
    the writer gives up at its next row stripe instead of finishing a file that will be removed."""
    comp = compiled(models.small_cnn(), "isaac")
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        write_device(tmp_path / "device.acdev", comp, "0" * 64, stop)


def test_the_formats_doc_names_every_key_and_member(tmp_path):
    """docs/formats.md names every key of program.json (top level, layer records, spec) and every member
    and header key of device.acdev, as an isaac compile (the flipped scheme) writes them."""
    import zipfile
    from pathlib import Path

    from acompile.cli import main

    doc = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text(encoding="utf-8")
    model = tmp_path / "mlp.onnx"
    model.write_bytes(models.mlp().SerializeToString())
    assert main(["compile", str(model), "-t", "isaac", "-o", str(tmp_path / "out"), "-q"]) == 0
    program = json.loads((tmp_path / "out" / "program.json").read_text())
    layer = program["layers"][0]
    with zipfile.ZipFile(tmp_path / "out" / "device.acdev") as z:
        members = z.namelist()
        header = json.loads(z.read("header.json"))
    in_code = {word for span in re.findall(r"`([^`]+)`", doc) for word in re.findall(r"[\w.]+", span)}
    named = [*program, *layer, *layer["spec"], *members, *header]
    assert [key for key in named if key not in in_code] == []
    assert "flip_marks.npy" in members and "`flip_marks.npy`" in doc


def test_small_row_stripes_are_encoded_on_the_writers_thread(tmp_path, monkeypatch):
    """Row stripes of at most POOLED_STRIPE_WEIGHTS weights are encoded on the thread writing the file,
    larger ones on its pool; the bytes are the same whichever thread encoded which stripe."""
    from acompile.backends import device

    comp = compiled(models.small_cnn(), "isaac")
    seen = []

    def recorded(task):
        w, _, _, stripe = task
        seen.append((w.shape[0] * stripe.rows * stripe.count, threading.current_thread()))
        return encode(task)

    encode = device.stripe_cells
    monkeypatch.setattr(device, "stripe_cells", recorded)
    files = {}
    for limit in (0, 10**12):       # every stripe pooled, then every one on the writer's thread
        monkeypatch.setattr(device, "POOLED_STRIPE_WEIGHTS", limit)
        write_device(tmp_path / f"{limit}.acdev", comp, "0" * 64)
        files[limit] = (tmp_path / f"{limit}.acdev").read_bytes()
    sizes = sorted({size for size, _ in seen})
    assert len(sizes) > 1
    seen.clear()
    monkeypatch.setattr(device, "POOLED_STRIPE_WEIGHTS", sizes[0])
    write_device(tmp_path / "mixed.acdev", comp, "0" * 64)
    here = threading.current_thread()
    assert {size for size, thread in seen if thread is here} == {sizes[0]}
    assert {size for size, thread in seen if thread is not here} == set(sizes[1:])
    assert files[0] == files[10**12] == (tmp_path / "mixed.acdev").read_bytes()


@pytest.mark.parametrize("scheme,how,cell_bits,weight_bits,rows", [SCHEMES[0], SCHEMES[1], SCHEMES[4], SCHEMES[9]])
def test_row_stripes_laid_out_alike_are_encoded_together_into_the_same_bytes(tmp_path, monkeypatch, scheme, how,
                                                                              cell_bits, weight_bits, rows):
    """Consecutive row blocks with the same column blocks are encoded as one stripe (up to
    BATCHED_STRIPE_WEIGHTS weights): the file is the one each row block encoded alone gives, byte for byte."""
    from acompile.backends import device
    comp = compiled(models.mlp((300, 130, 7)), _target(scheme, cell_bits, weight_bits, rows, how))
    counts = []
    encode = device.stripe_cells
    monkeypatch.setattr(device, "stripe_cells", lambda task: (counts.append(task[3].count), encode(task))[1])
    files = []
    for batched in (0, device.BATCHED_STRIPE_WEIGHTS):
        monkeypatch.setattr(device, "BATCHED_STRIPE_WEIGHTS", batched)
        write_device(tmp_path / "device.acdev", comp, "0" * 64)
        files.append((tmp_path / "device.acdev").read_bytes())
    assert files[0] == files[1] and max(counts) > 1


def test_a_weight_several_layers_share_is_stored_once_and_read_back_by_each(tmp_path):
    """Two MatMuls reading one initializer (ALBERT shares its layers so; exporters deduplicate equal
    weights) are two analog layers on their own crossbars, but program.npz holds the weight once: both
    layers' constants name its entry, and the folder simulates as onnxruntime runs the model."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from acompile.cli.app import main
    from acompile.simulation import load_compiled, simulate
    w = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W"], ["y"])]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])],
                              [numpy_helper.from_array(w, "W")])
    path = tmp_path / "shared.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    assert main(["compile", str(path), "-t", "isaac", "-o", str(tmp_path / "out"), "-q"]) == 0
    prog = json.loads((tmp_path / "out" / "program.json").read_text())
    weights = [prog["constants"][layer["weight"]]["entry"] for layer in prog["layers"]]
    assert len(prog["layers"]) == 2 and weights[0] == weights[1]
    archive = ArchiveReader(tmp_path / "out" / "program.npz", "program")
    assert weights[0] in archive.names and len(archive.names) < len(prog["constants"])
    archive.close()
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = simulate(load_compiled(tmp_path / "out", "ideal"), {"x": x}, mode="ideal")["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
