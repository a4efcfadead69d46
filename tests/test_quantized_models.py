"""Quantized ONNX models (tests/corpus.py) keep their own integer weights and scales on the crossbars.

QDQ, QOperator and dynamic-quantization models made by onnxruntime's quantization tool: every
Conv/Gemm/MatMul takes its weight scales (and input scale and zero point) from the model, and
quantized-mode simulation on an 8-bit target with a lossless ADC agrees with onnxruntime's
integer execution on >= 99% of top-1 predictions (docs/analog.md, "Quantized models").
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import corpus
from helpers import cli as _cli

QUANTIZED = ["q_mlp_qdq_tensor", "q_mlp_qdq_channel", "q_cnn_qdq_tensor", "q_cnn_qdq_channel", "q_cnn_qdq_float_bias",
             "q_mlp_qop",
             "q_cnn_qop", "q_mlp_dynamic", "q_cnn_dynamic"]
SAMPLES = 200



def _inputs(model: str, path, n: int, seed: int = 0) -> None:
    m = onnx.load(model, load_external_data=False)
    weights = {t.name for t in m.graph.initializer}
    vi = next(v for v in m.graph.input if v.name not in weights)
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
    shape[0] = n
    rng = np.random.default_rng(seed)
    x = rng.random(shape) if len(shape) == 4 else rng.standard_normal(shape)
    np.savez(path, **{vi.name: x.astype(np.float32)})


@pytest.mark.parametrize("name", QUANTIZED + [pytest.param(n, marks=pytest.mark.slow)
                                               for n in ("torch_mobilenet_qdq", "torch_transformer_qdq")])
def test_model_scales_reproduce_onnxruntime(name, tmp_path):
    model = str(corpus.path(name))
    code, _, _ = _cli("compile", model, "--target", "isaac", "-q", "-o", str(tmp_path / "out"), "--emit", "program")
    assert code == 0
    layers = json.loads((tmp_path / "out" / "program.json").read_text())["layers"]
    assert layers and all(layer.get("model_quant", {}).get("input_bits") == 8 for layer in layers)
    _inputs(model, tmp_path / "in.npz", SAMPLES)
    code, out, _ = _cli("run", model, "--target", "isaac", "--set", "adc.bits=16", "--mode", "quantized",
                        "--input", str(tmp_path / "in.npz"), "--batch", str(SAMPLES), "--format", "json")
    assert code == 0
    (cmp,) = json.loads(out)["comparison"].values()
    assert cmp["top1_agreement"] >= 0.99, cmp


def test_zero_point_path_is_bit_exact_on_both_paths(tmp_path):
    """The first layer of the QDQ MLP streams x_q + 128 with zero point -4 (offset 124): the fast
    kernel and the step-by-step chain agree bit for bit, also with a lossy ADC."""
    model = str(corpus.path("q_mlp_qdq_tensor"))
    _inputs(model, tmp_path / "in.npz", 8, seed=1)
    results = []
    for path in ("fast", "reference"):
        res = tmp_path / f"{path}.npz"
        code, _, _ = _cli("run", model, "--target", "isaac", "--set", "adc.bits=6", "--mode", "quantized", "--path",
                          path, "--input", str(tmp_path / "in.npz"), "--batch", "8", "--result", str(res), "-q")
        assert code == 0
        results.append(dict(np.load(res)))
    assert results[0].keys() == results[1].keys()
    assert all(np.array_equal(results[0][k], results[1][k]) for k in results[0])


def test_fewer_target_bits_requantize_and_say_so(tmp_path):
    model = str(corpus.path("q_cnn_qdq_channel"))
    code, _, err = _cli("compile", model, "--target", "isaac", "--set", "precision.weight_bits=6", "-o",
                        str(tmp_path / "out"), "--emit", "program")
    assert code == 0
    notes = [line for line in err.splitlines() if "quantized model" in line]
    assert len(notes) == 1 and "6 weight bits: requantized" in notes[0]
    layers = json.loads((tmp_path / "out" / "program.json").read_text())["layers"]
    assert all("model_quant" not in layer for layer in layers)


def test_program_and_device_file_reproduce_the_model_scales(tmp_path):
    """program.json and the device file carry the model's scales: simulating the compiled folder
    gives the same outputs as ``run`` (which compiles in memory)."""
    model = str(corpus.path("q_mlp_qdq_tensor"))
    _inputs(model, tmp_path / "in.npz", 8, seed=2)
    out = tmp_path / "out"
    assert _cli("compile", model, "--target", "isaac", "--set", "adc.bits=6", "-q", "-o", str(out),
                "--emit", "program,device")[0] == 0
    assert _cli("simulate", str(out), "--input", str(tmp_path / "in.npz"), "--mode", "quantized",
                "--result", str(tmp_path / "sim.npz"), "-q")[0] == 0
    assert _cli("run", model, "--target", "isaac", "--set", "adc.bits=6", "--mode", "quantized", "--input",
                str(tmp_path / "in.npz"), "--batch", "8", "--result", str(tmp_path / "run.npz"), "-q")[0] == 0
    a, b = np.load(tmp_path / "sim.npz"), np.load(tmp_path / "run.npz")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["q_cnn_qdq_channel", "q_mlp_qdq_tensor", "q_cnn_qop", "q_mlp_dynamic"])
def test_program_stores_a_quantized_models_weights_as_integers_and_scales(name, tmp_path):
    """Each layer's weight goes into program.npz as int8 integers with their float32 scales, a quarter of
    its float bytes; read back, it is the compile's float weight bit for bit, so ideal-mode ``simulate`` of
    the folder gives ``run``'s outputs exactly."""
    from acompile import compile_model, load_target
    from acompile.backends.program_reader import load_program
    model = str(corpus.path(name))
    out = tmp_path / "out"
    assert _cli("compile", model, "--target", "isaac", "-q", "-o", str(out), "--emit", "program")[0] == 0
    prog = json.loads((out / "program.json").read_text())
    weights = {layer["weight"] for layer in prog["layers"]}
    assert weights and all("scales" in prog["constants"][w] for w in weights)
    with np.load(out / "program.npz") as npz:
        for w in weights:
            meta = prog["constants"][w]
            assert npz[meta["entry"][:-4]].dtype == np.int8 and meta["dtype"] == "float32"
            assert npz[meta["scales"]["entry"][:-4]].dtype == np.float32
    compiled = compile_model(model, load_target("isaac"))
    graph, mapping, _ = load_program(out)
    for w in weights:
        assert graph.constants[w].dtype == compiled.graph.constants[w].dtype
        assert graph.constants[w].tobytes() == compiled.graph.constants[w].tobytes()
    # the model's scales are the ones each weight is stored with: program.json names them, not lists them again
    assert [layer["model_quant"]["weight_scales"] for layer in prog["layers"]] == ["weight"] * len(prog["layers"])
    for read, made in zip(mapping.layers, compiled.mapping.layers, strict=True):
        assert np.array_equal(np.asarray(read.model_quant["weight_scales"], np.float64),
                              np.asarray(made.model_quant["weight_scales"], np.float64))
    _inputs(model, tmp_path / "in.npz", 4, seed=3)
    assert _cli("simulate", str(out), "--input", str(tmp_path / "in.npz"), "--mode", "ideal",
                "--result", str(tmp_path / "sim.npz"), "-q")[0] == 0
    assert _cli("run", model, "--target", "isaac", "--mode", "ideal", "--input", str(tmp_path / "in.npz"),
                "--batch", "4", "--result", str(tmp_path / "run.npz"), "-q")[0] == 0
    a, b = np.load(tmp_path / "sim.npz"), np.load(tmp_path / "run.npz")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["q_cnn_qdq_channel", "q_cnn_dynamic", "q_mlp_dynamic"])
