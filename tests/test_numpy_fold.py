"""passes/numpy_fold.py against onnxruntime: every operator it folds, on its edge cases, gives onnxruntime's
result bit for bit (type, shape, values); the forms it leaves to onnxruntime are named."""

from __future__ import annotations

import numpy as np
import pytest

from acompile.onnx_core import TensorProto
from acompile.onnx_exec import run_node
from acompile.passes.numpy_fold import fold_in_numpy

I64 = np.int64
rng = np.random.default_rng(7)
x234 = rng.standard_normal((2, 3, 4)).astype(np.float32)
ints = np.array([[-7, 7, 0, 5], [-8, 9, -1, 3]], np.int32)

# (op, attrs, inputs): onnxruntime runs every one; numpy must fold it (FOLDED) or may leave it (LEFT)
FOLDED = [
    ("Unsqueeze", {}, [x234, np.array([0, -1], I64)]),
    ("Unsqueeze", {}, [np.array(3.5, np.float32), np.array([0], I64)]),
    ("Squeeze", {}, [x234[:1, :, :1], np.array([0, -1], I64)]),
    ("Squeeze", {}, [x234[:1, :, :1]]),
    ("Reshape", {}, [x234, np.array([0, -1], I64)]),
    ("Reshape", {}, [x234, np.array([4, 0, 2], I64)]),
    ("Reshape", {"allowzero": 1}, [np.zeros((0, 3), np.float32), np.array([3, 0], I64)]),
    ("Concat", {"axis": -1}, [ints, ints[:, :2]]),
    ("Concat", {"axis": 0}, [np.array([1], I64), np.array([2, 3], I64), np.array([], I64)]),
    ("Gather", {"axis": 1}, [x234, np.array([[-1, 0], [2, 1]], I64)]),
    ("Gather", {}, [np.array([5, 6, 7], I64), np.array(-3, np.int32)]),
    ("Shape", {}, [x234]),
    ("Shape", {"start": -2}, [x234]),
    ("Shape", {"start": 1, "end": -5}, [x234]),
    ("Expand", {}, [np.array([[1], [2]], np.int32), np.array([3, 1, 4], I64)]),
    ("Expand", {}, [x234, np.array([1, 1], I64)]),
    ("Slice", {}, [x234, np.array([1, -10], I64), np.array([2**62, 3], I64)]),
    ("Slice", {}, [x234, np.array([-1], I64), np.array([-2**63], I64), np.array([2], I64), np.array([-1], I64)]),
    ("Slice", {}, [x234, np.array([5, 0], I64), np.array([-5, 4], I64), np.array([-1, 0], I64),
                   np.array([-2, 3], I64)]),
    ("Slice", {}, [x234, np.array([0], np.int32), np.array([0], np.int32), np.array([0], np.int32)]),
    ("Slice", {}, [np.zeros((0, 2), np.float32), np.array([-1], I64), np.array([-9], I64), np.array([0], I64),
                   np.array([-1], I64)]),
    ("Cast", {"to": TensorProto.INT64}, [np.array([-2.7, -0.5, 0.5, 2.7, 1e9], np.float32)]),
    ("Cast", {"to": TensorProto.UINT8}, [np.array([0.0, 0.9, 254.99], np.float64)]),
    ("Cast", {"to": TensorProto.FLOAT}, [np.array([2**53 + 1, -3, 2**62], I64)]),
    ("Cast", {"to": TensorProto.FLOAT}, [np.array([1e300, -1e-300, 0.1], np.float64)]),
    ("Cast", {"to": TensorProto.BOOL}, [np.array([0.0, -0.0, np.nan, 2.0], np.float32)]),
    ("Cast", {"to": TensorProto.INT8}, [np.array([300, -129, 127], np.int32)]),
    ("Cast", {"to": TensorProto.DOUBLE}, [np.array([True, False])]),
    ("Add", {}, [ints, np.array([2**31 - 1], np.int32)]),
    ("Sub", {}, [x234, x234[:, :1]]),
    ("Mul", {}, [np.array(0.1, np.float32), np.array([3.0, 1e38], np.float32)]),
    ("Div", {}, [ints, np.array([2, -2, 3, -3], np.int32)]),
    ("Div", {}, [np.array([249, 7], np.uint8), np.array([2, 3], np.uint8)]),
    ("Div", {}, [np.array([1.0, -1.0, 0.0], np.float32), np.array([0.0, 3.0, 0.0], np.float32)]),
    ("Mod", {}, [ints, np.array([3, -3, 2, -2], np.int32)]),
    ("Mod", {"fmod": 1}, [ints, np.array([3, -3, 2, -2], np.int32)]),
    ("Mod", {"fmod": 1}, [np.array([-5.5, 5.5, 1.0], np.float64), np.array([2.0, -2.0, 0.0], np.float64)]),
    ("Sqrt", {}, [np.array([2.0, -1.0, 0.0, 1e-40], np.float32)]),
    ("Neg", {}, [np.array([-128, 5], np.int8)]),
    ("Equal", {}, [np.array([True, False]), np.array([True, True])]),
    ("Less", {}, [x234, np.array(0.0, np.float32)]),
    ("Greater", {}, [ints, np.array([0], np.int32)]),
    ("Where", {}, [np.array([True, False, True]), np.array([1, 2, 3], I64), np.array([0], I64)]),
]
LEFT = [
    ("Reshape", {}, [x234, np.array([-1, -1], I64)]),            # onnxruntime refuses these
    ("Gather", {}, [np.array([5, 6, 7], I64), np.array([3], I64)]),
    ("Squeeze", {}, [x234, np.array([1], I64)]),
    ("Div", {}, [ints, np.array([0, 1, 1, 1], np.int32)]),       # undefined in C++: left to onnxruntime
    ("Cast", {"to": TensorProto.INT32}, [np.array([np.nan, 1e20], np.float32)]),
    ("Cast", {"to": TensorProto.FLOAT16}, [x234]),               # float16: onnxruntime's own rounding
    ("Add", {}, [x234.astype(np.float16), x234.astype(np.float16)]),
    ("Add", {}, [ints, ints.astype(I64)]),                       # mixed types: not a valid model
]


