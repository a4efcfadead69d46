"""Write the small sample models in samples/ (deterministic: reruns are byte-identical).

    python samples/make_samples.py [--out-dir DIR]

Writes mlp.onnx, cnn.onnx, resblock.onnx (seeded random weights), digits.onnx (an MLP
trained here on scikit-learn's bundled 8x8 digits, no download) and its data:
digits_test_x.npy, digits_test_y.npy, digits_calib.npy.  Every model is opset 17,
ir_version 8, weights inline; each is run once in onnxruntime before the script ends.
See samples/README.md.
"""

from __future__ import annotations

import os

# Single-threaded BLAS: the summation order of the digits training must not depend on
# the thread count, or the trained weights (and digits.onnx's bytes) would drift.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = Path(__file__).resolve().parent
OPSET = 17
IR_VERSION = 8
DIGITS_SEED = 0
N_TEST = 360
N_CALIB = 100


class _Graph:
    """Collects nodes and initializers for one model, with seeded He-scaled weights."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def he(self, name: str, shape, fan_in: int, gain: float = 2.0) -> str:
        w = self.rng.standard_normal(shape) * math.sqrt(gain / fan_in)
        return self.const(name, w)

    def op(self, op_type: str, name: str, inputs, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def gemm(self, name: str, x: str, w: np.ndarray | None, b: np.ndarray | None,
             shape=None, out: str | None = None) -> str:
        """Gemm(x, W, b, transB=1); W is [out, in]; random He weights when w is None."""
        if w is None:
            n_out, n_in = shape
            wn = self.he(f"{name}.weight", (n_out, n_in), n_in)
            bn = self.const(f"{name}.bias", 0.05 * self.rng.standard_normal(n_out))
        else:
            wn, bn = self.const(f"{name}.weight", w), self.const(f"{name}.bias", b)
        return self.op("Gemm", out or name, [x, wn, bn], transB=1)

    def conv(self, name: str, x: str, c_in: int, c_out: int, k: int = 3, bias: bool = True) -> str:
        inputs = [x, self.he(f"{name}.weight", (c_out, c_in, k, k), c_in * k * k)]
        if bias:
            inputs.append(self.const(f"{name}.bias", 0.05 * self.rng.standard_normal(c_out)))
        return self.op("Conv", name, inputs, kernel_shape=[k, k], pads=[k // 2] * 4)

    def bn(self, name: str, x: str, c: int, gamma: float = 1.0) -> str:
        r = self.rng
        params = [self.const(f"{name}.scale", gamma * r.uniform(0.8, 1.2, c)),
                  self.const(f"{name}.bias", 0.1 * r.standard_normal(c)),
                  self.const(f"{name}.mean", 0.1 * r.standard_normal(c)),
                  self.const(f"{name}.var", r.uniform(0.5, 1.5, c))]
        return self.op("BatchNormalization", name, [x, *params], epsilon=1e-5)

    def model(self, name: str, inputs, outputs, doc: str) -> onnx.ModelProto:
        vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
        vo = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
        graph = helper.make_graph(self.nodes, name, vi, vo, initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="acompile samples/make_samples.py", doc_string=doc)
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m, full_check=True)
        return m


# --------------------------------------------------------------------------- random-weight samples


def make_mlp() -> onnx.ModelProto:
    g = _Graph(seed=1)
    h = g.op("Relu", "relu1", [g.gemm("fc1", "input", None, None, shape=(128, 784))])
    h = g.op("Relu", "relu2", [g.gemm("fc2", h, None, None, shape=(64, 128))])
    g.gemm("fc3", h, None, None, shape=(10, 64), out="output")
    return g.model("mlp", [("input", ["N", 784])], [("output", ["N", 10])],
                   "MLP 784-128-64-10 (Gemm+Relu), seeded random weights.")


def make_cnn() -> onnx.ModelProto:
    g = _Graph(seed=2)
    h = g.op("Relu", "relu1", [g.bn("bn1", g.conv("conv1", "input", 3, 8, bias=False), 8)])
    h = g.op("MaxPool", "pool1", [h], kernel_shape=[2, 2], strides=[2, 2])      # 16x16
    h = g.op("Relu", "relu2", [g.bn("bn2", g.conv("conv2", h, 8, 16, bias=False), 16)])
    h = g.op("MaxPool", "pool2", [h], kernel_shape=[2, 2], strides=[2, 2])      # 8x8
    h = g.op("Flatten", "flatten", [h], axis=1)
    g.gemm("fc", h, None, None, shape=(10, 16 * 8 * 8), out="output")
    return g.model("cnn", [("input", [1, 3, 32, 32])], [("output", [1, 10])],
                   "CNN Conv-BN-Relu-MaxPool x2, Flatten, Gemm; seeded random weights.")


def make_resblock() -> onnx.ModelProto:
    g = _Graph(seed=3)
    c = 16
    h = g.op("Relu", "relu1", [g.bn("bn1", g.conv("conv1", "input", c, c, bias=False), c)])
    h = g.bn("bn2", g.conv("conv2", h, c, c, bias=False), c, gamma=0.5)
    h = g.op("Add", "add", [h, "input"])
    g.op("Relu", "output", [h])
    return g.model("resblock", [("input", [1, c, 8, 8])], [("output", [1, c, 8, 8])],
                   "Residual block Conv-BN-Relu-Conv-BN + identity Add + Relu.")


# --------------------------------------------------------------------------- trained digits MLP


def digits_split():
    """(x_train, y_train, x_test, y_test): pixels / 16 as float32, a seeded 360-image test split."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SEED).permutation(len(x))
    test, train = order[:N_TEST], order[N_TEST:]
    return x[train], y[train], x[test], y[test]