def test_folded_weights_are_held_checked_and_stored_as_the_models_integers(name, monkeypatch, tmp_path):
    """Folding a DequantizeLinear that only crossbar layers read (or rewriting a ConvInteger's or MatMulInteger's
    weight as w_q - z_w) holds the weight as its integers: no float copy is made, the whole-multiple check,
    program.npz and the device file's cells read the integers (dividing floats back is not run), and every
    file is what the float weights give."""
    from acompile import compile_model, load_target
    from acompile.numerics.folded import DequantizedWeight
    from acompile.passes import fold_constants, qoperator, quantized_layers
    model = str(corpus.path(name))
    floats = tmp_path / "floats"
    with monkeypatch.context() as m:        # float weights, nothing remembered: divided back, as before
        m.setattr(fold_constants, "weight_only", lambda graph: set())
        m.setattr(fold_constants, "note_folded", lambda *a: None)
        m.setattr(qoperator, "integers_of", lambda *a: None)
        assert _cli("compile", model, "--target", "isaac", "-q", "-o", str(floats), "--emit", "program,device")[0] == 0
    monkeypatch.setattr(quantized_layers, "_largest_integer", lambda *a: pytest.fail("divided the floats back"))
    monkeypatch.setattr("acompile.numerics.folded._exact_integers", lambda *a: pytest.fail("divided back"))
    monkeypatch.setattr("acompile.mapping.AnalogLayer.quantize", lambda *a: pytest.fail("cells from floats"))
    held = tmp_path / "held"
    assert _cli("compile", model, "--target", "isaac", "-q", "-o", str(held), "--emit", "program,device")[0] == 0
    for file in ("program.json", "program.npz", "device.acdev"):
        assert (held / file).read_bytes() == (floats / file).read_bytes(), file
    compiled = compile_model(model, load_target("isaac"))
    assert all(isinstance(compiled.graph.constants[layer.weight], DequantizedWeight)
               for layer in compiled.mapping.layers)


