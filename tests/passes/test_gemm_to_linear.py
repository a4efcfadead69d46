"""gemm_to_linear: Gemm and MatMul with a constant operand, and a dense-layer Einsum, become acompile.Linear."""

import numpy as np
import pytest
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



@pytest.mark.parametrize("equation,x_shape,w_shape,w_first", [
    ("abc,cd->abd", (2, 5, 6), (6, 4), False),          # Keras EinsumDense
    ("abcd,cde->abe", (2, 5, 3, 4), (3, 4, 7), False),  # an attention output projection over (heads, head)
    ("abc,cde->abde", (2, 5, 6), (6, 3, 4), False),     # a query projection into (heads, head)
    ("abc,dc->adb", (2, 5, 6), (3, 6), False),          # transposed weight and output
    ("jk,bij->bik", (2, 3, 4), (4, 5), True),           # the constant first
    ("...i,ik->...k", (2, 3, 6), (6, 5), False),        # an ellipsis over x's leading axes
    ("bij,jk", (2, 3, 4), (4, 5), False),               # the implicit output, bik
])
def test_an_einsum_that_is_a_dense_layer_becomes_one(equation, x_shape, w_shape, w_first):
    w = weights()
    inputs = ["w", "x"] if w_first else ["x", "w"]
    operands = (w_shape, x_shape) if w_first else (x_shape, w_shape)
    y_shape = np.einsum(equation, *(np.zeros(s) for s in operands)).shape
    model = tiny_model([helper.make_node("Einsum", inputs, ["y"], equation=equation)],
                       [("x", x_shape)], [("y", y_shape)], {"w": w(*w_shape)})
    g = check_pass(model, gemm_to_linear).graph        # onnxruntime agrees before and after
    assert "Einsum" not in {n.op_type for n in g.nodes}
    (linear,) = [n for n in g.nodes if is_linear(n)]
    assert linear.meta["origin"] == "Einsum"


@pytest.mark.parametrize("equation,x_shape,w_shape,y_shape", [
    ("bij,bjk->bik", (2, 3, 4), (2, 4, 5), (2, 3, 5)),                  # a batch axis in both operands
    ("bhid,hdk->bhik", (2, 3, 5, 4), (3, 4, 6), (2, 3, 5, 6)),          # per-head weights
    ("bihd,hdk->bkhi", (2, 5, 3, 4), (3, 4, 6), (2, 6, 3, 5)),          # ... in other orders
    ("bghid,ghdk->bghik", (1, 2, 3, 5, 4), (2, 3, 4, 6), (1, 2, 3, 5, 6)),   # two shared axes
])
def test_an_einsum_by_a_batch_of_matrices_is_a_layer_per_matrix(equation, x_shape, w_shape, y_shape):
    w = weights()
    model = tiny_model([helper.make_node("Einsum", ["x", "w"], ["y"], equation=equation)],
                       [("x", x_shape)], [("y", y_shape)], {"w": w(*w_shape)})
    g = check_pass(model, gemm_to_linear).graph        # onnxruntime agrees before and after
    assert "Einsum" not in {n.op_type for n in g.nodes}
    shared = [c for c in equation.split(",")[0] if c in equation.split(",")[1].split("->")[0]
              and c in equation.split("->")[1]]
    count = int(np.prod([w_shape[equation.split(",")[1].index(c)] for c in shared]))
    assert sum(is_linear(n) for n in g.nodes) == count


@pytest.mark.parametrize("equation,x_shape,w_shape", [
    ("ij,jk->k", (3, 4), (4, 5)),               # x's other axis summed away
    ("ii,ij->j", (4, 4), (4, 5)),               # a diagonal
    ("bij,bjk->bk", (2, 3, 4), (2, 4, 5)),      # a batch of matrices, x's other axis summed away
])
def test_an_einsum_that_is_not_a_dense_layer_stays_digital(equation, x_shape, w_shape):
    w = weights()
    y_shape = {"bij,bjk->bk": (2, 5), "ij,jk->k": (5,), "ii,ij->j": (5,)}[equation]
    model = tiny_model([helper.make_node("Einsum", ["x", "w"], ["y"], equation=equation)],
                       [("x", x_shape)], [("y", y_shape)], {"w": w(*w_shape)})
    g = check_pass(model, gemm_to_linear).graph
    assert [n.op_type for n in g.nodes] == ["Einsum"]


