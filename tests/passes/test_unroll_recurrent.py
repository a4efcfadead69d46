"""unroll_recurrent: LSTM/GRU/RNN become Linear layers sharing one recurrent weight, plus digital gates."""

import pytest

import models
from acompile.ir import is_linear
from acompile.passes.unroll_recurrent import unroll_recurrent
from frontend_passes import check_pass, frontend

SMALL = dict(hidden=3, inputs=2, seq=3, batch=1)


@pytest.mark.parametrize("op, variant", [("LSTM", {"peepholes": True, "clip": 2.0, "initial_state": True}),
                                         ("GRU", {"direction": "bidirectional"}),
                                         ("GRU", {"linear_before_reset": 1}),
                                         ("RNN", {"direction": "reverse"})])
def test_unrolled_layer_computes_the_same(op, variant):
    state = check_pass(models.recurrent(op, **SMALL, **variant), unroll_recurrent)
    g = state.graph
    assert op not in {n.op_type for n in g.nodes}
    recurrent_weights = {n.inputs[1] for n in g.nodes if is_linear(n) and "/rproj" in n.outputs[0]}
    dirs = 2 if variant.get("direction") == "bidirectional" else 1
    assert len(recurrent_weights) == dirs       # every time step reads the same recurrent weight
    assert state.facts == {"folded", "recurrent_unrolled"}


def test_an_unsupported_activation_leaves_the_node_with_its_reason():
    g = frontend(models.recurrent("LSTM", **SMALL, activations=["HardSigmoid", "Tanh", "Tanh"]),
                 upto=unroll_recurrent)
    (lstm,) = [n for n in g.nodes if n.op_type == "LSTM"]
    assert "HardSigmoid" in lstm.meta["unsupported_reason"]
