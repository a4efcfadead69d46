"""Unroll Loop and Scan nodes whose iteration count is static into the enclosing graph, so the analog
layers of their bodies map onto crossbars shared by every iteration (as the time steps of an unrolled
LSTM share theirs: ``lower.py`` gives every node that reads one weight constant one layer).

A body is canonicalised once (the frontend passes run on it: folding, nested static loops, recurrent
layers, Gemm/MatMul to Linear, affine folding, explicit biases), then copied once per iteration. Every
copy reads the body's constants under one name, so each weight is one constant however many iterations
use it. Loop-carried values are threaded from one copy to the next, Scan inputs sliced per step
(Gather along the scan axis, in the scan direction), scan outputs stacked (Unsqueeze + Concat, in the
output direction), the iteration number is a constant per copy, and body nodes that read only
constants and enclosing-graph values are emitted once, before the copies.

A Loop qualifies when its iteration count is settled before it runs (a constant trip count that
every iteration provably continues to, or a condition that only counts: ``frontend/control_flow.
static_trips``), a Scan when its sequence length is static; both need a body whose values have static
shapes that every iteration shares, and must stay within the unrolling limit
(``Limits.max_unrolled_nodes``, counted over the whole compile). A value the body carries unchanged
from a constant is read as that constant, so a weight TensorFlow carries is one constant too. Any
other stays one digital node with ``meta["unroll_reason"]``, which the cost report prints beside the
layers its body runs digitally.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AcompileError, clean
from ..frontend.control_cost import body_ir, inferred_bodies
from ..frontend.control_flow import iterations, own_inputs, passed_constants, static_trips
from ..frontend.ops import NON_DETERMINISTIC
from ..ir import Graph, Node, TensorInfo
from ..limits import Limits
from .base import CompileState, compile_pass
from .explicit_bias import explicit_bias
from .fold_affine import fold_affine
from .fold_constants import fold_constants
from .gemm_to_linear import gemm_to_linear
from .unroll_recurrent import unroll_recurrent

UNROLLED = ("Loop", "Scan")
SHAPE_READERS = ("Shape", "Size")


@dataclass
class _Budget:
    """Nodes the unrolling of one compile may still copy."""
    limit: int
    used: int = 0


@compile_pass(requires={"folded"}, provides={"control_unrolled"})
def unroll_control(state: CompileState) -> None:
    """Replace every Loop and Scan with a static iteration count by its iterations; the others keep
    ``meta["unroll_reason"]``."""
    _unroll_graph(state, _Budget(state.options.limits.max_unrolled_nodes))


def _unroll_graph(state: CompileState, budget: _Budget) -> None:
    while _unroll_once(state, budget):
        fold_constants.run(state)   # the iteration numbers are constants now: what they decide folds


def _unroll_once(state: CompileState, budget: _Budget) -> bool:
    out, changed = [], False
    for node in state.graph.nodes:
        copies = _unrolled(state, node, budget) if node.op_type in UNROLLED and not node.domain else None
        out.extend(copies if copies is not None else [node])
        changed = changed or copies is not None
    state.graph.nodes = out
    return changed


def _unrolled(state: CompileState, node: Node, budget: _Budget) -> list[Node] | None:
    """The nodes that replace ``node``, or None (with the reason in its meta)."""
    graph = state.graph
    count, reason = _count(graph, node)
    used = budget.used
    body = None
    if reason is None:
        body, reason = _canonical_body(state, node, budget)
        budget.used = used              # nested copies count below, as often as the body is copied
    if reason is None:
        copier = _Copier(graph, node, body)
        need = copier.size(count)
        if budget.used + need > budget.limit:
            reason = (f"unrolling would copy {budget.used + need:,} nodes; the limit is {budget.limit:,} "
                      f"(set {Limits.env_var('max_unrolled_nodes')} to raise it)")
    if reason is not None:
        node.meta["unroll_reason"] = reason
        return None
    budget.used += need
    return copier.run(count)


def _count(graph: Graph, node: Node) -> tuple[int, str | None]:
    """(iterations, None) for a node whose iteration count is static, else (0, why not)."""
    own = own_inputs(node)
    if node.op_type == "Loop":
        count = static_trips(graph, node)
        if count is None and (not own or not own[0]):
            return 0, "it has no trip count and its condition depends on the data"
        if count is None and not graph.is_constant(own[0]):
            return 0, "its trip count is not a constant"
        if count is None:
            return 0, "its condition depends on the data"
    else:
        count, estimated = iterations(graph, node)
        if estimated:
            return 0, "its sequence length is not static"
    return (count, None) if count >= 1 else (0, "it runs no iteration")


def _canonical_body(state: CompileState, node: Node, budget: _Budget) -> tuple[Graph | None, str | None]:
    """The node's body as an IR graph after the frontend passes (once for every iteration), or why not.

    A Loop body loses its condition (a constant true: it holds in every iteration that runs) and keeps the
    iteration number and the loop-carried values as inputs; a Scan body keeps its states and slices.
    """
    graph = state.graph
    bodies = inferred_bodies(graph, node)
    if len(bodies) != 1:
        return None, "it has no body"
    proto = bodies[0]
    if not all(vi.type.HasField("tensor_type") for vi in list(proto.input) + list(proto.output)):
        return None, "a value it carries or stacks is not a tensor (a sequence or an optional)"
    if graph.meta.get("dynamic_batch") and _reads_shapes(proto):
        return None, "the batch is dynamic and its body reads shapes"
    body = body_ir(graph, node, proto)
    _read_passed_as_constants(body, passed_constants(graph, node, proto), graph)
    if node.op_type == "Loop":
        body.constants[body.inputs[1]] = np.array(True)
        body.inputs = [body.inputs[0]] + body.inputs[2:]
        body.outputs = body.outputs[1:]
    sub = CompileState(body, state.target, state.options)
    try:
        fold_constants.run(sub)
        _unroll_graph(sub, budget)
        for p in (unroll_recurrent, gemm_to_linear, fold_affine, explicit_bias):
            p.run(sub)
    except AcompileError as e:
        return None, f"its body cannot be prepared ({e.message})"
    return body, _shape_reason(body, node)


def _read_passed_as_constants(body: Graph, passed: dict[str, str], graph: Graph) -> None:
    """The body's nodes read a value it carries unchanged from a constant as that constant, under a
    new name (the carried slot stays, for the Loop's final output): canonicalisation sees a weight and
    every copy reads the enclosing graph's one constant (``_Copier`` finds it by identity)."""
    for name, source in passed.items():
        alias = body.add_constant(f"{name}/constant", graph.constants[source])
        for n in body.nodes:
            n.inputs = [alias if x == name else x for x in n.inputs]


def _reads_shapes(body) -> bool:
    """Whether a sub-graph (or one nested in it) reads a value's shape."""
    for n in body.node:
        if n.op_type in SHAPE_READERS:
            return True
        if any(_reads_shapes(a.g) for a in n.attribute if a.HasField("g")):
            return True
    return False


def _shape_reason(body: Graph, node: Node) -> str | None:
    """Why the body's values have no shapes that hold in every iteration, or None."""
    values = list(body.inputs) + [o for n in body.nodes for o in n.outputs if o] + list(body.outputs)
    for name in values:
        if body.static_shape(name) is None:
            return f"the shape of {clean(name, 80)!r} in its body is not static"
    carried = len(body.inputs) - (1 if node.op_type == "Loop" else int(node.attrs.get("num_scan_inputs", 0)))
    first = 1 if node.op_type == "Loop" else 0
    for name, out in zip(body.inputs[first:first + carried], body.outputs[:carried]):
        if body.static_shape(name) != body.static_shape(out):
            return (f"the value it carries as {clean(name, 80)!r} changes shape between iterations "
                    f"({list(body.static_shape(name))} -> {list(body.static_shape(out))})")
    return None


class _Copier:
    """Writes a canonical body's iterations into the enclosing graph, in place of ``node``."""

    def __init__(self, graph: Graph, node: Node, body: Graph):
        self.graph, self.node, self.body = graph, node, body
        self.nodes: list[Node] = []
        outer = node.meta.get("outer", [])
        self.outer = dict(zip(outer, node.inputs[len(node.inputs) - len(outer):]))
        proto = getattr(node.attrs.get("body"), "graph", None)
        passed = passed_constants(graph, node, proto) if proto is not None else {}
        self.same = {id(graph.constants[x]): x for x in passed.values()}
        invariant = set(body.constants) | set(self.outer)
        self.hoisted, self.per_step = [], []
        for n in body.nodes:        # reads only what every iteration shares: computed once
            if n.op_type not in NON_DETERMINISTIC and all(not i or i in invariant for i in n.inputs):
                self.hoisted.append(n)
                invariant.update(n.outputs)
            else:
                self.per_step.append(n)
        own = own_inputs(node)
        self.carried = len(own) - (2 if node.op_type == "Loop" else int(node.attrs.get("num_scan_inputs", 0)))
        self.stacked = len(body.outputs) - self.carried

    def size(self, count: int) -> int:
        """Nodes the unrolling writes: the copies, the slices, the stacking and the final outputs."""
        scanned = len(self.body.inputs) - self.carried if self.node.op_type == "Scan" else 0
        return len(self.hoisted) + count * (len(self.per_step) + scanned + self.stacked) + self.stacked + \
            self.carried

    def run(self, count: int) -> list[Node]:
        graph, node, body = self.graph, self.node, self.body
        shared = dict(self.outer)
        for name, value in body.constants.items():     # one constant for every iteration's layer
            source = self.outer.get(name) or self.same.get(id(value))
            shared[name] = source if source is not None and graph.constants.get(source) is value else \
                graph.add_constant(f"{node.name}/{name}", value)
        self.shared = self._copy(self.hoisted, shared, "")
        own = own_inputs(node)
        if node.op_type == "Loop":
            state, stacked = self._loop(count, own[2:])
            axes, reverse = [0] * self.stacked, [0] * self.stacked
        else:
            state, stacked = self._scan(count, own)
            axes = node.attrs.get("scan_output_axes") or [0] * self.stacked
            reverse = node.attrs.get("scan_output_directions") or [0] * self.stacked
        for value, out in zip(state, node.outputs[:self.carried]):
            if out:
                self._node("Identity", [value], [out], "out")
        for values, axis, backwards, out in zip(stacked, axes, reverse, node.outputs[self.carried:]):
            if out:
                self._stack(values[::-1] if backwards else values, int(axis), out)
        return self.nodes

    def _loop(self, count: int, initial: list[str]):
        body = self.body
        number, carried = body.inputs[0], body.inputs[1:]
        counted = any(number in n.inputs for n in self.per_step) or number in body.outputs
        state, stacked = list(initial), [[] for _ in range(self.stacked)]
        for k in range(count):
            bound = dict(zip(carried, state))
            if counted:
                bound[number] = self.graph.add_constant(f"{self.node.name}/i{k}", np.array(k, np.int64))
            values = self._copy(self.per_step, {**self.shared, **bound}, f"{k}/")
            state = [values.get(o, o) for o in body.outputs[:self.carried]]
            for acc, o in zip(stacked, body.outputs[self.carried:]):
                acc.append(values.get(o, o))
        return state, stacked

    def _scan(self, count: int, own: list[str]):
        body, node = self.body, self.node
        m = len(own) - self.carried
        axes = node.attrs.get("scan_input_axes") or [0] * m
        backwards = node.attrs.get("scan_input_directions") or [0] * m
        state, stacked = list(own[:self.carried]), [[] for _ in range(self.stacked)]
        for t in range(count):
            bound = dict(zip(body.inputs[:self.carried], state))
            for x, slot, axis, back in zip(own[self.carried:], body.inputs[self.carried:], axes, backwards):
                index = self.graph.add_constant(f"{node.name}/t{count - 1 - t if back else t}",
                                                np.array(count - 1 - t if back else t, np.int64))
                bound[slot] = self._value(f"{t}/{slot}", body.dtype(slot), body.shape(slot))
                self._node("Gather", [x, index], [bound[slot]], f"{t}/{slot}", {"axis": int(axis)})
            values = self._copy(self.per_step, {**self.shared, **bound}, f"{t}/")
            state = [values.get(o, o) for o in body.outputs[:self.carried]]
            for acc, o in zip(stacked, body.outputs[self.carried:]):
                acc.append(values.get(o, o))
        return state, stacked

    def _copy(self, nodes: list[Node], names: dict[str, str], tag: str) -> dict[str, str]:
        """Copies of ``nodes`` reading ``names`` (body name -> enclosing name); returns the names extended
        by the copies' outputs."""
        names = dict(names)
        for n in nodes:
            outs = [self._value(f"{tag}{o}", self.body.dtype(o), self.body.shape(o)) if o else "" for o in n.outputs]
            names.update(zip(n.outputs, outs))
            self.nodes.append(Node(self.graph.unique_name(f"{self.node.name}/{tag}{n.name}"), n.op_type,
                                   [names.get(i, i) for i in n.inputs], outs, dict(n.attrs), n.domain, n.opset,
                                   meta=dict(n.meta)))
        return names

    def _stack(self, values: list[str], axis: int, out: str) -> None:
        """``out`` = the per-iteration ``values`` stacked along a new ``axis``."""
        axes = self.graph.add_constant(f"{self.node.name}/axis{axis}", np.array([axis], np.int64))
        parts = []
        for k, v in enumerate(values):
            shape = self.graph.static_shape(v)
            if shape is not None:
                at = axis % (len(shape) + 1)
                shape = shape[:at] + (1,) + shape[at:]
            parts.append(self._value(f"{k}/{out}_stacked", self.graph.dtype(v), shape))
            self._node("Unsqueeze", [v, axes], [parts[-1]], f"{k}/{out}_unsqueeze")
        self._node("Concat", parts, [out], f"{out}_concat", {"axis": axis})

    def _value(self, tag: str, dtype, shape) -> str:
        name = self.graph.unique_name(f"{self.node.name}/{tag}")
        self.graph.tensors[name] = TensorInfo(name, dtype, tuple(shape) if shape is not None else None)
        return name

    def _node(self, op: str, inputs: list[str], outputs: list[str], tag: str, attrs=None) -> None:
        self.nodes.append(Node(self.graph.unique_name(f"{self.node.name}/{tag}"), op, inputs, outputs,
                               dict(attrs or {}), opset=self.graph.opset))
