"""contiguous_weights: every analog weight a contiguous float32 array; a MatMul's stays the transposed view of
the model's array, which program.npz stores as the model holds it."""

import numpy as np
from onnx import helper

from acompile.compiler import Options, run_pipeline
from acompile.target import load_target
from frontend_passes import tiny_model, weights


def _model():
    w = weights()
    return tiny_model([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                       helper.make_node("MatMul", ["r", "w2"], ["y"])],
                      [("x", (3, 40))], [("y", (3, 24))], {"w1": w(40, 70), "w2": w(70, 24)})


def _linear_weights(compiled):
    return [compiled.graph.constants[layer.weight] for layer in compiled.mapping.layers]


def test_check_and_compile_keep_the_transposed_view():
    model = _model()
    source = {t.name: np.frombuffer(t.raw_data, np.float32).reshape(tuple(t.dims)) for t in model.graph.initializer}
    target = load_target("isaac")
    checked = run_pipeline(model, target, Options(), with_calibration=False, stop_on_problems=False)
    views = _linear_weights(checked)
    assert [v.shape for v in views] == [(70, 40), (24, 70)]
    assert not any(v.flags.c_contiguous for v in views)          # no copy was made for check
    assert np.array_equal(views[0], source["w1"].T) and np.array_equal(views[1], source["w2"].T)
    compiled = run_pipeline(model, target, Options())
    rows = _linear_weights(compiled)
    assert all(w.T.flags.c_contiguous and not w.flags.c_contiguous and w.dtype == np.float32 for w in rows)
    assert np.array_equal(rows[0], source["w1"].T) and np.array_equal(rows[1], source["w2"].T)
    assert checked.cost["totals"] == compiled.cost["totals"]


def test_a_transposed_view_is_stored_as_the_model_holds_it(tmp_path):
    """program.npz writes a MatMul's weight in the model's [K, N] order (the .npy says fortran_order: no
    transposing copy), and reading it back gives the [N, K] values; any other strided matrix is stored in C
    order."""
    from acompile.backends.archive import ArchiveReader, ArchiveWriter
    from acompile.backends.archive import STREAM_BYTES
    rng = np.random.default_rng(0)
    model_order = rng.standard_normal((600, 500)).astype(np.float32)       # over STREAM_BYTES: streamed
    small = rng.standard_normal((7, 5)).astype(np.float32)
    strided = model_order[::2, ::3]
    assert model_order.nbytes >= STREAM_BYTES > small.nbytes
    writer = ArchiveWriter(tmp_path / "a.npz")
    for name, a in (("big", model_order.T), ("small", small.T), ("strided", strided)):
        writer.add_array(name, a)
    writer.close()
    raw = (tmp_path / "a.npz").read_bytes()
    assert model_order.tobytes() in raw and small.tobytes() in raw      # the model's bytes, as they lie
    reader = ArchiveReader(tmp_path / "a.npz", "program")
    for name, want in (("big", model_order.T), ("small", small.T), ("strided", strided)):
        got = reader.array(name)
        assert np.array_equal(got, want) and got.shape == want.shape, name
    with np.load(tmp_path / "a.npz") as z:          # numpy reads it as any .npy
        assert np.array_equal(z["big"], model_order.T)
