"""Run the onnx package's operator conformance cases through compile + simulate (ideal mode).

Used by tests/test_conformance.py and by scripts/conformance_report.py, which writes
docs/conformance.md. For analog operators the weight operands are bound as constants
(the ``--bind`` path), so the crossbar mapping is what is exercised.
"""

from __future__ import annotations

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


@lru_cache(maxsize=1)
def supported_cases():
    """Every node case whose operators are all in acompile's op table."""
    from onnx.backend.test.case.node import collect_testcases
    from acompile.frontend.ops import OPS, RECURRENT
    supported = {op for (domain, op) in OPS if not domain} | RECURRENT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases("")
    return [c for c in cases if c.kind == "node" and c.model.graph.node
            and {n.op_type for n in c.model.graph.node} <= supported]


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
        if ref.dtype.kind in "fc":
            close = np.allclose(value.astype(np.float64), ref.astype(np.float64), rtol=rtol,
                                atol=max(case.atol, 1e-5), equal_nan=True)
        else:
            close = np.array_equal(value, ref)
        if not close:
            return Result(case.name, "mismatch", layers, "outputs differ from the case's expected outputs")
    return Result(case.name, "pass", layers)
