"""gemm_to_linear: Gemm and MatMul with a constant 2-D operand become acompile.Linear."""

import numpy as np
from onnx import helper

from acompile.ir import is_linear
from acompile.passes.gemm_to_linear import gemm_to_linear
from frontend_passes import check_pass, tiny_model, weights


def test_gemm_variants_become_linear_layers():
    w = weights()
    model = tiny_model(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1, alpha=0.5, beta=2.0),
         helper.make_node("Gemm", ["h1", "w2", "c2"], ["h2"], transA=1, beta=0.5),   # h1ᵀ [5, 2] @ w2
         helper.make_node("Gemm", ["h2", "w3"], ["y"])],
        [("x", (2, 4))], [("y", (5, 3))],
        {"w1": w(5, 4), "b1": w(5), "w2": w(2, 5), "c2": w(5, 5), "w3": w(5, 3)})
    g = check_pass(model, gemm_to_linear).graph
    assert "Gemm" not in {n.op_type for n in g.nodes}
    assert sum(is_linear(n) for n in g.nodes) == 3
    # a full-matrix C is not a bias: it stays a (beta-scaled) digital Add
    assert [n.op_type for n in g.nodes if not is_linear(n)] == ["Transpose", "Mul", "Add"]


def test_matmul_with_a_constant_operand_either_side():
    w = weights()
    model = tiny_model(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]),
         helper.make_node("MatMul", ["w2", "h"], ["y"])],
        [("x", (2, 3, 4))], [("y", (2, 5, 6))], {"w1": w(4, 6), "w2": w(5, 3)})
    g = check_pass(model, gemm_to_linear).graph
    assert [n.op_type for n in g.nodes] == ["Linear", "Transpose", "Linear", "Transpose"]


def test_matmul_of_two_dynamic_tensors_stays_digital():
    model = tiny_model([helper.make_node("MatMul", ["a", "b"], ["y"])], [("a", (2, 3)), ("b", (3, 4))],
                       [("y", (2, 4))])
    g = check_pass(model, gemm_to_linear).graph
    assert [n.op_type for n in g.nodes] == ["MatMul"]
    np.testing.assert_equal(len(g.constants), 0)


def test_linear_weights_are_contiguous_float32_copies_in_the_right_order():
    """MatMul's [K, N] weight becomes Linear's [N, K] through the blocked transpose (sizes that leave
    a partial block, float64 sources): the same values as numpy's own transposed copy."""
    from acompile.passes._rewrite import contiguous_float32
    rng = np.random.default_rng(0)
    for shape, dtype in (((130, 70), np.float32), ((64, 3), np.float64), ((1, 200), np.float32)):
        source = rng.standard_normal(shape).astype(dtype)
        for view in (source, source.T, source[::2]):
            got = contiguous_float32(view)
            assert got.flags.c_contiguous and got.dtype == np.float32
            assert np.array_equal(got, np.ascontiguousarray(view, dtype=np.float32))
    w = rng.standard_normal((4, 3)).astype(np.float32)
    assert contiguous_float32(w) is w     # already contiguous float32: no copy