@pytest.mark.parametrize("x_shape,w_shape", [
    ((2, 3, 5, 4), (3, 4, 6)),          # per-head weights [H, K, N] on [B, H, T, K]
    ((3, 5, 4), (3, 4, 6)),             # no axis before the heads
    ((2, 2, 3, 5, 4), (2, 3, 4, 6)),    # two batch axes
])
def test_a_matmul_by_a_batch_of_matrices_is_a_layer_per_matrix(x_shape, w_shape):
    w = weights()
    y_shape = x_shape[:-1] + w_shape[-1:]
    model = tiny_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", x_shape)], [("y", y_shape)],
                       {"w": w(*w_shape)})
    g = check_pass(model, gemm_to_linear).graph        # onnxruntime agrees before and after
    assert "MatMul" not in {n.op_type for n in g.nodes}
    assert sum(is_linear(n) for n in g.nodes) == int(np.prod(w_shape[:-2]))


@pytest.mark.parametrize("w_shape", [(3, 4, 6), (2, 3, 4, 6)])
def test_a_matrix_against_every_matrix_of_a_batch_is_one_layer(w_shape):
    """x [T, K] against every matrix of W [H, K, N]: one layer holding all of W's columns."""
    w = weights()
    model = tiny_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (5, 4))],
                       [("y", w_shape[:-2] + (5, 6))], {"w": w(*w_shape)})
    g = check_pass(model, gemm_to_linear).graph
    assert sum(is_linear(n) for n in g.nodes) == 1 and "MatMul" not in {n.op_type for n in g.nodes}


def test_a_matmul_whose_batch_broadcasts_stays_digital():
    """x [B, T, K] against W [H, K, N], B and H different: no slice of x per matrix."""
    w = weights()
    model = tiny_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (1, 5, 4))], [("y", (3, 5, 6))],
                       {"w": w(3, 4, 6)})
    assert [n.op_type for n in check_pass(model, gemm_to_linear).graph.nodes] == ["MatMul"]


@pytest.mark.parametrize("x_shape,w_shape,y_shape", [((4,), (4, 6), (6,)), ((2, 5, 4), (4,), (2, 5))])
def test_a_matmul_with_a_vector_operand_is_a_layer(x_shape, w_shape, y_shape):
    w = weights()
    model = tiny_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", x_shape)], [("y", y_shape)],
                       {"w": w(*w_shape)})
    g = check_pass(model, gemm_to_linear).graph
    assert sum(is_linear(n) for n in g.nodes) == 1 and "MatMul" not in {n.op_type for n in g.nodes}


