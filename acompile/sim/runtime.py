"""Execute a mapped program: digital ops on the digital units, analog layers
on simulated crossbars.

Modes (docs/analog.md):

* ``ideal``: float weights and activations, no converters -- must reproduce
  onnxruntime on the original model.
* ``quantized``: weights as programmed cell levels, inputs through the DAC,
  every column read through the ADC, exactly as ``acompile.numerics`` defines.
* ``noisy``: quantized plus the target's non-idealities, all seeded.

Each analog layer is its chain of nodes (:mod:`acompile.sim.chain`). With
``path="reference"`` (quantized and noisy modes) every node of a chain runs its own
step on the loop-based reference kernel; otherwise the runtime applies the one
declared fusion, ``chain.fuse_chain``, and runs each complete chain as a single
vectorised step; a Conv chain of ideal mode, or one quantized mode's exact path
computes (a lossless ADC), also takes the Add and Relu after it (``chain.fuse_epilogue``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InvalidDataError, clean
from ..ir import DOMAIN, Graph, Node
from ..mapping import AnalogLayer, Mapping, layer_matrix
from ..numerics.encoding import Encoded, encode_weights
from ..numerics.noise import NoiseSpec, column_errors, program_cells
from ..onnx_exec import run_node
from . import exact
from .chain import STEPS, FusedChain, fuse_chain, fuse_epilogue, run_fused
from .vectors import model_float_type

MODES = ("ideal", "quantized", "noisy")


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


class WeightsFromGraph:
    """Encodes the float weights of the graph on demand (used at compile time, for calibration)."""

    def __init__(self, graph: Graph, mapping: Mapping):
        self.graph, self.mapping = graph, mapping
        self._cache: dict[tuple[int, int], Encoded] = {}
        self._floats: dict[tuple[int, int], np.ndarray] = {}

    def float_matrix(self, layer: AnalogLayer, group: int) -> np.ndarray:
        """One group's float matrix: a weight held as its integers (numerics.folded) is computed once, and
        kept (the same array each call: onnxruntime's packed sessions are keyed on it)."""
        if isinstance(self.graph.constants[layer.weight], np.ndarray):
            return layer_matrix(self.graph.constants, layer, group)
        if (layer.index, group) not in self._floats:
            self._floats[layer.index, group] = layer_matrix(self.graph.constants, layer, group)
        return self._floats[layer.index, group]

    def encoded(self, layer: AnalogLayer, group: int) -> Encoded:
        key = (layer.index, group)
        if key not in self._cache:
            w = self.float_matrix(layer, group)
            s_w = layer.weight_scales(group, w)
            q_w = layer.quantize(w, s_w)
            self._cache[key] = Encoded(encode_weights(q_w, layer.spec), s_w)
        return self._cache[key]


def check_fixed_dims(name: str, value: np.ndarray, dims: list | None) -> None:
    """Refuse data whose rank or fixed sizes past the leading (batch) axis differ from the model's
    ``dims`` (int where fixed, anything else where dynamic), in the words simulate and run share."""
    if dims is None:
        return
    fixed_ok = all(not isinstance(d, int) or d == n for d, n in list(zip(dims, value.shape))[1:])
    if value.ndim != len(dims) or not fixed_ok:
        shown = ["N" if i == 0 else d for i, d in enumerate(dims)]
        raise InvalidDataError(f"input {clean(name)!r} has shape {list(value.shape)}; the model expects {shown}")


def check_feeds(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Names, dtypes and shapes of the inputs, with one clear message for the first mismatch."""
    expected = list(graph.inputs)
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
        info = graph.tensors.get(name)
        want = info.dtype if info is not None else None
        if want is not None and value.dtype != want:
            if value.dtype.kind == "U" and want == object:     # text, as ONNX's string tensors hold it
                value = value.astype(object)
            elif value.dtype.kind not in "biuf" or not np.can_cast(value.dtype, want, "same_kind"):
                raise InvalidDataError(f"input {clean(name)!r} has dtype {value.dtype}; the model expects {want}")
            value = value.astype(want)
        check_fixed_dims(name, value, info.shape if info is not None else None)
        out[name] = value
    return out


def padded_rows(v: np.ndarray, start: int, n: int) -> np.ndarray:
    """Rows start..start+n of v; a short last chunk is padded with zero rows to the program's batch."""
    part = v[start:start + n]
    if part.shape[0] == n:
        return part
    return np.concatenate([part, np.zeros((n - part.shape[0],) + part.shape[1:], part.dtype)])


@dataclass
class Simulator:
    """Runs a program in one mode on one path; programmed cells are drawn once and kept."""
    graph: Graph
    mapping: Mapping
    weights: object                     # WeightsFromGraph or a device-file reader with the same methods
    mode: str = "ideal"
    path: str = "fast"                  # "fast" | "reference"
    noise: NoiseSpec | None = None
    seed: int = 0                       # read noise (simulate --seed)
    instance: int = 0                   # which chip: programming draws follow (compile seed, instance)
    capture: Callable[[AnalogLayer, np.ndarray], None] | None = None
    progress: bool = False
    _cells: dict = field(default_factory=dict)
    _columns: dict = field(default_factory=dict, repr=False)  # (layer, group) -> ColumnErrors or None
    _reads: dict = field(default_factory=dict, repr=False)    # (layer, group) -> reads so far
    _plan: list | None = field(default=None, repr=False)
    _dead: list | None = field(default=None, repr=False)
    _buffers: dict = field(default_factory=dict, repr=False)
    _pool: list = field(default_factory=list, repr=False)     # output buffers free for reuse
    _lent: dict = field(default_factory=dict, repr=False)     # id -> output buffer in use
    _model_types: dict = field(default_factory=dict, repr=False)  # layer -> its float16/bfloat16/float64 type

    # ------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray], batch: int | None = None) -> dict[str, np.ndarray]:
        """Run the program on ``feeds``; the batch is split into chunks of the compiled batch size."""
        if self.mode not in MODES:
            raise InvalidDataError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        feeds = check_feeds(self.graph, feeds)
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
                part[k] = padded_rows(v, start, compiled)
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

    # ------------------------------------------------------------------
    def _steps(self) -> list:
        """The program as the runtime executes it: nodes, or fused chains (see the module docstring)."""
        if self._plan is None:
            fused = self.mode == "ideal" or self.path == "fast"
            self._plan = fuse_chain(self.graph.nodes) if fused else list(self.graph.nodes)
            if fused:       # the Add and Relu after a Conv that conv.ideal or the exact path computes
                convs = {layer.index for layer in self.mapping.layers if layer.op_type == "Conv"
                         and (self.mode == "ideal" or exact.applies(self, layer))}
                self._plan = fuse_epilogue(self._plan, set(self.graph.outputs), convs)
        return self._plan

    def _dead_after(self, steps: list) -> list[list[str]]:
        """For each step, the buffers no later step reads (graph outputs and constants excepted)."""
        if self._dead is None:
            keep = set(self.graph.outputs) | set(self.graph.constants)
            last: dict[str, int] = {}
            for i, step in enumerate(steps):
                for name in step.inputs:
                    if name:
                        last[name] = i
            dead: list[list[str]] = [[] for _ in steps]
            for i, step in enumerate(steps):
                for name in step.outputs:
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
        steps = self._steps()
        show = self.progress and sys.stderr.isatty()
        done, total = 0, sum(1 for n in self.graph.nodes if n.op_type == "Dequantize" and n.domain == DOMAIN)
        dead = self._dead_after(steps)   # activations are dropped after their last use: memory stays at the live set
        try:
            for index, step in enumerate(steps):
                if isinstance(step, FusedChain):
                    layer = self.mapping.layers[step.layer]
                    env[step.outputs[0]] = run_fused(self, layer, *(env[i] for i in step.inputs),
                                                     after=step.epilogue())
                elif step.domain == DOMAIN:
                    self._chain_step(step, env)
                else:
                    outs = self.run_digital(step, [env[i] if i else None for i in step.inputs])
                    for o, v in zip(step.outputs, outs):
                        if o:
                            env[o] = v
                    del outs
                if show and (isinstance(step, FusedChain) or step.op_type == "Dequantize"):
                    done += 1
                    print(f"\r  {self.mode}: analog layer {done}/{total}", end="", file=sys.stderr, flush=True)
                for name in dead[index]:
                    self._give_back(env.pop(name, None))
        finally:
            self._lent.clear()      # buffers still lent belong to whoever holds them (the outputs)
        if show:
            print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
        return {o: np.asarray(env[o]) for o in self.graph.outputs}

    def _chain_step(self, node, env: dict) -> None:
        """One node of an analog chain, on its own (the reference path)."""
        step = STEPS.get(node.op_type)
        if step is None or "layer" not in node.meta:
            raise InvalidDataError(f"unknown program op acompile.{clean(node.op_type)}", where=node.describe())
        layer = self.mapping.layers[node.meta["layer"]]
        args = [env[i] for i in node.inputs]
        if node.op_type == "ToVectors":
            self._model_types[layer.index] = model_float_type(np.asarray(args[0]))
        out = step(self, layer, *args)
        if node.op_type == "FromVectors" and self._model_types.get(layer.index) is not None:
            out = out.astype(self._model_types[layer.index])
        env[node.outputs[0]] = out

    @property
    def compile_seed(self) -> int:
        """The seed the program was compiled with (program.json ``seed``): programming draws, stuck
        cells, column gains and ADC offsets follow it and the chip instance, never ``--seed``."""
        return int(self.graph.meta.get("compile_seed", 0))

    @property
    def noisy(self) -> bool:
        """Whether this run programs cells and reads them with the target's non-idealities."""
        return self.mode == "noisy" and self.noise is not None and not self.noise.is_ideal

    def run_digital(self, node: Node, args: list) -> list:
        """The outputs of a digital node on ``args`` (onnxruntime, :mod:`acompile.onnx_exec`)."""
        return run_node(node.op_type, node.attrs, args, len(node.outputs), node.opset or self.graph.opset,
                        domain=node.domain, attr_types=node.meta.get("attr_types"), where=node.describe(),
                        outer=node.meta.get("outer"), opsets=node.meta.get("opsets"))

    def read_conditions(self, layer: AnalogLayer, group: int, enc) -> tuple:
        """(noise, programmed cells, read-noise generator) of one matrix; all None unless noisy.

        The cells are programmed once per chip (the compile seed, instance) and kept; every call reads them
        anew, so each chunk of a batch and each time step of a shared layer draws its own read
        noise (the generator is seeded by the call's number, so a run reproduces from its seed).
        Cells that hold their levels' conductances (no programming noise, stuck cells or drift) are the
        levels themselves: None, so the executors read the integer levels (the fast path packs input
        cycles into shared GEMM rows) and add g_min's leak, rather than reading a float32 copy.
        """
        if not self.noisy:
            return None, None, None
        key = (layer.index, group)
        if key not in self._cells:
            rng = np.random.default_rng([self.compile_seed, self.instance, layer.index, group, 0])
            self._cells[key] = (None if self.noise.programs_levels
                                else program_cells(enc.levels, layer.spec, self.noise, rng))
        n = self._reads.get(key, 0)
        self._reads[key] = n + 1
        return self.noise, self._cells[key], np.random.default_rng([self.seed, self.instance, layer.index, group,
                                                                    1, n])

    def column_errors(self, layer: AnalogLayer, group: int, enc):
        """The column gains and ADC offsets of one matrix (ColumnErrors), drawn once per chip (compile
        seed, instance) like its cells; None unless noisy."""
        if not self.noisy:
            return None
        key = (layer.index, group)
        if key not in self._columns:
            rng = np.random.default_rng([self.compile_seed, self.instance, layer.index, group, 2])
            self._columns[key] = column_errors(layer.spec, self.noise, enc.levels.shape, rng)
        return self._columns[key]

    def take(self, shape: tuple) -> np.ndarray:
        """A float32 array for a layer's output, on a buffer that an earlier, dead output gave back
        (fresh memory is slow to fault in; the activations of one run come in a few sizes)."""
        n = math.prod(shape)
        fits = [b for b in self._pool if b.size >= n]
        if fits:
            buf = min(fits, key=lambda b: b.size)
            # by identity: list.remove compares arrays element-wise (and fails on other sizes)
            del self._pool[next(i for i, b in enumerate(self._pool) if b is buf)]
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

    def scratch(self, name: str, size: int, dtype) -> np.ndarray:
        """A flat buffer of at least ``size`` elements, kept for the next layer and run."""
        buf = self._buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(size, dtype)
        return buf
