"""Simulation front door: load a compiled OUT folder, run it, compare with onnxruntime."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends.device_reader import DeviceReader
from .backends.program_reader import load_program, load_program_target
from .errors import InvalidDataError, clean
from .numerics.noise import NoiseSpec, ktc_sigma
from .sim.runtime import MODES, Simulator, WeightsFromGraph, padded_rows

NOISE_FIELDS = ("g_min_us", "g_max_us", "programming_sigma", "read_sigma", "stuck_at_zero_rate", "stuck_at_max_rate",
                "adc_offset_lsb", "adc_gain_error", "drift_nu_mean", "drift_nu_std", "drift_t0_s", "drift_time_s",
                "drift_compensation", "column_gain_sigma", "adc_offset_sigma_lsb")


def noise_from_target(target) -> NoiseSpec:
    values = {}
    for f in NOISE_FIELDS:
        path = f"crossbar.{f}" if f.startswith("g_") else f"noise.{f}"
        try:
            v = target[path]
        except KeyError:
            continue
        if v is not None:
            values[f] = v
    if values.get("drift_t0_s", 1.0) <= 0:     # "no drift" in a target: keep the kernel's default t0
        values.pop("drift_t0_s")
    xb = target.crossbar
    values["ktc_sigma"] = ktc_sigma(target.noise.temperature_k, xb.rows, xb.unit_capacitance_ff, xb.full_scale_mv)
    values["columns_per_adc"] = target.adc.columns_per_adc
    return NoiseSpec(**values)


@dataclass
class Loaded:
    graph: object
    mapping: object
    weights: object
    noise: NoiseSpec


def load_compiled(folder: Path, mode: str, target=None, overrides: dict | None = None,
                  drift_time_s: float | None = None) -> Loaded:
    """A compiled OUT folder ready to simulate; noisy mode takes its noise from the target (with ``overrides``,
    then ``drift_time_s``: the time since programming at which the chip is read).

    The target is the one the program was compiled for, as OUT's target.toml holds it (its checksum is
    in program.json); ``target`` replaces it only for library callers that pass one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidDataError("not a folder written by acompile compile", where=clean(str(folder)))
    graph, mapping, sha = load_program(folder)
    device_path = folder / "device.acdev"
    device = None
    if mode != "ideal" or device_path.exists():
        if not device_path.exists():
            raise InvalidDataError(f"{mode} mode needs device.acdev, which this folder lacks",
                                   where=clean(str(folder)), hint="compile with --emit including device")
        device = DeviceReader(device_path, mapping, program_sha256=sha)
    weights = WeightsFromGraph(graph, mapping) if mode == "ideal" else device
    noise = NoiseSpec()
    if mode == "noisy":
        if target is None:
            target = load_program_target(folder, graph)
        from .target import apply_overrides
        target = apply_overrides(target, overrides or {})
        if drift_time_s is not None:
            t0 = target.get("noise.drift_t0_s") or 0
            hint = (f"the target {target.name!r} has no drift model: set noise.drift_t0_s and noise.drift_nu_mean "
                    "with --set, or use a target that has one" if not t0 or not target.get("noise.drift_nu_mean")
                    else f"the target {target.name!r} is verified noise.drift_t0_s = {t0} s after programming")
            target = apply_overrides(target, {"noise.drift_time_s": drift_time_s}, "--drift-time", hint)
        noise = noise_from_target(target)
    return Loaded(graph, mapping, weights, noise)


def per_layer(loaded: Loaded, feeds: dict, mode: str, seed: int = 0) -> list[dict]:
    """Each analog layer's own error against the ideal output (``simulate --per-layer``)."""
    from .sim.attribution import layer_errors
    return layer_errors(loaded.graph, loaded.mapping, loaded.weights, feeds,
                        loaded.noise if mode == "noisy" else None, seed)


def non_idealities(noise: NoiseSpec) -> list[str]:
    """What a noise spec turns on, one "field value" each (empty: noisy mode equals quantized)."""
    from dataclasses import fields
    quiet = {"g_max_us", "drift_t0_s", "columns_per_adc"}   # scales, not effects of their own
    if noise.drift_nu_mean == 0 and noise.drift_nu_std == 0:
        quiet |= {"drift_time_s", "drift_compensation"}
    return [f"{f.name} {getattr(noise, f.name):g}" if not isinstance(getattr(noise, f.name), bool) else f.name
            for f in fields(noise) if f.name not in quiet and getattr(noise, f.name) != f.default]