def test_a_float_weight_keeps_its_integers_beside_it_until_program_npz_is_written(monkeypatch, tmp_path):
    """Where folding had to make the float weight, the graph remembers its integers beside it for the checks
    and program.npz, which lets them go once written (they are views of the model file)."""
    from acompile import compile_model, load_target
    from acompile.backends.program import write_constants
    from acompile.numerics import folded_integers
    from acompile.passes import fold_constants
    monkeypatch.setattr(fold_constants, "weight_only", lambda graph: set())
    compiled = compile_model(str(corpus.path("q_cnn_qdq_channel")), load_target("isaac"))
    graph, layers = compiled.graph, compiled.mapping.layers
    assert all(isinstance(graph.constants[layer.weight], np.ndarray) for layer in layers)
    assert all(folded_integers(graph.meta, graph.constants[layer.weight]) is not None for layer in layers)
    write_constants(tmp_path, graph, compiled.mapping)
    assert not any(folded_integers(graph.meta, graph.constants[layer.weight]) for layer in layers)


def test_a_quantized_weight_whose_products_overflow_is_refused(tmp_path):
    """A weight scale so large that integer times scale passes float32's largest value: the weight holds
    infinities, bad input as for a float model (exit 2)."""
    from onnx import TensorProto, helper, numpy_helper
    w = np.array([[100, -100], [1, 2]], np.int8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=0),
         helper.make_node("MatMul", ["x", "wf"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1e37, 1.0], np.float32), "s")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    code, out, err = _cli("check", str(path), "--target", "isaac")
    assert code == 2 and "weights contain NaN or infinity" in out and "Traceback" not in out + err, out + err


def test_a_layer_names_its_weights_stored_scales_only_where_they_are_its_own_exactly():
    """program.json names a layer's model scales ("weight") only where program.npz stores its weight with those
    very values; scales that differ in the last bit, or a weight stored as floats, are listed."""
    from acompile import compile_model, load_target
    from acompile.backends.program import _layer_json
    layer = compile_model(str(corpus.path("q_cnn_qdq_channel")), load_target("isaac")).mapping.layers[0]
    own = np.asarray(layer.model_quant["weight_scales"], np.float64)
    assert _layer_json(layer, {layer.weight: own.copy()})["model_quant"]["weight_scales"] == "weight"
    near = own.copy()
    near[-1] = np.nextafter(near[-1], 1.0)
    for stored in ({layer.weight: near}, {}):
        assert _layer_json(layer, stored)["model_quant"]["weight_scales"] == layer.model_quant["weight_scales"]
    assert isinstance(layer.model_quant["weight_scales"], list)      # the layer's own record is left as it was


