"""Frontend passes, each checked structurally and against onnxruntime before and after."""

import mmap
import os
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
import pytest

import models
from acompile.errors import InvalidModelError, LimitError
from acompile.frontend.export import to_onnx
from acompile.frontend.load import load_model, load_model_proto
from acompile.frontend.convert import CANONICAL_OPSET
from acompile.frontend.ops import supported_table
from acompile.passes.classify import classify
from frontend_passes import frontend, ort_run, prerequisites, run, state_of, tiny_model, weights


def classified(g):
    """The problems the classify pass records for an already canonical graph."""
    state = state_of(g)
    state.facts.add("canonical")
    return run(state, classify).problems


def assert_same_outputs(before: onnx.ModelProto, after_graph, batch=1):
    feeds = models.random_inputs(before, batch=batch)
    want = ort_run(before, feeds)
    got = ort_run(to_onnx(after_graph), feeds)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(set(models.ALL_SMALL) - {"unsupported_op_model", "unsupported_lstm_model"}))
def test_frontend_preserves_outputs(name):
    model = models.ALL_SMALL[name]()
    assert_same_outputs(model, frontend(model))


def test_old_opset_is_converted_to_the_canonical_one():
    g = load_model_proto(models.old_opset_cnn())
    assert g.opset == CANONICAL_OPSET


def test_weight_subgraphs_fold_to_constants():
    g = frontend(models.weights_via_constant_nodes())
    ops = {n.op_type for n in g.nodes}
    assert not ops & {"Constant", "Reshape", "Transpose", "Identity", "Cast"}
    assert [n.op_type for n in g.nodes if n.domain == "acompile"] == ["Linear", "Linear"]


def test_batchnorm_and_per_channel_affine_fold_into_conv():
    g = frontend(models.residual_block())
    assert "BatchNormalization" not in {n.op_type for n in g.nodes}
    g = frontend(models.per_channel_mul_add_after_conv())
    assert [n.op_type for n in g.nodes] == ["Conv", "Relu"]


def test_folded_weights_scaled_on_several_threads_are_those_of_one(monkeypatch):
    """A large model's folded weights are scaled on every core at once: the same float32 values as one
    thread gives them (each weight is scaled on its own, rounded once)."""
    import acompile.passes.fold_affine as fold
    graphs = []
    for threshold in (1 << 62, 0):      # one thread, then a pool for any size
        monkeypatch.setattr(fold, "PARALLEL_ELEMENTS", threshold)
        graphs.append(frontend(models.residual_block()))
    assert graphs[0].constants.keys() == graphs[1].constants.keys()
    assert all(np.array_equal(graphs[0].constants[k], graphs[1].constants[k]) for k in graphs[0].constants)
    import concurrent.futures
    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", None)    # the pool runs them: none, no fold
    with pytest.raises(TypeError):
        frontend(models.residual_block())


def test_gemm_and_matmul_become_linear_layers():
    g = frontend(models.gemm_variants())
    assert "Gemm" not in {n.op_type for n in g.nodes}
    assert sum(n.op_type == "Linear" for n in g.nodes) == 4
    g = frontend(models.matmul_add())
    assert [n.op_type for n in g.nodes if n.op_type in ("MatMul", "Add", "Linear")] == ["Linear", "Linear"]
    g = frontend(models.matmul_const_first())
    assert [n.op_type for n in g.nodes] == ["Transpose", "Linear", "Transpose", "Add"]


def test_attention_matmuls_stay_digital_and_projections_go_analog():
    g = frontend(models.transformer_block())
    assert classified(g) == []
    kinds = {(n.op_type, n.kind) for n in g.nodes}
    assert ("MatMul", "digital") in kinds and ("Linear", "analog") in kinds
    assert sum(n.kind == "analog" for n in g.nodes) == 6


def test_classification_follows_the_op_table():
    table = {op: kind for op, kind, _ in supported_table()}
    g = frontend(models.small_cnn())
    classified(g)
    for n in g.nodes:
        key = f"acompile.{n.op_type}" if n.domain else n.op_type
        assert n.kind == table[key]


