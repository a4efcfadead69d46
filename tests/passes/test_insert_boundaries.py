"""insert_boundaries: every analog node becomes the chain ToVectors ... FromVectors, tagged with its
layer; the program then runs in ideal mode exactly as onnxruntime runs the model."""

from types import SimpleNamespace

import numpy as np
import pytest

import models
from acompile.ir import DOMAIN
from acompile.passes.boundaries import CHAIN, insert_boundaries
from frontend_passes import ort_run
from helpers import simulate
from mapping_passes import after, conv_relu_linear, feeds


@pytest.mark.parametrize("name", ["conv_relu_linear", "conv_transpose", "recurrent"])
def test_the_chain_runs_like_the_model(name):
    model = {"conv_relu_linear": lambda: conv_relu_linear(groups=2), "conv_transpose": models.conv_transpose,
             "recurrent": lambda: models.recurrent("GRU", hidden=4, inputs=3, seq=3)}[name]()
    state = after(model, insert_boundaries)
    for layer in state.mapping.layers:
        chains = {}
        for n in state.graph.nodes:
            if n.meta.get("layer") == layer.index:
                assert n.domain == DOMAIN
                chains.setdefault(n.meta["chain"], []).append(n.op_type)
        assert len(chains) == layer.uses and all(ops == list(CHAIN) for ops in chains.values())
    assert not any(n.kind == "analog" and n.domain != DOMAIN for n in state.graph.nodes)
    x = feeds(state)
    got = simulate(SimpleNamespace(graph=state.graph, mapping=state.mapping), x, mode="ideal")
    for g, want in zip(got, ort_run(model, x)):
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)
