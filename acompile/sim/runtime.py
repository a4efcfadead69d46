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

import math
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
from .vectors import from_vectors, to_vectors, windows

MODES = ("ideal", "quantized", "noisy")
_CHUNK_ELEMS = 1 << 22  # ideal-mode Conv: patch elements per chunk of images (at least one image)


def _unshared_buffer(value, lent: dict):
    """The lent buffer under ``value`` when nothing but the caller's reference can still see it.

    Called as ``Simulator._give_back(env.pop(name))``: any other holder of the array, or any
    other view of its buffer, shows in the reference counts (compared with those of a probe
    made the same way, since they differ between Python versions)."""
    base = value.base if isinstance(value, np.ndarray) else None
    if base is None or lent.get(id(base)) is not base:
        return None
    return base if _refs(value) == _SOLE_REFS else None


def _refs(value) -> tuple[int, int]:
    base = value.base
    return sys.getrefcount(value), sys.getrefcount(base)


def _probe_refs() -> tuple[int, int]:
    class Probe:            # the call shape of Simulator._give_back -> _unshared_buffer -> _refs
        def give_back(self, value):
            return _probe_unshared(value, lent)

    def _probe_unshared(value, lent):
        base = value.base if isinstance(value, np.ndarray) else None
        assert lent.get(id(base)) is base
        return _refs(value)

    buf = np.empty(1, np.float32)
    lent = {id(buf): buf}
    env = {"x": buf[:1].reshape(1)}
    del buf
    return Probe().give_back(env.pop("x"))


_SOLE_REFS = _probe_refs()