@pytest.mark.parametrize("builder, op", [(models.unsupported_op_model, "TopK"),
                                         (lambda: models.recurrent("LSTM", activations=["HardSigmoid", "Tanh", "Tanh"]),
                                          "LSTM")])
def test_unsupported_ops_are_named_not_dropped(builder, op):
    g = frontend(builder())
    problems = classified(g)
    assert [p.op_type for p in problems] == [op]
    assert problems[0].category == "unsupported_op" and problems[0].opset == 17


def test_external_data_inside_the_folder_loads(tmp_path):
    model = models.mlp((16, 64, 10))
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    g = load_model(tmp_path / "m.onnx")
    assert any(v.size == 16 * 64 for v in g.constants.values())


def test_external_data_has_a_limit_of_its_own(tmp_path, monkeypatch):
    """A model's external data is held to ACOMPILE_MAX_EXTERNAL_MB, not to the .onnx file's 2 GiB (a model
    of a few GB with its weights beside it loads); beyond it, the refusal names the variable."""
    from acompile.errors import LimitError
    from acompile.limits import Limits
    model = models.mlp((16, 64, 10))
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    data = (tmp_path / "w.bin").stat().st_size
    small_file = Limits(max_model_bytes=(tmp_path / "m.onnx").stat().st_size)      # the .onnx alone fits
    assert load_model(tmp_path / "m.onnx", limits=small_file).constants
    with pytest.raises(LimitError, match="ACOMPILE_MAX_EXTERNAL_MB"):
        load_model(tmp_path / "m.onnx", limits=Limits(max_external_bytes=data - 1))
    monkeypatch.setenv("ACOMPILE_MAX_EXTERNAL_MB", "1")
    assert Limits.from_env().max_external_bytes == 1024**2


