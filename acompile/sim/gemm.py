"""Large float32 GEMMs on onnxruntime's kernels, small ones on numpy.

The products of the fast path (ideal-mode Conv and Linear, the exact integer product) are float32
GEMMs with a few hundred to a few thousand rows and columns. onnxruntime's MLAS kernel runs
them as fast as numpy's OpenBLAS on one thread (60-100 GFLOPS on ResNet-50 and VGG-16 layer
shapes, measured on a 2-core AVX2 machine; faster on an AVX-512 one, where numpy's OpenBLAS keeps
its AVX2 kernels) and, unlike a BLAS whose thread count is
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
from functools import partial

import numpy as np

from ..onnx_core import (TensorProto, from_array, make_graph, make_model, make_node, make_opsetid,
                         make_tensor_value_info)
from ..onnx_exec import IR_VERSION

_MIN_FLOPS = 1 << 22  # below this, numpy's call overhead is the smaller


_SESSIONS: dict[tuple, object] = {}    # (process id, trans_a, trans_b, single, with_c) -> session


def _session(trans_a: bool, trans_b: bool, single: bool, with_c: bool = False):
    """This process's session for one Gemm form. A forked child makes its own and never destroys its
    parent's: their thread pools do not exist in the child, and joining them there blocks for ever."""
    key = (os.getpid(), trans_a, trans_b, single, with_c)
    if key not in _SESSIONS:
        _SESSIONS[key] = _new_session(trans_a, trans_b, single, with_c)
    return _SESSIONS[key]


_PACKED: dict[tuple, tuple] = {}     # (process id, weight address, shape, forms) -> (session, the weight)
_MAX_PACKED_BYTES = 1 << 29         # weights held by those sessions (each keeps a packed copy besides)


def _packed_session(trans_a: bool, b: np.ndarray, trans_b: bool, with_c: bool):
    """A one-thread Gemm session whose B is the weight ``b`` as an initializer, which onnxruntime packs once,
    as it packs a model's constant weight (in blocks of K of its own choosing: the sums differ otherwise).
    Each holds its weight, so no other array takes its address while the session is kept; the oldest go
    first once they hold ``_MAX_PACKED_BYTES`` (a sweep's process runs model after model)."""
    key = (os.getpid(), b.ctypes.data, b.shape, b.strides, trans_a, trans_b, with_c)
    if key not in _PACKED:
        while _PACKED and sum(w.nbytes for _, w in _PACKED.values()) + b.nbytes > _MAX_PACKED_BYTES:
            del _PACKED[next(iter(_PACKED))]
        _PACKED[key] = (_new_session(trans_a, trans_b, True, with_c, b), b)
    return _PACKED[key][0]


