"""Execute a mapped program: digital ops on the digital units, analog layers
on simulated crossbars.

Modes (DESIGN §2, §3):

* ``ideal``: float weights and activations, no converters -- must reproduce
  onnxruntime on the original model.
* ``quantized``: weights as programmed cell levels, inputs through the DAC,
  every column read through the ADC, exactly as ``sim.analog`` defines.
* ``noisy``: quantized plus the target's non-idealities, all seeded.

The analog chain of one layer (DAC ... Dequantize) is executed as one fused
kernel when the runtime reaches its DAC node; the buffers between the
converters are notional. ``path="reference"`` uses the slow, loop-based
reference kernel instead of the vectorised one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InvalidDataError, clean
from ..ir import Graph
from ..mapping import AnalogLayer, Mapping
from ..onnx_exec import run_node
from ..passes.lower import layer_matrix
from . import analog
from .vectors import from_vectors, to_vectors

MODES = ("ideal", "quantized", "noisy")
NOTIONAL = object()   # value of a buffer inside a fused analog chain


@dataclass
class Encoded:
    """One matrix as programmed: cell levels, column maps and per-channel weight scales."""
    enc: "analog.EncodedWeights"
    weight_scale: np.ndarray


class WeightsFromGraph:
    """Encodes the float weights of the graph on demand (used at compile time, for calibration)."""

    def __init__(self, graph: Graph, mapping: Mapping):
        self.graph, self.mapping = graph, mapping
        self._cache: dict[tuple[int, int], Encoded] = {}

    def float_matrix(self, layer: AnalogLayer, group: int) -> np.ndarray:
        return layer_matrix(self.graph.constants, layer, group)

    def encoded(self, layer: AnalogLayer, group: int) -> Encoded:
        key = (layer.index, group)
        if key not in self._cache:
            q_w, s_w = analog.quantize_weights(self.float_matrix(layer, group), layer.spec.weight_bits)
            self._cache[key] = Encoded(analog.encode_weights(q_w, layer.spec), s_w)
        return self._cache[key]


@dataclass
class NoiseSettings:
    noise: "analog.NoiseSpec | None" = None
    seed: int = 0


@dataclass
class Simulator:
    graph: Graph
    mapping: Mapping
    weights: object                     # WeightsFromGraph or a device-file reader with the same methods
    mode: str = "ideal"
    path: str = "fast"                  # "fast" | "reference"
    noise: "analog.NoiseSpec | None" = None
    seed: int = 0
    capture: Callable[[AnalogLayer, np.ndarray], None] | None = None
    progress: bool = False
    _cells: dict = field(default_factory=dict)
    _dead: list | None = field(default=None, repr=False)

    # ------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray], batch: int | None = None) -> dict[str, np.ndarray]:
        """Run the program on ``feeds``; the batch is split into chunks of the compiled batch size."""
        if self.mode not in MODES:
            raise InvalidDataError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        feeds = self._check_feeds(feeds)
        compiled = self._compiled_batch()
        leading = {v.shape[0] if v.ndim else None for v in feeds.values()}
        total = leading.pop() if len(leading) == 1 else None
        if compiled is None or total is None or total == compiled:
            self._check_static_batch(feeds)
            return self._run_once(feeds)
        chunks = []
        for start in range(0, total, compiled):
            part = {}
            for k, v in feeds.items():
                piece = v[start:start + compiled]
                if piece.shape[0] < compiled:
                    pad = np.zeros((compiled - piece.shape[0],) + piece.shape[1:], piece.dtype)
                    piece = np.concatenate([piece, pad])
                part[k] = piece
            out = self._run_once(part)
            n = min(compiled, total - start)
            chunks.append({k: v[:n] for k, v in out.items()})
            if self.progress and sys.stderr.isatty():
                print(f"\r  simulated {min(start + compiled, total)}/{total} inputs", end="", file=sys.stderr,
                      flush=True)
        if self.progress and sys.stderr.isatty():
            print(file=sys.stderr)
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    def _check_static_batch(self, feeds: dict[str, np.ndarray]) -> None:
        if self.graph.meta.get("dynamic_batch"):
            return
        for name, value in feeds.items():
            shape = self.graph.shape(name)
            if shape and value.ndim and isinstance(shape[0], int) and shape[0] != value.shape[0]:
                raise InvalidDataError(f"input {clean(name)!r} has {value.shape[0]} rows; the program was compiled "
                                       f"for {shape[0]}", hint="recompile with --batch or give the same batch")

    def _compiled_batch(self) -> int | None:
        """The batch the program was compiled for, if every input has the same static leading dim.

        None for a model whose batch is dynamic: such a program runs at any batch size.
        """
        if self.graph.meta.get("dynamic_batch"):
            return None
        batches = set()
        for name in self.graph.inputs:
            shape = self.graph.shape(name)
            if not shape or not isinstance(shape[0], int):
                return None
            batches.add(shape[0])
        return batches.pop() if len(batches) == 1 else None

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Names, dtypes and shapes of the inputs, with one clear message for the first mismatch."""
        expected = list(self.graph.inputs)
        missing = [n for n in expected if n not in feeds]
        extra = [n for n in feeds if n not in expected]
        if missing or extra:
            parts = ([f"missing {', '.join(clean(m) for m in missing)}"] if missing else []) + \
                    ([f"unexpected {', '.join(clean(e) for e in extra)}"] if extra else [])
            raise InvalidDataError("input names do not match the model: " + "; ".join(parts),
                                   hint=f"the model's inputs are: {', '.join(clean(e) for e in expected)}")
        out = {}
        for name in expected:
            value = feeds[name]
            if not isinstance(value, np.ndarray):
                raise InvalidDataError(f"input {clean(name)!r} is not an array")
            info = self.graph.tensors.get(name)
            want = info.dtype if info is not None else None
            if want is not None and value.dtype != want:
                if value.dtype.kind not in "biuf" or not np.can_cast(value.dtype, want, "same_kind"):
                    raise InvalidDataError(f"input {clean(name)!r} has dtype {value.dtype}; the model expects {want}")
                value = value.astype(want)
            shape = info.shape if info is not None else None
            if shape is not None:
                fixed_ok = all(not isinstance(d, int) or d == s for d, s in list(zip(shape, value.shape))[1:])
                if value.ndim != len(shape) or not fixed_ok:
                    shown = ["N" if i == 0 else d for i, d in enumerate(shape)]
                    raise InvalidDataError(f"input {clean(name)!r} has shape {list(value.shape)}; the model "
                                           f"expects {shown}")
            out[name] = value
        return out

    # ------------------------------------------------------------------
    def _dead_after(self) -> list[list[str]]:
        """For each node, the buffers no later node reads (graph outputs and constants excepted)."""
        if self._dead is None:
            keep = set(self.graph.outputs) | set(self.graph.constants)
            last: dict[str, int] = {}
            for i, node in enumerate(self.graph.nodes):
                for name in node.inputs:
                    if name:
                        last[name] = i
            dead: list[list[str]] = [[] for _ in self.graph.nodes]
            for i, node in enumerate(self.graph.nodes):
                for name in node.outputs:
                    if name and name not in last and name not in keep:
                        dead[i].append(name)
            for name, i in last.items():
                if name not in keep:
                    dead[i].append(name)
            self._dead = dead
        return self._dead

    def _run_once(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, object] = dict(self.graph.constants)
        env.update(feeds)
        layers = self.mapping.layers
        show = self.progress and sys.stderr.isatty()
        done, total = 0, sum(1 for n in self.graph.nodes if n.op_type == "Dequantize" and n.domain == "acompile")
        dead = self._dead_after()      # activations are dropped after their last use: memory stays at the live set
        for index, node in enumerate(self.graph.nodes):
            if node.domain == "acompile":
                layer = layers[node.meta["layer"]] if "layer" in node.meta else None
                self._analog_step(node, layer, env)
                if show and node.op_type == "Dequantize":
                    done += 1
                    print(f"\r  {self.mode}: analog layer {done}/{total}", end="", file=sys.stderr, flush=True)
            else:
                args = [env[i] if i else None for i in node.inputs]
                outs = run_node(node.op_type, node.attrs, args, len(node.outputs), node.opset or self.graph.opset,
                                domain=node.domain, attr_types=node.meta.get("attr_types"), where=node.describe())
                del args
                for o, v in zip(node.outputs, outs):
                    if o:
                        env[o] = v
                del outs
            for name in dead[index]:
                env.pop(name, None)
        if show:
            print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
        return {o: np.asarray(env[o]) for o in self.graph.outputs}

    def _geometry(self, layer: AnalogLayer, x_shape) -> dict:
        geo = dict(layer.geometry)
        if layer.op_type == "Linear":
            geo["input_shape"] = list(x_shape)
        else:
            geo["input_shape"] = [x_shape[0]] + list(geo["input_shape"][1:])
            geo["output_shape"] = [x_shape[0]] + list(geo["output_shape"][1:])
        return geo

    def _analog_step(self, node, layer: AnalogLayer, env: dict) -> None:
        op = node.op_type
        if op == "ToVectors":
            x = env[node.inputs[0]]
            env["__shape__" + node.meta.get("chain", layer.name)] = x.shape
            v = to_vectors(np.asarray(x), layer.op_type, self._geometry(layer, x.shape), layer.groups)
            if self.capture is not None:
                self.capture(layer, v)
            env[node.outputs[0]] = v
        elif op == "DAC":
            env[node.outputs[0]] = env[node.inputs[0]]       # the vectors travel to the fused kernel
        elif op in ("CrossbarRead", "ADC", "ShiftAdd", "Accumulate"):
            env[node.outputs[0]] = env[node.inputs[0]]
        elif op == "Dequantize":
            env[node.outputs[0]] = self._layer_output(layer, env[node.inputs[0]])
        elif op == "FromVectors":
            shape = env["__shape__" + node.meta.get("chain", layer.name)]
            bias = env[node.inputs[1]]
            env[node.outputs[0]] = from_vectors(env[node.inputs[0]], bias, layer.op_type,
                                                self._geometry(layer, shape), layer.groups)
        else:
            raise InvalidDataError(f"unknown program op acompile.{clean(op)}", where=node.describe())

    def _layer_output(self, layer: AnalogLayer, v: np.ndarray) -> np.ndarray:
        """[V, G, K] vectors -> [V, G, N] outputs of one analog layer (before bias)."""
        out = np.empty((v.shape[0], layer.groups, layer.matrices[0].n_out), np.float32)
        for g in range(layer.groups):
            x = v[:, g, :]
            if self.mode == "ideal":
                w = self.weights.float_matrix(layer, g)
                xf, wt = x.astype(np.float32, copy=False), w.T.astype(np.float32, copy=False)
                if layer.groups == 1:       # straight into the output (a contiguous view): no temporary
                    np.matmul(xf, wt, out=out[:, 0, :])
                else:
                    out[:, g, :] = xf @ wt
                continue
            if not np.isfinite(x).all():
                raise InvalidDataError(f"a NaN or infinite value reaches analog layer {clean(layer.name)!r}; "
                                       "the DAC cannot convert it", hint="check the inputs, or use --mode ideal")
            encoded = self.weights.encoded(layer, g)
            spec = layer.spec
            x_q = analog.quantize_inputs(x, layer.input_scale, spec.input_bits, layer.input_signed)
            kwargs = dict(full_scale=layer.adc_full_scale or None)
            if self.mode == "noisy" and self.noise is not None and not self.noise.is_ideal:
                kwargs["cells"] = self._programmed(layer, g, encoded)
                kwargs["noise"] = self.noise
                kwargs["rng"] = np.random.default_rng([self.seed, layer.index, g, 1])
            kernel = analog.mvm if self.path == "fast" else analog.mvm_reference
            y_int = kernel(x_q, encoded.enc, spec, layer.input_signed, **kwargs)
            out[:, g, :] = (y_int * (encoded.weight_scale[None, :] * layer.input_scale)).astype(np.float32)
        return out

    def _programmed(self, layer: AnalogLayer, group: int, encoded: Encoded) -> np.ndarray:
        key = (layer.index, group)
        if key not in self._cells:
            rng = np.random.default_rng([self.seed, layer.index, group, 0])
            self._cells[key] = analog.program_cells(encoded.enc.levels, layer.spec, self.noise, rng)
        return self._cells[key]
