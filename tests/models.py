"""Small ONNX model builders for tests and benchmarks.

Every builder returns a checked ``onnx.ModelProto`` (opset 17 and ir_version 8 unless
the builder says otherwise) with seeded random float32 weights; nothing is downloaded.
Graph inputs are named ``input`` (plus ``input2``... where a model has more) and
the graph output ``output``.  Conv weights are He-scaled so activations stay O(1).

``ALL_SMALL`` maps a name to every small builder (no arguments needed), for
parametrised tests; ``ALL_LARGE`` holds ``resnet50_like``, ``vgg_like`` and ``big_mlp``
(pass ``check=False`` to skip the checker, about half of their build time).
``random_inputs(model)`` makes a seeded feed dict for onnxruntime.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # onnxruntime 1.32 reads ir_version <= 10; 8 is the first that allows opset 17
FLOAT = TensorProto.FLOAT


# --------------------------------------------------------------------------- plumbing


class _Builder:
    """Accumulates nodes and initializers; hands out unique, readable tensor names."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}

    def name(self, prefix: str) -> str:
        n = self._count.get(prefix, 0)
        self._count[prefix] = n + 1
        return f"{prefix}{n}"

    def const(self, prefix: str, array) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, prefix: str, shape, fan_in: int | None = None, gain: float = 2.0) -> str:
        """A He-scaled normal float32 initializer (std = sqrt(gain / fan_in))."""
        fan_in = fan_in if fan_in is not None else int(np.prod(shape[1:]))
        std = math.sqrt(gain / max(fan_in, 1))
        w = self.rng.standard_normal(shape, dtype=np.float32)
        w *= np.float32(std)
        return self.const(prefix, w)

    def bias(self, prefix: str, shape, scale: float = 0.1) -> str:
        b = self.rng.standard_normal(shape, dtype=np.float32)
        b *= np.float32(scale)
        return self.const(prefix, b)

    def op(self, op_type: str, inputs, n_outputs: int = 1, out: str | None = None, **attrs):
        """Append one node; return its output name (or a list when n_outputs > 1)."""
        node_name = self.name(op_type.lower() + "_")
        if out is not None:
            outputs = [out]
        else:
            outputs = [f"{node_name}_out{i}" if n_outputs > 1 else f"{node_name}_out"
                       for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=node_name, **attrs))
        return outputs[0] if n_outputs == 1 else outputs

    # ---- composite layers

    def conv(self, x: str, c_in: int, c_out: int, k, stride=1, pad=None, group: int = 1,
             dilation=1, bias: bool = True, out: str | None = None, **attrs) -> str:
        ks = (k,) * 2 if isinstance(k, int) else tuple(k)
        nd = len(ks)
        strides = (stride,) * nd if isinstance(stride, int) else tuple(stride)
        dil = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
        w = self.weight("conv_w", (c_out, c_in // group, *ks))
        inputs = [x, w] + ([self.bias("conv_b", (c_out,))] if bias else [])
        if pad is not None:
            attrs["pads"] = [pad] * (2 * nd) if isinstance(pad, int) else list(pad)
        return self.op("Conv", inputs, out=out, kernel_shape=list(ks), strides=list(strides),
                       dilations=list(dil), group=group, **attrs)

    def bn(self, x: str, c: int, gamma: float = 1.0, out: str | None = None) -> str:
        r = self.rng
        scale = self.const("bn_scale", (gamma * r.uniform(0.8, 1.2, c)).astype(np.float32))
        shift = self.const("bn_bias", (0.1 * r.standard_normal(c)).astype(np.float32))
        mean = self.const("bn_mean", (0.1 * r.standard_normal(c)).astype(np.float32))
        var = self.const("bn_var", r.uniform(0.5, 1.5, c).astype(np.float32))
        return self.op("BatchNormalization", [x, scale, shift, mean, var], out=out, epsilon=1e-5)

    def gemm(self, x: str, n_in: int, n_out: int, out: str | None = None, gain: float = 2.0) -> str:
        w = self.weight("fc_w", (n_out, n_in), fan_in=n_in, gain=gain)
        b = self.bias("fc_b", (n_out,))
        return self.op("Gemm", [x, w, b], out=out, transB=1)

    def matmul_bias(self, x: str, n_in: int, n_out: int, gain: float = 1.0) -> str:
        w = self.weight("mm_w", (n_in, n_out), fan_in=n_in, gain=gain)
        return self.op("Add", [self.op("MatMul", [x, w]), self.bias("mm_b", (n_out,))])

    # ---- the model

    def model(self, name: str, inputs, outputs, opset: int = OPSET,
              ir_version: int = IR_VERSION, check: bool = True,
              initializers_as_inputs: bool = False) -> onnx.ModelProto:
        """inputs/outputs: list of (name, shape) float32 tensors (a str dim is symbolic)."""
        vi_in = [helper.make_tensor_value_info(n, FLOAT, list(s)) for n, s in inputs]
        vi_out = [helper.make_tensor_value_info(n, FLOAT, list(s) if s is not None else None)
                  for n, s in outputs]
        if initializers_as_inputs:  # the pre-ir_version-4 habit of listing weights as inputs
            vi_in += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                      for t in self.inits]
        graph = helper.make_graph(self.nodes, name, vi_in, vi_out, initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="acompile-tests")
        m.ir_version = ir_version
        if check:
            onnx.checker.check_model(m, full_check=True)
        return m


# --------------------------------------------------------------------------- dense


def mlp(sizes=(16, 32, 10), opset: int = OPSET, seed: int = 0,
        check: bool = True) -> onnx.ModelProto:
    """Gemm(transB=1)+Relu stack over sizes; input [N, sizes[0]] with symbolic batch N."""
    b = _Builder(seed)
    x = "input"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        x = b.gemm(x, n_in, n_out, out="output" if last else None, gain=1.0 if last else 2.0)
        if not last:
            x = b.op("Relu", [x])
    return b.model("mlp", [("input", ["N", sizes[0]])], [("output", ["N", sizes[-1]])],
                   opset=opset, check=check)


def gemm_variants(seed: int = 0) -> onnx.ModelProto:
    """Chained Gemms covering transA, transB, alpha, beta, no C, and C of shape [N], [1,N], []."""
    b = _Builder(seed)
    r = b.rng
    # transB=0, alpha, beta, C of shape [12]
    w1 = b.const("w", (r.standard_normal((8, 12)) / math.sqrt(8)).astype(np.float32))
    h = b.op("Gemm", ["input", w1, b.bias("c", (12,))], alpha=0.5, beta=2.0)
    # transB=1, C of shape [1, 16]
    w2 = b.const("w", (r.standard_normal((16, 12)) / math.sqrt(12)).astype(np.float32))
    h = b.op("Relu", [b.op("Gemm", [h, w2, b.bias("c", (1, 16))], transB=1)])
    # transA=1 on a transposed activation, scalar C, beta
    ht = b.op("Transpose", [h], perm=[1, 0])
    w3 = b.const("w", (r.standard_normal((16, 6)) / math.sqrt(16)).astype(np.float32))
    h = b.op("Gemm", [ht, w3, b.const("c", np.array(0.25, np.float32))], transA=1, beta=0.5)
    # no C, transB=1, alpha
    w4 = b.const("w", (r.standard_normal((10, 6)) / math.sqrt(6)).astype(np.float32))
    b.op("Gemm", [h, w4], out="output", transB=1, alpha=1.5)
    return b.model("gemm_variants", [("input", ["N", 8])], [("output", ["N", 10])])


def matmul_add(seed: int = 0) -> onnx.ModelProto:
    """MatMul with a constant [K, M] weight + Add bias on a 3-D input [N, T, K], twice."""
    b = _Builder(seed)
    h = b.op("Relu", [b.matmul_bias("input", 16, 24, gain=2.0)])
    w = b.weight("mm_w", (24, 12), fan_in=24, gain=1.0)
    b.op("Add", [b.op("MatMul", [h, w]), b.bias("mm_b", (12,))], out="output")
    return b.model("matmul_add", [("input", ["N", 4, 16])], [("output", ["N", 4, 12])])


def matmul_const_first(seed: int = 0) -> onnx.ModelProto:
    """Constant [6, 8] @ dynamic [N, 8, 5] (the weight is the left operand), then + bias."""
    b = _Builder(seed)
    w = b.weight("mm_w", (6, 8), fan_in=8, gain=1.0)
    y = b.op("MatMul", [w, "input"])
    b.op("Add", [y, b.bias("mm_b", (6, 1))], out="output")
    return b.model("matmul_const_first", [("input", ["N", 8, 5])], [("output", ["N", 6, 5])])


# --------------------------------------------------------------------------- convolution


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool-Conv-BN-Relu-GlobalAveragePool-Flatten-Gemm on [1, 3, 16, 16]."""
    b = _Builder(seed)
    h = b.op("Relu", [b.bn(b.conv("input", 3, 8, 3, pad=1), 8)])
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Relu", [b.bn(b.conv(h, 8, 16, 3, pad=1), 16)])
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])], axis=1)
    b.gemm(h, 16, 10, out="output", gain=1.0)
    return b.model("small_cnn", [("input", [1, 3, 16, 16])], [("output", [1, 10])])


def residual_block(channels: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu-Conv-BN + identity Add + Relu on [1, C, 8, 8]."""
    b = _Builder(seed)
    c = channels
    h = b.op("Relu", [b.bn(b.conv("input", c, c, 3, pad=1, bias=False), c)])
    h = b.bn(b.conv(h, c, c, 3, pad=1, bias=False), c, gamma=0.5)
    b.op("Relu", [b.op("Add", [h, "input"])], out="output")
    return b.model("residual_block", [("input", [1, c, 8, 8])], [("output", [1, c, 8, 8])])


def grouped_conv(groups: int = 4, seed: int = 0) -> onnx.ModelProto:
    """Conv 8->16 with `groups` groups (weight [16, 8/groups, 3, 3]), pad 1, bias, + Relu."""
    b = _Builder(seed)
    h = b.conv("input", 8, 16, 3, pad=1, group=groups)
    b.op("Relu", [h], out="output")
    return b.model("grouped_conv", [("input", [1, 8, 8, 8])], [("output", [1, 16, 8, 8])])


def depthwise_conv(seed: int = 0) -> onnx.ModelProto:
    """Depthwise 3x3 Conv (group = C = 8, weight [8, 1, 3, 3]) + Relu + pointwise 1x1 Conv 8->16."""
    b = _Builder(seed)
    h = b.op("Relu", [b.conv("input", 8, 8, 3, pad=1, group=8)])
    b.conv(h, 8, 16, 1, out="output")
    return b.model("depthwise_conv", [("input", [1, 8, 8, 8])], [("output", [1, 16, 8, 8])])


def dilated_conv(seed: int = 0) -> onnx.ModelProto:
    """3x3 Conv 4->8 with dilation 2 and pads 2 (same size) on [1, 4, 12, 12], + Relu."""
    b = _Builder(seed)
    h = b.conv("input", 4, 8, 3, pad=2, dilation=2)
    b.op("Relu", [h], out="output")
    return b.model("dilated_conv", [("input", [1, 4, 12, 12])], [("output", [1, 8, 12, 12])])


def strided_conv_autopad(seed: int = 0) -> onnx.ModelProto:
    """3x3 Conv 4->8, stride 2, auto_pad SAME_UPPER on an odd 9x9 input -> 5x5."""
    b = _Builder(seed)
    h = b.conv("input", 4, 8, 3, stride=2, auto_pad="SAME_UPPER")
    b.op("Relu", [h], out="output")
    return b.model("strided_conv_autopad", [("input", [1, 4, 9, 9])], [("output", [1, 8, 5, 5])])


def conv_transpose(groups: int = 1, seed: int = 0) -> onnx.ModelProto:
    """ConvTranspose 8->4, 3x3, stride 2, pads 1, output_padding 1: [1,8,5,5] -> [1,4,10,10]."""
    b = _Builder(seed)
    w = b.weight("convt_w", (8, 4 // groups, 3, 3), fan_in=8 * 9 // (4 * groups))
    h = b.op("ConvTranspose", ["input", w, b.bias("convt_b", (4,))], kernel_shape=[3, 3],
             strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1], group=groups)
    b.op("Relu", [h], out="output")
    name = "conv_transpose" if groups == 1 else "conv_transpose_grouped"
    return b.model(name, [("input", [1, 8, 5, 5])], [("output", [1, 4, 10, 10])])


def conv_transpose_grouped(seed: int = 0) -> onnx.ModelProto:
    """conv_transpose with groups=2 (weight [8, 2, 3, 3])."""
    return conv_transpose(groups=2, seed=seed)


def conv_1d(seed: int = 0) -> onnx.ModelProto:
    """1-D Conv 4->8 (k3, pad 1) + Relu + Conv 8->8 (k3, stride 2, pad 1) on [1, 4, 16]."""
    b = _Builder(seed)
    h = b.op("Relu", [b.conv("input", 4, 8, (3,), pad=1)])
    b.conv(h, 8, 8, (3,), stride=2, pad=1, out="output")
    return b.model("conv_1d", [("input", [1, 4, 16])], [("output", [1, 8, 8])])


def dynamic_batch_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool-Flatten-Gemm with a symbolic batch dim 'N': [N, 3, 8, 8]."""
    b = _Builder(seed)
    h = b.op("Relu", [b.bn(b.conv("input", 3, 8, 3, pad=1), 8)])
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Flatten", [h], axis=1)
    b.gemm(h, 8 * 4 * 4, 10, out="output", gain=1.0)
    return b.model("dynamic_batch_cnn", [("input", ["N", 3, 8, 8])], [("output", ["N", 10])])


def old_opset_cnn(initializers_as_inputs: bool = False, seed: int = 0) -> onnx.ModelProto:
    """Opset 9, ir_version 4: Conv-BatchNormalization(v9)-Relu-MaxPool-Flatten-Gemm on [1, 3, 8, 8].

    With initializers_as_inputs the weights are also listed as graph inputs (ir_version 3
    style); random_inputs skips them.
    """
    b = _Builder(seed)
    h = b.op("Relu", [b.bn(b.conv("input", 3, 4, 3, pad=1), 4)])
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Flatten", [h], axis=1)
    b.gemm(h, 4 * 4 * 4, 5, out="output", gain=1.0)
    return b.model("old_opset_cnn", [("input", [1, 3, 8, 8])], [("output", [1, 5])],
                   opset=9, ir_version=3 if initializers_as_inputs else 4,
                   initializers_as_inputs=initializers_as_inputs)


def old_opset_cnn_init_inputs(seed: int = 0) -> onnx.ModelProto:
    """old_opset_cnn at ir_version 3 with every initializer also listed as a graph input."""
    return old_opset_cnn(initializers_as_inputs=True, seed=seed)


def per_channel_mul_add_after_conv(seed: int = 0) -> onnx.ModelProto:
    """Conv 4->8 (no bias) then Mul and Add by per-channel [1, 8, 1, 1] constants, + Relu."""
    b = _Builder(seed)
    h = b.conv("input", 4, 8, 3, pad=1, bias=False)
    scale = b.const("ch_scale", b.rng.uniform(0.5, 1.5, (1, 8, 1, 1)).astype(np.float32))
    h = b.op("Mul", [h, scale])
    h = b.op("Add", [h, b.bias("ch_shift", (1, 8, 1, 1))])
    b.op("Relu", [h], out="output")
    return b.model("per_channel_mul_add_after_conv", [("input", [1, 4, 8, 8])],
                   [("output", [1, 8, 8, 8])])


# --------------------------------------------------------------------------- sequence


def transformer_block(d: int = 32, heads: int = 2, seq: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Pre-LN transformer block on [1, seq, d]: multi-head attention + Erf-GELU MLP, two residuals.

    Q/K/V/O and the MLP are MatMul with constant weights + Add bias; the attention
    scores are MatMul of two activations (Q @ K^T and P @ V), scaled by Div sqrt(d/heads).
    """
    assert d % heads == 0, f"{d=} must be divisible by {heads=}"
    dh = d // heads
    b = _Builder(seed)

    def layer_norm(x: str) -> str:
        g = b.const("ln_g", (1.0 + 0.1 * b.rng.standard_normal(d)).astype(np.float32))
        beta = b.bias("ln_b", (d,))
        return b.op("LayerNormalization", [x, g, beta], axis=-1, epsilon=1e-5)

    split_shape = b.const("heads_shape", np.array([0, 0, heads, dh], np.int64))
    merge_shape = b.const("merge_shape", np.array([0, 0, d], np.int64))

    h = layer_norm("input")
    q = b.op("Reshape", [b.matmul_bias(h, d, d), split_shape])
    k = b.op("Reshape", [b.matmul_bias(h, d, d), split_shape])
    v = b.op("Reshape", [b.matmul_bias(h, d, d), split_shape])
    q = b.op("Transpose", [q], perm=[0, 2, 1, 3])        # [1, H, S, dh]
    k = b.op("Transpose", [k], perm=[0, 2, 3, 1])        # [1, H, dh, S]
    v = b.op("Transpose", [v], perm=[0, 2, 1, 3])        # [1, H, S, dh]
    scores = b.op("MatMul", [q, k])                      # [1, H, S, S], dynamic x dynamic
    scores = b.op("Div", [scores, b.const("sqrt_dh", np.array(math.sqrt(dh), np.float32))])
    probs = b.op("Softmax", [scores], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, merge_shape])            # [1, S, d]
    h1 = b.op("Add", ["input", b.matmul_bias(ctx, d, d)])

    m = b.matmul_bias(layer_norm(h1), d, 4 * d, gain=2.0)
    erf = b.op("Erf", [b.op("Div", [m, b.const("sqrt2", np.array(math.sqrt(2.0), np.float32))])])
    one = b.const("one", np.array(1.0, np.float32))
    half = b.const("half", np.array(0.5, np.float32))
    gelu = b.op("Mul", [b.op("Mul", [m, b.op("Add", [erf, one])]), half])
    m = b.matmul_bias(gelu, 4 * d, d)
    b.op("Add", [h1, m], out="output")
    return b.model("transformer_block", [("input", [1, seq, d])], [("output", [1, seq, d])])


def lstm_model(hidden: int = 8, seed: int = 0) -> onnx.ModelProto:
    """ONNX LSTM (seq 5, batch 1, input 4, hidden 8, forward), last hidden state -> Gemm 8->3."""
    b = _Builder(seed)
    n_in, hs = 4, hidden
    w = b.weight("lstm_W", (1, 4 * hs, n_in), fan_in=n_in, gain=1.0)
    r = b.weight("lstm_R", (1, 4 * hs, hs), fan_in=hs, gain=1.0)
    bias = b.bias("lstm_B", (1, 8 * hs))
    _, y_h, _ = b.op("LSTM", ["input", w, r, bias], n_outputs=3, hidden_size=hs)
    h = b.op("Reshape", [y_h, b.const("shape", np.array([1, hs], np.int64))])
    b.gemm(h, hs, 3, out="output", gain=1.0)
    return b.model("lstm_model", [("input", [5, 1, n_in])], [("output", [1, 3])])


# --------------------------------------------------------------------------- frontend quirks


def weights_via_constant_nodes(seed: int = 0) -> onnx.ModelProto:
    """Weights built at run time: Constant->Reshape->Transpose, Identity, Cast(fp16), Constant.

    y = Gemm(Relu(x @ T(Reshape(Constant)) + Identity(b1)), Cast(W2_fp16), Identity(b2)) * 0.5
    on x [N, 12]; a constant folder should reduce it to plain weights.
    """
    b = _Builder(seed)
    r = b.rng
    w1_flat = (r.standard_normal(8 * 12) / math.sqrt(6.0)).astype(np.float32)
    c = b.op("Constant", [], value=numpy_helper.from_array(w1_flat, "w1_flat"))
    w1 = b.op("Reshape", [c, b.const("w1_shape", np.array([8, 12], np.int64))])
    w1 = b.op("Transpose", [w1], perm=[1, 0])                       # [12, 8]
    b1 = b.op("Identity", [b.bias("b1", (8,))])
    h = b.op("Relu", [b.op("Add", [b.op("MatMul", ["input", w1]), b1])])
    w2 = b.const("w2_fp16", (r.standard_normal((5, 8)) / math.sqrt(8)).astype(np.float16))
    w2 = b.op("Cast", [w2], to=TensorProto.FLOAT)
    b2 = b.op("Identity", [b.bias("b2", (5,))])
    y = b.op("Gemm", [h, w2, b2], transB=1)
    half = b.op("Constant", [], value_float=0.5)
    b.op("Mul", [y, half], out="output")
    return b.model("weights_via_constant_nodes", [("input", ["N", 12])], [("output", ["N", 5])])


CUSTOM_DOMAIN = "com.example.custom"


def unsupported_op_model(seed: int = 0) -> onnx.ModelProto:
    """Gemm 16->10 followed by a custom-domain TopK(k=3) (values out): an op neither acompile nor
    onnxruntime can run (onnxruntime's own TopK would run on the digital units)."""
    b = _Builder(seed)
    h = b.gemm("input", 16, 10, gain=1.0)
    k = b.const("k", np.array([3], np.int64))
    b.nodes.append(helper.make_node("TopK", [h, k], ["output", "topk_indices"], name="topk_0",
                                    axis=-1, domain=CUSTOM_DOMAIN))
    m = b.model("unsupported_op_model", [("input", [1, 16])], [("output", [1, 3])], check=False)
    m.opset_import.append(helper.make_opsetid(CUSTOM_DOMAIN, OPSET))
    onnx.checker.check_model(m, full_check=False)
    return m


# --------------------------------------------------------------------------- large


def resnet50_like(seed: int = 0, check: bool = True) -> onnx.ModelProto:
    """ResNet-50 v1.5 layout (bottlenecks 3-4-6-3, ~25.6M random weights) on [1, 3, 224, 224]."""
    b = _Builder(seed)
    h = b.op("Relu", [b.bn(b.conv("input", 3, 64, 7, stride=2, pad=3, bias=False), 64)])
    h = b.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = 64
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        c_out = 4 * mid
        for i in range(blocks):
            s = stride if i == 0 else 1
            y = b.op("Relu", [b.bn(b.conv(h, c_in, mid, 1, bias=False), mid)])
            y = b.op("Relu", [b.bn(b.conv(y, mid, mid, 3, stride=s, pad=1, bias=False), mid)])
            y = b.bn(b.conv(y, mid, c_out, 1, bias=False), c_out, gamma=0.2)
            skip = h
            if i == 0:
                skip = b.bn(b.conv(h, c_in, c_out, 1, stride=s, bias=False), c_out)
            h = b.op("Relu", [b.op("Add", [y, skip])])
            c_in = c_out
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])], axis=1)
    b.gemm(h, 2048, 1000, out="output", gain=1.0)
    return b.model("resnet50_like", [("input", [1, 3, 224, 224])], [("output", [1, 1000])],
                   check=check)