def _new_session(trans_a: bool, trans_b: bool, single: bool, with_c: bool, weight: np.ndarray | None = None):
    """A Gemm session (with a C input when ``with_c``; B the initializer ``weight`` when given) on one thread
    or on all (then without spinning: the simulator's own numpy work runs between calls)."""
    import onnxruntime as ort
    inputs = ("a", "b", "c") if with_c else ("a", "b")
    node = make_node("Gemm", list(inputs), ["y"], transA=int(trans_a), transB=int(trans_b))
    fed = [n for n in inputs if n != "b" or weight is None]
    graph = make_graph([node], "gemm", [make_tensor_value_info(n, TensorProto.FLOAT, None) for n in fed],
                       [make_tensor_value_info("y", TensorProto.FLOAT, None)],
                       [from_array(np.ascontiguousarray(weight), "b")] if weight is not None else [])
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


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, single: bool = False,
           as_onnxruntime: bool = False, c: np.ndarray | None = None, trans_b: bool | None = None,
           packed: bool = False) -> np.ndarray:
    """a (M, K) @ b (K, N) as float32, into ``out`` (C-contiguous, (M, N)) when given; on the calling
    thread alone with ``single`` (callers that run several GEMMs side by side), else on every core.

    Operands onnxruntime cannot read in place (a strided block of a matrix) go to numpy, whose
    BLAS reads them where they lie, unless ``single`` asks for one thread: then they are copied.
    onnxruntime reads a weight that lies unaligned in a mapped model file in place; numpy's BLAS
    cannot (numpy falls back to a loop twenty times slower), so numpy gets an aligned copy of one.

    ``as_onnxruntime`` runs every product, however small, on onnxruntime's kernel: each output is then
    the same float32 sum, bit for bit, as onnxruntime's MatMul, Gemm (without C) or Conv computes
    for the model. Its summation order differs from numpy's BLAS (the sums differ in their last bits),
    and a quantized model's QuantizeLinear after the product turns such a difference, where it
    straddles a rounding boundary, into a whole step of its codes, which the layers after it carry on.
    ``c`` (N,) float32, with ``as_onnxruntime``, is added as a Gemm adds its C: first, each sum starting
    from it (a sum over more than one of the kernel's blocks of K then differs from adding it last).
    ``trans_b``, with ``as_onnxruntime``, says whether the model's op reads b as its transpose (Gemm's
    transB): a product of a single row or column then reads b in that layout, because onnxruntime
    multiplies those with a kernel of their own for each layout, which sums in its own order.
    ``packed``, with ``as_onnxruntime``: b is a weight the model holds as an initializer, which onnxruntime
    packs (:func:`_packed_session`; then neither the layout nor a single row matters).
    """
    m, k = a.shape
    n = b.shape[1]
    ops = _operand(a), _operand(b)
    empty = m == 0 or n == 0 or k == 0
    if empty or (2.0 * m * n * k < _MIN_FLOPS and not as_onnxruntime):
        y = np.matmul(a, b, out=out, dtype=np.float32)
        if c is not None:
            y += c
        return y
    if None in ops and not single and not as_onnxruntime:
        return np.matmul(_aligned(a), _aligned(b), out=out, dtype=np.float32)
    (a_op, trans_a), (b_op, b_transposed) = (op or (np.ascontiguousarray(x, dtype=np.float32), False)
                                             for op, x in zip(ops, (a, b)))
    if as_onnxruntime and trans_b is not None and trans_b != b_transposed and (m == 1 or n == 1):
        b_op, b_transposed = np.ascontiguousarray(b.T if trans_b else b, dtype=np.float32), trans_b
    if out is None or not out.flags.c_contiguous:
        out = np.empty((m, n), np.float32)
    if as_onnxruntime and packed:
        sess = _packed_session(trans_a, b_op, b_transposed, c is not None)
    else:
        sess = _session(trans_a, b_transposed, single, c is not None)
    binding = sess.io_binding()
    binding.bind_cpu_input("a", a_op)
    if not (as_onnxruntime and packed):
        binding.bind_cpu_input("b", b_op)
    if c is not None:
        binding.bind_cpu_input("c", np.ascontiguousarray(c, dtype=np.float32))
    binding.bind_output("y", "cpu", 0, np.float32, [m, n], out.ctypes.data)
    sess.run_with_iobinding(binding)
    return out


def follows_model(layer) -> bool:
    """Whether an ideal-mode layer computes its products as onnxruntime computes the model's own op, bit for
    bit (``matmul``'s ``as_onnxruntime``): a float product of a quantized model, whose QuantizeLinear after
    it would round some of numpy's last bits differently (``model_op``: a layer of a model that holds a
    QuantizeLinear, whether or not it keeps the model's scales on the target). A MatMulInteger's or
    ConvInteger's product is not one: its sums are integers, exact in float32 whatever their order while
    they stay below 2^24, so it runs on every core."""
    return layer.model_op is not None


def ideal_product(layer):
    """The float32 GEMM of an ideal-mode Linear layer, ``f(x, wt, out=None, c=None)``: :func:`matmul`, so a
    large product runs on onnxruntime's kernel on every core. numpy's OpenBLAS was as fast on an AVX2
    machine, but picks its AVX2 kernels on an AVX-512 one where onnxruntime's MLAS uses AVX-512 (ideal mode,
    batch 64: the 784-4096x4-10 MLP 34 -> 22 ms, the transformer block 290 -> 200 ms), spins a core after
    each product, and is twenty times slower on a weight unaligned in a mapped model file. A layer that
    :func:`follows_model` runs on one thread, as ``run``'s reference session does (threads that split a
    narrow output change the kernel's blocks of K), reading its weight as the model's op does (packed
    once, when the model holds it as an initializer)."""
    if follows_model(layer):
        op = layer.model_op or {}
        return partial(matmul, as_onnxruntime=True, single=True, trans_b=op.get("trans_b"),
                       packed=op.get("packed", False))
    return matmul


def bias_first(layer) -> bool:
    """Whether an ideal-mode layer adds its bias (``c``) before its products, as the quantized model's own
    Gemm adds its C: Linear layers of one group only, the form a Gemm becomes."""
    return bool((layer.model_op or {}).get("bias_first")) and layer.op_type == "Linear" and layer.groups == 1
