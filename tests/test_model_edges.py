"""Corners of the ONNX format that real exporters write and acompile once got wrong.

Each model here is one onnxruntime runs; each broke an early version of acompile (exit 3, a refusal
of a runnable model, or wrong numbers): non-finite float attributes (skl2onnx's imputer writes NaN),
a constant as a graph output, sequence values between digital ops, local functions, the old Upsample / Resize-10
coordinates through opset conversion, IR 3 initializers, a node the opset converter refuses,
string inputs and outputs, a ConvTranspose whose output_shape exceeds its full output, and a model input
that is a sequence, a float16 model, and a node of a domain the model does not import.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from helpers import cli, compiled, ort_outputs, simulate

R = np.random.RandomState(0)


def _f32(*shape):
    return R.randn(*shape).astype(np.float32)


def _model(nodes, inputs, outputs, inits, opset=17, ml=False, ir=8):
    g = h.make_graph(nodes, "g", inputs, outputs, inits)
    imports = [h.make_opsetid("", opset)] + ([h.make_opsetid("ai.onnx.ml", 2)] if ml else [])
    return h.make_model(g, opset_imports=imports, ir_version=ir)


def _vi(name, shape, elem=T.FLOAT):
    return h.make_tensor_value_info(name, elem, shape)


def nonfinite_attributes():
    w = nh.from_array(_f32(4, 2), "W")
    return _model([h.make_node("Imputer", ["x"], ["xi"], domain="ai.onnx.ml", imputed_value_floats=[0., 1., 2., 3.],
                               replaced_value_float=float("nan")),
                   h.make_node("MatMul", ["xi", "W"], ["a"]),
                   h.make_node("ThresholdedRelu", ["a"], ["y"], alpha=float("-inf"))],
                  [_vi("x", [3, 4])], [_vi("y", [3, 2])], [w], ml=True)


def constant_outputs():
    return _model([h.make_node("MatMul", ["x", "W"], ["y"])], [_vi("x", [2, 6])],
                  [_vi("y", [2, 4]), _vi("K", [3]), _vi("W", [6, 4])],
                  [nh.from_array(_f32(6, 4), "W"), nh.from_array(_f32(3), "K")])


def sequence_between_layers():
    return _model([h.make_node("MatMul", ["x", "W1"], ["a"]), h.make_node("Relu", ["a"], ["r"]),
                   h.make_node("SequenceConstruct", ["a", "r"], ["seq"]), h.make_node("SequenceAt", ["seq", "one"], ["b"]),
                   h.make_node("MatMul", ["b", "W2"], ["y"])], [_vi("x", [2, 6])], [_vi("y", [2, 3])],
                  [nh.from_array(_f32(6, 4), "W1"), nh.from_array(_f32(4, 3), "W2"),
                   nh.from_array(np.array(1, np.int64), "one")])


def _old_resize(op, opset, mode):
    return _model([h.make_node("Conv", ["x", "W"], ["c"]), h.make_node(op, ["c", "scales"], ["y"], mode=mode)],
                  [_vi("x", [1, 2, 5, 7])], [_vi("y", None)],
                  [nh.from_array(_f32(3, 2, 1, 1), "W"), nh.from_array(np.array([1, 1, 1.5, 1.7], np.float32), "scales")],
                  opset=opset, ir=5)


def ir3_initializers():
    m = _model([h.make_node("MatMul", ["x", "W"], ["y"])], [_vi("x", [2, 6])], [_vi("y", [2, 4])],
               [nh.from_array(_f32(6, 4), "W")], opset=7)
    m.ir_version = 3
    return m


def strings_in_and_out():
    return _model([h.make_node("LabelEncoder", ["s"], ["ids"], domain="ai.onnx.ml", keys_strings=["a", "b", "c"],
                               values_int64s=[0, 1, 2], default_int64=-1),
                   h.make_node("Gather", ["E", "ids"], ["e"], axis=0), h.make_node("MatMul", ["e", "W"], ["y"]),
                   h.make_node("ArgMax", ["y"], ["i"], axis=1, keepdims=0),
                   h.make_node("LabelEncoder", ["i"], ["label"], domain="ai.onnx.ml", keys_int64s=[0, 1, 2],
                               values_strings=["x", "y", "z"], default_string="?")],
                  [_vi("s", [3], T.STRING)], [_vi("y", [3, 3]), _vi("label", [3], T.STRING)],
                  [nh.from_array(_f32(4, 5), "E"), nh.from_array(_f32(5, 3), "W")], ml=True)


def conv_transpose_beyond_full_output():
    return _model([h.make_node("ConvTranspose", ["x", "W", "B"], ["y"], strides=[2, 2], output_shape=[12, 12])],
                  [_vi("x", [1, 4, 5, 5])], [_vi("y", None)],
                  [nh.from_array(_f32(4, 3, 3, 3), "W"), nh.from_array(_f32(3), "B")])


def local_functions():
    """A model built of local functions (as exporters write modules): a Linear+LeakyRelu function whose
    alpha is the caller's attribute, called by another function, called twice by the graph."""
    leaky = h.make_node("LeakyRelu", ["m"], ["y"])
    leaky.attribute.append(h.make_attribute_ref("alpha", onnx.AttributeProto.FLOAT))
    dense = h.make_function("my.fn", "Dense", ["x", "w"], ["y"], [h.make_node("MatMul", ["x", "w"], ["m"]), leaky],
                            opset_imports=[h.make_opsetid("", 17)], attribute_protos=[h.make_attribute("alpha", 0.1)])
    block = h.make_function("my.fn", "Block", ["x", "w1", "w2"], ["y"],
                            [h.make_node("Dense", ["x", "w1"], ["h"], domain="my.fn", alpha=0.2),
                             h.make_node("Dense", ["h", "w2"], ["y"], domain="my.fn")],
                            opset_imports=[h.make_opsetid("", 17), h.make_opsetid("my.fn", 1)])
    g = h.make_graph([h.make_node("Block", ["x", "W1", "W2"], ["y"], domain="my.fn")], "g", [_vi("x", [2, 6])],
                     [_vi("y", [2, 3])], [nh.from_array(_f32(6, 5), "W1"), nh.from_array(_f32(5, 3), "W2")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("my.fn", 1)],
                        functions=[dense, block], ir_version=8)


