"""acompile benchmarks: compile, check and simulate speed and memory, side by side with
onnxruntime and the numpy floor, measured in the same run.

Absolute times on a shared 2-core machine mean little, so every figure is a ratio to a
reference measured in the same run, interleaved with it:

* ``compile`` / ``check``: wall time of a whole ``python -m acompile ...`` process (target
  isaac, every output file written) against a whole process that creates an onnxruntime
  InferenceSession for the same file;
* ``compile_rss``: the compile process's peak RSS, plus the memory its forked writer of the device file's
  cells held of its own (from one ``compile -v`` after the timed runs), against the model file's size
  (models over 50 MB), or against an absolute 150 MB cap (``compile_rss_small``, models up to 50 MB);
* ``device_size``: device.acdev against ``cells x cell_bits / 8``;
* ``sim_ideal``: ``Simulator.run`` in ideal mode, batch 64, against ``InferenceSession.run``
  on the same inputs in the same process (a dynamic-batch copy of the model);
* ``sim_quantized`` / ``sim_lossless``: one 4096x4096 layer, batch 64, 8-bit inputs over
  1-bit DACs, 8-bit weights in 4 slices of 2-bit cells (differential), 128-row crossbars,
  against float32 GEMMs of the same T*S*2 partial products (lossy 8-bit ADC; the fastest of
  three groupings into GEMMs) and against one float32 GEMM of the layer (lossless 9-bit ADC).

Processes are measured through a small intermediate Python that reports the wall time and
``RUSAGE_CHILDREN`` peak RSS of one fresh child. Both sides run with their bytecode cached
(the warm-up run writes it under the temporary folder). Models are built here with seeded
random weights in a temporary folder (nothing is downloaded or committed): a ResNet-50-sized
CNN, a VGG-16-sized one, a 784-4096x4-10 MLP and a transformer encoder block (d=512, 8 heads,
128 tokens); the onnx package's light ResNet-50 (opset 9) with its weights materialised; and the
ResNet-50-sized CNN quantized to int8 QDQ by onnxruntime's own tool (compile and check rows only).

    python benchmarks/run.py                 # everything (about 8 minutes on 2 cores)
    python benchmarks/run.py --quick         # small models, fewer runs: a smoke run
    python benchmarks/run.py --only resnet50 --only sim_quantized --only layer

Prints the table (medians) and writes the same as JSON, with every sample, to
benchmarks/results.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import compile_profile  # noqa: E402 - benchmarks/compile_profile.py, beside this script (sys.path[0])

GOALS = {  # figure -> (goal ratio, what the ratio compares)
    "compile": (1.5, "acompile compile process / onnxruntime session process"),
    "check": (1.0, "acompile check process / onnxruntime session process"),
    "compile_rss": (3.0, "compile peak RSS / model file size (models over 50 MB)"),
    "compile_rss_small": (1.0, "compile peak RSS / 150 MB (models up to 50 MB: an absolute cap)"),
    "device_size": (1.1, "device.acdev / (cells x cell_bits / 8)"),
    "sim_ideal": (2.0, "Simulator.run ideal, batch 64 / InferenceSession.run"),
    "sim_quantized": (1.2, "quantized layer / float32 GEMMs of the T*S*2 partial products"),
    "sim_lossless": (2.5, "quantized layer, lossless ADC / one float32 GEMM of the layer"),
    "sim_model": (3.0, "Simulator.run quantized, lossless ADC (exact shortcut), batch 16 / InferenceSession.run"),
    "sim_noisy": (1.5, "noisy layer, read noise drawn per read / the same layer quantized"),
    "output_size": (2.0, "every file compile writes / model file size"),
}
SMALL_MODEL_BYTES = 50e6     # up to this file size the peak-RSS goal is an absolute cap, not a ratio
SMALL_RSS_CAP_BYTES = 150e6
MODEL_BATCH = 16        # whole-model quantized simulation
# compile/check rows only: old-opset conversion, and a quantized model's integers, are what those rows measure
NO_SIM = ("resnet50_zoo", "resnet50_int8")
TARGET = "isaac"
BATCH = 64
SUB_SECOND_RUNS = 5     # medians of at least 5 runs after a warm-up for sub-second figures


@dataclass
class Row:
    figure: str
    model: str
    acompile: float          # seconds, bytes
    reference: float
    unit: str
    runs: int
    goal: float
    note: str = ""
    samples: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.acompile / self.reference if self.reference else float("inf")

    @property
    def met(self) -> bool:
        return self.ratio <= self.goal

    @property
    def spread(self) -> tuple[float, float] | None:
        """Lowest and highest ratio of one run to the reference run interleaved with it (the first two
        lists of seconds in ``samples``: acompile's, then the reference's), None for single figures."""
        times = [v for k, v in self.samples.items() if k.endswith("_s") and isinstance(v, list)]
        if len(times) < 2 or len(times[0]) != len(times[1]) or not all(times[1]):
            return None
        ratios = [a / b for a, b in zip(times[0], times[1])]
        return min(ratios), max(ratios)

    def ratio_text(self) -> str:
        """The median ratio, with the spread of the single runs' ratios where there are several."""
        lo_hi = self.spread
        return f"{self.ratio:.2f}x" + (f" ({lo_hi[0]:.2f}-{lo_hi[1]:.2f})" if lo_hi else "")


