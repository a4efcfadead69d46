"""Choose each analog layer's converter and cell configuration.

Attaches an :class:`~acompile.sim.analog.AnalogSpec` (weight/input precision,
DAC/ADC bits, cell bits, signed-weight scheme, crossbar rows) to every layer,
decides whether its input is unsigned (produced by a non-negative op such as
Relu, looking through data movement), and computes each matrix's physical
column count: ``n_out · S · 2`` (differential) or ``n_out · S + 1`` (offset,
with its reference column).
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph
from ..sim.analog import AnalogSpec

NON_NEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax", "HardSigmoid", "Abs", "Exp", "Softplus", "Sqrt"}
PASS_THROUGH = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose",
                "Squeeze", "Unsqueeze", "Identity", "Dropout", "Slice", "Gather", "Resize", "Split", "Pad",
                "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "ReduceMax", "ReduceMean", "Concat", "Mul", "Add",
                "Sum", "Max", "Min", "Upsample"}


def spec_for(target) -> AnalogSpec:
    return AnalogSpec(weight_bits=int(target["precision.weight_bits"]),
                      input_bits=int(target["precision.input_bits"]),
                      dac_bits=int(target["dac.bits"]),
                      cell_bits=int(target["crossbar.cell_bits"]),
                      adc_bits=int(target["adc.bits"]),
                      rows=int(target["crossbar.rows"]),
                      signed_weights=str(target["crossbar.signed_weights"]),
                      input_encoding=str(target["dac.input_encoding"]))


def slices(spec: AnalogSpec) -> int:
    magnitude_bits = spec.weight_bits - 1 if spec.signed_weights == "differential" else spec.weight_bits
    return math.ceil(magnitude_bits / spec.cell_bits)


def physical_columns(spec: AnalogSpec, n_out: int) -> int:
    if spec.signed_weights == "differential":
        return n_out * slices(spec) * 2
    return n_out * slices(spec) + 1


def non_negative_values(graph: Graph, nonneg_inputs: set[str] = frozenset()) -> set[str]:
    """Names of the tensors that are provably >= 0 (one forward sweep, no recursion)."""
    known = set(nonneg_inputs)
    for name, value in graph.constants.items():
        if value.dtype.kind in "fiu" and value.size and np.all(value >= 0):
            known.add(name)
    for node in graph.nodes:
        op = node.op_type if not node.domain else ""
        data_in = [i for i in node.inputs if i]
        ok = False
        if op in NON_NEGATIVE_OPS:
            ok = True
        elif op == "Clip":
            lo = node.inputs[1] if len(node.inputs) > 1 else ""
            lo_val = graph.constants.get(lo) if lo else node.attrs.get("min")
            ok = lo_val is not None and float(np.min(lo_val)) >= 0
        elif op in ("Concat", "Mul", "Add", "Sum", "Max", "Min") and data_in:
            ok = all(i in known for i in data_in) or (op == "Max" and any(i in known for i in data_in))
        elif op == "Pad" and data_in:
            mode = node.attrs.get("mode", "constant")
            value = graph.constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
            ok = data_in[0] in known and (mode != "constant" or value is None or float(np.min(value)) >= 0)
        elif op in PASS_THROUGH and data_in:
            ok = data_in[0] in known
        if ok:
            known.update(o for o in node.outputs if o)
    return known


def choose_precision(graph: Graph, target, nonneg_inputs: set[str] = frozenset()) -> Graph:
    """Attach the AnalogSpec, input signedness and physical column counts to every layer."""
    mapping = graph.meta["mapping"]
    spec = spec_for(target)
    nonneg = non_negative_values(graph, nonneg_inputs)
    by_name = {n.name: n for n in graph.nodes}
    for layer in mapping.layers:
        layer.spec = spec
        layer.input_signed = by_name[layer.name].inputs[0] not in nonneg
        for m in layer.matrices:
            m.physical_cols = physical_columns(spec, m.n_out)
    return graph
