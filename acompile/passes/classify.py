"""Classification: every node becomes analog (crossbars) or digital, by the op-support
table (``frontend/ops.py``); what cannot be mapped is recorded in ``state.problems``
(every problem, not just the first). Deciding whether to stop is the compiler's job."""

from __future__ import annotations

import dataclasses

from ..frontend.ops import RECURRENT, Problem, support
from ..ir import DOMAIN, Node
from ..onnx_exec import onnxruntime_runs
from .base import CompileState, compile_pass


@compile_pass(requires={"canonical"}, provides={"classified"})
def classify(state: CompileState) -> None:
    """Set ``node.kind`` for every node; append the problems found to ``state.problems``.

    A node that cannot be mapped is marked ``kind = "digital"``, ``meta["unknown"] = True``
    (costed as an unknown digital op under ``--allow-unsupported``).
    """
    graph = state.graph
    for node in graph.nodes:
        sup = support(node)
        if sup is not None and node.domain not in ("", "ai.onnx", DOMAIN) and not _onnxruntime_digital(node):
            sup = None          # costed in the table, but only onnxruntime runs it, and not this version
        problem = None
        if sup is None and _onnxruntime_digital(node):
            node.kind = "digital"
            # not in acompile's op table: its cost is an estimate (one op per output element)
            node.meta["cost_estimated"] = True
            continue
        if sup is None:
            problem = _unsupported(node)
        elif sup.check is not None:
            problem = sup.check(graph, node)
        if sup is not None and problem is None:
            node.kind = sup.kind
            if sup.kind == "digital" and any(graph.static_shape(o) is None for o in node.outputs if o):
                # data-dependent shapes still run on the digital units; only their cost is unknown
                node.meta["cost_unknown"] = True
        if problem is not None:
            if not problem.domain and graph.meta.get("written_opset"):
                # an older model was converted to opset 17: name the opset it was written in
                problem = dataclasses.replace(problem, opset=graph.meta["written_opset"])
            state.problems.append(problem)
            node.kind = "digital"
            node.meta["unknown"] = True
    _non_tensor_inputs(state)


def _non_tensor_inputs(state: CompileState) -> None:
    """A node that reads a model input of sequence, map or optional type is a problem: input data
    (``--input``, ``--calibration``) is a set of named tensors, so such a model cannot be fed."""
    odd = state.graph.meta.get("non_tensor_inputs") or {}
    for node in state.graph.nodes:
        for name in dict.fromkeys(i for i in node.inputs if i in odd):
            state.problems.append(Problem(node.name, node.op_type, node.domain, node.opset, "unsupported_input",
                                          f"reads model input {name!r}, a {odd[name]}: acompile's input data "
                                          f"holds tensors only"))
            node.kind = "digital"
            node.meta["unknown"] = True


def _onnxruntime_digital(node: Node) -> bool:
    """Any operator onnxruntime runs executes on the digital units through it (onnx_exec), control flow
    included (If, Loop, Scan with their sub-graphs); not a recurrent layer that could not be unrolled
    (its matrices belong on crossbars: the reason is worth a refusal)."""
    if node.op_type in RECURRENT and not node.domain:
        return False
    return onnxruntime_runs(node.op_type, node.domain, node.opset)


def _unsupported(node: Node) -> Problem:
    if node.op_type in RECURRENT and not node.domain:
        why = f"recurrent layer cannot be unrolled: {node.meta.get('unsupported_reason', 'unknown reason')}"
    elif node.domain:
        why = f"custom domain {node.domain!r}: neither acompile nor onnxruntime can run it"
    else:
        why = "no analog or digital implementation in acompile, and onnxruntime has no kernel for it"
    return Problem(node.name, node.op_type, node.domain, node.opset, "unsupported_op", why)
