"""`run` on real models (issue 11): the bugs behind "check said compatible, then run failed", and
the inputs of the onnxruntime comparison."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from acompile.backends.archive import ArchiveReader, ArchiveWriter
from acompile.cli.app import main
from acompile.simulation import compare, reference_outputs
from acompile.sim.runtime import Simulator

F = TensorProto.FLOAT


def test_the_buffer_pool_hands_out_buffers_by_identity():
    # list.remove compared the arrays element-wise: "operands could not be broadcast" (exit 3)
    sim = Simulator.__new__(Simulator)
    sim._pool, sim._lent = [np.zeros(10, np.float32), np.zeros(30, np.float32)], {}
    assert sim.take((4, 5)).shape == (4, 5)
    assert [b.size for b in sim._pool] == [10]


def test_a_scalar_survives_the_archive(tmp_path):
    # written as shape (1,), a scalar Gather index made every unrolled LSTM fail in `run`
    writer = ArchiveWriter(tmp_path / "a.npz")
    writer.add_array("t.npy", np.array(3, np.int64))
    writer.close()
    reader = ArchiveReader(tmp_path / "a.npz", "test")
    try:
        assert reader.array("t.npy").shape == ()
    finally:
        reader.close()


def test_an_archive_is_identified_by_the_sha256_of_its_index(tmp_path):
    """program.npz's checksum is the sha256 of its index (central directory to the end of the file), which
    the writer and the reader agree on, the same arrays giving the same bytes; numpy reads the entries,
    streamed or not. A changed entry changes the index (its CRC-32); bytes changed under an unchanged
    index are refused as they are read."""
    import hashlib
    import zipfile
    from acompile.errors import InvalidDataError
    arrays = {"big.npy": np.arange(600_000, dtype=np.float32).reshape(600, 1000).T, "small.npy": np.arange(5)}

    def write(name: str, arrays: dict) -> str:
        writer = ArchiveWriter(tmp_path / name)
        for entry, arr in arrays.items():
            writer.add_array(entry, arr)
        with writer.open_stream("raw.bin") as stream:
            stream.write(b"levels" * 1000)
        writer.close()
        assert writer.crc32("raw.bin") == zipfile.crc32(b"levels" * 1000)
        return writer.index_sha256()

    digests = [write(name, arrays) for name in ("a.npz", "b.npz")]
    assert digests[0] == digests[1]
    data = (tmp_path / "a.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        assert z.testzip() is None and z.read("raw.bin") == b"levels" * 1000
        assert digests[0] == hashlib.sha256(data[z.start_dir:]).hexdigest()
        at = z.getinfo("big.npy").header_offset
    with np.load(tmp_path / "a.npz") as z:
        assert all(np.array_equal(z[entry], arr) for entry, arr in arrays.items())
    reader = ArchiveReader(tmp_path / "a.npz", "test")
    try:
        assert reader.index_sha256() == digests[0]
        assert np.array_equal(reader.array("big.npy"), arrays["big.npy"])
    finally:
        reader.close()
    assert write("c.npz", {**arrays, "small.npy": np.arange(1, 6)}) != digests[0]
    edited = bytearray(data)
    edited[at + 1000] ^= 1      # a byte of big.npy's data, its index left as it was
    (tmp_path / "d.npz").write_bytes(bytes(edited))
    reader = ArchiveReader(tmp_path / "d.npz", "test")
    try:
        assert reader.index_sha256() == digests[0]
        with pytest.raises(InvalidDataError, match="CRC"):
            reader.array("big.npy")
    finally:
        reader.close()


def _save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, path)
    return str(path)


def test_run_bind_feeds_the_bound_values_to_onnxruntime(tmp_path, capsys):
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "bind",
                          [helper.make_tensor_value_info("x", F, [2, 8]), helper.make_tensor_value_info("W", F, [8, 4])],
                          [helper.make_tensor_value_info("y", F, [2, 4])])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "w.npz", W=rng.standard_normal((8, 4)).astype(np.float32))
    np.savez(tmp_path / "x.npz", x=rng.standard_normal((2, 8)).astype(np.float32))
    code = main(["run", model, "-t", "isaac", "--bind", str(tmp_path / "w.npz"), "--input", str(tmp_path / "x.npz"),
                 "--format", "json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["comparison"]["y"]["relative_error"] < 1e-3


def test_the_reference_run_cuts_only_a_batch_every_input_shares(tmp_path):
    # a [seq, n] input beside a [1, 1, h] state: cutting both along axis 0 left the state empty
    g = helper.make_graph([helper.make_node("Add", ["x", "s"], ["y"])], "state",
                          [helper.make_tensor_value_info("x", F, [4, 8]), helper.make_tensor_value_info("s", F, [1, 8])],
                          [helper.make_tensor_value_info("y", F, [4, 8])])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    feeds = {"x": np.ones((4, 8), np.float32), "s": np.full((1, 8), 2, np.float32)}
    np.testing.assert_array_equal(reference_outputs(tmp_path / "m.onnx", feeds)["y"], np.full((4, 8), 3))


def test_run_takes_dynamic_sizes_from_its_input(tmp_path, capsys):
    w = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "dyn",
                          [helper.make_tensor_value_info("x", F, ["T", 8])], [helper.make_tensor_value_info("y", F, ["T", 4])],
                          [numpy_helper.from_array(w, "w")])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32))
    assert main(["run", model, "-t", "isaac", "--input", str(tmp_path / "x.npy"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["y"] == [5, 4]


def test_run_is_compile_at_the_data_shape_then_simulate(tmp_path):
    """run = compile --input-shape (the data's shape, batch included) + simulate, byte for byte in quantized
    mode: the default calibration draws as many samples as the data's batch."""
    rng = np.random.default_rng(4)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                           helper.make_node("MatMul", ["r", "w2"], ["y"])], "dyn",
                          [helper.make_tensor_value_info("x", F, ["N", 16])],
                          [helper.make_tensor_value_info("y", F, ["N", 4])],
                          [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w"),
                           numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w2")])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((3, 16)).astype(np.float32))
    run, sim = tmp_path / "run.npz", tmp_path / "sim.npz"
    common = ["-t", "isaac", "-q", "--input", str(tmp_path / "x.npy"), "--mode", "quantized"]
    assert main(["run", model, *common, "-r", str(run)]) == 0
    assert main(["compile", model, "-t", "isaac", "-q", "-o", str(tmp_path / "out"), "--input-shape", "3,16"]) == 0
    assert main(["simulate", str(tmp_path / "out"), *common[2:], "-r", str(sim)]) == 0
    assert np.array_equal(np.load(run)["y"], np.load(sim)["y"])


def test_run_writes_the_device_file_only_for_the_modes_that_read_its_cells(tmp_path, monkeypatch):
    """Ideal mode runs the program's float weights: run's compile leaves the device file out (a ResNet-50's
    cells take a third of its compile to write and verify), and quantized mode still programs them."""
    import acompile.backends.device as device
    written = []
    real = device.add_header     # in this process, where the cells may be written in a forked one
    monkeypatch.setattr(device, "add_header", lambda path, *rest: (written.append(path.name), real(path, *rest)))
    rng = np.random.default_rng(5)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", F, [2, 16])],
                          [helper.make_tensor_value_info("y", F, [2, 8])],
                          [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((2, 16)).astype(np.float32))
    common = ["-t", "isaac", "-q", "--input", str(tmp_path / "x.npy")]
    assert main(["run", model, *common]) == 0 and written == []
    assert main(["run", model, *common, "--mode", "quantized"]) == 0 and written == ["device.acdev"]


def test_run_takes_the_batch_from_its_input_where_the_model_needs_it(tmp_path, capsys):
    """A Reshape folds the batch into the features a MatMul reads: with the batch open the layer has no size,
    so the data's batch fixes it."""
    w = np.random.default_rng(5).standard_normal((8, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Reshape", ["x", "flat"], ["f"]),
                           helper.make_node("MatMul", ["f", "w"], ["y"])],
                          "fold", [helper.make_tensor_value_info("x", F, ["N", 4])],
                          [helper.make_tensor_value_info("y", F, [1, 3])],
                          [numpy_helper.from_array(w, "w"),
                           numpy_helper.from_array(np.array([1, -1], np.int64), "flat")])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    assert main(["run", model, "-t", "isaac", "--input", str(tmp_path / "x.npy"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["y"] == [1, 3]


def test_non_tensor_outputs_are_not_compared():
    zipmap = [{0: 0.25, 1: 0.75}]
    out = compare({"p": zipmap, "y": np.ones((1, 2))}, {"p": zipmap, "y": np.ones((1, 2))})
    assert out["p"] == {"compared": False, "reason": "a sequence or map, not a tensor"} and out["y"]["relative_error"] == 0


def test_the_report_marks_the_cost_of_ops_only_onnxruntime_knows_as_estimated(tmp_path):
    w = np.random.default_rng(3).standard_normal((8, 4)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"]),
                           helper.make_node("TopK", ["y", "k"], ["v", "i"], axis=-1)], "topk",
                          [helper.make_tensor_value_info("x", F, [1, 8])], [helper.make_tensor_value_info("v", F, [1, 2])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([2], np.int64), "k")])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    assert main(["compile", model, "-t", "isaac", "-q", "-o", str(tmp_path / "o"), "--emit", "report"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [(d["op_type"], d.get("estimated")) for d in report["digital"]] == [("TopK", True)]
    assert "TopK (cost estimated)" in (tmp_path / "o" / "report.md").read_text()