def _sparse(dense: np.ndarray, name: str, coordinates: bool) -> onnx.SparseTensorProto:
    where = np.nonzero(dense.reshape(-1))[0]
    idx = np.stack(np.unravel_index(where, dense.shape), axis=1) if coordinates else where
    return h.make_sparse_tensor(nh.from_array(dense.reshape(-1)[where], name), nh.from_array(idx.astype(np.int64)),
                                list(dense.shape))


SPARSE_W1 = np.where(_f32(6, 5) > 0.8, _f32(6, 5), 0).astype(np.float32)
SPARSE_W2 = np.where(_f32(5, 3) > 0.5, _f32(5, 3), 0).astype(np.float32)


def sparse_tensors():
    """A weight as a graph's sparse initializer (linear indices), another as a Constant's sparse_value
    (one row of coordinates per value)."""
    m = _model([h.make_node("MatMul", ["x", "W1"], ["a"]),
                h.make_node("Constant", [], ["W2"], sparse_value=_sparse(SPARSE_W2, "W2", coordinates=True)),
                h.make_node("MatMul", ["a", "W2"], ["y"])], [_vi("x", [2, 6])], [_vi("y", [2, 3])], [])
    m.graph.sparse_initializer.append(_sparse(SPARSE_W1, "W1", coordinates=False))
    return m


def output_listed_twice():
    return _model([h.make_node("Gemm", ["x", "W"], ["y"])], [_vi("x", [2, 6])], [_vi("y", [2, 4]), _vi("y", [2, 4])],
                  [nh.from_array(_f32(6, 4), "W")])


