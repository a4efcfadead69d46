"""The simulator: ideal mode against onnxruntime, quantized mode against the integer
product and the reference path, noise reproducibility, and the files alone reproducing the model."""

import numpy as np
import onnx
import pytest

import models
from acompile import numerics
from acompile.backends.program_reader import load_program
from acompile.cli import main
from acompile.mapping import layer_matrix
from acompile.simulation import load_compiled, simulate as simulate_folder
from acompile.target import load_target
from helpers import compiled, ort_outputs, simulate

SUPPORTED = sorted(set(models.ALL_SMALL) - {"unsupported_op_model", "unsupported_lstm_model"})


@pytest.mark.parametrize("name", SUPPORTED)
def test_ideal_mode_matches_onnxruntime(name):
    model = models.ALL_SMALL[name]()
    feeds = models.random_inputs(model, batch=2)
    comp = compiled(model)
    for got, want in zip(simulate(comp, feeds), ort_outputs(model, feeds)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want).max()))


def lossless(target="isaac"):
    t = load_target(target)
    spec_worst = t["crossbar.rows"] * (2 ** t["dac.bits"] - 1) * (2 ** t["crossbar.cell_bits"] - 1)
    return t.with_overrides({"adc.bits": int(np.ceil(np.log2(spec_worst + 1)))})


@pytest.mark.parametrize("target", ["isaac", "puma", "prime"])
def test_lossless_quantized_mode_equals_the_integer_product(target):
    model = models.mlp((40, 12))             # one Linear layer, no activation
    feeds = {"input": np.random.default_rng(1).standard_normal((3, 40)).astype(np.float32)}
    comp = compiled(model, lossless(target))
    (got,) = simulate(comp, feeds, mode="quantized")
    layer = comp.mapping.layers[0]
    spec = layer.spec
    q_w, s_w = numerics.quantize_weights(layer_matrix(comp.graph.constants, layer, 0), spec.weight_bits)
    x_q = numerics.quantize_inputs(feeds["input"], layer.input_scale, spec.input_bits, layer.input_signed)
    y_int = x_q.astype(np.int64) @ q_w.astype(np.int64).T
    want = (y_int * s_w * layer.input_scale).astype(np.float32) + comp.graph.constants[layer.bias]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["isaac", "prime", "hermes"])
def test_fast_and_reference_paths_agree_bit_for_bit(target):
    model = models.small_cnn()
    feeds = models.random_inputs(model, batch=1)
    comp = compiled(model, target)
    fast = simulate(comp, feeds, mode="quantized", path="fast")
    ref = simulate(comp, feeds, mode="quantized", path="reference")
    for a, b in zip(fast, ref):
        np.testing.assert_array_equal(a, b)


def test_noise_is_seeded():
    model = models.mlp()
    feeds = models.random_inputs(model, batch=4)
    comp = compiled(model, "hermes")
    noise = numerics.NoiseSpec(programming_sigma=0.02, read_sigma=0.01)
    a = simulate(comp, feeds, mode="noisy", noise=noise, seed=1)[0]
    b = simulate(comp, feeds, mode="noisy", noise=noise, seed=1)[0]
    c = simulate(comp, feeds, mode="noisy", noise=noise, seed=2)[0]
    q = simulate(comp, feeds, mode="quantized")[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, q)


def test_the_program_and_device_files_alone_reproduce_the_model(tmp_path, capsys):
    model = models.residual_block()
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    assert main(["compile", str(tmp_path / "m.onnx"), "--target", "isaac", "-o", str(tmp_path / "out"), "-q"]) == 0
    (tmp_path / "m.onnx").unlink()          # the simulator must not need it
    feeds = models.random_inputs(model, batch=1)
    ideal = simulate_folder(load_compiled(tmp_path / "out", "ideal"), feeds, mode="ideal")
    want = ort_outputs(model, feeds)[0]
    np.testing.assert_allclose(ideal["output"], want, rtol=1e-4, atol=1e-5)
    comp = compiled(model)
    quant_files = simulate_folder(load_compiled(tmp_path / "out", "quantized"), feeds, mode="quantized")
    np.testing.assert_array_equal(quant_files["output"], simulate(comp, feeds, mode="quantized")[0])


