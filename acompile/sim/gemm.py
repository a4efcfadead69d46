"""Large float32 GEMMs on onnxruntime's kernels, small ones on numpy.

The products of the fast path (ideal-mode Conv, the exact integer product) are float32
GEMMs with a few hundred to a few thousand rows and columns. onnxruntime's MLAS kernel runs
them as fast as numpy's OpenBLAS on one thread (60-100 GFLOPS on ResNet-50 and VGG-16 layer
shapes, measured on the 2-core benchmark machine) and, unlike a BLAS whose thread count is
one setting for the whole process, lets each session choose its threads: the worker threads
of ``conv.spread`` run one single-threaded GEMM each, while a lone GEMM takes every core.
:func:`matmul` sends a product to a one-node Gemm session, writing into the caller's buffer
through an I/O binding; problems below ``_MIN_FLOPS``, and strided operands outside the
workers, stay on numpy. Both compute every output as a sum of float32 products, so
integer-valued operands whose partial sums stay below 2^24 (``exact.plan``) give the exact
product on either.
"""

from __future__ import annotations

import os

import numpy as np

from ..onnx_core import TensorProto, make_graph, make_model, make_node, make_opsetid, make_tensor_value_info
from ..onnx_exec import IR_VERSION

_MIN_FLOPS = 1 << 22  # below this, numpy's call overhead is the smaller


_SESSIONS: dict[tuple, object] = {}    # (process id, trans_a, trans_b, single) -> session


def _session(trans_a: bool, trans_b: bool, single: bool):
    """This process's session for one Gemm form. A forked child makes its own and never destroys its
    parent's: their thread pools do not exist in the child, and joining them there blocks for ever."""
    key = (os.getpid(), trans_a, trans_b, single)
    if key not in _SESSIONS:
        _SESSIONS[key] = _new_session(trans_a, trans_b, single)
    return _SESSIONS[key]


def _new_session(trans_a: bool, trans_b: bool, single: bool):
    """A Gemm session on one thread or on all (then without spinning: the simulator's own numpy
    work runs between calls)."""
    import onnxruntime as ort
    node = make_node("Gemm", ["a", "b"], ["y"], transA=int(trans_a), transB=int(trans_b))
    graph = make_graph([node], "gemm", [make_tensor_value_info(n, TensorProto.FLOAT, None)
                                        for n in ("a", "b")],
                       [make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = make_model(graph, opset_imports=[make_opsetid("", 17)], ir_version=IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if single:
        options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])




def _operand(x: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """(C-contiguous float32 array, whether it is x transposed) without a copy, or None."""
    if x.dtype != np.float32:
        return None
    if x.flags.c_contiguous:
        return x, False
    if x.flags.f_contiguous:
        return x.T, True
    return None


def _aligned(x: np.ndarray) -> np.ndarray:
    return x if x.flags.aligned else x.copy()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, single: bool = False) -> np.ndarray:
    """a (M, K) @ b (K, N) as float32, into ``out`` (C-contiguous, (M, N)) when given; on the calling
    thread alone with ``single`` (callers that run several GEMMs side by side), else on every core.

    Operands onnxruntime cannot read in place (a strided block of a matrix) go to numpy, whose
    BLAS reads them where they lie, unless ``single`` asks for one thread: then they are copied.
    onnxruntime reads a weight that lies unaligned in a mapped model file in place; numpy's BLAS
    cannot (numpy falls back to a loop twenty times slower), so numpy gets an aligned copy of one.
    """
    m, k = a.shape
    n = b.shape[1]
    ops = _operand(a), _operand(b)
    small = 2.0 * m * n * k < _MIN_FLOPS or m == 0 or n == 0 or k == 0
    if small:
        return np.matmul(a, b, out=out, dtype=np.float32)
    if None in ops and not single:
        return np.matmul(_aligned(a), _aligned(b), out=out, dtype=np.float32)
    (a_op, trans_a), (b_op, trans_b) = (op or (np.ascontiguousarray(x, dtype=np.float32), False)
                                        for op, x in zip(ops, (a, b)))
    if out is None or not out.flags.c_contiguous:
        out = np.empty((m, n), np.float32)
    sess = _session(trans_a, trans_b, single)
    binding = sess.io_binding()
    binding.bind_cpu_input("a", a_op)
    binding.bind_cpu_input("b", b_op)
    binding.bind_output("y", "cpu", 0, np.float32, [m, n], out.ctypes.data)
    sess.run_with_iobinding(binding)
    return out