MODELS = {
    "sparse_tensors": (sparse_tensors, {"x": _f32(2, 6)}),
    "output_listed_twice": (output_listed_twice, {"x": _f32(2, 6)}),
    "nonfinite_attributes": (nonfinite_attributes, {"x": _f32(3, 4)}),
    "constant_outputs": (constant_outputs, {"x": _f32(2, 6)}),
    "sequence_between_layers": (sequence_between_layers, {"x": _f32(2, 6)}),
    "upsample9_linear": (lambda: _old_resize("Upsample", 9, "linear"), {"x": _f32(1, 2, 5, 7)}),
    "upsample9_nearest": (lambda: _old_resize("Upsample", 9, "nearest"), {"x": _f32(1, 2, 5, 7)}),
    "resize10_linear": (lambda: _old_resize("Resize", 10, "linear"), {"x": _f32(1, 2, 5, 7)}),
    "ir3_initializers": (ir3_initializers, {"x": _f32(2, 6)}),
    "strings_in_and_out": (strings_in_and_out, {"s": np.array(["a", "c", "b"])}),
    "conv_transpose_beyond_full_output": (conv_transpose_beyond_full_output, {"x": _f32(1, 4, 5, 5)}),
    "local_functions": (local_functions, {"x": _f32(2, 6)}),
}
MODELS["nonfinite_attributes"][1]["x"][0, 1] = np.nan      # the imputer's NaN, replaced


@pytest.mark.parametrize("name", sorted(MODELS))
def test_maps_and_simulates_as_onnxruntime_runs_it(name, tmp_path):
    make, feeds = MODELS[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(make(), str(path))
    np.savez(tmp_path / "x.npz", **feeds)
    code, out, err = cli("check", str(path), "--target", "isaac")
    assert code == 0, out + err
    code, out, err = cli("run", str(path), "--target", "isaac", "--input", str(tmp_path / "x.npz"), "--format", "json",
                         "-r", str(tmp_path / "r.npz"))
    assert code == 0, err
    comparison = json.loads(out)["comparison"]
    for output, c in comparison.items():
        assert c.get("relative_error", 0) < 1e-5 and c.get("equal_fraction", 1) == 1, (output, c)
    assert set(np.load(tmp_path / "r.npz")) == set(comparison)


def test_sparse_weights_map_as_their_dense_tensors(tmp_path):
    from acompile import compile_model, load_target
    path = tmp_path / "sparse.onnx"
    onnx.save(sparse_tensors(), str(path))
    compiled = compile_model(str(path), load_target("isaac"))
    assert len(compiled.mapping.layers) == 2
    weights = sorted((compiled.graph.constants[layer.weight] for layer in compiled.mapping.layers), key=np.size)
    np.testing.assert_array_equal(sorted(w.size for w in weights), [15, 30])
    assert {tuple(np.sort(w.reshape(-1))) for w in weights} == \
        {tuple(np.sort(SPARSE_W1.reshape(-1))), tuple(np.sort(SPARSE_W2.reshape(-1)))}


@pytest.mark.parametrize("indices, dims, said", [([0, 99], [6, 5], "malformed"), ([0, 1], [1 << 31, 1 << 30], "dense")])
def test_a_sparse_tensor_that_cannot_be_dense_is_refused(tmp_path, indices, dims, said):
    m = sparse_tensors()
    del m.graph.sparse_initializer[:]
    m.graph.sparse_initializer.append(h.make_sparse_tensor(nh.from_array(np.ones(2, np.float32), "W1"),
                                                           nh.from_array(np.array(indices, np.int64)), dims))
    onnx.save(m, str(tmp_path / "bad.onnx"))
    code, out, err = cli("check", str(tmp_path / "bad.onnx"), "--target", "isaac")
    assert code == 2 and said in out + err and "Traceback" not in out + err, out + err


def test_a_weight_the_model_lets_a_feed_replace_is_compiled_and_cannot_be_fed(tmp_path):
    """IR 4 on, a graph input with an initializer is a default a feed may replace (onnxruntime allows it);
    acompile programs the stored value: run without it matches onnxruntime, a feed of it is refused by name."""
    m = _model([h.make_node("MatMul", ["x", "W"], ["y"])], [_vi("x", [2, 6]), _vi("W", [6, 4])], [_vi("y", [2, 4])],
               [nh.from_array(_f32(6, 4), "W")])
    onnx.save(m, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "x.npz", x=_f32(2, 6))
    np.savez(tmp_path / "xw.npz", x=_f32(2, 6), W=_f32(6, 4))
    code, out, err = cli("run", str(tmp_path / "m.onnx"), "--target", "isaac", "--input", str(tmp_path / "x.npz"),
                         "--format", "json")
    assert code == 0 and json.loads(out)["comparison"]["y"]["relative_error"] < 1e-5, err
    for command in (["run", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "xw.npz")],
                    ["compile", str(tmp_path / "m.onnx"), "--calibration", str(tmp_path / "xw.npz"), "-o",
                     str(tmp_path / "out")]):
        code, out, err = cli(*command, "--target", "isaac")
        assert code == 2 and "holds 'W', a graph input the model also stores as an initializer" in err, err


