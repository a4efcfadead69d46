"""Accuracy of the shipped digits classifier on every shipped target, in every mode.

    python scripts/digits_accuracy.py [--update-readme]

Compiles samples/digits.onnx for each target (calibrated on samples/digits_calib.npy),
simulates the held-out test set in ideal, quantized and noisy mode (noisy: REPEATS chip
instances of seed 0, mean ± standard deviation), and prints a Markdown table; with --update-readme it replaces the table in README.md between the markers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from acompile.calibrate import load_arrays  # noqa: E402
from acompile.compiler import Options, compile_model  # noqa: E402
from acompile.sim.runtime import Simulator, WeightsFromGraph  # noqa: E402
from acompile.simulation import noise_from_target  # noqa: E402
from acompile.target import load_target, shipped_targets  # noqa: E402

REPEATS = 10
BEGIN, END = "<!-- digits-accuracy:begin -->", "<!-- digits-accuracy:end -->"


def accuracy_table(seed: int = 0, repeats: int = REPEATS) -> str:
    samples = ROOT / "samples"
    x = np.load(samples / "digits_test_x.npy")
    y = np.load(samples / "digits_test_y.npy")
    calib = load_arrays(samples / "digits_calib.npy", ["input"])
    rows = ["| target | weights / inputs / DAC / cell / ADC bits | float (onnxruntime) | ideal | quantized | noisy |",
            "|---|---|---:|---:|---:|---:|"]
    import onnxruntime as ort
    sess = ort.InferenceSession(str(samples / "digits.onnx"), providers=["CPUExecutionProvider"])
    float_acc = float(np.mean(np.argmax(sess.run(None, {"input": x})[0], axis=1) == y))
    for name in shipped_targets():
        target = load_target(name)
        comp = compile_model(str(samples / "digits.onnx"), target,
                             Options(batch=len(x), calibration=calib, calibration_name="digits_calib.npy"))
        weights = WeightsFromGraph(comp.graph, comp.mapping)
        noise = noise_from_target(target)

        def acc(mode: str, instance: int = 0) -> float:
            sim = Simulator(comp.graph, comp.mapping, weights, mode=mode, noise=noise, seed=seed, instance=instance)
            logits = sim.run({"input": x})[comp.graph.outputs[0]]
            return float(np.mean(np.argmax(logits, axis=1) == y))
        cells = [f"{acc('ideal'):.1%}", f"{acc('quantized'):.1%}"]
        if noise.is_ideal:
            cells.append("= quantized")
        else:
            noisy = np.array([acc("noisy", i) for i in range(repeats)])
            cells.append(f"{noisy.mean():.1%} ± {noisy.std():.1%}")
        spec = comp.mapping.layers[0].spec
        bits = f"{spec.weight_bits} / {spec.input_bits} / {spec.dac_bits} / {spec.cell_bits} / {spec.adc_bits}"
        rows.append(f"| {name} | {bits} | {float_acc:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + (f"\n\n{len(y)} held-out test images. Noisy: each target's non-idealities on {repeats} "
                              f"chips (programming draws per chip, read noise per read), seed {seed}; mean ± "
                              "standard deviation of the accuracy.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    table = accuracy_table()
    print(table)
    if args.update_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        readme.write_text(text[:start] + "\n" + table + text[end:])


if __name__ == "__main__":
    main()