def train_digits(x: np.ndarray, y: np.ndarray, sizes=(64, 64, 32, 10), steps: int = 600,
                 lr: float = 0.01, l2: float = 1e-4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Full-batch Adam on softmax cross-entropy, float64; returns [(W [out, in], b)] per layer."""
    rng = np.random.default_rng(DIGITS_SEED)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((n_in, n_out)) * math.sqrt(2.0 / n_in), np.zeros(n_out)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    xs, onehot = x.astype(np.float64), np.eye(sizes[-1])[y]
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        acts = [xs]
        for i in range(0, len(params), 2):
            z = acts[-1] @ params[i] + params[i + 1]
            acts.append(np.maximum(z, 0.0) if i + 2 < len(params) else z)
        logits = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        delta = (p - onehot) / len(xs)
        grads = [None] * len(params)
        for i in range(len(params) - 2, -1, -2):
            grads[i] = acts[i // 2].T @ delta + l2 * params[i]
            grads[i + 1] = delta.sum(axis=0)
            if i:
                delta = (delta @ params[i].T) * (acts[i // 2] > 0)
        for j, g in enumerate(grads):
            m[j] = b1 * m[j] + (1 - b1) * g
            v[j] = b2 * v[j] + (1 - b2) * g * g
            params[j] -= lr * (m[j] / (1 - b1 ** t)) / (np.sqrt(v[j] / (1 - b2 ** t)) + eps)
    return [(params[i].T.copy(), params[i + 1]) for i in range(0, len(params), 2)]


def make_digits(layers) -> onnx.ModelProto:
    g = _Graph(seed=0)
    h = "input"
    for i, (w, b) in enumerate(layers, start=1):
        last = i == len(layers)
        h = g.gemm(f"fc{i}", h, w, b, out="logits" if last else None)
        if not last:
            h = g.op("Relu", f"relu{i}", [h])
    return g.model("digits", [("input", ["N", 64])], [("logits", ["N", 10])],
                   "MLP 64-64-32-10 trained on sklearn digits. Input: 8x8 pixels (0..16) / 16, "
                   "row-major, float32 in [0, 1]. Output: logits for digits 0-9.")


# --------------------------------------------------------------------------- main


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=HERE, help="default: this script's folder")
    args = ap.parse_args(argv)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(0)
    for name, make, shape in (("mlp", make_mlp, (2, 784)), ("cnn", make_cnn, (1, 3, 32, 32)),
                              ("resblock", make_resblock, (1, 16, 8, 8))):
        model = make()
        (out / f"{name}.onnx").write_bytes(model.SerializeToString())
        y = run_onnx(model, rng.random(shape, dtype=np.float32))
        print(f"{name}.onnx: output {list(y.shape)}, finite={bool(np.isfinite(y).all())}")

    x_train, y_train, x_test, y_test = digits_split()
    model = make_digits(train_digits(x_train, y_train))
    (out / "digits.onnx").write_bytes(model.SerializeToString())
    np.save(out / "digits_test_x.npy", x_test)
    np.save(out / "digits_test_y.npy", y_test)
    np.save(out / "digits_calib.npy", x_train[:N_CALIB])
    train_acc = float((run_onnx(model, x_train).argmax(1) == y_train).mean())
    test_acc = float((run_onnx(model, x_test).argmax(1) == y_test).mean())
    print(f"digits.onnx: float accuracy train {train_acc:.4f}, test {test_acc:.4f} "
          f"({len(y_test)} held-out images, onnxruntime)")
    if test_acc <= 0.93:
        print("error: digits test accuracy is not above 0.93; the samples are not usable")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