def test_a_node_the_opset_converter_refuses_is_named(tmp_path):
    """BatchNormalization-7 with spatial=0 has no opset-17 form: exit 1 naming the node, in check and compile."""
    inits = [nh.from_array(_f32(3, 3, 1, 1), "W")] + [nh.from_array(np.abs(_f32(3, 2, 2)) + .5, k)
                                                       for k in ("scale", "bias", "mean", "var")]
    m = _model([h.make_node("Conv", ["x", "W"], ["c"]),
                h.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"], spatial=0, name="bn")],
               [_vi("x", [2, 3, 2, 2])] + [_vi(t.name, list(t.dims)) for t in inits], [_vi("y", [2, 3, 2, 2])], inits,
               opset=7)
    m.ir_version = 3
    path = tmp_path / "bn.onnx"
    onnx.save(m, str(path))
    code, out, err = cli("check", str(path), "--target", "isaac", "--format", "json")
    reason = json.loads(out)["results"][0]["reasons"][0]
    assert code == 1 and reason["node"] == "bn" and reason["op_type"] == "BatchNormalization", out
    assert "spatial" in reason["message"]
    code, out, err = cli("compile", str(path), "--target", "isaac", "-o", str(tmp_path / "out"))
    assert code == 1 and "node 'bn' (BatchNormalization, opset 7)" in err


def _training_statistics(read: bool):
    """Four Conv -> BatchNormalization-9 pairs whose BatchNormalization lists the five outputs of training
    (timm's ScaledStdConv2d through TorchScript at opset 13); ``read``: the running mean is a graph output."""
    nodes, inits, outputs, x = [], [], [], "x"
    for i in range(4):
        inits += [nh.from_array(_f32(3, 3, 1, 1), f"W{i}")] + [nh.from_array(np.abs(_f32(3)) + .5, f"{k}{i}")
                                                               for k in ("scale", "bias", "mean", "var")]
        stats = [f"{k}{i}_out" for k in ("mean", "var", "saved_mean", "saved_var")]
        nodes += [h.make_node("Conv", [x, f"W{i}"], [f"c{i}"]),
                  h.make_node("BatchNormalization", [f"c{i}", f"scale{i}", f"bias{i}", f"mean{i}", f"var{i}"],
                              [f"y{i}", *stats], name=f"bn{i}")]
        outputs += [_vi(stats[0], [3])] if read else []
        x = f"y{i}"
    return _model(nodes, [_vi("x", [2, 3, 4, 4])], [_vi(x, [2, 3, 4, 4]), *outputs], inits, opset=13)


def test_a_batch_normalization_in_training_mode_normalises_with_its_inputs_statistics_as_onnxruntime():
    model = _training_statistics(read=False)
    feeds = {"x": _f32(2, 3, 4, 4)}
    c = compiled(model)
    assert len(c.mapping.layers) == 4
    np.testing.assert_allclose(simulate(c, feeds)[0], ort_outputs(model, feeds)[0], rtol=1e-5, atol=1e-5)


def test_every_node_the_opset_converter_refuses_is_named(tmp_path):
    onnx.save(_training_statistics(read=True), str(tmp_path / "bn.onnx"))
    code, out, err = cli("check", str(tmp_path / "bn.onnx"), "--target", "isaac", "--format", "json")
    reasons = json.loads(out)["results"][0]["reasons"]
    assert code == 1 and [r["node"] for r in reasons] == ["bn0", "bn1", "bn2", "bn3"], out
    assert all("outputs 4 and 5" in r["message"] for r in reasons)


def _log_then_linear():
    """log(x) before a linear layer: onnxruntime runs it on positive data; the default calibration's
    random normal inputs make half of it NaN."""
    return _model([h.make_node("Log", ["x"], ["l"]), h.make_node("MatMul", ["l", "W"], ["y"])],
                  [_vi("x", [4, 8])], [_vi("y", [4, 3])], [nh.from_array(_f32(8, 3), "W")])


def test_the_default_calibration_leaves_out_the_nan_it_causes(tmp_path):
    path = tmp_path / "log.onnx"
    onnx.save(_log_then_linear(), str(path))
    code, out, err = cli("compile", str(path), "--target", "isaac", "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert "the default calibration inputs give NaN or infinity at the input of 1 analog layer(s) (MatMul_1)" in out + err
    np.save(tmp_path / "x.npy", np.abs(_f32(4, 8)) + 0.1)
    code, out, err = cli("run", str(path), "--target", "isaac", "--input", str(tmp_path / "x.npy"), "--format", "json")
    assert code == 0 and json.loads(out)["comparison"]["y"]["relative_error"] < 1e-5, err
    # data the user gives that drives the model to NaN is still bad calibration data
    np.save(tmp_path / "bad.npy", _f32(4, 8))
    code, out, err = cli("compile", str(path), "--target", "isaac", "-o", str(tmp_path / "out2"),
                         "--calibration", str(tmp_path / "bad.npy"))
    assert code == 2 and "reach nan" in err


def _degree_normalised(path):
    """A dense-adjacency GCN layer: D^-1/2 adj D^-1/2 @ x @ W, D the row sums of adj; the default normal draws
    give negative sums, and a row of the product meets every one of them, so every input of W is NaN."""
    nodes = [h.make_node("ReduceSum", ["adj", "axis"], ["degree"], keepdims=1),
             h.make_node("Pow", ["degree", "half"], ["scale"]), h.make_node("Mul", ["adj", "scale"], ["rows"]),
             h.make_node("Transpose", ["scale"], ["scale_t"]), h.make_node("Mul", ["rows", "scale_t"], ["norm"]),
             h.make_node("MatMul", ["norm", "x"], ["mixed"]), h.make_node("MatMul", ["mixed", "W"], ["y"])]
    inits = [nh.from_array(np.array([1], np.int64), "axis"), nh.from_array(np.array(-0.5, np.float32), "half"),
             nh.from_array(_f32(3, 2), "W")]
    onnx.save(_model(nodes, [_vi("adj", [5, 5]), _vi("x", [5, 3])], [_vi("y", [5, 2])], inits), str(path))
    rng = np.random.default_rng(1)
    return {"adj": (rng.random((5, 5)) < 0.5).astype(np.float32) + np.eye(5, dtype=np.float32),
            "x": rng.standard_normal((5, 3)).astype(np.float32)}


def test_input_range_bounds_the_default_calibration_data(tmp_path):
    path = tmp_path / "gcn.onnx"
    _degree_normalised(path)
    code, out, err = cli("compile", str(path), "--target", "isaac", "-o", str(tmp_path / "out"))
    assert code == 2 and "reach nan" in err and "--input-range NAME:LO,HI" in err
    assert cli("compile", str(path), "--target", "isaac", "-o", str(tmp_path / "out"), "--input-range", "adj:0,1")[0] == 0


def test_run_calibrates_on_its_data_where_the_defaults_reach_nan_and_says_so(tmp_path):
    path = tmp_path / "gcn.onnx"
    feeds = _degree_normalised(path)
    np.savez(tmp_path / "in.npz", **feeds)
    code, out, err = cli("run", str(path), "--target", "isaac", "--input", str(tmp_path / "in.npz"), "--format", "json")
    summary = json.loads(out)
    assert code == 0 and summary["comparison"]["y"]["relative_error"] < 1e-5, err
    assert summary["calibration_note"] == ("calibrated on the --input data: on the default calibration data analog "
                                           "layer 'MatMul_6' reads nan")


def test_the_default_calibration_attends_to_every_position(tmp_path):
    """A boolean attention mask defaults to true: all false would mask every score (softmax of -inf: NaN)."""
    scores = h.make_node("MatMul", ["x", "W"], ["s"])
    masked = h.make_node("Where", ["mask", "s", "ninf"], ["m"])
    m = _model([scores, masked, h.make_node("Softmax", ["m"], ["p"], axis=-1), h.make_node("MatMul", ["p", "V"], ["y"])],
               [_vi("x", [2, 8]), _vi("mask", [2, 8], T.BOOL)], [_vi("y", [2, 4])],
               [nh.from_array(_f32(8, 8), "W"), nh.from_array(_f32(8, 4), "V"),
                nh.from_array(np.array(-np.inf, np.float32), "ninf")])
    path = tmp_path / "mask.onnx"
    onnx.save(m, str(path))
    code, out, err = cli("compile", str(path), "--target", "isaac", "-o", str(tmp_path / "out"))
    assert code == 0 and "NaN" not in out + err, out + err


def _masked_then_divided(mask_true_ignores: bool, divide: bool):
    """MatMul -> a boolean mask (true attends, or, as torch's key_padding_mask, true masks out) -> Softmax,
    optionally divided by an integer count, -> MatMul."""
    nodes = [h.make_node("MatMul", ["x", "W"], ["s"]),
             h.make_node("Where", ["mask", "ninf", "s"] if mask_true_ignores else ["mask", "s", "ninf"], ["m"]),
             h.make_node("Softmax", ["m"], ["p"], axis=-1)]
    inputs = [_vi("x", [2, 8]), _vi("mask", [2, 8], T.BOOL)]
    if divide:      # p * n / n: 0/0 when the count is 0
        nodes += [h.make_node("Cast", ["n"], ["nf"], to=T.FLOAT), h.make_node("Mul", ["p", "nf"], ["pn"]),
                  h.make_node("Div", ["pn", "nf"], ["q"])]
        inputs.append(_vi("n", [2, 1], T.INT64))
    nodes.append(h.make_node("MatMul", ["q" if divide else "p", "V"], ["y"]))
    return _model(nodes, inputs, [_vi("y", [2, 4])], [nh.from_array(_f32(8, 8), "W"), nh.from_array(_f32(8, 4), "V"),
                                                       nh.from_array(np.array(-np.inf, np.float32), "ninf")])


@pytest.mark.parametrize("true_ignores, divide, fill", [(True, False, "false in boolean inputs and 1 in integer ones"),
                                                        (False, True, "true in boolean inputs and 1 in integer ones"),
                                                        (True, True, "false in boolean inputs and 1 in integer ones"),
                                                        (False, False, None)])
def test_the_default_calibration_finds_inputs_every_layer_can_read(true_ignores, divide, fill):
    """When true booleans and zero integers leave an analog layer nothing finite to read (a torch-style
    padding mask that masks every position, a count of 0 that divides), the next defaults are tried, and
    the report names the ones used."""
    from acompile import compile_model, load_target
    from acompile.backends.report import build_report
    compiled = compile_model(_masked_then_divided(true_ignores, divide), load_target("isaac"))
    assert all(np.isfinite(layer.input_range) and layer.input_range > 0 for layer in compiled.mapping.layers)
    assert compiled.graph.meta.get("default_calibration_fill") == fill
    note = build_report(compiled)["calibration_note"]
    assert (fill in note) if fill else "sees a finite input" not in note


def test_no_default_that_reaches_a_layer_is_said_so(tmp_path):
    m = _masked_then_divided(True, False)
    m.graph.node.insert(3, h.make_node("Sqrt", ["neg"], ["nan"]))          # NaN whatever the mask holds
    m.graph.node.insert(3, h.make_node("Neg", ["one"], ["neg"]))
    m.graph.node[-1].input[0] = "pnan"
    m.graph.node.insert(len(m.graph.node) - 1, h.make_node("Add", ["p", "nan"], ["pnan"]))
    m.graph.initializer.append(nh.from_array(np.array(1.0, np.float32), "one"))
    onnx.save(m, str(tmp_path / "nan.onnx"))
    code, out, err = cli("compile", str(tmp_path / "nan.onnx"), "--target", "isaac", "-o", str(tmp_path / "out"))
    assert code == 2 and "true and false in its boolean ones" in err and "Traceback" not in err, err


def _sequence_input_then_linear():
    """A model input that is a sequence of tensors, whose first item feeds a dense layer."""
    seq = h.make_tensor_sequence_value_info("s", T.FLOAT, [2, 8])
    return _model([h.make_node("SequenceAt", ["s", "pos"], ["x"]), h.make_node("MatMul", ["x", "W"], ["y"])],
                  [seq], [_vi("y", [2, 4])], [nh.from_array(_f32(8, 4), "W"), nh.from_array(np.array(0, np.int64), "pos")])


def test_a_sequence_model_input_is_named_by_check_and_compile(tmp_path):
    """Input data holds tensors only: check said compatible and compile failed at calibration (exit 2)."""
    path = tmp_path / "seq.onnx"
    onnx.save(_sequence_input_then_linear(), path)
    code, out, _ = cli("check", str(path), "-t", "isaac", "--format", "json")
    reasons = json.loads(out)["results"][0]["reasons"]
    assert code == 1 and [(r["category"], r["node"]) for r in reasons] == [("unsupported_input", "SequenceAt_0")]
    code, _, err = cli("compile", str(path), "-t", "isaac", "-o", str(tmp_path / "out"), "-q")
    assert code == 1 and "reads model input 's', a sequence" in err and not (tmp_path / "out").exists()


def test_allow_unsupported_names_the_node_calibration_cannot_pass(tmp_path):
    """A custom op before a crossbar layer: no data reaches the layer, whatever --calibration holds. Exit 1
    naming the node, not exit 2 asking for real calibration data."""
    path = tmp_path / "custom.onnx"
    m = _model([h.make_node("Weird", ["x"], ["h"], domain="com.example"), h.make_node("MatMul", ["h", "W"], ["y"])],
               [_vi("x", [2, 8])], [_vi("y", [2, 4])], [nh.from_array(_f32(8, 4), "W")])
    m.opset_import.append(h.make_opsetid("com.example", 1))
    m.graph.value_info.append(_vi("h", [2, 8]))
    onnx.save(m, path)
    code, _, err = cli("compile", str(path), "-t", "isaac", "-o", str(tmp_path / "out"), "-q", "--allow-unsupported")
    assert code == 1 and "'Weird_0' (com.example.Weird)" in err and "--calibration" not in err
    assert not (tmp_path / "out").exists()


def _layers_in(elem, dtype):
    """A layer (Conv for float16; onnxruntime has no double Conv: MatMul) fused with an Add of a constant
    and a Relu after it, then MatMul, all in one float type."""
    c = lambda a, n: nh.from_array(a.astype(dtype), n)
    if dtype == np.float16:
        first = [h.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1])]
        inits = [c(_f32(4, 3, 3, 3), "W"), c(_f32(1, 4, 1, 1), "B")]
    else:
        first = [h.make_node("MatMul", ["x", "W"], ["c"])]
        inits = [c(_f32(6, 8), "W"), c(_f32(8), "B")]
    nodes = first + [h.make_node("Add", ["c", "B"], ["a"]), h.make_node("Relu", ["a"], ["r"]),
                     h.make_node("Flatten", ["r"], ["f"]), h.make_node("MatMul", ["f", "M"], ["y"])]
    return _model(nodes, [_vi("x", [2, 3, 6, 6], elem)], [_vi("y", [2, 5], elem)], inits + [c(_f32(144, 5), "M")])