_VGG_LAYOUTS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def vgg_like(depth: int = 16, seed: int = 0, check: bool = True) -> onnx.ModelProto:
    """VGG-16 (depth=11: VGG-11) layout, ~138M (~133M) weights, mostly Gemm 25088-4096-4096-1000."""
    b = _Builder(seed)
    h, c_in = "input", 3
    for item in _VGG_LAYOUTS[depth]:
        if item == "M":
            h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
        else:
            h = b.op("Relu", [b.conv(h, c_in, item, 3, pad=1)])
            c_in = item
    h = b.op("Flatten", [h], axis=1)
    h = b.op("Relu", [b.gemm(h, 512 * 7 * 7, 4096)])
    h = b.op("Relu", [b.gemm(h, 4096, 4096)])
    b.gemm(h, 4096, 1000, out="output", gain=1.0)
    return b.model(f"vgg{depth}_like", [("input", [1, 3, 224, 224])], [("output", [1, 1000])],
                   check=check)


def big_mlp(seed: int = 0, check: bool = True) -> onnx.ModelProto:
    """MLP 784-4096-4096-4096-4096-10 (~53.6M weights), input [N, 784]."""
    return mlp((784, 4096, 4096, 4096, 4096, 10), seed=seed, check=check)


# --------------------------------------------------------------------------- helpers