def test_per_head_weights_map_onto_crossbars_and_simulate_as_onnxruntime_runs_them():
    from helpers import compiled, ort_outputs, simulate
    w = weights()
    model = tiny_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (1, 4, 6, 8))],
                       [("y", (1, 4, 6, 5))], {"w": w(4, 8, 5)})
    comp = compiled(model)
    assert len(comp.mapping.layers) == 4
    x = w(1, 4, 6, 8)
    np.testing.assert_allclose(simulate(comp, {"x": x})[0], ort_outputs(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    (quantized,) = simulate(comp, {"x": x}, mode="quantized")
    assert quantized.shape == (1, 4, 6, 5) and np.isfinite(quantized).all()


@pytest.mark.parametrize("a_shape,b_shape,attrs,c_shape,digital", [
    ((24, 6), (8, 6), {"transB": 1, "beta": 0.0}, None, ["Transpose"]),    # hummingbird's GEMM trees: W·xᵀ
    ((24, 6), (6, 8), {}, None, ["Transpose", "Transpose"]),
    ((6, 24), (6, 8), {"transA": 1, "alpha": 0.5, "beta": 2.0}, (24, 1), ["Transpose", "Transpose"]),  # a bias
    ((24, 6), (8, 6), {"transB": 1, "beta": 0.5}, (24, 8), ["Transpose", "Mul", "Add"]),   # a full C: digital
    ((24, 6), (8, 6), {"transB": 1}, (8,), ["Transpose", "Add"]),       # ... and one along the data's vectors
])
def test_a_gemm_whose_constant_is_the_first_operand_is_a_layer(a_shape, b_shape, attrs, c_shape, digital):
    """Y = A'·B' with A constant: Yᵀ = B'ᵀ·A'ᵀ, a layer of A' over B'ᵀ's rows, then a Transpose back."""
    w = weights()
    consts = {"a": w(*a_shape)} | ({"c": w(*c_shape)} if c_shape else {})
    model = tiny_model([helper.make_node("Gemm", ["a", "x"] + (["c"] if c_shape else []), ["y"], **attrs)],
                       [("x", b_shape)], [("y", (24, 8))], consts)
    g = check_pass(model, gemm_to_linear).graph        # onnxruntime agrees before and after
    (linear,) = [n for n in g.nodes if is_linear(n)]
    assert linear.meta["origin"] == "Gemm" and g.constants[linear.inputs[1]].shape == (24, 6)
    assert [n.op_type for n in g.nodes if not is_linear(n)] == digital


@pytest.mark.parametrize("w_shape,x_shape,layers", [
    ((4, 7, 6), (4, 6, 8), 4),              # one matrix per tree, W [T, N, K] @ x [T, K, B]
    ((3, 7, 6), (2, 3, 6, 8), 3),           # x with an axis before the matrices
    ((2, 3, 7, 6), (2, 3, 6, 5), 6),        # two batch axes
    ((2, 3, 7, 6), (6, 5), 1),              # x against every matrix: one layer of all their rows
    ((2, 3, 7, 6), (3, 6, 5), 3),           # ... against those of one axis: a layer of the other's rows
    ((4, 1, 6), (4, 6, 8), 4),              # layers of one output
])
def test_a_matmul_by_a_constant_batch_of_matrices_first_is_a_layer_per_matrix(w_shape, x_shape, layers):
    w = weights()
    y_shape = np.matmul(np.zeros(w_shape), np.zeros(x_shape)).shape
    model = tiny_model([helper.make_node("MatMul", ["w", "x"], ["y"])], [("x", x_shape)], [("y", y_shape)],
                       {"w": w(*w_shape)})
    g = check_pass(model, gemm_to_linear).graph        # onnxruntime agrees before and after
    assert "MatMul" not in {n.op_type for n in g.nodes}
    assert sum(is_linear(n) for n in g.nodes) == layers


def test_a_constant_batch_first_that_broadcasts_stays_digital():
    """W [1, N, K] against x [T, K, B]: no matrix of W per slice of x."""
    w = weights()
    model = tiny_model([helper.make_node("MatMul", ["w", "x"], ["y"])], [("x", (4, 6, 8))], [("y", (4, 7, 8))],
                       {"w": w(1, 7, 6)})
    assert [n.op_type for n in check_pass(model, gemm_to_linear).graph.nodes] == ["MatMul"]


def test_gemm_trees_map_onto_crossbars_and_simulate_as_onnxruntime_runs_them_at_any_batch():
    """hummingbird's GEMM strategy: Gemm(W1, x, transB=1) [I, B], then W2 [T, N, K] @ the [T, K, B]
    decisions; the batch is dynamic and the last axis of the MatMul's data, which no layer may fix."""
    from helpers import compiled, ort_outputs, simulate
    w = weights()
    nodes = [helper.make_node("Gemm", ["w1", "x"], ["h"], transB=1, beta=0.0),
             helper.make_node("Reshape", ["h", "shape"], ["d"]),
             helper.make_node("MatMul", ["w2", "d"], ["y"])]
    model = tiny_model(nodes, [("x", ("B", 6))], [("y", (4, 7, "B"))],
                       {"w1": w(24, 6), "shape": np.array([4, 6, -1], np.int64), "w2": w(4, 7, 6)})
    comp = compiled(model)
    assert len(comp.mapping.layers) == 5
    for batch in (1, 5):
        x = w(batch, 6)
        (got,), (want,) = simulate(comp, {"x": x}), ort_outputs(model, {"x": x})
        assert got.shape == (4, 7, batch)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        (quantized,) = simulate(comp, {"x": x}, mode="quantized")
        assert quantized.shape == (4, 7, batch) and np.isfinite(quantized).all()