@pytest.mark.parametrize("elem,dtype,tol", [(T.FLOAT16, np.float16, 2e-3), (T.DOUBLE, np.float64, 1e-6)])
def test_layers_of_a_float16_or_double_model_give_the_models_type(tmp_path, elem, dtype, tol):
    """Layers compute in float32; their outputs used to stay float32, and the next digital op refused the
    mix (MatMul bound to float and float16): check said compatible, compile and run exit 2."""
    from helpers import ort_outputs
    m = _layers_in(elem, dtype)
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    x = R.randn(2, 3, 6, 6).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    want = ort_outputs(m, {"x": x})[0]
    for mode, path_kind in (("ideal", "fast"), ("quantized", "fast"), ("quantized", "reference")):
        code, out, err = cli("run", str(path), "-t", "isaac", "-i", str(tmp_path / "x.npy"), "--mode", mode,
                             "--path", path_kind, "-r", str(tmp_path / "r.npz"), "-q")
        assert code == 0, err
        got = np.load(tmp_path / "r.npz")["y"]
        assert got.dtype == want.dtype
        if mode == "ideal":
            assert np.abs(got - want).max() <= tol * np.abs(want).max()


def test_an_operator_domain_the_model_does_not_import_is_declared(tmp_path):
    """onnxruntime's transformer optimizer returns models whose com.microsoft nodes have no opset import;
    onnxruntime runs them, the checker refused them (exit 2)."""
    from helpers import ort_outputs
    m = _model([h.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"), h.make_node("MatMul", ["g", "W"], ["y"])],
               [_vi("x", [2, 6])], [_vi("y", [2, 3])], [nh.from_array(_f32(6, 3), "W")])
    onnx.save(m, tmp_path / "m.onnx")
    x = _f32(2, 6)
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli("run", str(tmp_path / "m.onnx"), "-t", "isaac", "-i", str(tmp_path / "x.npy"),
                         "-r", str(tmp_path / "r.npz"), "-q")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "r.npz")["y"], ort_outputs(m, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_a_layer_allow_unsupported_leaves_digital_runs_as_onnx_ops(tmp_path):
    """A Gemm whose rows come from NonZero (Faster R-CNN's box head): --allow-unsupported compiled it into
    a program acompile's own loader refused (exit 2: not a known analog chain step)."""
    from helpers import ort_outputs
    nodes = [h.make_node("ReduceSum", ["x", "ax1"], ["s"], keepdims=0), h.make_node("Greater", ["s", "zero"], ["m"]),
             h.make_node("NonZero", ["m"], ["nz"]), h.make_node("Squeeze", ["nz", "ax0"], ["idx"]),
             h.make_node("Gather", ["x", "idx"], ["g"], axis=0), h.make_node("Gemm", ["g", "W", "B"], ["y"], transB=1)]
    m = _model(nodes, [_vi("x", [6, 8])], [_vi("y", ["n", 4])],
               [nh.from_array(np.array([1], np.int64), "ax1"), nh.from_array(np.array(0, np.float32), "zero"),
                nh.from_array(np.array([0], np.int64), "ax0"), nh.from_array(_f32(4, 8), "W"), nh.from_array(_f32(4), "B")])
    onnx.save(m, tmp_path / "m.onnx")
    x = _f32(6, 8)
    np.save(tmp_path / "x.npy", x)
    code, _, err = cli("compile", str(tmp_path / "m.onnx"), "-t", "isaac", "-o", str(tmp_path / "out"), "-q",
                       "--allow-unsupported")
    assert code == 0, err
    code, _, err = cli("simulate", str(tmp_path / "out"), "-i", str(tmp_path / "x.npy"), "-r", str(tmp_path / "r.npz"), "-q")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "r.npz")["y"], ort_outputs(m, {"x": x})[0], rtol=1e-5, atol=1e-6)