def test_integers_and_scales_that_do_not_fit_together_are_refused(tmp_path):
    """An edited program.json whose scales name the wrong axis or entry is bad input (exit 2), not a crash."""
    model = str(corpus.path("q_mlp_qdq_tensor"))
    out = tmp_path / "out"
    assert _cli("compile", model, "--target", "isaac", "-q", "-o", str(out), "--emit", "program")[0] == 0
    text = (out / "program.json").read_text()
    prog = json.loads(text)
    name = next(k for k, v in prog["constants"].items() if "scales" in v)
    np.save(tmp_path / "x.npy", np.zeros((1, 32), np.float32))
    edits = [lambda p, field=field, value=value: p["constants"][name]["scales"].update({field: value})
             for field, value in (("axis", 5), ("entry", prog["constants"][name]["entry"]))]  # the integers as scales
    bias = prog["layers"][0]["bias"]        # a layer that takes its scales from a constant stored without any
    edits.append(lambda p: p["layers"][0].update(weight=bias))
    for edit in edits:
        edited = json.loads(text)
        edit(edited)
        (out / "program.json").write_text(json.dumps(edited))
        code, _, err = _cli("simulate", str(out), "--input", str(tmp_path / "x.npy"), "--mode", "ideal")
        assert code == 2 and "malformed" in err and "Traceback" not in err, err


def test_a_model_that_brings_every_input_scale_is_not_calibrated(monkeypatch):
    """Static QDQ gives every layer its input scale: on a worst-case ADC, calibration has nothing to observe
    and runs nothing, and the layers' ranges are those the forward pass gave them. A float model still
    calibrates."""
    from acompile import calibrate, compile_model, load_target
    from acompile.sim.runtime import Simulator
    target = load_target("isaac")
    model = str(corpus.path("q_cnn_qdq_channel"))
    ran = []
    real_run = Simulator.run
    monkeypatch.setattr(Simulator, "run", lambda self, *a, **k: ran.append(1) or real_run(self, *a, **k))
    skipped = compile_model(model, target)
    assert not ran and skipped.graph.meta.get("calibration_unneeded")
    from acompile.backends.report import build_report
    assert build_report(skipped)["calibration_note"].startswith("No calibration run: every analog layer takes the "
                                                                "quantized model's own input scale")
    nothing_to_observe = calibrate._nothing_to_observe
    monkeypatch.setattr(calibrate, "_nothing_to_observe", lambda *a: False)   # the forward pass, as before
    observed = compile_model(model, target)
    assert ran
    fields = ("input_range", "input_scale", "input_signed", "adc_full_scale")
    assert [[getattr(layer, f) for f in fields] for layer in skipped.mapping.layers] == \
        [[getattr(layer, f) for f in fields] for layer in observed.mapping.layers]
    monkeypatch.setattr(calibrate, "_nothing_to_observe", nothing_to_observe)
    ran.clear()
    assert not compile_model(str(corpus.path("float_cnn")), target).graph.meta.get("calibration_unneeded") and ran


