"""The default calibration data (acompile/default_inputs.py): token ids drawn over the embedding's rows,
lengths of a padded batch made whole, other integers and booleans the fill."""

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from acompile.default_inputs import DEFAULT_FILLS, default_data, full_lengths, table_rows
from acompile.limits import Limits
from helpers import cli, compiled

VOCAB, WIDTH, HIDDEN, STEPS = 50, 8, 6, 7


def _tagger(ids_type=TensorProto.INT64) -> onnx.ModelProto:
    """ids [1, T] -> Cast -> Unsqueeze/Squeeze -> Gather(embedding) -> GRU(sequence_lens from lengths through
    Cast and a TopK, as torch's pack_padded_sequence exports) -> Mul(a float mask from the integer scale
    input) -> MatMul head."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)
    inits = [weight("emb", VOCAB, WIDTH), weight("W", 1, 3 * HIDDEN, WIDTH), weight("R", 1, 3 * HIDDEN, HIDDEN),
             weight("head", HIDDEN, 4), numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.array([1], np.int64), "k")]
    nodes = [helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
             helper.make_node("Unsqueeze", ["ids32", "axis0"], ["ids4"]),
             helper.make_node("Squeeze", ["ids4", "axis0"], ["ids_back"]),
             helper.make_node("Gather", ["emb", "ids_back"], ["x"]),                       # [1, T, WIDTH]
             helper.make_node("Transpose", ["x"], ["x_seq"], perm=[1, 0, 2]),
             helper.make_node("Cast", ["lengths"], ["len_f"], to=TensorProto.FLOAT),
             helper.make_node("TopK", ["len_f", "k"], ["len_sorted", "order"]),
             helper.make_node("Cast", ["len_sorted"], ["seq_lens"], to=TensorProto.INT32),
             helper.make_node("GRU", ["x_seq", "W", "R", "", "seq_lens"], ["y"], hidden_size=HIDDEN),
             helper.make_node("Squeeze", ["y", "k"], ["h"]),                                # [T, 1, HIDDEN]
             helper.make_node("Cast", ["scale"], ["scale_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["h", "scale_f"], ["hs"]),
             helper.make_node("MatMul", ["hs", "head"], ["out"])]
    graph = helper.make_graph(nodes, "tagger", [helper.make_tensor_value_info("ids", ids_type, [1, STEPS]),
                                                helper.make_tensor_value_info("lengths", TensorProto.INT64, [1]),
                                                helper.make_tensor_value_info("scale", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_token_ids_span_the_table_and_lengths_are_the_whole_sequence():
    graph = compiled(_tagger()).graph
    assert table_rows(graph) == {"ids": VOCAB}
    assert full_lengths(graph) == {"lengths": STEPS}
    data = default_data(graph, 1, seed=0, limits=Limits(), fill=DEFAULT_FILLS[1])
    assert data["ids"].dtype == np.int64 and data["ids"].min() >= 0 and data["ids"].max() < VOCAB
    assert len(np.unique(data["ids"])) > 1
    assert data["lengths"].tolist() == [STEPS]
    assert data["scale"] == DEFAULT_FILLS[1][1]       # an integer the graph says nothing about: the fill
    again = default_data(graph, 1, seed=0, limits=Limits())
    assert np.array_equal(again["ids"], data["ids"])
    assert not np.array_equal(default_data(graph, 1, seed=1, limits=Limits())["ids"], data["ids"])


def test_float_token_ids_cast_to_integers_are_drawn_over_the_table_too():
    """tf2onnx's Keras embeddings read float ids through a Cast (nakdimon): normal draws would index
    rows -2..2, the negative ones from the end."""
    graph = compiled(_tagger(TensorProto.FLOAT)).graph
    ids = default_data(graph, 1, seed=0, limits=Limits())["ids"]
    assert ids.dtype == np.float32 and np.all(ids == np.round(ids)) and ids.min() >= 0 and ids.max() < VOCAB


def test_the_report_names_the_integer_defaults(tmp_path):
    onnx.save(_tagger(), tmp_path / "tagger.onnx")
    code, _, err = cli("compile", str(tmp_path / "tagger.onnx"), "--target", "isaac", "-q", "-o", str(tmp_path / "out"),
                       "--emit", "report")
    assert code == 0, err
    note = json.loads((tmp_path / "out" / "report.json").read_text())["calibration_note"]
    assert f"token ids uniform over the {VOCAB} rows of the table 'ids' indexes" in note
    assert f"the whole sequence ({STEPS}) in the lengths 'lengths'" in note
    assert "standard-normal" not in note          # the model has no float input