def _error_ratios(signal: float, noise: float) -> dict:
    """Relative error and SNR from the sums of squares, whatever they hold: an output that overflowed
    (infinite noise) or a zero reference."""
    if noise == 0:
        return {"relative_error": 0.0, "snr_db": math.inf}
    ratio = signal / noise if math.isfinite(noise) else 0.0
    with np.errstate(divide="ignore"):      # log10 of 0 and of infinity are the infinities; of NaN, NaN
        snr = float(10 * np.log10(ratio))
    return {"relative_error": math.sqrt(noise / signal) if signal > 0 else math.inf, "snr_db": snr}


def simulate(loaded: Loaded, feeds: dict, mode: str = "ideal", seed: int = 0, path: str = "fast",
             progress: bool = False, instance: int = 0) -> dict[str, np.ndarray]:
    if mode not in MODES:
        raise InvalidDataError(f"unknown mode {clean(mode)!r}; expected one of {', '.join(MODES)}")
    sim = Simulator(loaded.graph, loaded.mapping, loaded.weights, mode=mode, path=path, noise=loaded.noise,
                    seed=seed, instance=instance, progress=progress)
    return sim.run(feeds)


def reference_outputs(model_path: Path, feeds: dict) -> dict[str, np.ndarray]:
    """onnxruntime's outputs, run in chunks when the model fixes a smaller batch than the data has."""
    import onnxruntime as ort
    from .safe_read import open_input
    open_input(model_path, "comparison model", "max_model_bytes")[0].close()  # a FIFO would hang onnxruntime
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4      # its own (coloured, multi-line) log would break the one-line error
        # one thread, as the digital units run (onnx_exec): some integer kernels round differently in parallel
        options.intra_op_num_threads = 1
        # the model as written: the extended level fuses QDQ pairs into integer kernels whose u8s8
        # products saturate on x86 CPUs without VNNI, so the reference would depend on the machine,
        # and even the basic level quantizes a QDQ model's float biases to int32
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        fixed = {i.name: i.shape[0] for i in sess.get_inputs() if i.shape and isinstance(i.shape[0], int)}
        leading = {np.shape(v)[:1] for v in feeds.values()}
        total = leading.pop()[0] if len(leading) == 1 and () not in leading else 0
        step = min(fixed.values()) if fixed and total else total
        # only a batch that every feed shares is cut (a recurrent state [1, 1, h] beside [seq, n] is not)
        if not step or step >= total:
            return dict(zip(names, sess.run(None, feeds)))
        parts = [sess.run(None, {k: padded_rows(v, i, step) for k, v in feeds.items()}) for i in range(0, total, step)]
        short = total % step     # the last part was padded to the model's batch, as the simulator pads it
        if short:
            parts[-1] = [o[:short] if np.shape(o)[:1] == (step,) else o for o in parts[-1]]
        return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}
    except Exception as e:
        raise InvalidDataError(f"onnxruntime cannot run the comparison model ({clean(str(e).splitlines()[0] if str(e) else '', 160)})",
                               where=clean(str(model_path)))


# onnxruntime's integer kernels that multiply uint8 by int8 with VPMADDUBSW on x86 CPUs without VNNI:
# pairs of products saturate at int16 there (onnxruntime's quantization docs)
U8S8_KERNELS = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DynamicQuantizeMatMul",
                "DynamicQuantizeLSTM", "QAttention", "QGemm", "MatMulIntegerToFloat"}