def _shared_weight_model(path) -> None:
    """x -> QDQ -> MatMul(W0) -> QDQ -> MatMul(W1), W0 = DQ(per-channel int8), W1 = the same weight quantized
    again per tensor: DQ(Q(Identity(W0))), as onnxruntime's quantizer leaves an exporter's deduplicated
    copy of a cloned layer's weight (torch's nn.TransformerEncoder)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    w_q = rng.integers(-127, 128, (16, 16)).astype(np.int8)
    w_scale = rng.uniform(0.01, 0.02, 16).astype(np.float32)
    inits = [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(w_scale, "w_scale"),
             numpy_helper.from_array(np.array(0.02, np.float32), "w1_scale"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0.3, np.float32), "h_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "zero")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "zero"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "zero"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w0"], axis=1),
             helper.make_node("MatMul", ["x_dq", "w0"], ["h"], name="first"),
             helper.make_node("QuantizeLinear", ["h", "h_scale", "zero"], ["h_q"]),
             helper.make_node("DequantizeLinear", ["h_q", "h_scale", "zero"], ["h_dq"]),
             helper.make_node("Identity", ["w0"], ["w0_copy"]),
             helper.make_node("QuantizeLinear", ["w0_copy", "w1_scale", "zero"], ["w1_q"]),
             helper.make_node("DequantizeLinear", ["w1_q", "w1_scale", "zero"], ["w1"]),
             helper.make_node("MatMul", ["h_dq", "w1"], ["y"], name="second")]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)


def test_a_weight_quantized_twice_keeps_the_models_integers(tmp_path):
    model = str(tmp_path / "shared.onnx")
    _shared_weight_model(model)
    assert _cli("compile", model, "--target", "isaac", "-q", "-o", str(tmp_path / "out"), "--emit", "program")[0] == 0
    from acompile.backends.program_reader import load_program
    layers = load_program(tmp_path / "out")[1].layers
    assert [layer.name for layer in layers] == ["first", "second"]
    assert layers[1].model_quant["weight_scales"] == pytest.approx([0.02] * 16)
    assert all(layer.model_quant["input_bits"] == 8 for layer in layers)
    np.save(tmp_path / "x.npy", np.random.default_rng(6).standard_normal((4, 16)).astype(np.float32))
    code, out, _ = _cli("run", model, "--target", "isaac", "--mode", "quantized", "--input", str(tmp_path / "x.npy"),
                        "--format", "json")
    assert code == 0
    (cmp,) = json.loads(out)["comparison"].values()
    assert cmp["relative_error"] < 1e-6, cmp    # the model's own integers and codes: float32 rounding apart


def test_a_qlinear_matmul_whose_weight_is_computed_from_constants_maps_with_its_integers(tmp_path):
    """QLinearMatMul's B quantized in the graph from a float weight (a shared weight's copy, as the
    QOperator format leaves it): B folds to integers, and the layer keeps the model's scales."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(7)
    consts = {"w": rng.standard_normal((16, 8)).astype(np.float32), "w_scale": np.array(0.02, np.float32),
              "x_scale": np.array(0.05, np.float32), "y_scale": np.array(0.4, np.float32),
              "u8_zero": np.array(128, np.uint8), "s8_zero": np.array(0, np.int8)}
    nodes = [helper.make_node("Identity", ["w"], ["w_copy"]),
             helper.make_node("QuantizeLinear", ["w_copy", "w_scale", "s8_zero"], ["w_q"]),
             helper.make_node("QuantizeLinear", ["x", "x_scale", "u8_zero"], ["x_q"]),
             helper.make_node("QLinearMatMul", ["x_q", "x_scale", "u8_zero", "w_q", "w_scale", "s8_zero",
                                                "y_scale", "u8_zero"], ["y_q"], name="qmatmul"),
             helper.make_node("DequantizeLinear", ["y_q", "y_scale", "u8_zero"], ["y"])]
    graph = helper.make_graph(nodes, "qop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = str(tmp_path / "qop.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), model)
    assert _cli("compile", model, "--target", "isaac", "-q", "-o", str(tmp_path / "out"), "--emit", "program")[0] == 0
    from acompile.backends.program_reader import load_program
    (layer,) = load_program(tmp_path / "out")[1].layers
    assert layer.name == "qmatmul" and layer.model_quant["weight_scales"] == pytest.approx([0.02] * 8)
    np.save(tmp_path / "x.npy", rng.standard_normal((4, 16)).astype(np.float32))
    code, out, _ = _cli("run", model, "--target", "isaac", "--mode", "quantized", "--input", str(tmp_path / "x.npy"),
                        "--format", "json")
    assert code == 0
    (cmp,) = json.loads(out)["comparison"].values()
    assert cmp["max_abs_error"] <= 0.4 + 1e-6, cmp     # at most one step of the output's int8 grid


