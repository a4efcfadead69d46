"""The command line: exit codes, output files, atomic OUT, formats, and one real subprocess."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import corpus
import models
from acompile.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def save(model, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def test_compile_writes_program_device_and_report(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", str(SAMPLES / "cnn.onnx"), "--target", "isaac", "-o", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["device.acdev", "mapped.onnx", "program.json", "program.npz", "report.html",
                                       "report.json", "report.md", "report_energy.svg", "report_layers.svg",
                                       "target.toml"]
    text = (out / "report.json").read_text()
    report = json.loads(text)
    assert report["schema_version"] == 1 and report["totals"]["crossbars"] > 0
    assert "total:" in capsys.readouterr().out
    lines = text.splitlines()        # like program.json: each layer's record one line, between the list's brackets
    first = lines.index('  "layers": [')
    assert len(report["layers"]) > 1 and lines[first + 1 + len(report["layers"])] in ("  ]", "  ],")


def test_outputs_are_byte_identical_across_runs(tmp_path):
    for name in ("a", "b"):
        assert main(["compile", str(SAMPLES / "resblock.onnx"), "-t", "puma", "-o", str(tmp_path / name), "-q"]) == 0
    for f in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_emit_and_json_format(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "-o", str(out), "--emit", "report",
                 "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "ok" and "program.json" not in os.listdir(out)
    assert main(["compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "--emit", "nonsense"]) == 2


def test_unsupported_op_exits_1_unless_allowed(tmp_path, capsys):
    model = save(models.unsupported_op_model(), tmp_path / "topk.onnx")
    assert main(["compile", str(model), "-t", "isaac", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "TopK" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    assert main(["compile", str(model), "-t", "isaac", "-o", str(tmp_path / "o"), "--allow-unsupported", "-q"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [u["op_type"] for u in report["unsupported"]] == ["TopK"]


def test_errors_are_one_line_with_codes(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "missing.onnx"), "-t", "isaac"]) == 2
    assert main(["compile", str(SAMPLES / "mlp.onnx"), "-t", "no-such-target"]) == 2
    assert main(["compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "--batch", "0"]) == 2
    assert main(["frobnicate"]) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l]
    assert len(lines) == 4 and all(l.startswith("acompile: error:") for l in lines)
    assert main(["compile", str(tmp_path / "missing.onnx"), "-t", "isaac", "--format", "json"]) == 2
    err = json.loads(capsys.readouterr().err)
    assert err["error"]["code"] == "invalid_model" and err["error"]["exit_code"] == 2


def test_failed_compile_leaves_out_untouched(tmp_path):
    out = tmp_path / "out"
    assert main(["compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "-o", str(out), "-q"]) == 0
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["compile", str(bad), "-t", "isaac", "-o", str(out), "-q"]) == 2
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    assert [p.name for p in tmp_path.iterdir() if "acompile-tmp" in p.name] == []


def test_a_folder_of_other_files_is_never_replaced(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    assert main(["compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "-o", str(mine)]) == 2
    assert (mine / "thesis.tex").read_text() == "precious"


def test_simulate_compare_labels_and_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", str(SAMPLES / "digits.onnx"), "-t", "isaac", "-o", str(out), "-q",
                 "--calibration", str(SAMPLES / "digits_calib.npy")]) == 0
    x = np.load(SAMPLES / "digits_test_x.npy")[:50]
    y = np.load(SAMPLES / "digits_test_y.npy")[:50]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert main(["simulate", str(out), "--input", str(tmp_path / "x.npy"), "--compare", str(SAMPLES / "digits.onnx"),
                 "--labels", str(tmp_path / "y.npy"), "--format", "json", "-r", str(tmp_path / "r.npz")]) == 0
    summary = json.loads(capsys.readouterr().out)
    cmp = summary["comparison"]["logits"]
    assert cmp["relative_error"] < 1e-4 and cmp["top1_agreement"] == 1.0
    assert cmp["top1_accuracy_onnxruntime"] > 0.9
    with np.load(tmp_path / "r.npz") as r:
        assert r["logits"].shape == (50, 10)
    assert main(["run", str(SAMPLES / "digits.onnx"), "-t", "puma", "--input", str(tmp_path / "x.npy"),
                 "--mode", "quantized", "--labels", str(tmp_path / "y.npy")]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_run_and_simulate_name_the_input_the_data_does_not_fit(tmp_path, capsys):
    """The data's shape and type are checked against the model before compiling at its shape (run) and
    before onnxruntime runs the comparison (simulate --compare): one line naming the input either way."""
    model = SAMPLES / "mlp.onnx"
    out = tmp_path / "out"
    assert main(["compile", str(model), "-t", "isaac", "-o", str(out), "-q"]) == 0
    cases = {"narrow": (np.zeros((4, 64), np.float32), "input 'input' has shape [4, 64]; the model expects ['N', 784]"),
             "text": (np.array([["a"] * 784] * 4), "input 'input' has dtype <U1; the model expects float32")}
    for name, (data, message) in cases.items():
        np.save(tmp_path / f"{name}.npy", data)
        runs = (["run", str(model), "-t", "isaac"], ["simulate", str(out), "--compare", str(model)])
        for command in runs:
            capsys.readouterr()
            assert main([*command, "--input", str(tmp_path / f"{name}.npy")]) == 2
            err = capsys.readouterr().err
            assert message in err and "--input-shape" not in err and "onnxruntime" not in err, err


def test_drift_time_reads_the_chip_later_and_says_what_it_needs(tmp_path, capsys):
    model = save(models.mlp(), tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32))
    results = []
    for when in ("1000", "1e7"):
        assert main(["run", str(model), "-t", "hermes", "-i", str(tmp_path / "x.npy"), "--mode", "noisy",
                     "--drift-time", when, "-r", str(tmp_path / f"r{when}.npz"), "-q"]) == 0
        with np.load(tmp_path / f"r{when}.npz") as r:
            results.append(dict(r))
    assert any(not np.array_equal(results[0][k], results[1][k]) for k in results[0])   # the chip drifted
    errors = {("hermes", "noisy", "10"): "--drift-time: noise.drift_time_s: expected at least noise.drift_t0_s",
              ("isaac", "noisy", "1000"): "the target 'isaac' has no drift model",
              ("hermes", "quantized", "1000"): "--drift-time reads a drifted chip: it needs --mode noisy"}
    for (target, mode, when), message in errors.items():
        capsys.readouterr()
        assert main(["run", str(model), "-t", target, "-i", str(tmp_path / "x.npy"), "--mode", mode,
                     "--drift-time", when]) == 2
        err = capsys.readouterr().err
        assert message in err and "--set:" not in err and len(err.splitlines()) == 1, err


def test_simulate_rejects_a_device_file_from_another_compile(tmp_path, capsys):
    for name, model in (("a", "mlp.onnx"), ("b", "digits.onnx")):
        assert main(["compile", str(SAMPLES / model), "-t", "isaac", "-o", str(tmp_path / name), "-q"]) == 0
    shutil.copy(tmp_path / "b" / "device.acdev", tmp_path / "a" / "device.acdev")
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    assert main(["simulate", str(tmp_path / "a"), "--input", str(tmp_path / "x.npy"), "--mode", "quantized"]) == 2
    assert "another compile" in capsys.readouterr().err


def test_inspect_ops_and_targets(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", str(SAMPLES / "cnn.onnx"), "-t", "hermes", "-o", str(out), "-q"]) == 0
    assert main(["inspect", str(out / "device.acdev")]) == 0
    text = capsys.readouterr().out
    assert "crossbars" in text
    assert main(["inspect", str(out)]) == 0     # the OUT folder names its device file
    assert capsys.readouterr().out == text
    assert main(["inspect", str(tmp_path)]) == 2     # a folder without one is still refused
    capsys.readouterr()
    assert main(["ops"]) == 0
    assert "Conv" in capsys.readouterr().out
    assert main(["targets", "list"]) == 0
    assert main(["targets", "validate", str(REPO / "targets" / "isaac.toml")]) == 0


def test_console_script_runs_as_a_real_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "acompile", "compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "-o",
           str(tmp_path / "o")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(cmd[:4] + [str(tmp_path / "nope.onnx"), "-t", "isaac"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_process_ends_at_once_with_every_byte_of_its_output(tmp_path):
    """entry_point flushes and ends the process at once: what is printed arrives whole, a long JSON
    document and a few buffered lines alike; under a profiler the ordinary exit runs, so the profile is
    printed."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PYTHONUNBUFFERED", None)       # a pipe's stdout then holds what is printed until it is flushed
    done = subprocess.run([sys.executable, "-m", "acompile", "ops", "--format", "json"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0 and len(done.stdout) > 10_000 and json.loads(done.stdout)
    done = subprocess.run([sys.executable, "-m", "acompile", "targets", "list"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and "isaac" in done.stdout and done.stdout.endswith("\n")
    done = subprocess.run([sys.executable, "-m", "cProfile", "-m", "acompile", "ops"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0 and "function calls" in done.stdout


def test_a_compile_leaves_its_results_to_the_process_end_only_under_entry_point(tmp_path):
    """compile's results are freed by the process's end when it ends through entry_point (they are kept
    until then); called as a function, the command keeps nothing."""
    from acompile.cli import app
    assert main(["compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "-o", str(tmp_path / "out"), "-q"]) == 0
    assert app._KEPT is None
    code = ("import sys\nfrom acompile.cli import app\n"
            "app.os._exit = lambda code: (print(code, [type(x).__name__ for x in app._KEPT]), sys.exit(code))\n"
            f"sys.argv = ['acompile', 'compile', {str(SAMPLES / 'mlp.onnx')!r}, '-t', 'isaac', '-o', "
            f"{str(tmp_path / 'again')!r}, '-q']\napp.entry_point()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.stdout.split() == ["0", "['Compiled',", "'dict']"], done.stderr


def test_edited_cell_levels_are_refused(tmp_path, capsys):
    import zipfile
    out = tmp_path / "out"
    assert main(["compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "-o", str(out), "-q"]) == 0
    with zipfile.ZipFile(out / "device.acdev") as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    levels = bytearray(members["levels.bin"])
    levels[0] ^= 0x01                                  # still a valid level, a different weight
    members["levels.bin"] = bytes(levels)
    with zipfile.ZipFile(out / "device.acdev", "w") as z:  # a well-formed archive with fresh CRCs
        for name, data in members.items():
            z.writestr(name, data)
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    assert main(["simulate", str(out), "--input", str(tmp_path / "x.npy"), "--mode", "quantized"]) == 2
    assert "checksum" in capsys.readouterr().err


# A fresh interpreter runs one command and lists what it imported.
_IMPORTED = "import json, sys\nfrom acompile.cli import main\nmain(sys.argv[1:])\nprint(json.dumps(sorted(sys.modules)))\n"


def _imported(argv: list[str]) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _IMPORTED, *argv], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    return set(json.loads(done.stdout.splitlines()[-1]))


def _under(modules: set[str], *packages: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_each_command_imports_only_what_it_uses(tmp_path):
    """check pays for neither onnxruntime, the simulator, the writers nor the process pool (one job);
    compile not for check's report or any other command's module."""
    check = _imported(["check", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "-q"])
    assert not _under(check, "onnxruntime", "acompile.sim", "acompile.simulation", "acompile.backends",
                      "acompile.sweeps", "acompile.cli.simulate", "acompile.cli.targets", "acompile.cli.sweep",
                      "multiprocessing", "concurrent.futures.process", "xml")
    # nor for a quantized model: its weights' DequantizeLinear folds in numpy, its activations' are costed
    quantized = _imported(["check", str(corpus.path("q_cnn_qdq_channel")), "-t", "isaac", "-q"])
    assert not _under(quantized, "onnxruntime", "acompile.sim")
    compiled = _imported(["compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "-q", "-o", str(tmp_path / "o")])
    assert "acompile.backends.device" in compiled
    assert not _under(compiled, "acompile.check", "acompile.cli.check", "acompile.cli.simulate", "acompile.cli.sweep",
                      "acompile.cli.targets", "acompile.sweeps")


def test_an_internal_error_names_a_dependency_acompile_does_not_accept(tmp_path, capsys, monkeypatch):
    """Another tool's install can downgrade onnx under acompile; the error then says so and how to fix it."""
    from importlib import metadata

    import acompile.cli.compile as compile_cli
    import acompile.requirements as requirements

    def fail(*args, **kwargs):
        raise AttributeError("FLOAT4E2M1")     # what an onnx too old for acompile raises deep in a pass

    installed = {"onnx": "1.16.1", "numpy": "2.4.0"}
    monkeypatch.setattr(compile_cli, "compile_to", fail)
    monkeypatch.setattr(requirements.metadata, "requires", lambda name: ["onnx>=1.21", "numpy>=1.24",
                                                                          'pytest>=7; extra == "test"'])
    monkeypatch.setattr(requirements.metadata, "version", lambda name: installed[name])
    args = ["compile", str(SAMPLES / "mlp.onnx"), "-t", "isaac", "-o", str(tmp_path / "out")]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err == ("acompile: internal error: AttributeError: FLOAT4E2M1 -- onnx 1.16.1 is installed, against "
                   "acompile's requirements: pip install 'onnx>=1.21'\n")
    installed["onnx"] = "1.23.2"
    assert main(args) == 3
    assert "please report this" in capsys.readouterr().err
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(requirements.metadata, "version", missing)
    assert main(args) == 3
    assert "onnx is not installed, numpy is not installed" in capsys.readouterr().err


def test_a_model_without_inputs_runs_without_input_data(tmp_path, capsys):
    """A model whose values are all constants (onnxruntime runs it with no feeds) needs no --input; a model
    with inputs still does, and the error names them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Constant", [], ["x"], value=numpy_helper.from_array(w.T.copy())),
                               helper.make_node("MatMul", ["x", "w"], ["y"])], "constants", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 6])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "c.onnx"))
    assert main(["run", str(tmp_path / "c.onnx"), "-t", "isaac", "--format", "json"]) == 0
    (cmp,) = json.loads(capsys.readouterr().out)["comparison"].values()
    assert cmp["relative_error"] < 1e-6
    assert main(["compile", str(tmp_path / "c.onnx"), "-t", "isaac", "-q", "-o", str(tmp_path / "out")]) == 0
    assert main(["simulate", str(tmp_path / "out"), "--compare", str(tmp_path / "c.onnx"), "-q"]) == 0
    capsys.readouterr()
    assert main(["run", str(SAMPLES / "mlp.onnx"), "-t", "isaac"]) == 2
    err = capsys.readouterr().err
    assert "--input is required: the model reads" in err and "Traceback" not in err