ALL_SMALL = {
    "mlp": mlp,
    "gemm_variants": gemm_variants,
    "matmul_add": matmul_add,
    "matmul_const_first": matmul_const_first,
    "small_cnn": small_cnn,
    "residual_block": residual_block,
    "grouped_conv": grouped_conv,
    "depthwise_conv": depthwise_conv,
    "dilated_conv": dilated_conv,
    "strided_conv_autopad": strided_conv_autopad,
    "conv_transpose": conv_transpose,
    "conv_transpose_grouped": conv_transpose_grouped,
    "conv_1d": conv_1d,
    "dynamic_batch_cnn": dynamic_batch_cnn,
    "old_opset_cnn": old_opset_cnn,
    "old_opset_cnn_init_inputs": old_opset_cnn_init_inputs,
    "per_channel_mul_add_after_conv": per_channel_mul_add_after_conv,
    "transformer_block": transformer_block,
    "weights_via_constant_nodes": weights_via_constant_nodes,
    "unsupported_op_model": unsupported_op_model,
    "lstm_model": lstm_model,
}

ALL_LARGE = {
    "resnet50_like": resnet50_like,
    "vgg_like": vgg_like,
    "big_mlp": big_mlp,
}


def weight_count(model: onnx.ModelProto) -> int:
    """Number of elements in all floating-point initializers."""
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in floats)


