"""Simulation front door: load a compiled OUT folder, run it, compare with onnxruntime."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends.device import DeviceReader
from .backends.program import load_program
from .errors import InvalidDataError, clean
from .sim.analog import NoiseSpec
from .sim.runtime import MODES, Simulator, WeightsFromGraph

NOISE_FIELDS = ("g_min_us", "g_max_us", "programming_sigma", "read_sigma", "stuck_at_zero_rate", "stuck_at_max_rate",
                "adc_offset_lsb", "adc_gain_error", "drift_nu_mean", "drift_nu_std", "drift_t0_s", "drift_time_s",
                "drift_compensation")


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
    return NoiseSpec(**values)


@dataclass
class Loaded:
    graph: object
    mapping: object
    weights: object
    noise: NoiseSpec


def load_compiled(folder: Path, mode: str, target=None) -> Loaded:
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
            from .target import load_target
            target = load_target(graph.meta["target"])
        noise = noise_from_target(target)
    return Loaded(graph, mapping, weights, noise)


def simulate(loaded: Loaded, feeds: dict, mode: str = "ideal", seed: int = 0, path: str = "fast",
             progress: bool = False) -> dict[str, np.ndarray]:
    if mode not in MODES:
        raise InvalidDataError(f"unknown mode {clean(mode)!r}; expected one of {', '.join(MODES)}")
    sim = Simulator(loaded.graph, loaded.mapping, loaded.weights, mode=mode, path=path, noise=loaded.noise,
                    seed=seed, progress=progress)
    return sim.run(feeds)


def reference_outputs(model_path: Path, feeds: dict) -> dict[str, np.ndarray]:
    """onnxruntime's outputs, run in chunks when the model fixes a smaller batch than the data has."""
    import onnxruntime as ort
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4      # its own (coloured, multi-line) log would break the one-line error
        sess = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        fixed = {i.name: i.shape[0] for i in sess.get_inputs() if i.shape and isinstance(i.shape[0], int)}
        total = next(iter(feeds.values())).shape[0] if feeds else 0
        step = min(fixed.values()) if fixed and total else total
        if not step or step >= total:
            return dict(zip(names, sess.run(None, feeds)))
        parts = [sess.run(None, {k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, total, step)]
        return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}
    except Exception as e:
        raise InvalidDataError(f"onnxruntime cannot run the comparison model ({clean(str(e).splitlines()[0] if str(e) else '', 160)})",
                               where=clean(str(model_path)))


def compare(sim: dict, ref: dict, labels: np.ndarray | None = None) -> dict:
    """Per output: max abs error, relative error, SNR (dB), top-1 agreement (and accuracies with labels)."""
    out = {}
    for name, r in ref.items():
        if name not in sim:
            continue
        s = sim[name].astype(np.float64)
        r = np.asarray(r, np.float64)
        if s.shape != r.shape:
            raise InvalidDataError(f"output {clean(name)!r}: simulated shape {list(s.shape)} differs from "
                                   f"onnxruntime's {list(r.shape)}")
        err = s - r
        signal = float(np.sum(r * r))
        noise = float(np.sum(err * err))
        entry = {
            "max_abs_error": float(np.max(np.abs(err))) if err.size else 0.0,
            "relative_error": math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else math.inf),
            "snr_db": 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else (math.inf if noise == 0 else -math.inf),
        }
        if r.ndim >= 2 and r.shape[-1] > 1:
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


def accuracy(sim: dict, labels: np.ndarray) -> dict:
    out = {}
    lab = np.asarray(labels).reshape(-1)
    for name, s in sim.items():
        if s.ndim >= 2 and s.shape[-1] > 1:
            top = np.argmax(s.reshape(-1, s.shape[-1]), axis=1)
            if top.size == lab.size:
                out[name] = {"top1_accuracy_simulated": float(np.mean(top == lab))}
    return out
