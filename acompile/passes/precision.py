"""Choose each analog layer's converter and cell configuration.

Attaches an :class:`~acompile.numerics.spec.AnalogSpec` (weight/input precision,
DAC/ADC bits, cell bits, signed-weight scheme, crossbar rows) to every layer,
decides whether its input is unsigned (proved by the graph: produced by a
non-negative op such as Relu, looking through ops that keep the sign), and
computes each matrix's physical column count: ``n_out · S · 2`` (differential)
or ``n_out · S + 1`` (offset, with its reference column). Model inputs are
signed unless ``options.input_ranges`` (``--input-range``) bounds them at 0 or
above; calibration values never decide signedness.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..ir import Graph
from ..numerics.spec import AnalogSpec
from .base import CompileState, compile_pass

NON_NEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax", "HardSigmoid", "Abs", "Exp", "Softplus", "Sqrt"}
PASS_THROUGH = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose",
                "Squeeze", "Unsqueeze", "Identity", "Dropout", "Slice", "Gather", "Split", "Pad",
                "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "ReduceMax", "ReduceMean", "Concat", "Mul", "Add",
                "Sum", "Max", "Min", "Upsample"}


def spec_for(target) -> AnalogSpec:
    return AnalogSpec(weight_bits=target.precision.weight_bits, input_bits=target.precision.input_bits,
                      dac_bits=target.dac.bits, cell_bits=target.crossbar.cell_bits, adc_bits=target.adc.bits,
                      rows=target.crossbar.rows, signed_weights=target.crossbar.signed_weights,
                      input_encoding=target.dac.input_encoding,
                      offset_subtraction=target.crossbar.offset_subtraction)


def non_negative_values(graph: Graph, nonneg_inputs: set[str] = frozenset()) -> set[str]:
    """Names of the tensors that are provably >= 0 (one forward sweep, no recursion)."""
    known = set(nonneg_inputs)
    for name, value in graph.constants.items():
        # the same as np.all(value >= 0) (NaN is neither), without a weight-sized temporary; most weights
        # show a negative first element
        if value.dtype.kind in "fiu" and value.size and value.flat[0] >= 0 and value.min() >= 0:
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
        elif op in ("Resize", "Upsample") and data_in:
            # nearest and linear interpolation are convex combinations; cubic overshoots below 0
            ok = data_in[0] in known and node.attrs.get("mode", "nearest") != "cubic"
        elif op == "QuantizeLinear" and data_in:
            # q >= 0: an unsigned type with zero point 0 (or none), or x >= 0 with zero point 0
            ok = _positive(graph, node.inputs[1]) and (_zero_point_is_min(graph, node)
                                                       or (data_in[0] in known and _zero_point_zero(graph, node)))
        elif op == "DequantizeLinear" and data_in:
            # (q - 0) * s >= 0 for q >= 0
            info = graph.tensors.get(data_in[0])
            q_unsigned = info is not None and info.dtype is not None and np.dtype(info.dtype).kind == "u"
            ok = _positive(graph, node.inputs[1]) and _zero_point_zero(graph, node) and \
                (data_in[0] in known or q_unsigned)
        elif op == "Pad" and data_in:
            mode = node.attrs.get("mode", "constant")
            value = graph.constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
            ok = data_in[0] in known and (mode != "constant" or value is None or float(np.min(value)) >= 0)
        elif op in PASS_THROUGH and data_in:
            ok = data_in[0] in known
        if ok:
            known.update(o for o in node.outputs if o)
    return known


def _constant(graph: Graph, name: str):
    return graph.constants.get(name) if name else None


def _positive(graph: Graph, name: str) -> bool:
    value = _constant(graph, name)
    return value is not None and value.size > 0 and bool(np.all(value > 0))


def _zero_point_is_min(graph: Graph, node) -> bool:
    """The zero point is the lowest value of its unsigned type (absent: 0), so q >= zp for every q."""
    zp = _constant(graph, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if zp is None:
        return len(node.inputs) < 3 or not node.inputs[2]
    return zp.dtype.kind == "u" and bool(np.all(zp == 0))


def _zero_point_zero(graph: Graph, node) -> bool:
    """The node's zero point is 0 everywhere (or absent)."""
    if len(node.inputs) < 3 or not node.inputs[2]:
        return True
    zp = _constant(graph, node.inputs[2])
    return zp is not None and bool(np.all(zp == 0))


def input_nonneg(graph: Graph, ranges: dict) -> set[str]:
    """Model inputs declared non-negative by ``--input-range NAME:LO,HI`` with LO >= 0."""
    unknown = sorted(set(ranges) - set(graph.inputs))
    if unknown:
        raise UsageError(f"--input-range names {unknown[0]!r}, which is not a model input "
                         f"(inputs: {', '.join(graph.inputs)})")
    return {name for name, (lo, _hi) in ranges.items() if lo >= 0}


@compile_pass(requires={"mapping"}, provides={"precision"})
def choose_precision(state: CompileState) -> None:
    """Attach the AnalogSpec, input signedness and physical column counts to every layer."""
    graph = state.graph
    spec = spec_for(state.target)
    nonneg = non_negative_values(graph, input_nonneg(graph, state.options.input_ranges))
    signed: set[int] = set()     # a layer read by several nodes (a recurrent step's weights) is signed if any input is
    for node in graph.nodes:
        if "layer" in node.meta and node.inputs[0] not in nonneg:
            signed.add(node.meta["layer"])
    for layer in state.mapping.layers:
        layer.spec = spec
        layer.input_signed = layer.index in signed
        for m in layer.matrices:
            m.physical_cols = spec.physical_columns(m.n_out)