def _onnxruntime(op, attrs, inputs):
    return run_node(op, attrs, inputs, 1, 17)[0]


@pytest.mark.parametrize("op,attrs,inputs", FOLDED, ids=[f"{c[0]}-{i}" for i, c in enumerate(FOLDED)])
def test_numpy_folds_give_onnxruntimes_results_bit_for_bit(op, attrs, inputs):
    got = fold_in_numpy(op, attrs, inputs, 17)
    assert got is not None, f"{op} was left to onnxruntime"
    want = np.asarray(_onnxruntime(op, attrs, inputs))
    assert got[0].dtype == want.dtype and got[0].shape == want.shape
    assert got[0].tobytes() == want.tobytes()


@pytest.mark.parametrize("op,attrs,inputs", LEFT, ids=[f"{c[0]}-{i}" for i, c in enumerate(LEFT)])
def test_what_numpy_does_not_fold_exactly_is_left_to_onnxruntime(op, attrs, inputs):
    assert fold_in_numpy(op, attrs, inputs, 17) is None


def test_random_slices_and_reshapes_match_onnxruntime():
    """Starts, ends and steps anywhere around each dimension, negative and past its ends."""
    r = np.random.default_rng(11)
    x = r.standard_normal((5, 4, 3)).astype(np.float32)
    for _ in range(200):
        k = int(r.integers(1, 4))
        axes = r.permutation(3)[:k] - 3 * r.integers(0, 2, k)
        steps = r.choice([-3, -2, -1, 1, 2, 3], k)
        starts, ends = r.integers(-8, 9, k), r.integers(-8, 9, k)
        inputs = [x, starts.astype(I64), ends.astype(I64), axes.astype(I64), steps.astype(I64)]
        got = fold_in_numpy("Slice", {}, inputs, 17)[0]
        want = _onnxruntime("Slice", {}, inputs)
        assert got.shape == want.shape and got.tobytes() == want.tobytes(), inputs[1:]


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.float32, np.float64])
def test_random_arithmetic_and_casts_match_onnxruntime(dtype):
    """Integer division and remainders of every sign (no zero divisor), float division and square roots, and
    casts of fractional values of both signs to the integer types they fit."""
    r = np.random.default_rng(13)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    a = (r.integers(max(info.min, -1000), min(info.max, 1000), 64) if info else r.standard_normal(64) * 50)
    b = (r.integers(1, min(info.max, 50), 64) * (r.choice([-1, 1], 64) if info.min < 0 else 1) if info
         else r.standard_normal(64))
    a, b = a.astype(dtype), b.astype(dtype)
    cases = [("Div", {}, [a, b]), ("Mod", {"fmod": 1}, [a, b]), ("Mul", {}, [a, b]), ("Sub", {}, [a, b])]
    cases += [("Mod", {}, [a, b])] if info else [("Sqrt", {}, [a])]
    if not info:
        cases += [("Cast", {"to": t}, [a]) for t in (TensorProto.INT8, TensorProto.INT32, TensorProto.INT64)]
    for op, attrs, inputs in cases:
        got = fold_in_numpy(op, attrs, inputs, 17)
        assert got is not None or (op == "Cast" and np.abs(a).max() > 127), op
        if got is not None:
            want = _onnxruntime(op, attrs, inputs)
            assert got[0].dtype == want.dtype and got[0].tobytes() == want.tobytes(), op