class _DeferredConv:
    """The input of an ideal-mode Conv whose chain runs at FromVectors (Simulator._conv_ideal)."""
    __slots__ = ("x",)

    def __init__(self, x: np.ndarray):
        self.x = x


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
    _buffers: dict = field(default_factory=dict, repr=False)
    _pool: list = field(default_factory=list, repr=False)     # output buffers free for reuse
    _lent: dict = field(default_factory=dict, repr=False)     # id -> output buffer in use

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
        try:
            for index, node in enumerate(self.graph.nodes):
                if node.domain == "acompile":
                    layer = layers[node.meta["layer"]] if "layer" in node.meta else None
                    self._analog_step(node, layer, env)
                    if show and node.op_type == "Dequantize":
                        done += 1
                        print(f"\r  {self.mode}: analog layer {done}/{total}", end="", file=sys.stderr, flush=True)
                else:
                    args = [env[i] if i else None for i in node.inputs]
                    outs = run_node(node.op_type, node.attrs, args, len(node.outputs),
                                    node.opset or self.graph.opset, domain=node.domain,
                                    attr_types=node.meta.get("attr_types"), where=node.describe())
                    del args
                    for o, v in zip(node.outputs, outs):
                        if o:
                            env[o] = v
                    del outs
                for name in dead[index]:
                    self._give_back(env.pop(name, None))
        finally:
            self._lent.clear()      # buffers still lent belong to whoever holds them (the outputs)
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
            x = np.asarray(env[node.inputs[0]])
            env["__shape__" + node.meta.get("chain", layer.name)] = x.shape
            geo = self._geometry(layer, x.shape)
            if self._defer(layer, x, geo):
                env[node.outputs[0]] = _DeferredConv(x)
                return
            v = to_vectors(x, layer.op_type, geo, layer.groups)
            if self.capture is not None:
                self.capture(layer, v)
            env[node.outputs[0]] = v
        elif op == "DAC":
            env[node.outputs[0]] = env[node.inputs[0]]       # the vectors travel to the fused kernel
        elif op in ("CrossbarRead", "ADC", "ShiftAdd", "Accumulate"):
            env[node.outputs[0]] = env[node.inputs[0]]
        elif op == "Dequantize":
            v = env[node.inputs[0]]
            env[node.outputs[0]] = v if isinstance(v, _DeferredConv) else self._layer_output(layer, v)
        elif op == "FromVectors":
            shape = env["__shape__" + node.meta.get("chain", layer.name)]
            bias = env[node.inputs[1]]
            v = env[node.inputs[0]]
            geo = self._geometry(layer, shape)
            if isinstance(v, _DeferredConv):
                env[node.outputs[0]] = self._conv_ideal(layer, v.x, bias, geo)
            else:
                env[node.outputs[0]] = from_vectors(v, bias, layer.op_type, geo, layer.groups)
        else:
            raise InvalidDataError(f"unknown program op acompile.{clean(op)}", where=node.describe())

    def _defer(self, layer: AnalogLayer, x: np.ndarray, geo: dict) -> bool:
        """Whether a Conv runs as :meth:`_conv_ideal` (ideal mode, nothing captures its vectors)."""
        return self.mode == "ideal" and self.capture is None and layer.op_type == "Conv" and x.ndim >= 3

    def _conv_ideal(self, layer: AnalogLayer, x: np.ndarray, bias: np.ndarray, geo: dict) -> np.ndarray:
        """Ideal-mode Conv with its bias, computed as NCHW GEMMs, W (N, C·K) @ patches (C·K, pixels).

        The output comes out in its final layout (no vectors to reorder); a 1x1, stride-1,
        unpadded Conv needs no patches at all, and other patches are gathered a few images at
        a time into a buffer reused from chunk to chunk and layer to layer. The same products
        as the vector path (im2col -> GEMM -> from_vectors, which calibration still uses), summed
        by a differently shaped GEMM: equal up to float32 rounding.
        """
        groups, n_out = layer.groups, layer.matrices[0].n_out
        kernel, out_sp = geo["kernel"], tuple(geo["output_shape"][2:])
        batch, channels = x.shape[:2]
        pixels = math.prod(out_sp)
        y = self._take((batch, groups * n_out) + out_sp)
        yv = y.reshape(batch, groups, n_out, pixels)
        weights = [self.weights.float_matrix(layer, g).astype(np.float32, copy=False) for g in range(groups)]
        pointwise = (math.prod(kernel) == 1 and not any(geo["pads"]) and all(s == 1 for s in geo["strides"])
                     and tuple(x.shape[2:]) == out_sp)
        if pointwise:
            xs = x.astype(np.float32, copy=False).reshape(batch, groups, channels // groups, pixels)
            for g in range(groups):
                np.matmul(weights[g], xs[:, g], out=yv[:, g])
        else:
            per_image = channels * math.prod(kernel) * pixels
            step = max(1, min(batch, _CHUNK_ELEMS // per_image))
            buf = self._scratch("patches", step * per_image, np.float32)
            for b0 in range(0, batch, step):
                b1 = min(batch, b0 + step)
                patches = buf[:(b1 - b0) * per_image].reshape((b1 - b0, channels) + tuple(kernel) + out_sp)
                for offs, window in windows(x[b0:b1], geo):
                    patches[(slice(None), slice(None)) + offs] = window
                pv = patches.reshape(b1 - b0, groups, per_image // (groups * pixels), pixels)
                for g in range(groups):
                    np.matmul(weights[g], pv[:, g], out=yv[b0:b1, g])
        b = bias.reshape((1, -1) + (1,) * len(out_sp))
        np.add(y, b, out=y, dtype=np.result_type(y, b), casting="unsafe")
        return y

    def _take(self, shape: tuple) -> np.ndarray:
        """A float32 array for a layer's output, on a buffer that an earlier, dead output gave back
        (fresh memory is slow to fault in; the activations of one run come in a few sizes)."""
        n = math.prod(shape)
        fits = [b for b in self._pool if b.size >= n]
        if fits:
            buf = min(fits, key=lambda b: b.size)
            self._pool.remove(buf)
        else:
            buf = np.empty(n, np.float32)
        self._lent[id(buf)] = buf
        return buf[:n].reshape(shape)

    def _give_back(self, value) -> None:
        """Return the buffer under a dropped output to the pool, if nothing else can still see it."""
        base = _unshared_buffer(value, self._lent)
        if base is not None:
            del self._lent[id(base)]
            self._pool.append(base)

    def _scratch(self, name: str, size: int, dtype) -> np.ndarray:
        """A flat buffer of at least ``size`` elements, kept for the next layer and run."""
        buf = self._buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(size, dtype)
        return buf

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