def random_inputs(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded feed dict for the model's real inputs (initializers listed as inputs are skipped).

    Symbolic or unknown dims become `batch`.  Float inputs of rank 4 (images) are uniform in
    [0, 1); other float inputs are standard normal; integer inputs are uniform in [0, 10).
    """
    rng = np.random.default_rng(seed)
    weights = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in weights:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            a = rng.random(shape) if len(shape) == 4 else rng.standard_normal(shape)
        else:
            a = rng.integers(0, 10, shape)
        feeds[vi.name] = np.asarray(a).astype(dtype)
    return feeds


def recurrent(op: str = "LSTM", hidden: int = 8, inputs: int = 4, seq: int = 5, batch: int = 2,
              direction: str = "forward", layout: int = 0, linear_before_reset: int = 0, peepholes: bool = False,
              clip: float | None = None, initial_state: bool = False, activations=None,
              seed: int = 0, sequence_lens=None) -> onnx.ModelProto:
    """One LSTM/GRU/RNN node with every optional input and attribute selectable; ``sequence_lens`` is
    None, "input" (an int32 graph input ``seq_lens`` [batch]) or the constant lengths."""
    rng = np.random.default_rng(seed)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    dirs = 2 if direction == "bidirectional" else 1
    inits = [
        numpy_helper.from_array((rng.standard_normal((dirs, gates * hidden, inputs)) * 0.4).astype(np.float32), "W"),
        numpy_helper.from_array((rng.standard_normal((dirs, gates * hidden, hidden)) * 0.4).astype(np.float32), "R"),
        numpy_helper.from_array((rng.standard_normal((dirs, 2 * gates * hidden)) * 0.1).astype(np.float32), "B"),
    ]
    ins = ["input", "W", "R", "B", "", "", "", ""]
    if isinstance(sequence_lens, str):
        ins[4] = sequence_lens
    elif sequence_lens is not None:
        inits.append(numpy_helper.from_array(np.asarray(sequence_lens, np.int32), "seq_lens"))
        ins[4] = "seq_lens"
    if initial_state:
        inits.append(numpy_helper.from_array(rng.standard_normal((dirs, batch, hidden)).astype(np.float32), "h0"))
        ins[5] = "h0"
        if op == "LSTM":
            inits.append(numpy_helper.from_array(rng.standard_normal((dirs, batch, hidden)).astype(np.float32), "c0"))
            ins[6] = "c0"
    if peepholes and op == "LSTM":
        inits.append(numpy_helper.from_array((rng.standard_normal((dirs, 3 * hidden)) * 0.1).astype(np.float32), "P"))
        ins[7] = "P"
    while ins[-1] == "":
        ins.pop()
    attrs = {"hidden_size": hidden, "direction": direction, "layout": layout}
    if op == "GRU":
        attrs["linear_before_reset"] = linear_before_reset
    if clip is not None:
        attrs["clip"] = clip
    if activations is not None:
        attrs["activations"] = activations
    outs = ["output", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    x_shape = [batch, seq, inputs] if layout else [seq, batch, inputs]
    y_shape = [batch, seq, dirs, hidden] if layout else [seq, dirs, batch, hidden]
    h_shape = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    graph = helper.make_graph(
        [helper.make_node(op, ins, outs, name=f"{op.lower()}_0", **attrs)], f"{op.lower()}_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)]
        + ([helper.make_tensor_value_info(sequence_lens, TensorProto.INT32, [batch])]
           if isinstance(sequence_lens, str) else []),
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, y_shape if o == "output" else h_shape) for o in outs],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def unsupported_lstm_model(seed: int = 0) -> onnx.ModelProto:
    """An LSTM whose HardSigmoid gate activation acompile does not unroll (stays unsupported)."""
    return recurrent("LSTM", activations=["HardSigmoid", "Tanh", "Tanh"], seed=seed)


ALL_SMALL["unsupported_lstm_model"] = unsupported_lstm_model