@functools.lru_cache(maxsize=1)
def onnxruntime_saturates() -> bool:
    """Whether this CPU's onnxruntime MatMulInteger saturates 255*127 + 255*127 (exact: 64770)."""
    import onnxruntime as ort
    from .onnx_core import (TensorProto, from_array, make_graph, make_model, make_node, make_opsetid,
                            make_tensor_value_info)
    from .onnx_exec import IR_VERSION
    node = make_node("MatMulInteger", ["x", "w"], ["y"])
    graph = make_graph([node], "probe", [make_tensor_value_info("x", TensorProto.UINT8, [1, 2])],
                       [make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
                       [from_array(np.full((2, 1), 127, np.int8), "w")])
    model = make_model(graph, opset_imports=[make_opsetid("", 13)], ir_version=IR_VERSION)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(sess.run(None, {"x": np.full((1, 2), 255, np.uint8)})[0][0, 0]) != 64770


def model_op_types(model) -> set[str]:
    """Every op type of an ONNX model, its sub-graphs' included."""
    from .onnx_walk import all_nodes
    return {n.op_type for n in all_nodes(model.graph)}


# MatMulNBits' accuracy_level: the type onnxruntime computes in (1 or unset: float32)
REDUCED_ACCURACY = {2: "float16", 3: "bfloat16", 4: "int8 inputs, quantized per block"}


def reference_caveat(model_path: Path) -> str | None:
    """A note for the comparison when onnxruntime's own outputs are not the model's exact arithmetic:
    its u8s8 integer kernels on a CPU where they saturate; MatMulNBits told to compute below float32."""
    from .onnx_walk import all_nodes
    from .frontend.protobuf import read_model_skeleton
    from .limits import Limits
    try:
        model = read_model_skeleton(model_path, Limits.from_env())     # its nodes: the weights are not read
    except Exception:       # reference_outputs says what is wrong with the file
        return None
    notes = []
    found = sorted(model_op_types(model) & U8S8_KERNELS)
    if found and onnxruntime_saturates():
        notes.append(f"onnxruntime's u8s8 integer kernels ({', '.join(found)}) saturate pairs of products on "
                     "this CPU (x86 without VNNI)")
    levels = sorted({a.i for n in all_nodes(model.graph) if n.op_type == "MatMulNBits"
                     for a in n.attribute if a.name == "accuracy_level" and a.i in REDUCED_ACCURACY})
    if levels:
        notes.append(f"onnxruntime's MatMulNBits computes in {' and '.join(REDUCED_ACCURACY[k] for k in levels)} "
                     f"(accuracy_level {', '.join(map(str, levels))})")
    if not notes:
        return None
    return (f"{'; '.join(notes)}: its outputs are not the model's exact arithmetic, so part of the difference "
            "is onnxruntime's")


def compare(sim: dict, ref: dict, labels: np.ndarray | None = None) -> dict:
    """Per output: max abs error, relative error, SNR (dB), top-1 agreement (and accuracies with labels)."""
    out = {}
    for name, r in ref.items():
        if name not in sim:
            continue
        if text_array(r) and text_array(sim[name]) and np.shape(r) == np.shape(sim[name]):
            # string tensors (a label encoder's classes): equal or not, element by element
            out[name] = {"equal_fraction": float(np.mean(np.asarray(sim[name]) == np.asarray(r))) if np.size(r) else 1.0}
            continue
        if not _numeric(r) or not _numeric(sim[name]):
            # sequence/map outputs (ZipMap) run on onnxruntime in both: nothing numeric to compare
            out[name] = {"compared": False, "reason": "a sequence or map, not a tensor"}
            continue
        s = np.asarray(sim[name]).astype(np.float64)
        r = np.asarray(r, np.float64)
        if s.shape != r.shape:
            raise InvalidDataError(f"output {clean(name)!r}: simulated shape {list(s.shape)} differs from "
                                   f"onnxruntime's {list(r.shape)}")
        both = np.isnan(s) & np.isnan(r)       # the model's own NaN (a fully masked attention row), met
        with np.errstate(over="ignore", invalid="ignore"):
            err = np.where(both, 0.0, s - r)
            signal = float(np.sum(np.where(both, 0.0, r) ** 2))
            noise = float(np.sum(err * err))
        entry = {"max_abs_error": float(np.max(np.abs(err))) if err.size else 0.0, **_error_ratios(signal, noise),
                 **({"nan_in_both": int(both.sum())} if both.any() else {})}
        if r.ndim >= 2 and r.shape[-1] > 1 and r.size:     # an empty output (no detections) has no top-1
            top_s = np.argmax(s.reshape(-1, r.shape[-1]), axis=1)
            top_r = np.argmax(r.reshape(-1, r.shape[-1]), axis=1)
            entry["top1_agreement"] = float(np.mean(top_s == top_r))
            if labels is not None:
                lab = np.asarray(labels).reshape(-1)
                if lab.size != top_s.size:
                    raise InvalidDataError(f"--labels has {lab.size} labels for {top_s.size} outputs")
                entry["top1_accuracy_simulated"] = float(np.mean(top_s == lab))
                entry["top1_accuracy_onnxruntime"] = float(np.mean(top_r == lab))
        out[name] = entry
    return out


def text_array(value) -> bool:
    """A tensor of strings: fixed-width text, or an object array holding only str."""
    return isinstance(value, np.ndarray) and (value.dtype.kind == "U" or value.dtype == object
                                              and all(isinstance(v, str) for v in value.reshape(-1)))


def _numeric(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"


def accuracy(sim: dict, labels: np.ndarray) -> dict:
    out = {}
    lab = np.asarray(labels).reshape(-1)
    for name, s in sim.items():
        if s.ndim >= 2 and s.shape[-1] > 1:
            top = np.argmax(s.reshape(-1, s.shape[-1]), axis=1)
            if top.size == lab.size:
                out[name] = {"top1_accuracy_simulated": float(np.mean(top == lab))}
    return out
