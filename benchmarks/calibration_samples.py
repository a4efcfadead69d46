"""How many samples the default calibration needs: each layer's input scale and ADC full scale against
the number of seeded standard-normal samples a dynamic-batch model is calibrated with when no data is
given (``acompile.default_inputs.DEFAULT_SAMPLES``), and what calibrating with them costs.

For each model, target and sample count, the model is compiled with seeds 0..SEEDS-1. Reported: the
calibrate step's median time; the spread of the scales across seeds (the median, over layers, of
max/min - 1: how much a layer's scale depends on which samples were drawn); and how far the scales
sit from those of 64 samples with the same seed (the median over seeds and layers of scale/scale_64 -
1; the draws are nested, the first n of the 64 samples being the n samples, so this is what the
other samples add: a maximum, or a percentile, of fewer values is smaller). isaac takes max |x| and a
worst-case ADC; hermes the 99.99th percentile of |x| and a calibrated ADC (its 99.99th percentile).

    python benchmarks/calibration_samples.py            # about two minutes on 2 cores
    python benchmarks/calibration_samples.py --quick    # the digits sample only, 1 and 8 samples, 2 seeds
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLES = (1, 2, 4, 8, 16, 32)
REFERENCE = 64
SEEDS = 5
TARGETS = ("isaac", "hermes")


def models(folder: Path) -> dict[str, Path]:
    """Dynamic-batch models: the two shipped samples and a transformer block (d = 256, 64 tokens)."""
    import onnx
    from tests import models as zoo
    from run import _dynamic_batch     # benchmarks/run.py, beside this script (sys.path[0])
    block = zoo.transformer_block(d=256, heads=4, seq=64)
    _dynamic_batch(block)
    onnx.save(block, str(folder / "transformer.onnx"))
    return {"digits (64-32-10)": ROOT / "samples" / "digits.onnx", "mlp (784-128-10)": ROOT / "samples" / "mlp.onnx",
            "transformer block": folder / "transformer.onnx"}


def scales(model: Path, target, samples: int, seed: int) -> tuple[list[float], list[float], float]:
    """(input scales, ADC full scales, seconds of the calibrate step) of one compile."""
    import acompile.default_inputs as default_inputs
    from acompile.compiler import Options, compile_model
    default_inputs.DEFAULT_SAMPLES = samples
    compiled = compile_model(str(model), target, Options(seed=seed))
    layers = compiled.mapping.layers
    return ([layer.input_scale for layer in layers], [layer.adc_full_scale for layer in layers],
            compiled.timings_s["calibrate"])


def spread(per_seed: list[list[float]]) -> float:
    """The median, over layers, of max/min - 1 across seeds."""
    return statistics.median(max(v) / min(v) - 1 for v in zip(*per_seed) if min(v) > 0)


def offset(per_seed: list[list[float]], reference: list[list[float]]) -> float:
    """The median, over seeds and layers, of scale / the same seed's scale with REFERENCE samples - 1."""
    return statistics.median(a / b - 1 for s, r in zip(per_seed, reference) for a, b in zip(s, r) if b > 0)


def main(quick: bool = False) -> str:
    from acompile.target import load_target
    samples, seeds = ((1, 8), 2) if quick else (SAMPLES, SEEDS)
    lines = ["| model | target | samples | calibrate | input scales across seeds | ADC full scales across seeds "
             f"| input scales against {REFERENCE} samples |", "|---|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="acompile-calsamples-") as tmp:
        chosen = models(Path(tmp))
        for name, model in (list(chosen.items())[:1] if quick else chosen.items()):
            for target_name in TARGETS:
                target = load_target(target_name)
                reference = [scales(model, target, REFERENCE, seed)[0] for seed in range(seeds)]
                for n in samples:
                    runs = [scales(model, target, n, seed) for seed in range(seeds)]
                    inputs, adcs, seconds = zip(*runs)
                    adc = "worst case" if target.adc.range != "calibrated" else f"{spread(adcs):.1%}"
                    lines.append(f"| {name} | {target_name} | {n} | {statistics.median(seconds) * 1e3:.0f} ms | "
                                 f"{spread(inputs):.1%} | {adc} | {offset(inputs, reference):+.1%} |")
                    print(lines[-1], flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n" + main(quick="--quick" in sys.argv[1:]))
