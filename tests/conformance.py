"""Run the onnx package's operator conformance cases through compile + simulate (ideal mode).

Used by tests/test_conformance.py and by scripts/conformance_report.py, which writes
docs/conformance.md. For analog operators the weight operands are bound as constants
(the ``--bind`` path), so the crossbar mapping is what is exercised.

onnx makes its cases by running every operator module's examples at import (seconds of
numpy); :func:`sample_cases` imports only a few modules, for the quick default test run.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import onnx

ANALOG_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN"}
WEIGHT_POSITIONS = {"MatMul": (1,), "LSTM": (1, 2, 3, 4, 7), "GRU": (1, 2, 3, 4), "RNN": (1, 2, 3, 4)}


@dataclass
class Result:
    name: str
    status: str          # pass | mismatch | error
    analog_layers: int
    detail: str = ""


ANALOG_MODULES = ("conv", "convtranspose", "gemm", "matmul", "lstm", "gru", "rnn")
SLOW_MODULES = ("averagepool", "lppool", "maxpool")     # pure-Python references: seconds each to import
_CASES_OF: dict[str, list] = {}     # onnx operator module -> the cases its import registered


def _operator_modules() -> list[str]:
    """onnx's node-case modules in the order its own ``collect_testcases`` imports them."""
    import onnx.backend.test.case.node as node
    from onnx import ONNX_ML
    names = []

    def walk(path: list[str], package: str):
        for finder, name, is_package in pkgutil.iter_modules(path):
            full = f"{package}.{name}"
            if full.startswith(f"{node.__name__}.ai_onnx_ml") and not ONNX_ML:
                continue
            names.append(full)
            if is_package:     # without importing it: that would register its cases unseen
                walk([os.path.join(finder.path, name)], full)
    walk(node.__path__, node.__name__)
    return names


def _cases_of(module: str) -> list:
    """The cases one module registers when imported (onnx appends them to one global list)."""
    if module not in _CASES_OF:
        import onnx.backend.test.case.node as node
        parent = module.rsplit(".", 1)[0]
        if parent != node.__name__:
            _cases_of(parent)      # importing a module imports its package first
        if module in sys.modules:
            raise RuntimeError(f"{module} was imported outside tests/conformance.py: its cases cannot be told apart")
        start = len(node._NodeTestCases)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(module)
        _CASES_OF[module] = node._NodeTestCases[start:]
    return _CASES_OF[module]


def _supported(cases) -> list:
    from acompile.frontend.ops import OPS, RECURRENT
    supported = {op for (domain, op) in OPS if not domain} | RECURRENT
    return [c for c in cases if c.kind == "node" and c.model.graph.node
            and {n.op_type for n in c.model.graph.node} <= supported]


@lru_cache(maxsize=1)
def supported_cases():
    """Every node case whose operators are all in acompile's op table."""
    return _supported([c for m in _operator_modules() for c in _cases_of(m)])


@lru_cache(maxsize=None)
def sample_cases(stride: int = 10):
    """The supported cases of every ``stride``-th operator module and of the analog operators' modules
    (not the few that take seconds to import)."""
    modules = _operator_modules()
    short = {m: m.rsplit(".", 1)[1] for m in modules}
    chosen = ({m for m in modules[::stride] if short[m] not in SLOW_MODULES}
              | {m for m in modules if short[m] in ANALOG_MODULES})
    return _supported([c for m in modules if m in chosen for c in _cases_of(m)])


def is_analog_case(case) -> bool:
    return any(n.op_type in ANALOG_OPS for n in case.model.graph.node)


def _array(a):
    return onnx.numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else a


def run_case(case, target) -> Result:
    from acompile.compiler import Options, compile_model
    from acompile.errors import AcompileError
    from acompile.sim.runtime import Simulator, WeightsFromGraph
    inputs, outputs = case.data_sets[0]
    names = [i.name for i in case.model.graph.input]
    feeds = {n: _array(v) for n, v in zip(names, inputs)}
    if not all(isinstance(v, np.ndarray) for v in feeds.values()):
        return Result(case.name, "error", 0, "sequence or optional inputs are not tensors")
    bind = {}
    for node in case.model.graph.node:
        if node.op_type in ANALOG_OPS:
            for pos in WEIGHT_POSITIONS.get(node.op_type, (1, 2)):
                if len(node.input) > pos and node.input[pos] in feeds:
                    bind[node.input[pos]] = feeds[node.input[pos]]
    data = {k: v for k, v in feeds.items() if k not in bind}
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    try:
        compiled = compile_model(model, target, Options(bind=bind or None, calibration=data))
        sim = Simulator(compiled.graph, compiled.mapping, WeightsFromGraph(compiled.graph, compiled.mapping))
        got = sim.run(data)
    except AcompileError as e:
        return Result(case.name, "error", 0, e.one_line())
    layers = len(compiled.mapping.layers)
    rtol = 1e-4 if all(np.asarray(_array(o)).dtype != np.float16 for o in outputs) else max(case.rtol, 1e-3)
    for name, ref in zip(compiled.graph.outputs, outputs):
        ref = np.asarray(_array(ref))
        value = got[name]
        if value.shape != ref.shape:
            return Result(case.name, "mismatch", layers, f"shape {value.shape} != {ref.shape}")
        if ref.dtype.kind in "fc" or ref.dtype.name.startswith(("bfloat", "float")):     # ml_dtypes' floats too
            close = np.allclose(value.astype(np.float64), ref.astype(np.float64), rtol=rtol,
                                atol=max(case.atol, 1e-5), equal_nan=True)
        else:
            close = np.array_equal(value, ref)
        if not close:
            return Result(case.name, "mismatch", layers, "outputs differ from the case's expected outputs")
    return Result(case.name, "pass", layers)