# --------------------------------------------------------------------------- models


def _dynamic_batch(model) -> bool:
    """Give the first input and the output a symbolic batch dimension 'N'; False if it had one."""
    changed = False
    for vi in list(model.graph.input[:1]) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_param = "N"
            changed = True
    return changed


def zoo_resnet50():
    """The onnx package's light ResNet-50 (opset 9, IR 3), its weights materialised (tests/corpus.py)."""
    from tests.corpus import light_model
    return light_model("resnet50")


def int8_resnet50(folder: Path):
    """The ResNet-50 row's model quantized as users quantize theirs, by onnxruntime's own tool: BatchNorm
    folded (quant_pre_process), then static QDQ, int8 weights per output channel and uint8 activations
    calibrated on two seeded samples."""
    import numpy as np
    import onnx
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from tests import models as zoo

    float_path, folded = folder / "resnet50_float_for_int8.onnx", folder / "resnet50_folded.onnx"
    onnx.save(zoo.resnet50_like(check=False), str(float_path))
    quant_pre_process(str(float_path), str(folded), skip_symbolic_shape=True)
    samples = iter([{"input": np.random.default_rng(i).standard_normal((1, 3, 224, 224)).astype(np.float32)}
                    for i in range(2)])

    class Samples(q.CalibrationDataReader):
        def get_next(self):
            return next(samples, None)

    out = folder / "resnet50_int8_quantized.onnx"
    q.quantize_static(str(folded), str(out), Samples(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    float_path.unlink()
    folded.unlink()
    model = onnx.load(str(out))
    out.unlink()
    return model


def build_models(folder: Path, quick: bool, wanted, dynamic: bool) -> dict[str, tuple[Path, Path]]:
    """name -> (the model as built, a dynamic-batch copy for batch-64 simulation)."""
    import onnx
    from tests import models as zoo

    if quick:
        builders = {
            "cnn": lambda: zoo.residual_block(channels=32),
            "mlp": lambda: zoo.mlp((784, 512, 512, 10), check=False),
            "transformer": lambda: zoo.transformer_block(d=64, heads=2, seq=16),
        }
    else:
        builders = {
            "resnet50": lambda: zoo.resnet50_like(check=False),
            "vgg16": lambda: zoo.vgg_like(16, check=False),
            "mlp": lambda: zoo.big_mlp(check=False),
            "transformer": lambda: zoo.transformer_block(d=512, heads=8, seq=128),
            "resnet50_zoo": zoo_resnet50,
            "resnet50_int8": lambda: int8_resnet50(folder),
        }
    paths = {}
    for name, build in builders.items():
        if not wanted(name):
            continue
        t = time.perf_counter()
        model = build()
        path = folder / f"{name}.onnx"
        onnx.save(model, str(path))
        dyn = path
        if dynamic and name not in NO_SIM and _dynamic_batch(model):
            dyn = folder / f"{name}_dynamic.onnx"
            onnx.save(model, str(dyn))
        del model
        print(f"  built {name}: {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s", flush=True)
        paths[name] = (path, dyn)
    return paths


# --------------------------------------------------------------------------- processes


PYCACHE: Path | None = None     # set by main(): bytecode of every measured process, kept between runs


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Measure acompile as an installed package runs: with its bytecode cached (the warm-up run
    # writes it), whatever PYTHONDONTWRITEBYTECODE says here. The reference gets the same.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if PYCACHE is not None:
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


# A small intermediate process runs each measured command and reports its wall time and the
# peak RSS of its children: a child forked from this (large) process would report this
# process's RSS high-water mark as its own until it execs.
_MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
sys.stdout.write(json.dumps({"wall": wall, "rss": rss, "rc": p.returncode,
                             "err": p.stderr.decode(errors="replace")[-2000:]}))
"""


def run_process(argv: list[str], ok=(0,)) -> tuple[float, int]:
    """Wall time (s) and peak RSS (bytes) of one fresh process running argv."""
    p = subprocess.run([sys.executable, "-S", "-c", _MEASURE] + argv, stdout=subprocess.PIPE, env=_env(),
                       cwd=str(ROOT), check=True)
    r = json.loads(p.stdout)
    if r["rc"] not in ok:
        raise RuntimeError(f"{' '.join(argv)} failed ({r['rc']}): {r['err']}")
    return r["wall"], r["rss"]


ORT_SESSION = ("import sys, onnxruntime as ort; "
               "ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])")


def process_pair(a: list[str], b: list[str], runs: int, ok=(0,)):
    """Interleaved runs of two commands after one warm-up each: lists of (wall, rss)."""
    run_process(a, ok), run_process(b)
    ra, rb = [], []
    for _ in range(runs):
        ra.append(run_process(a, ok))
        rb.append(run_process(b))
    return ra, rb


def _load_compiled(folder: Path, mode: str):
    try:
        from acompile.simulation import load_compiled
    except ImportError:  # older layout
        from acompile.simulate import load_compiled
    return load_compiled(folder, mode)


def median(xs):
    return statistics.median(xs)


# --------------------------------------------------------------------------- figures


def bench_compile(name: str, model: Path, out: Path, runs: int, rows: list[Row], wanted) -> None:
    ort = [sys.executable, "-c", ORT_SESSION, str(model)]
    size = model.stat().st_size
    if wanted("compile") or wanted("compile_rss") or wanted("device_size") or wanted("output_size"):
        ac = [sys.executable, "-m", "acompile", "compile", str(model), "--target", TARGET, "-o", str(out), "-q"]
        ra, rb = process_pair(ac, ort, runs)
        note = "" if runs >= SUB_SECOND_RUNS else f"{runs} runs (multi-second whole processes)"
        rows.append(Row("compile", name, median([w for w, _ in ra]), median([w for w, _ in rb]), "s", runs,
                        GOALS["compile"][0], note,
                        {"acompile_s": [w for w, _ in ra], "onnxruntime_s": [w for w, _ in rb],
                         "onnxruntime_rss_bytes": [m for _, m in rb]}))
        # one more compile, accounted for (-v): where its time goes, and the memory its forked writer of the
        # device file's cells held of its own, which the process's peak RSS leaves out
        profile_compile(name, model, out)
        forked = PROFILES[name]["process"].get("forked_writer_private_bytes") or 0
        small = size <= SMALL_MODEL_BYTES
        figure = "compile_rss_small" if small else "compile_rss"
        rows.append(Row(figure, name, max(m for _, m in ra) + forked, SMALL_RSS_CAP_BYTES if small else size, "B",
                        runs, GOALS[figure][0],
                        f"max over runs, with the {forked / 1e6:.0f} MB its forked writer held of its own; the "
                        f"onnxruntime session peaked at {max(m for _, m in rb) / 1e6:.0f} MB, acompile's imports "
                        f"alone take {baseline_rss() / 1e6:.0f} MB",
                        {"acompile_rss_bytes": [m for _, m in ra], "forked_writer_private_bytes": forked}))
        rows.append(device_row(name, out / "device.acdev"))
        rows.append(output_row(name, model, out))
    if wanted("check"):
        ck = [sys.executable, "-m", "acompile", "check", str(model), "--target", TARGET, "-q"]
        ra, rb = process_pair(ck, ort, runs, ok=(0, 1))
        rows.append(Row("check", name, median([w for w, _ in ra]), median([w for w, _ in rb]), "s", runs,
                        GOALS["check"][0], "" if runs >= SUB_SECOND_RUNS else f"{runs} runs",
                        {"acompile_s": [w for w, _ in ra], "onnxruntime_s": [w for w, _ in rb],
                         "acompile_rss_bytes": [m for _, m in ra]}))


PROFILES: dict[str, dict] = {}     # model -> the account of one `compile -v --format json`


def profile_compile(name: str, model: Path, out: Path) -> None:
    """Where one compile's time goes (benchmarks/compile_profile.py), after the timed runs."""
    PROFILES[name] = compile_profile.compile_profile(model, out, TARGET, _env(), ROOT)


_BASELINE: list[int] = []


def baseline_rss() -> int:
    """Peak RSS of a process that only imports what a compile imports (measured once)."""
    if not _BASELINE:
        code = "import acompile.cli, acompile.compiler, acompile.backends.device, onnxruntime"
        _BASELINE.append(run_process([sys.executable, "-c", code])[1])
    return _BASELINE[0]


def device_row(name: str, device: Path) -> Row:
    import io
    import zipfile

    import numpy as np
    with zipfile.ZipFile(device) as z:
        header = json.loads(z.read("header.json"))
        blocks = np.load(io.BytesIO(z.read("blocks.npy")), allow_pickle=False)
    column = {name: i for i, name in enumerate(header["block_columns"])}
    bits = np.array([layer["spec"]["cell_bits"] for layer in header["layers"]], np.int64)
    layer, rows, cols = (blocks[:, column[c]] for c in ("layer", "rows", "cols"))
    floor = int((rows * cols * bits[layer]).sum()) / 8
    return Row("device_size", name, device.stat().st_size, floor, "B", 1, GOALS["device_size"][0],
               f"levels.bin {header['levels_bytes']} B, the layout, header.json and scales the rest")


def output_row(name: str, model: Path, out: Path) -> Row:
    """Every file compile wrote against the model file, with the bytes per weight of each."""
    import onnx
    proto = onnx.load(str(model), load_external_data=False)
    weights = sum(int(_prod(t.dims)) for t in proto.graph.initializer if len(t.dims) >= 2)
    del proto
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    total = sum(sizes.values())
    per = ", ".join(f"{k} {v / weights:.2f}" for k, v in sizes.items() if v / weights >= 0.01)
    return Row("output_size", name, total, model.stat().st_size, "B", 1, GOALS["output_size"][0],
               f"{total / weights:.2f} B per weight ({weights} weights): {per}")


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


# idle time before each timed call of a pair: the thread pools of the call before stop spinning (OpenBLAS's
# workers spin for about 0.1 s after a product, onnxruntime's session pools spin too); back to back, each
# side was timed with the other's spinning threads on its cores (the MLP's ideal run: 41 against 22 ms alone)
SETTLE_S = 0.2


def timed_pair(fa, fb, runs: int) -> tuple[list[float], list[float]]:
    fa(), fb()
    ta, tb = [], []
    for _ in range(runs):
        for f, times in ((fa, ta), (fb, tb)):
            time.sleep(SETTLE_S)
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
    return ta, tb


def _inputs(model: Path, batch: int, seed: int) -> dict:
    import onnx
    from tests.models import random_inputs
    proto = onnx.load(str(model), load_external_data=False)
    for t in proto.graph.initializer:   # only the inputs' description is needed
        t.ClearField("raw_data")
    return random_inputs(proto, batch=batch, seed=seed)


def one_sample(model: Path, folder: Path) -> Path:
    """A one-sample calibration file (.npz keyed by input name) for a model."""
    import numpy as np
    path = folder / f"{model.stem}_calibration.npz"
    np.savez(path, **_inputs(model, 1, 0))
    return path


def bench_sim_ideal(name: str, model: Path, out: Path, batch: int, runs: int, rows: list[Row]) -> None:
    import numpy as np
    import onnxruntime as ort
    from acompile.sim.runtime import Simulator

    feeds = _inputs(model, batch, 1)
    loaded = _load_compiled(out, "ideal")
    sim = Simulator(loaded.graph, loaded.mapping, loaded.weights, mode="ideal")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    last = {}

    def ours():
        last["got"] = sim.run(feeds)

    def theirs():
        last["want"] = sess.run(None, feeds)

    ta, tb = timed_pair(ours, theirs, runs)
    got, want = last["got"], last["want"]
    err = max(float(np.max(np.abs(got[o.name] - w))) for o, w in zip(sess.get_outputs(), want))
    note = f"max |acompile - onnxruntime| {err:.2g}" + ("" if runs >= SUB_SECOND_RUNS else f"; {runs} runs")
    rows.append(Row("sim_ideal", name, median(ta), median(tb), "s", runs, GOALS["sim_ideal"][0], note,
                    {"acompile_s": ta, "onnxruntime_s": tb}))


LAYER_TARGET = """\
schema_version = 1
name = "{name}"
extends = "isaac"
description = "benchmark: 8-bit weights in 4 slices of 2-bit cells (differential), 8-bit inputs over 1-bit DACs"

[precision]
weight_bits = 8
input_bits = 8

[crossbar]
rows = 128
cell_bits = 2
signed_weights = "differential"

[dac]
bits = 1

[adc]
bits = {adc_bits}
range = "worst_case"
"""


def bench_sim_model(name: str, model: Path, folder: Path, batch: int, runs: int, rows: list[Row]) -> None:
    """The whole model in quantized mode with a lossless ADC (the exact integer-GEMM shortcut per layer)
    against onnxruntime's float run on the same batch."""
    import numpy as np
    import onnxruntime as ort
    from acompile.sim.runtime import Simulator

    toml = folder / "bench_adc9.toml"
    toml.write_text(LAYER_TARGET.format(name="bench_adc9", adc_bits=9))
    out = folder / f"out_{name}_quantized"
    run_process([sys.executable, "-m", "acompile", "compile", str(model), "--target", str(toml), "-o", str(out),
                 "-q", "--calibration", str(one_sample(model, folder))])
    loaded = _load_compiled(out, "quantized")
    lossless = all(layer.spec.adc_lossless for layer in loaded.mapping.layers)
    sim = Simulator(loaded.graph, loaded.mapping, loaded.weights, mode="quantized")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = _inputs(model, batch, 1)
    last = {}
    ta, tb = timed_pair(lambda: last.update(got=sim.run(feeds)), lambda: last.update(want=sess.run(None, feeds)),
                        runs)
    rel = max(float(np.linalg.norm(last["got"][o.name] - w) / (np.linalg.norm(w) or 1.0))
              for o, w in zip(sess.get_outputs(), last["want"]))
    rows.append(Row("sim_model", name, median(ta), median(tb), "s", runs, GOALS["sim_model"][0],
                    f"batch {batch}, {len(loaded.mapping.layers)} analog layers, 8-bit weights and inputs, "
                    f"ADC 9 bits (lossless: {lossless}); relative error against float {rel:.2g}",
                    {"acompile_s": ta, "onnxruntime_s": tb}))


NOISY = """
[noise]
read_sigma = 0.01
"""


def bench_noisy_layer(folder: Path, size: int, batch: int, runs: int, rows: list[Row]) -> None:
    """One layer with read noise drawn on every column read against the same layer quantized."""
    import numpy as np
    import onnx
    from acompile.sim.runtime import Simulator
    from acompile.target import load_target
    from tests.models import mlp

    model = folder / f"layer{size}.onnx"
    if not model.exists():
        onnx.save(mlp((size, size), check=False), str(model))
    toml = folder / "bench_noisy.toml"
    toml.write_text(LAYER_TARGET.format(name="bench_noisy", adc_bits=8) + NOISY)
    out = folder / "out_sim_noisy"
    run_process([sys.executable, "-m", "acompile", "compile", str(model), "--target", str(toml), "-o", str(out),
                 "--batch", str(batch), "-q"])
    x = np.random.default_rng(2).standard_normal((batch, size)).astype(np.float32)
    noisy = _load_compiled_noisy(out, load_target(str(toml)))
    quant = _load_compiled(out, "quantized")
    feeds = {quant.graph.inputs[0]: x}
    sim_q = Simulator(quant.graph, quant.mapping, quant.weights, mode="quantized")
    sim_n = Simulator(noisy.graph, noisy.mapping, noisy.weights, mode="noisy", noise=noisy.noise)
    ta, tb = timed_pair(lambda: sim_n.run(feeds), lambda: sim_q.run(feeds), runs)
    rows.append(Row("sim_noisy", f"layer {size}x{size}", median(ta), median(tb), "s", runs,
                    GOALS["sim_noisy"][0], "noise.read_sigma = 0.01 (one draw per column read) and isaac's "
                    "g_min 0.5 uS, 8-bit ADC",
                    {"noisy_s": ta, "quantized_s": tb}))


def _load_compiled_noisy(folder: Path, target):
    from acompile.simulation import load_compiled
    return load_compiled(folder, "noisy", target=target)


def bench_quantized_layer(folder: Path, size: int, batch: int, runs: int, rows: list[Row], wanted) -> None:
    import numpy as np
    import onnx
    from acompile import numerics
    from acompile.sim.runtime import Simulator
    from tests.models import mlp

    model = folder / f"layer{size}.onnx"
    onnx.save(mlp((size, size), check=False), str(model))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, size)).astype(np.float32)
    for figure, adc_bits in (("sim_quantized", 8), ("sim_lossless", 9)):
        if not wanted(figure):
            continue
        tname = f"bench_adc{adc_bits}"
        toml = folder / f"{tname}.toml"
        toml.write_text(LAYER_TARGET.format(name=tname, adc_bits=adc_bits))
        out = folder / f"out_{figure}"
        run_process([sys.executable, "-m", "acompile", "compile", str(model), "--target", str(toml), "-o", str(out),
                     "--batch", str(batch), "-q"])
        loaded = _load_compiled(out, "quantized")
        layer = loaded.mapping.layers[0]
        spec = layer.spec
        sim = Simulator(loaded.graph, loaded.mapping, loaded.weights, mode="quantized")
        feeds = {loaded.graph.inputs[0]: x}
        enc = loaded.weights.encoded(layer, 0).enc
        if figure == "sim_quantized":
            # the floor: float32 GEMMs of every (cycle, sign, slice) partial product over all of K
            x_q = numerics.quantize_inputs(x, layer.input_scale, spec.input_bits, layer.input_signed)
            chunks = numerics.input_chunks(x_q, spec, layer.input_signed, dtype=np.float32)   # (T, V, K)
            t_cycles, per_channel = chunks.shape[0], spec.columns_per_channel
            g = enc.levels[:, :size * per_channel].astype(np.float32)                       # (K, N*signs*S)
            parts = [np.ascontiguousarray(g.reshape(size, size, per_channel)[:, :, i]) for i in range(per_channel)]
            candidates = gemm_floors(chunks.reshape(t_cycles * batch, size), g,
                                     [(chunks[t], m) for t in range(t_cycles) for m in parts])
            label = (f"T={t_cycles} x S={spec.slices} x signs={len(spec.signs)} = {t_cycles * per_channel} products "
                     f"(acompile packs input cycles into shared GEMM rows, so it can run below this floor)")
        else:
            w = np.ascontiguousarray(numerics.decode_weights(enc, spec, size).astype(np.float32).T)
            candidates = gemm_floors(x.copy(), w)
            label = f"one GEMM {batch}x{size}x{size}"
        how, floor, tried = fastest(candidates)
        note = f"{label}, floor as {how}; ADC {spec.adc_bits} bits (lossless: {spec.adc_lossless})"
        ta, tb = timed_pair(lambda: sim.run(feeds), floor, runs)
        rows.append(Row(figure, f"layer {size}x{size}", median(ta), median(tb), "s", runs, GOALS[figure][0], note,
                        {"acompile_s": ta, "floor_s": tb, "floor_candidates_s": tried}))


def fastest(candidates: dict):
    """(name, function, {name: seconds}) of the fastest candidate, each timed once after a warm-up:
    the floor is the best numpy does, whichever way the products are grouped into GEMMs."""
    times = {name: timed(f, 1)[0] for name, f in candidates.items()}
    best = min(times, key=times.get)
    return best, candidates[best], times


def gemm_floors(a, b, per_product=None) -> dict:
    """a @ b both ways round (OpenBLAS threads them differently); per_product: the same products
    as separate GEMMs, [(a_i, b_j), ...]."""
    import numpy as np
    c1 = np.empty((a.shape[0], b.shape[1]), np.float32)
    c2 = np.empty((b.shape[1], a.shape[0]), np.float32)
    out = {"one GEMM": lambda: np.matmul(a, b, out=c1),
           "one GEMM, transposed": lambda: np.matmul(b.T, a.T, out=c2)}
    if per_product:
        c3 = np.empty((per_product[0][0].shape[0], per_product[0][1].shape[1]), np.float32)
        out[f"{len(per_product)} GEMMs"] = lambda: [np.matmul(x, y, out=c3) for x, y in per_product]
    return out


# --------------------------------------------------------------------------- output


def _fmt(value: float, unit: str) -> str:
    if unit == "B":
        return f"{value / 1e6:.1f} MB"
    return f"{value * 1e3:.0f} ms" if value < 1 else f"{value:.2f} s"


def table(rows: list[Row]) -> str:
    head = ("figure", "model", "acompile", "reference", "ratio", "goal", "met", "runs", "note")
    body = [(r.figure, r.model, _fmt(r.acompile, r.unit), _fmt(r.reference, r.unit), r.ratio_text(),
             f"<= {r.goal}x", "yes" if r.met else "NO", str(r.runs), r.note.replace("|", "\\|")) for r in rows]
    align = "|".join("---" if i < 2 or i == 8 else "---:" for i in range(9))
    lines = ["| " + " | ".join(head) + " |", "|" + align + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in body]
    return "\n".join(lines)


FIGURE_NAMES = {
    "compile": ("compile (whole process)", "onnxruntime session (whole process)"),
    "check": ("check (whole process)", "onnxruntime session (whole process)"),
    "compile_rss": ("compile peak RSS (+ forked writer's own)", "model file size"),
    "compile_rss_small": ("compile peak RSS (+ forked writer's own; model under 50 MB)", "absolute cap"),
    "device_size": ("device file size", "cells x cell_bits / 8"),
    "sim_ideal": ("simulate ideal, batch 64", "onnxruntime run, same batch"),
    "sim_quantized": ("simulate quantized, lossy ADC", "float32 GEMMs of the T·S·2 products"),
    "sim_lossless": ("simulate quantized, lossless ADC", "one float32 GEMM"),
    "sim_model": ("simulate quantized model, lossless ADC, batch 16", "onnxruntime float run, same batch"),
    "sim_noisy": ("simulate noisy, read noise per read", "the same layer quantized"),
    "output_size": ("compile output, every file", "model file size"),
}


def readme_table(rows: list[Row]) -> str:
    """The table of README.md's Performance section: figures grouped, notes left out; the ratio is the
    median's, with the lowest and highest ratio of single interleaved runs."""
    order = list(GOALS)
    lines = ["| figure | model | acompile | reference | | ratio (single runs) | goal |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: order.index(r.figure)):
        name, ref = FIGURE_NAMES[r.figure]
        lines.append(f"| {name} | {r.model} | {_fmt(r.acompile, r.unit)} | {ref} | {_fmt(r.reference, r.unit)} | "
                     f"{r.ratio_text()} | ≤ {r.goal}x{'' if r.met else ' **missed**'} |")
    return "\n".join(lines)


def machine() -> dict:
    import numpy as np
    import onnx
    import onnxruntime as ort
    return {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "cpus": os.cpu_count(), "platform": platform.platform()}


# acompile.onnx_core: onnx's protobuf classes and C++ extension, without the onnx package's Python layer
# ("onnx" here), which acompile no longer runs
IMPORTS = ("numpy", "acompile.onnx_core", "onnx", "ml_dtypes", "onnxruntime", "matplotlib", "networkx")


def import_profile(model: Path, folder: Path) -> dict:
    """``python -X importtime`` of one compile and one check process on a model: the cumulative import
    time of the packages that matter (ms, medians of 3 runs; ml_dtypes is part of onnx's Python layer)."""
    commands = {"compile": ["compile", str(model), "--target", TARGET, "-o", str(folder / "out_imports"), "-q"],
                "check": ["check", str(model), "--target", TARGET, "-q"]}
    out = {}
    for what, argv in commands.items():
        samples: dict[str, list[float]] = {k: [] for k in IMPORTS}
        for _ in range(3):
            p = subprocess.run([sys.executable, "-X", "importtime", "-m", "acompile", *argv], env=_env(), cwd=str(ROOT),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            seen = {}
            for line in p.stderr.splitlines():
                parts = line.split("|")
                if len(parts) == 3 and parts[2].strip() in IMPORTS and parts[1].strip().isdigit():
                    seen[parts[2].strip()] = max(seen.get(parts[2].strip(), 0), int(parts[1]) / 1000)
            for k in IMPORTS:
                samples[k].append(seen.get(k, 0.0))
        out[what] = {k: round(median(v), 1) for k, v in samples.items()}
    return out


def imports_markdown(profile: dict) -> str:
    lines = ["| imported by | " + " | ".join(IMPORTS) + " |", "|---|" + "---:|" * len(IMPORTS)]
    for what, ms in profile.items():
        lines.append(f"| {what} | " + " | ".join(f"{ms[k]:.0f} ms" if ms[k] else "not imported" for k in IMPORTS)
                     + " |")
    return "\n".join(lines)


FAILED: list[str] = []


def guarded(what: str, fn, *args) -> None:
    """One figure; a failure is reported (and makes the run fail) without losing the other figures."""
    try:
        fn(*args)
    except Exception as e:     # noqa: BLE001 - any failure of one figure
        FAILED.append(f"{what}: {type(e).__name__}: {str(e)[-400:]}")
        print(f"  FAILED {FAILED[-1]}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small models and fewer runs: a smoke run")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="only this figure (compile, check, compile_rss, device_size, output_size, sim_ideal, "
                         "sim_model, sim_quantized, sim_noisy, sim_lossless) or model (resnet50, vgg16, mlp, "
                         "transformer, resnet50_zoo, resnet50_int8, layer; --quick: cnn, mlp, "
                         "transformer, layer); repeatable")
    ap.add_argument("--runs", type=int, help="timed runs per figure after the warm-up (default: 5; 3 for the "
                                             "multi-second figures of the large models)")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results.json"), help="JSON results file")
    ap.add_argument("--keep", help="keep the models and outputs in this folder")
    args = ap.parse_args(argv)

    figures = set(GOALS)
    only_fig = {o for o in args.only if o in figures}
    only_model = {o for o in args.only if o not in figures and o != "imports"}

    def wanted(name: str) -> bool:
        if name == "imports":
            return not args.only or "imports" in args.only
        if name in figures:
            return not only_fig or name in only_fig
        return not only_model or name in only_model      # models, and "layer" for the one-layer figures

    quick = args.quick
    runs_small = args.runs or (2 if quick else SUB_SECOND_RUNS)
    runs_large = args.runs or (2 if quick else 3)
    start = time.perf_counter()
    rows: list[Row] = []
    imports: dict = {}
    tmp = tempfile.TemporaryDirectory(prefix="acompile-bench-") if not args.keep else None
    folder = Path(args.keep or tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    global PYCACHE
    PYCACHE = folder / "pycache"
    try:
        print(f"models in {folder}", flush=True)
        model_figs = [f for f in ("compile", "check", "compile_rss", "device_size", "output_size", "sim_ideal",
                                  "sim_model") if wanted(f)]
        paths = build_models(folder, quick, wanted, wanted("sim_ideal") or wanted("sim_model")) if model_figs else {}
        for name, (path, dyn) in paths.items():
            large = path.stat().st_size > 50e6
            runs = runs_large if large else runs_small
            out = folder / f"out_{name}"
            if any(wanted(f) for f in ("compile", "check", "compile_rss", "device_size", "output_size")):
                print(f"{name}: compile/check ({runs} runs)", flush=True)
                guarded(f"{name} compile/check", bench_compile, name, path, out, runs, rows, wanted)
            if wanted("sim_ideal") and name not in NO_SIM:
                out_dyn = folder / f"out_{name}_dynamic"
                # ideal mode does not use the calibration: one sample keeps this compile short
                batch = 8 if quick else BATCH
                print(f"{name}: simulate ideal, batch {batch} ({runs} runs)", flush=True)

                def ideal(name=name, dyn=dyn, out_dyn=out_dyn, batch=batch, runs=runs):
                    run_process([sys.executable, "-m", "acompile", "compile", str(dyn), "--target", TARGET,
                                 "-o", str(out_dyn), "-q", "--calibration", str(one_sample(dyn, folder))])
                    bench_sim_ideal(name, dyn, out_dyn, batch, runs, rows)
                guarded(f"{name} sim_ideal", ideal)
            if wanted("sim_model") and name not in NO_SIM and name != "vgg16" and name != "mlp":
                batch = 4 if quick else MODEL_BATCH
                print(f"{name}: simulate quantized whole model, batch {batch} ({runs} runs)", flush=True)
                guarded(f"{name} sim_model", bench_sim_model, name, dyn, folder, batch, runs, rows)
            print(textwrap.indent(table([r for r in rows if r.model == name]), "  "), flush=True)
        if wanted("layer") and (wanted("sim_quantized") or wanted("sim_lossless")):
            size, batch = (1024, 16) if quick else (4096, BATCH)
            print(f"layer {size}x{size}: simulate quantized, batch {batch} ({runs_small} runs)", flush=True)
            guarded("layer sim_quantized", bench_quantized_layer, folder, size, batch, runs_small, rows, wanted)
        if paths and wanted("imports"):
            small = min((p for p, _ in paths.values()), key=lambda p: p.stat().st_size)
            print(f"import profile (python -X importtime, {small.name})", flush=True)
            try:
                imports = import_profile(small, folder)
            except Exception as e:     # noqa: BLE001
                FAILED.append(f"imports: {e}")
        if wanted("layer") and wanted("sim_noisy"):
            size, batch = (1024, 16) if quick else (4096, BATCH)
            print(f"layer {size}x{size}: simulate noisy, batch {batch} ({runs_small} runs)", flush=True)
            guarded("layer sim_noisy", bench_noisy_layer, folder, size, batch, runs_small, rows)
    finally:
        if tmp is not None:
            tmp.cleanup()
    elapsed = time.perf_counter() - start
    text = table(rows)
    print()
    print(text)
    missed = [r for r in rows if not r.met]
    print(f"\n{len(rows) - len(missed)}/{len(rows)} goals met in {elapsed:.0f} s"
          + ("" if not missed else "; missed: " + ", ".join(f"{r.figure} ({r.model})" for r in missed)))
    if quick:
        print("(--quick: small models, 2 runs each; the goals are meant for the full-size models)")
    print(f"\nfor README.md (also in {args.output}):\n{readme_table(rows)}")
    doc = {"command": "python benchmarks/run.py" + (" --quick" if quick else "")
                      + "".join(f" --only {o}" for o in args.only),
           "quick": quick, "elapsed_s": round(elapsed, 1), "machine": machine(), "target": TARGET,
           "goals": {k: {"ratio": v[0], "compares": v[1]} for k, v in GOALS.items()},
           "rows": [dict(asdict(r), ratio=r.ratio, ratio_spread=r.spread, met=r.met) for r in rows],
           "table_markdown": text,
           "readme_markdown": readme_table(rows)}
    if not args.only or "sweep" in args.only:
        import sweep as sweep_bench     # benchmarks/sweep.py: points per second, local pool against Dask
        doc["sweep"] = sweep_bench.main()
    if PROFILES:
        doc["compile_profiles"] = PROFILES
        doc["compile_profile_markdown"] = compile_profile.markdown(PROFILES)
        print(f"\nwhere a compile's time goes (one `compile -v` process per model):\n{doc['compile_profile_markdown']}")
    if imports:
        doc["imports_ms"] = imports
        doc["imports_markdown"] = imports_markdown(imports)
        print(f"\nimport times (python -X importtime, cumulative, medians of 3):\n{doc['imports_markdown']}")
    doc["failed"] = FAILED
    Path(args.output).write_text(json.dumps(doc, indent=2) + "\n")
    if FAILED:
        print("\nfailed figures:\n" + "\n".join(FAILED), file=sys.stderr)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