def test_a_batch_larger_than_the_compiled_one_runs_in_chunks():
    model = models.small_cnn()                 # fixed batch 1
    feeds = models.random_inputs(model, batch=1)
    big = {"input": np.concatenate([feeds["input"]] * 3)}
    comp = compiled(model)
    out = simulate(comp, big)[0]
    assert out.shape[0] == 3
    np.testing.assert_allclose(out[2], simulate(comp, feeds)[0][0], rtol=1e-6)


def test_run_compares_a_batch_the_fixed_batch_does_not_divide(tmp_path, capsys):
    """A model fixed at batch 2 run on 3 rows: the simulator pads its last chunk, and so must the
    onnxruntime reference (it refused the 1-row chunk: exit 2)."""
    import json
    model = models.small_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(model, tmp_path / "b2.onnx")
    x = models.random_inputs(model, batch=2)["input"]
    np.save(tmp_path / "x.npy", np.concatenate([x, -x[:1]]))    # 3 rows
    code = main(["run", str(tmp_path / "b2.onnx"), "-t", "isaac", "-i", str(tmp_path / "x.npy"), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["comparison"]["output"]["relative_error"] < 1e-5


def test_program_round_trips(tmp_path):
    comp = compiled(models.transformer_block())
    from acompile.backends.program import write_program
    from acompile.jsonio import dumps_json
    write_program(tmp_path, comp, dumps_json)
    graph, mapping, _ = load_program(tmp_path)
    assert [n.op_type for n in graph.nodes] == [n.op_type for n in comp.graph.nodes]
    assert [l.input_scale for l in mapping.layers] == [l.input_scale for l in comp.mapping.layers]


def test_a_dynamic_batch_program_runs_any_batch_in_one_go():
    model = models.dynamic_batch_cnn()
    comp = compiled(model, batch=1)
    assert comp.graph.meta["dynamic_batch"]
    feeds = models.random_inputs(model, batch=5)
    for got, want in zip(simulate(comp, feeds), ort_outputs(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["conv_transpose_grouped", "grouped_conv", "transformer_block", "conv_1d",
                                  "dynamic_batch_cnn"])
def test_every_node_of_the_chain_on_its_own_equals_the_fused_chain(name):
    """The reference path runs ToVectors ... FromVectors one node at a time (shapes carried by
    the values); the fast path runs each chain as one fused step: the same bits in quantized mode."""
    model = models.ALL_SMALL[name]()
    comp = compiled(model, "prime", batch=2)
    feeds = models.random_inputs(model, batch=3 if comp.graph.meta.get("dynamic_batch") else 2)
    for a, b in zip(simulate(comp, feeds, mode="quantized", path="fast"),
                    simulate(comp, feeds, mode="quantized", path="reference")):
        np.testing.assert_array_equal(a, b)


def test_the_reference_path_steps_through_each_chain_node_and_the_fast_path_fuses_it(monkeypatch):
    from acompile.passes.boundaries import CHAIN
    from acompile.sim import chain
    model = models.mlp()
    comp = compiled(model)
    feeds = models.random_inputs(model, batch=2)
    calls = []
    for op, step in list(chain.STEPS.items()):
        monkeypatch.setitem(chain.STEPS, op, lambda *a, _op=op, _step=step: calls.append(_op) or _step(*a))
    n_layers = len(comp.mapping.layers)
    simulate(comp, feeds, mode="noisy", path="reference", noise=numerics.NoiseSpec(read_sigma=0.01))
    assert calls == list(CHAIN) * n_layers
    calls.clear()
    simulate(comp, feeds, mode="quantized", path="fast")
    simulate(comp, feeds, mode="ideal", path="reference")      # ideal mode has no converters: always fused
    assert calls == []


def test_an_incomplete_chain_is_refused():
    from acompile.errors import InvalidDataError
    from acompile.sim.chain import fuse_chain
    comp = compiled(models.mlp())
    nodes = [n for n in comp.graph.nodes if n.op_type != "ShiftAdd"]
    with pytest.raises(InvalidDataError, match="incomplete or out of order"):
        fuse_chain(nodes)