def test_external_data_outside_the_folder_is_refused(tmp_path):
    model = models.mlp((16, 64, 10))
    (tmp_path / "inner").mkdir()
    onnx.save_model(model, tmp_path / "inner" / "m.onnx", save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    m = onnx.load(tmp_path / "inner" / "m.onnx", load_external_data=False)
    os.rename(tmp_path / "inner" / "w.bin", tmp_path / "w.bin")
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../w.bin"
    (tmp_path / "inner" / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(InvalidModelError, match="leaves the model's folder"):
        load_model(tmp_path / "inner" / "m.onnx")


def test_oversize_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.truncate(2**31 + 1)
    with pytest.raises(LimitError, match="GiB"):
        load_model(big)


def test_dynamic_batch_takes_the_compile_batch():
    g = load_model_proto(models.dynamic_batch_cnn(), batch=4)
    assert g.shape(g.inputs[0])[0] == 4


def test_weights_read_beside_the_parse_equal_onnx_own(tmp_path):
    """Payloads left in the file are viewed where they lie: many arrays of several element types at
    any alignment, a large in-proto tensor between two of them."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    arrays = {f"w{i}": rng.standard_normal(1100 + i).astype(np.float32) for i in range(1200)}
    arrays.update(half=rng.standard_normal((40, 70)).astype(np.float16), bytes=rng.integers(-128, 127, 5000,
                  dtype=np.int8), longs=rng.integers(0, 1 << 40, 700), doubles=rng.standard_normal(900),
                  tiny=np.arange(3, dtype=np.float32))
    inits = [numpy_helper.from_array(a, name) for name, a in arrays.items()]
    inits.insert(300, helper.make_tensor("in_proto", TensorProto.FLOAT, [30000], rng.standard_normal(30000)))
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    g = load_model(path)
    for t in onnx.load(path).graph.initializer:
        want = numpy_helper.to_array(t)
        assert g.constants[t.name].dtype == want.dtype and np.array_equal(g.constants[t.name], want), t.name


def test_a_model_file_changed_after_the_walk_is_read_whole(tmp_path, monkeypatch):
    """The payloads are mapped only from the file the lean walk saw; a file rewritten or replaced in
    between is parsed whole, as it is now: one consistent model, never offsets into another file."""
    from onnx import TensorProto, helper, numpy_helper
    from acompile.frontend import protobuf
    rng = np.random.default_rng(0)
    first, second = (rng.standard_normal(5000).astype(np.float32) for _ in range(2))
    path = tmp_path / "m.onnx"

    def save(w, name, doc):     # graph name before the weights, doc_string after them
        graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], name,
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5000])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5000])],
                                  [numpy_helper.from_array(w, "w")], doc_string=doc)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path.stat().st_size

    size = save(first, "gggg", None)
    walk = protobuf._lean_bytes

    def walk_then_rewrite(*args):
        out = walk(*args)
        assert save(second, "g", "x") == size        # the same size, the weights 3 bytes earlier
        os.utime(path, ns=(1, 1))      # a new mtime even where the clock is coarse
        return out

    monkeypatch.setattr(protobuf, "_lean_bytes", walk_then_rewrite)
    assert np.array_equal(load_model(path).constants["w"], second)


def test_payloads_are_read_only_views_of_the_file(tmp_path):
    w = np.arange(3000, dtype=np.float32).reshape(30, 100)
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (1, 30))], [("y", (1, 100))],
                         {"w": w}), path)
    got = load_model(path).constants["w"]
    assert np.array_equal(got, w) and not got.flags.writeable and not got.flags.owndata
    with pytest.raises(ValueError):
        got[0, 0] = 1


def test_a_file_that_cannot_be_mapped_is_read_whole(tmp_path, monkeypatch):
    """Where the file system cannot map it, a model is parsed whole; the values are the same."""
    from acompile.frontend import file_bytes
    w = np.arange(5000, dtype=np.float32)
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", (5000,))], [("y", (5000,))], {"w": w}),
              path)

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")     # what mmap says on a file system that cannot map

    monkeypatch.setattr(file_bytes.mmap, "mmap", refuse)
    got = load_model(path).constants["w"]
    assert np.array_equal(got, w) and not got.flags.writeable


def _bottom(a: np.ndarray):
    """What an array's chain of bases ends in (a memoryview's object)."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a.obj if isinstance(a, memoryview) else a


def test_external_weights_are_views_of_the_file_and_equal_onnx_own(tmp_path):
    """Large graph weights in an external file are views of its bytes (at any offset, several in one file),
    mapped; small ones are read; the values are onnx's."""
    w = weights()
    w1, w2, b = w(64, 300), w(300, 40), w(40)                           # b under the skeleton's 4 KiB: read
    model = tiny_model([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["m"]),
                        helper.make_node("Add", ["m", "b"], ["y"])], [("x", (2, 64))], [("y", (2, 40))],
                       {"w1": w1, "w2": w2, "b": b})
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    assert {e.key for t in onnx.load(path, load_external_data=False).graph.initializer for e in t.external_data} \
        >= {"location", "offset"}
    g = load_model(path)
    for name, want in (("w1", w1), ("w2", w2), ("b", b)):
        assert np.array_equal(g.constants[name], want) and not g.constants[name].flags.writeable, name
    assert type(_bottom(g.constants["w1"])) is mmap.mmap and _bottom(g.constants["w1"]) is _bottom(g.constants["w2"])


