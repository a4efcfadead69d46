"""row_major_weights: a MatMul's weight stays a view of the model's array until compile needs it by rows."""

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


def test_check_keeps_the_transposed_view_and_compile_copies_it_by_rows():
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
    assert all(w.flags.c_contiguous and w.dtype == np.float32 for w in rows)
    assert np.array_equal(rows[0], source["w1"].T) and np.array_equal(rows[1], source["w2"].T)
    assert checked.cost["totals"] == compiled.cost["totals"]      # the copy changes no figure
