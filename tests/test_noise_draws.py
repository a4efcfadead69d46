"""Noise as a chip shows it (issue 12, item 1): programming draws once per chip instance, read
noise per read (per vector, per chunk, per call of a shared layer), reproducible from the seed;
``simulate --repeats`` reports the spread and a target FILE works in every mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from acompile import compile_model
from acompile.cli import main
from acompile.compiler import Options
from acompile.numerics.noise import NoiseSpec
from acompile.sim.runtime import Simulator, WeightsFromGraph
from acompile.target.read import shipped_targets

RNG = np.random.default_rng(3)


def _linear(batch_dim) -> onnx.ModelProto:
    w = RNG.standard_normal((8, 4)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 4])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _sim(model, noise: NoiseSpec, seed: int = 0, instance: int = 0, path: str = "fast") -> Simulator:
    c = compile_model(model, "hermes", Options())
    return Simulator(c.graph, c.mapping, WeightsFromGraph(c.graph, c.mapping), mode="noisy", noise=noise,
                     seed=seed, instance=instance, path=path)


READ = NoiseSpec(read_sigma=0.02)
PROGRAM = NoiseSpec(programming_sigma=0.05)
X = np.tile(RNG.standard_normal((1, 8)).astype(np.float32), (6, 1))     # one input, six times


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_read_noise_differs_per_vector_and_reproduces_from_the_seed(path):
    model = _linear("N")                      # dynamic batch: all six rows in one call
    y = _sim(model, READ, path=path).run({"x": X})["y"]
    assert len({row.tobytes() for row in y}) == len(X)
    again = _sim(model, READ, path=path).run({"x": X})["y"]
    np.testing.assert_array_equal(y, again)
    other = _sim(model, READ, seed=1, path=path).run({"x": X})["y"]
    assert not np.array_equal(y, other)


def test_read_noise_differs_per_chunk_of_a_fixed_batch_program():
    model = _linear(1)                        # compiled batch 1: six rows run as six chunks
    y = _sim(model, READ).run({"x": X})["y"]
    assert len({row.tobytes() for row in y}) == len(X)
    np.testing.assert_array_equal(y, _sim(model, READ).run({"x": X})["y"])


def test_every_call_of_a_layer_reads_anew():
    """A shared layer (one per time step of a recurrent model) calls its crossbars again each step."""
    sim = _sim(_linear(1), READ)
    first = sim.run({"x": X[:1]})["y"]
    second = sim.run({"x": X[:1]})["y"]
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_ideally_programmed_cells_are_read_as_the_levels_themselves(path, monkeypatch):
    """Read noise alone programs nothing: the executors get no cells (None, the integer levels, which
    the fast path packs) and give the values of the float32 copy program_cells would make."""
    model = _linear("N")
    sim = _sim(model, READ, path=path)
    y = sim.run({"x": X})["y"]
    assert sim._cells and all(cells is None for cells in sim._cells.values())
    monkeypatch.setattr(NoiseSpec, "programs_levels", property(lambda self: False))
    copied = _sim(model, READ, path=path)
    np.testing.assert_array_equal(y, copied.run({"x": X})["y"])
    assert all(cells.dtype == np.float32 for cells in copied._cells.values())


LEAK = NoiseSpec(g_min_us=0.1, g_max_us=1.0)                        # on/off ratio 10: a large leak


@pytest.mark.parametrize("target", shipped_targets())
def test_g_min_alone_reads_the_levels_and_adds_the_leak(target, monkeypatch):
    """g_min programs no cell of its own: the executors read the integer levels and add leak * Σx
    to each read, the reference column's and an analog offset subtraction's included. Both
    executors agree bit for bit; the float32 cells program_cells makes give the same outputs up
    to rounding (their GEMMs round each product)."""
    model = _linear("N")
    c = compile_model(model, target, Options())

    def run(noise, path="fast"):
        sim = Simulator(c.graph, c.mapping, WeightsFromGraph(c.graph, c.mapping), mode="noisy", noise=noise,
                        path=path)
        return sim.run({"x": X})["y"], sim

    y, fast = run(LEAK)
    assert fast._cells and all(cells is None for cells in fast._cells.values())
    np.testing.assert_array_equal(y, run(LEAK, "reference")[0])
    if target == "hermes":
        assert not np.array_equal(y, run(NoiseSpec())[0])  # the leak shows, though the signs' columns cancel most
    monkeypatch.setattr(NoiseSpec, "programs_levels", property(lambda self: False))
    copied, sim = run(LEAK)
    assert all(cells.dtype == np.float32 for cells in sim._cells.values())
    np.testing.assert_allclose(y, copied, rtol=0, atol=0.01 * np.abs(copied).max())


def test_programming_noise_is_drawn_once_per_chip_instance():
    model = _linear("N")
    chip = _sim(model, PROGRAM)
    a, b = chip.run({"x": X[:1]})["y"], chip.run({"x": X[:1]})["y"]
    np.testing.assert_array_equal(a, b)                      # same chip, no read noise: same cells
    np.testing.assert_array_equal(a, _sim(model, PROGRAM).run({"x": X[:1]})["y"])
    assert not np.array_equal(a, _sim(model, PROGRAM, instance=1).run({"x": X[:1]})["y"])


def _custom_target(folder: Path, name: str = "isaac") -> Path:
    """A target FILE named like a shipped target, with noise the shipped one does not have."""
    path = folder / f"{name}.toml"
    path.write_text('schema_version = 1\nname = "isaac"\nextends = "isaac"\n\n[noise]\nread_sigma = 0.05\n')
    return path


def test_repeats_report_the_spread_and_a_target_file_works_in_every_mode(tmp_path, capsys):
    target = _custom_target(tmp_path)
    out = tmp_path / "out"
    assert main(["compile", "samples/digits.onnx", "-t", str(target), "-o", str(out), "-q"]) == 0
    assert (out / "target.toml").exists()
    target.unlink()                            # the program carries its target: the file is not needed
    x = np.load("samples/digits_test_x.npy")[:40]
    y = np.load("samples/digits_test_y.npy")[:40]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    for mode in ("ideal", "quantized", "noisy"):
        capsys.readouterr()
        assert main(["simulate", str(out), "-i", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                     "--mode", mode, "--format", "json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        if mode == "noisy":
            assert "read_sigma 0.05" in summary["non_idealities"]
    capsys.readouterr()
    assert main(["simulate", str(out), "-i", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--mode", "noisy", "--repeats", "3", "--format", "json"]) == 0
    spread = json.loads(capsys.readouterr().out)["repeats"]
    acc = spread["logits"]["top1_accuracy_simulated"]
    assert spread["chips"] == 3 and acc["min"] <= acc["mean"] <= acc["max"] and acc["std"] >= 0
    # run compiles for the file and simulates with it too
    target = _custom_target(tmp_path)
    capsys.readouterr()
    assert main(["run", "samples/digits.onnx", "-t", str(target), "-i", str(tmp_path / "x.npy"),
                 "--mode", "noisy", "--format", "json"]) == 0
    assert "read_sigma 0.05" in json.loads(capsys.readouterr().out)["non_idealities"]


def test_noisy_mode_says_when_the_target_enables_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    ideal = tmp_path / "ideal.toml"                 # prime, with an infinite on/off ratio: no non-ideality
    ideal.write_text('schema_version = 1\nname = "ideal"\nextends = "prime"\n\n[crossbar]\ng_min_us = 0.0\n')
    assert main(["compile", "samples/mlp.onnx", "-t", str(ideal), "-o", str(out), "-q"]) == 0
    np.save(tmp_path / "x.npy", RNG.standard_normal((2, 784)).astype(np.float32))
    capsys.readouterr()
    assert main(["simulate", str(out), "-i", str(tmp_path / "x.npy"), "--mode", "noisy"]) == 0
    assert "non-idealities: none" in capsys.readouterr().out


def test_a_tampered_target_file_is_refused(tmp_path):
    out = tmp_path / "out"
    assert main(["compile", "samples/mlp.onnx", "-t", "hermes", "-o", str(out), "-q"]) == 0
    (out / "target.toml").write_text((out / "target.toml").read_text().replace("read_sigma", "read_sigma = 0.5\n#"))
    np.save(tmp_path / "x.npy", RNG.standard_normal((2, 784)).astype(np.float32))
    assert main(["simulate", str(out), "-i", str(tmp_path / "x.npy"), "--mode", "noisy"]) == 2


def _chip(model, noise: NoiseSpec, compile_seed: int, seed: int = 0, instance: int = 0) -> Simulator:
    c = compile_model(model, "hermes", Options(seed=compile_seed))
    return Simulator(c.graph, c.mapping, WeightsFromGraph(c.graph, c.mapping), mode="noisy", noise=noise,
                     seed=seed, instance=instance)


def test_programming_draws_follow_the_compile_seed_and_read_noise_the_simulate_seed():
    model = _linear("N")
    a = _chip(model, PROGRAM, 0).run({"x": X[:1]})["y"]
    np.testing.assert_array_equal(a, _chip(model, PROGRAM, 0, seed=5).run({"x": X[:1]})["y"])   # --seed: same chip
    assert not np.array_equal(a, _chip(model, PROGRAM, 1).run({"x": X[:1]})["y"])             # another compile
    assert not np.array_equal(a, _chip(model, PROGRAM, 0, instance=1).run({"x": X[:1]})["y"])  # another chip
    both = NoiseSpec(programming_sigma=0.05, read_sigma=0.02)
    r0, r1 = (_chip(model, both, 0, seed=s).run({"x": X[:1]})["y"] for s in (0, 1))
    assert not np.array_equal(r0, r1)                                                       # read noise: per --seed


def test_program_json_keeps_the_compile_seed(tmp_path):
    out = tmp_path / "out"
    assert main(["compile", "samples/mlp.onnx", "-t", "hermes", "-o", str(out), "-q", "--seed", "7"]) == 0
    from acompile.backends.program_reader import load_program
    assert json.loads((out / "program.json").read_text())["seed"] == 7
    assert load_program(out)[0].meta["compile_seed"] == 7


def _normal_cdf(z):
    import math
    return np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_normal_draws_independent_normals_of_the_given_sigma(dtype):
    """The read-noise draws against the normal law: quantiles, moments, the tails, and no
    correlation between neighbours or between the four draws of one random word."""
    from acompile.numerics.normals import CHUNK, add_normal
    n = 4 * CHUNK + 3                                              # several chunks, a partial word
    z = add_normal(np.zeros(n, dtype), 2.5, np.random.default_rng(0)) / 2.5
    assert z.dtype == dtype
    assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.std() - 1) < 5 / np.sqrt(2 * n)
    points = np.array([-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0])
    want = _normal_cdf(points)
    got = (z[:, None] <= points).mean(axis=0)
    assert np.all(np.abs(got - want) < 5 * np.sqrt(want * (1 - want) / n))
    assert abs(np.mean(z ** 4) - 3) < 0.1                           # kurtosis of a normal
    words = z[:n - 3].reshape(-1, 4)
    for a, b in ((z[:-1], z[1:]), (words[:, 0], words[:, 3]), (words[:, 1], words[:, 2])):
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)
        assert abs(np.corrcoef(a ** 2, b ** 2)[0, 1]) < 5 / np.sqrt(a.size)


def test_the_draws_table_is_the_normal_slice_by_slice():
    """Each of the 65,536 values is the normal's mean over its slice of probability: sorted,
    symmetric, mean 0, variance just under 1, the distribution function within 1e-5 of Φ."""
    from statistics import NormalDist

    from acompile.numerics.normals import SLICES, table
    t = table(np.float64)
    assert t.shape == (SLICES,) and np.all(np.diff(t) > 0) and np.array_equal(t, -t[::-1])
    assert abs(t.mean()) < 1e-12 and -2e-6 < (t ** 2).mean() - 1 < 0
    assert 4.3 < t[-1] < 4.5                                        # E[Z | Z > Φ^-1(1 - 2^-16)]
    inv = NormalDist().inv_cdf
    edges = np.array([inv(i / SLICES) for i in range(1, SLICES)])
    assert np.all((edges[:-1] < t[1:-1]) & (t[1:-1] < edges[1:]))  # each value inside its slice
    cdf = np.array([NormalDist().cdf(v) for v in t])                # Φ at each value, against the
    gap = np.maximum(cdf - np.arange(SLICES) / SLICES, np.arange(1, SLICES + 1) / SLICES - cdf)  # jump
    assert gap.max() < 1e-5 and gap[1000:-1000].max() < 2 ** -17 * (1 + 1e-3)
    assert np.array_equal(table(np.float32), t.astype(np.float32)) and not t.flags.writeable


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3, 4, 4097, 3 * (1 << 16) + 2])
def test_numba_and_numpy_draw_the_same_bits(dtype, n):
    """The compiled loop is only a faster way to the numpy definition: same key, same bits,
    whatever the length (partial last words, several numpy chunks)."""
    from acompile.numerics import normals
    add = normals.compiled()
    if add is None:
        pytest.skip("numba is not installed")
    base = np.random.default_rng(n).standard_normal(n).astype(dtype)
    key = 0xFEDCBA9876543210
    want = normals.add_with_numpy(base.copy(), 0.37, key)
    got = add(base.copy(), dtype(0.37), np.uint64(key), normals.table(dtype))
    assert np.array_equal(got, want) and not np.array_equal(want, base)


def test_numba_compiles_the_draws_where_it_is_installed():
    """In a fresh process, where compiled() also builds the table it hands numba."""
    import subprocess
    import sys
    pytest.importorskip("numba")
    code = "from acompile.numerics import normals; assert normals.compiled() is not None"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_numba_without_a_cache_folder_still_compiles_and_a_failure_leaves_numpy(monkeypatch):
    numba = pytest.importorskip("numba")
    from acompile.numerics import normals
    njit = numba.njit

    def no_cache(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function 'loop': no locator available")
        return njit(*args, **kwargs)
    monkeypatch.setattr(numba, "njit", no_cache)
    add = normals._compile()
    x = np.zeros(9, np.float32)
    assert np.array_equal(add(x.copy(), np.float32(2), np.uint64(3), normals.table(np.float32)),
                          normals.add_with_numpy(x.copy(), 2.0, 3))
    monkeypatch.setattr(numba, "njit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no LLVM")))
    assert normals._compile() is None


def test_add_normal_switches_to_numba_without_changing_a_draw(monkeypatch):
    from acompile.numerics import normals
    if normals.compiled() is None:
        pytest.skip("numba is not installed")
    x = np.linspace(-1, 1, 1001, dtype=np.float32)
    monkeypatch.setattr(normals, "_drawn", 0)
    by_numpy = normals.add_normal(x.copy(), 0.1, np.random.default_rng(2))
    assert normals._drawn == x.size
    monkeypatch.setattr(normals, "_drawn", normals.SWITCH_DRAWS)
    monkeypatch.setattr(normals, "add_with_numpy", None)            # now only numba can draw
    assert np.array_equal(normals.add_normal(x.copy(), 0.1, np.random.default_rng(2)), by_numpy)


def test_add_normal_adds_in_place_and_reproduces_from_the_seed():
    from acompile.numerics.normals import add_normal
    base = np.arange(2 * 4096 + 1, dtype=np.float32).reshape(-1, 1)
    gen = np.random.default_rng(5)
    a = add_normal(base.copy(), 0.1, gen)
    assert gen.bit_generator.random_raw() == np.random.default_rng(5).bit_generator.random_raw(2)[1]
    assert np.array_equal(a, add_normal(base.copy(), 0.1, np.random.default_rng(5)))
    assert np.all(np.isfinite(a)) and np.abs(a - base).max() < 0.45 and not np.array_equal(a, base)
    assert not np.array_equal(a, add_normal(base.copy(), 0.1, np.random.default_rng(6)))
    with pytest.raises(ValueError, match="contiguous"):
        add_normal(np.zeros((4, 4), np.float32)[:, ::2], 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="float32 or float64"):
        add_normal(np.zeros(4, np.float16), 0.1, np.random.default_rng(0))
