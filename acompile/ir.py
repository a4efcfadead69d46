"""acompile's own small graph IR.

A :class:`Graph` holds nodes in topological order, typed tensors (shape and
dtype, symbolic dims as strings, unknown dims as ``None``) and constant
tensors (initializers) as numpy arrays. Passes rewrite it in place and call
:meth:`Graph.verify` afterwards. Nothing here recurses, so a 20,000-node chain
is as easy as a 20-node one.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .errors import InvalidModelError

Dim = int | str | None

DOMAIN = "acompile"     # the domain of acompile's own operators
LINEAR = "Linear"       # acompile.Linear: y = x @ W.T + b over the last axis, W of shape [N, K]


class Subgraph:
    """A graph-valued attribute (If/Loop/Scan bodies): not mapped as such. ``graph`` keeps the ONNX
    GraphProto (opaque here) so a pass can inline an If whose condition is constant, and the digital
    units run the node with its bodies through onnxruntime."""
    def __init__(self, graph: Any = None):
        self.graph = graph
        self.runnable: bytes | None = None      # the graph as onnxruntime runs it (onnx_exec), once

    def __repr__(self) -> str:
        return "<subgraph>"


class OpaqueAttribute:
    """An attribute of a type the IR does not look into (a TypeProto, a list of graphs): its ONNX type
    number and the serialised AttributeProto, written back as it came."""
    def __init__(self, kind, proto: bytes = b""):
        self.kind = kind
        self.proto = proto

    def __repr__(self) -> str:
        return f"<attribute type {self.kind}>"


@dataclass
class TensorInfo:
    """Static facts about one named value: element type and shape."""
    name: str
    dtype: np.dtype | None
    shape: tuple[Dim, ...] | None  # None: rank unknown


@dataclass
class Node:
    """One operation. ``kind`` is set by classification: "analog" or "digital"."""
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    opset: int = 0
    kind: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"node {self.name!r} ({self.op_type})"


def is_linear(node: Node) -> bool:
    return node.op_type == LINEAR and node.domain == DOMAIN


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    tensors: dict[str, TensorInfo]
    constants: dict[str, np.ndarray]
    opset: int
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- queries -------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    users.setdefault(i, []).append(n)
        return users

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def shape(self, name: str) -> tuple[Dim, ...] | None:
        info = self.tensors.get(name)
        if name in self.constants:
            return tuple(self.constants[name].shape)
        return info.shape if info else None

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        s = self.shape(name)
        if s is None or not all(isinstance(d, int) for d in s):
            return None
        return tuple(s)

    def batch_axes(self, name: str) -> list[int]:
        """The axes of ``name`` that follow the model's dynamic batch: where its shape at batch + 1
        (``meta["batch_shapes"]``, recorded by the loader and by constant folding) differs."""
        at_next = self.meta.get("batch_shapes", {}).get(name)
        info = self.tensors.get(name)
        if at_next is None or info is None or not info.shape:
            return []
        return [a for a, (x, y) in enumerate(zip(info.shape, at_next)) if x != y]

    def dtype(self, name: str):
        if name in self.constants:
            return self.constants[name].dtype
        info = self.tensors.get(name)
        return info.dtype if info else None

    def unique_name(self, base: str) -> str:
        taken = self.meta.setdefault("_names", set())
        if not taken:
            taken.update(self.tensors, self.constants, (n.name for n in self.nodes))
            taken.update(o for n in self.nodes for o in n.outputs)
        name, i = base, 1
        while name in taken:
            name = f"{base}_{i}"
            i += 1
        taken.add(name)
        return name

    def add_constant(self, base: str, value: np.ndarray) -> str:
        name = self.unique_name(base)
        self.constants[name] = value
        return name

    # ---- structure -----------------------------------------------------
    def toposort(self) -> None:
        """Reorder nodes topologically (stable: ties keep their original order).

        Kahn's algorithm with a heap keyed on the original position, so the order
        is deterministic and unchanged when the graph is already sorted.
        """
        available = set(self.inputs) | set(self.constants) | {""}
        producer_of = {}
        for idx, n in enumerate(self.nodes):
            for o in n.outputs:
                if o:
                    producer_of[o] = idx
        waiting = [0] * len(self.nodes)
        dependants: dict[int, list[int]] = {}
        for idx, n in enumerate(self.nodes):
            deps = {producer_of[i] for i in n.inputs if i not in available and i in producer_of}
            waiting[idx] = len(deps)
            for d in deps:
                dependants.setdefault(d, []).append(idx)
        ready = [i for i, w in enumerate(waiting) if w == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for j in dependants.get(i, ()):
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, j)
        if len(order) != len(self.nodes):
            stuck = next(self.nodes[i] for i, w in enumerate(waiting) if w > 0)
            raise InvalidModelError("the graph has a cycle", where=stuck.describe())
        self.nodes = [self.nodes[i] for i in order]

    def verify(self) -> None:
        """Check the IR invariants every pass must keep.

        Nodes are in topological order, every input is defined before use,
        every value has exactly one producer, and graph outputs exist.
        """
        defined = set(self.inputs) | set(self.constants)
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in defined:
                    raise InvalidModelError(f"input {i!r} is used before it is defined", where=n.describe())
            for o in n.outputs:
                if not o:
                    continue
                if o in defined:
                    raise InvalidModelError(f"value {o!r} has more than one producer", where=n.describe())
                defined.add(o)
        for o in self.outputs:
            if o not in defined:
                raise InvalidModelError(f"graph output {o!r} is never produced")

    def to_networkx(self):
        """A networkx DiGraph: one vertex per node name, edges labelled by tensor."""
        import networkx as nx
        g = nx.DiGraph()
        producer = self.producers()
        for n in self.nodes:
            g.add_node(n.name, op_type=n.op_type, kind=n.kind)
        for n in self.nodes:
            for i in n.inputs:
                p = producer.get(i)
                if p is not None:
                    g.add_edge(p.name, n.name, tensor=i)
        return g

    def remove_nodes(self, doomed: Iterable[Node]) -> None:
        ids = {id(n) for n in doomed}
        self.nodes = [n for n in self.nodes if id(n) not in ids]

    def prune(self) -> None:
        """Drop nodes and constants that no graph output depends on."""
        needed = set(self.outputs)
        keep = []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.outputs):
                keep.append(n)
                needed.update(i for i in n.inputs if i)
        self.nodes = keep[::-1]
        self.constants = {k: v for k, v in self.constants.items() if k in needed}
