"""The public Python API named in acompile/__init__.py."""

from pathlib import Path

import numpy as np

import acompile
from acompile.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def test_public_api_compiles_checks_and_simulates(tmp_path):
    x = np.load(SAMPLES / "digits_test_x.npy")[:8]
    compiled = acompile.compile_model(str(SAMPLES / "digits.onnx"), "puma", acompile.Options(batch=8))
    assert compiled.cost["totals"]["crossbars"] > 0
    ideal = acompile.simulate(compiled, {"input": x})["logits"]
    noisy = acompile.simulate(compiled, {"input": x}, mode="noisy", seed=3)["logits"]
    assert ideal.shape == noisy.shape == (8, 10)
    assert acompile.check_model(str(SAMPLES / "digits.onnx"), "puma")["verdict"] == "compatible"
    assert main(["compile", str(SAMPLES / "digits.onnx"), "-t", "puma", "-o", str(tmp_path / "o"), "-q"]) == 0
    from_files = acompile.simulate(tmp_path / "o", {"input": x})["logits"]
    np.testing.assert_allclose(from_files, ideal, rtol=1e-6)
    graph = acompile.load_model(SAMPLES / "digits.onnx")
    assert graph.inputs == ["input"]
    assert issubclass(acompile.AcompileError, Exception)