def test_a_float_bias_is_compared_against_the_model_as_written(tmp_path):
    """quantize_static(QuantizeBias=False) leaves float Conv/Gemm biases; onnxruntime's basic graph
    optimisations would quantize them to int32 in the reference. run compares with the model as written."""
    torch = pytest.importorskip("torch")
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process
    nn = torch.nn
    torch.manual_seed(0)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.c2, self.fc = nn.Conv2d(8, 16, 3, padding=1), nn.Linear(16, 10)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.bn(self.c1(x))), 2)
            return self.fc(torch.relu(self.c2(x)).mean((2, 3)))

    net = CNN().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-.2, .2)
        net.bn.running_var.uniform_(.5, 1.5)
    torch.onnx.export(net, torch.randn(1, 3, 16, 16), str(tmp_path / "f.onnx"), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    quant_pre_process(str(tmp_path / "f.onnx"), str(tmp_path / "pre.onnx"))
    data = iter([{"x": np.random.RandomState(i).randn(1, 3, 16, 16).astype(np.float32)} for i in range(16)])

    class Reader(q.CalibrationDataReader):
        def get_next(self):
            return next(data, None)

    q.quantize_static(str(tmp_path / "pre.onnx"), str(tmp_path / "m.onnx"), Reader(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      extra_options={"QuantizeBias": False})
    np.savez(tmp_path / "x.npz", x=np.random.RandomState(99).randn(1, 3, 16, 16).astype(np.float32))
    code, out, err = _cli("run", str(tmp_path / "m.onnx"), "--target", "isaac", "--input", str(tmp_path / "x.npz"),
                          "--format", "json")
    assert code == 0, err
    assert json.loads(out)["comparison"]["y"]["relative_error"] < 1e-6


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k, block", [(64, 32), (70, 16)])
def test_matmul_nbits_maps_onto_crossbars_as_onnxruntime_computes_it(tmp_path, symmetric, k, block):
    """com.microsoft MatMulNBits (onnxruntime's 4-bit weight quantizer, as LLM exports ship it): its
    weights dequantized per block, a MatMul on crossbars, ideal mode equal to onnxruntime to float
    rounding; K not a multiple of the block and packed zero points included."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    rng = np.random.default_rng(k + block)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
                              [numpy_helper.from_array(rng.standard_normal((k, 48)).astype(np.float32), "W1"),
                               numpy_helper.from_array(rng.standard_normal((48, 16)).astype(np.float32), "W2")])
    quantizer = MatMulNBitsQuantizer(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                                     block_size=block, is_symmetric=symmetric)
    quantizer.process()
    model = str(tmp_path / "nbits.onnx")
    quantizer.model.save_model_to_file(model)
    assert [n.op_type for n in onnx.load(model).graph.node].count("MatMulNBits") == 2
    np.save(tmp_path / "x.npy", rng.standard_normal((4, k)).astype(np.float32))
    code, out, err = _cli("check", model, "--target", "isaac", "--format", "json")
    assert code == 0 and "MatMulNBits" not in out, out + err
    code, out, err = _cli("run", model, "--target", "isaac", "--input", str(tmp_path / "x.npy"), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["comparison"]["y"]["relative_error"] < 1e-5


def _nbits_model(path, rng, k: int, n: int, block: int, **attrs) -> None:
    """One hand-packed float16 MatMulNBits (4-bit weights, A [3, k]), a float16 bias when ``bias=True``."""
    from onnx import TensorProto, helper, numpy_helper
    bias = attrs.pop("bias", False)
    q = rng.integers(0, 16, (n, k)).astype(np.uint8)
    inits = [numpy_helper.from_array((q[:, 0::2] | q[:, 1::2] << 4).astype(np.uint8).reshape(n, k // block, block // 2),
                                     "B"),
             numpy_helper.from_array(rng.uniform(0.01, 0.05, n * k // block).astype(np.float16), "S")]
    inputs = ["A", "B", "S"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float16), "bias"))
        inputs += ["", "", "bias"]
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=block,
                            **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT16, [3, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3, n])], inits)
    imports = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))


@pytest.mark.parametrize("attrs, digital, tolerance", [
    # accuracy_level 4 lets onnxruntime quantize A to int8 (its model session does, with prepacked weights):
    # the product still maps, exact to the model's dequantized weights; 0.4 % apart from onnxruntime, as the
    # same model at accuracy_level 0 and 4 are in onnxruntime, and run says why
    ({"accuracy_level": 4, "bias": True}, False, 1e-2),
    # float16 scales give float16 weights (each rounded once): on crossbars, within float16's rounding
    ({}, False, 1e-3)])
def test_a_float16_matmul_nbits_runs(tmp_path, attrs, digital, tolerance):
    rng = np.random.default_rng(4)
    model = tmp_path / "nbits16.onnx"
    _nbits_model(model, rng, 64, 24, 32, **attrs)
    np.save(tmp_path / "a.npy", rng.standard_normal((3, 64)).astype(np.float16))
    code, out, _ = _cli("check", str(model), "--target", "isaac")
    assert code == 0 and ("MatMulNBits" in out) == digital
    code, out, err = _cli("run", str(model), "--target", "isaac", "--input", str(tmp_path / "a.npy"),
                          "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["comparison"]["y"]["relative_error"] < tolerance
    # run says that onnxruntime computes accuracy_level 4 in int8 (LLM exports ship it so)
    assert ("MatMulNBits computes in int8 inputs" in doc.get("reference_caveat", "")) == ("accuracy_level" in attrs)
