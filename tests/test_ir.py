"""The IR: topological order, verification, cycles, long chains, networkx view."""

import numpy as np
import pytest

from acompile.errors import InvalidModelError
from acompile.ir import Graph, Node, TensorInfo


def chain(n: int, shuffled: bool = False) -> Graph:
    nodes = [Node(f"n{i}", "Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
    if shuffled:
        nodes = nodes[::-1]
    return Graph("g", nodes, ["t0"], [f"t{n}"], {"t0": TensorInfo("t0", np.dtype("float32"), (1,))}, {}, 17)


def test_toposort_restores_order_and_is_stable():
    g = chain(5, shuffled=True)
    g.toposort()
    assert [n.name for n in g.nodes] == [f"n{i}" for i in range(5)]
    g.verify()


def test_long_chain_needs_no_recursion():
    g = chain(20_000, shuffled=True)
    g.toposort()
    g.verify()
    assert g.nodes[0].name == "n0" and g.nodes[-1].name == "n19999"
    assert g.to_networkx().number_of_edges() == 19_999


def test_cycle_is_an_invalid_model():
    g = Graph("g", [Node("a", "Relu", ["y"], ["x"]), Node("b", "Relu", ["x"], ["y"])], [], ["y"], {}, {}, 17)
    with pytest.raises(InvalidModelError, match="cycle"):
        g.toposort()


def test_verify_rejects_use_before_definition_and_double_producers():
    g = chain(2)
    g.nodes[1].inputs = ["nowhere"]
    with pytest.raises(InvalidModelError, match="before it is defined"):
        g.verify()
    g = chain(2)
    g.nodes[1].outputs = ["t1"]
    with pytest.raises(InvalidModelError, match="more than one producer"):
        g.verify()


def test_prune_drops_what_no_output_needs():
    g = chain(3)
    g.nodes.append(Node("dead", "Relu", ["t0"], ["unused"]))
    g.constants["c"] = np.zeros(2)
    g.prune()
    assert [n.name for n in g.nodes] == ["n0", "n1", "n2"] and "c" not in g.constants


def test_batch_axes_are_where_the_shape_at_batch_plus_one_differs():
    f32 = np.dtype(np.float32)
    tensors = {"x": TensorInfo("x", f32, (2, 8, 16)), "heads": TensorInfo("heads", f32, (24, 8, 8)),
               "w": TensorInfo("w", f32, (16, 16)), "unknown": TensorInfo("unknown", f32, None)}
    g = Graph(name="g", nodes=[], inputs=["x"], outputs=[], tensors=tensors, constants={}, opset=17)
    assert g.batch_axes("x") == []                        # no dynamic batch recorded
    g.meta["batch_shapes"] = {"x": (3, 8, 16), "heads": (36, 8, 8), "w": (16, 16), "unknown": (3, 4)}
    assert g.batch_axes("x") == [0] and g.batch_axes("heads") == [0]   # batch x 12 heads
    assert g.batch_axes("w") == [] and g.batch_axes("unknown") == [] and g.batch_axes("absent") == []
