"""A length that makes a convolution impossible (an input shorter than its kernel, an empty axis), which
onnxruntime refuses, is bad input: exit 2 naming the node, in check, compile and run alike. It was said
compatible, costed with negative MACs, and then failed inside the simulator (exit 3)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import cli


def _conv1d(tmp_path, kernel=5, dilation=1, pads=(0, 0), second=None, pool=None):
    """x (1, 2, T) through a Conv1d, and another after it when ``second`` gives its kernel (a MaxPool, with
    ``pool``)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y1" if second or pool else "y"], "conv", kernel_shape=[kernel],
                              dilations=[dilation], pads=list(pads))]
    if pool:
        nodes.append(helper.make_node("MaxPool", ["y1"], ["y"], "pool", kernel_shape=[pool]))
    inits = [numpy_helper.from_array(rng.standard_normal((3, 2, kernel)).astype(np.float32), "w")]
    if second:
        nodes.append(helper.make_node("Conv", ["y1", "w2"], ["y"], "conv2", kernel_shape=[second], strides=[2]))
        inits.append(numpy_helper.from_array(rng.standard_normal((3, 3, second)).astype(np.float32), "w2"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "T"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _refused_by_onnxruntime(path, length):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="Invalid input shape|dimension is negative"):
        sess.run(None, {"x": np.zeros((1, 2, length), np.float32)})


CASES = {   # (model, length, what the message says)
    "shorter than the kernel": ({"kernel": 5}, 3, "'conv' (Conv) has an input shorter than its kernel"),
    "shorter than the dilated kernel": ({"kernel": 3, "dilation": 4}, 6, "the kernel spans 9"),
    "too long a pooling window": ({"kernel": 3, "pool": 9}, 4, "'pool' (MaxPool) would give 'y' a size of -6"),
    "empty axis, padded": ({"kernel": 3, "pads": (1, 1)}, 0, "'conv' (Conv) would convolve an empty axis"),
    "a later layer": ({"kernel": 3, "second": 3}, 4, "'conv2' (Conv) has an input shorter than its kernel"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_length_no_convolution_can_take_is_bad_input_everywhere(case, tmp_path):
    kwargs, length, said = CASES[case]
    path = _conv1d(tmp_path, **kwargs)
    _refused_by_onnxruntime(path, length)
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 2, length), np.float32))
    shape = ("--input-shape", f"x:1,2,{length}")
    for argv in (("check", *shape), ("compile", *shape, "-o", str(tmp_path / "out"), "-q"),
                 ("run", "--input", str(tmp_path / "x.npz"))):
        code, out, err = cli(argv[0], str(path), "-t", "isaac", *argv[1:])
        assert code == 2, (argv, out, err)
        assert said in out + err and "longer input" in out + err
    assert not (tmp_path / "out").exists()


def test_the_shortest_length_a_convolution_takes_maps(tmp_path):
    path = _conv1d(tmp_path, kernel=3, dilation=4)
    np.savez(tmp_path / "x.npz", x=np.ones((1, 2, 9), np.float32))
    assert cli("run", str(path), "-t", "isaac", "--input", str(tmp_path / "x.npz"))[0] == 0