def _smaps_kib(address: int, field: str = "Anonymous") -> int:
    """A kB field ('Anonymous', 'Rss') of the mapping of this process that holds ``address`` (/proc/self/smaps)."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            if lo <= address < hi:
                return next(int(x.split()[1]) for x in lines[i + 1:] if x.startswith(field + ":"))
    raise AssertionError("no mapping holds the address")


def _saved_matmul(folder: Path, rows: int = 600) -> tuple[Path, np.ndarray]:
    """A saved MatMul model whose (rows, 1000) float32 weight is large enough to be read apart from its graph."""
    w = np.arange(rows * 1000, dtype=np.float32).reshape(rows, 1000)
    path = folder / "m.onnx"
    onnx.save(tiny_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (1, rows))], [("y", (1, 1000))],
                         {"w": w}), path)
    return path, w


def test_a_models_weights_are_read_only_views_of_its_mapped_file(tmp_path):
    """Nothing writes a model's bytes: its weights view a read-only mapping of the file (never a copy of it),
    and cannot be made writable, so a pass that changes one writes an array of its own."""
    path, w = _saved_matmul(tmp_path)
    before = path.read_bytes()
    got = load_model(path).constants["w"]
    assert isinstance(_bottom(got), mmap.mmap) and np.array_equal(got, w) and not got.flags.writeable
    with pytest.raises(ValueError):
        got.flags.writeable = True
    assert path.read_bytes() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the prefault is Linux's")
def test_a_models_file_is_mapped_ahead_without_copies(tmp_path, monkeypatch):
    """The file's pages are mapped ahead of the reads (MADV_POPULATE_READ, 2 MiB at a time), nothing
    copied, and the values are the file's."""
    from acompile.frontend import file_bytes
    started, prefault = [], file_bytes._prefault
    monkeypatch.setattr(file_bytes, "_prefault", lambda mapped: (started.append(mapped), prefault(mapped)))
    path, w = _saved_matmul(tmp_path)
    got = load_model(path).constants["w"]
    for t in threading.enumerate():
        if t.name == "acompile-prefault":
            t.join()
    assert len(started) == 1 and file_bytes.PREFAULT_PIECE < w.nbytes
    assert np.array_equal(got, w) and _smaps_kib(got.__array_interface__["data"][0]) < 64


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="no /proc/self/smaps")
def test_a_replaced_weight_lets_go_of_its_pages(tmp_path):
    """A weight a pass replaced (fold_affine scaling it into an array of its own) gives its mapped pages back
    to the page cache: the process does not hold the old weight beside the new one. Read again, it is the
    same."""
    from acompile.frontend.file_bytes import release
    path, w = _saved_matmul(tmp_path)
    got = load_model(path).constants["w"]
    at = got.__array_interface__["data"][0]
    assert np.array_equal(got, w) and _smaps_kib(at, "Rss") >= w.nbytes // 1024 - 8      # read: its pages mapped
    release(got)
    assert _smaps_kib(at, "Rss") < w.nbytes // 1024 // 8
    assert np.array_equal(got, w)
    release(w)      # not a view of a mapped file: nothing


def test_batchnorm_folding_scales_a_mapped_weight_into_an_array_of_its_own(tmp_path, monkeypatch):
    """The folded weight is memory of the process's own; the mapped one it replaces is let go of."""
    import acompile.passes.fold_affine as fold
    released = []
    monkeypatch.setattr(fold, "release", released.append)
    w = weights()
    c = 32      # a 36 KB weight: large enough to stay in the file, a view of its mapping
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["y"])]
    params = {"w": w(c, c, 3, 3), "s": w(c) + 2.0, "b": w(c), "m": w(c), "v": np.abs(w(c)) + 1.0}
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(nodes, [("x", (1, c, 8, 8))], [("y", (1, c, 8, 8))], params), path)
    graph = load_model(path)
    before = graph.constants["w"]
    assert isinstance(_bottom(before), mmap.mmap)
    state = run(state_of(graph), *prerequisites(fold.fold_affine), fold.fold_affine)
    conv = next(n for n in state.graph.nodes if n.op_type == "Conv")
    after = state.graph.constants[conv.inputs[1]]
    assert released == [before] and not isinstance(_bottom(after), mmap.mmap) and not np.array_equal(after, before)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="no /proc/meminfo")
def test_available_memory_is_read():
    from acompile.limits import available_memory
    assert 0 < available_memory() <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_the_inputs_of_a_model_are_read_without_its_weights(tmp_path, monkeypatch):
    """compile --calibration and run read the graph inputs (the fed ones, the stored ones, their dims) before
    compiling: from the file's structure, the large weights' payloads skipped; a file whose structure the
    walk cannot take is parsed whole, with the same answers."""
    from acompile.frontend import input_shapes, protobuf
    w = np.arange(64 * 100, dtype=np.float32).reshape(64, 100)
    model = tiny_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", ("batch", 64))], [("y", ("batch", 100))],
                       {"w": w})
    model.graph.input.append(helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [64, 100]))  # overridable
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    want = (["x"], ["w"]), {"x": [None, 64]}
    with monkeypatch.context() as m:
        m.setattr(Path, "read_bytes", lambda self: pytest.fail("the whole file was read"))
        assert (input_shapes.model_inputs(path), input_shapes.input_dims(path)) == want
    monkeypatch.setattr(protobuf, "_lean_bytes", lambda *a: None)
    assert (input_shapes.model_inputs(path), input_shapes.input_dims(path)) == want
