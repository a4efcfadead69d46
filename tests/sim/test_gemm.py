"""gemm.matmul: every operand layout it takes gives the float32 product."""

import numpy as np
import pytest

from acompile.sim.gemm import matmul


def unaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` one byte off its element alignment, as a weight can lie in a mapped
    model file."""
    raw = np.empty(a.nbytes + 1, np.uint8)
    out = raw[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


LAYOUTS = {     # the weight (K, N) as a view of the array held
    "contiguous": (lambda w: w, lambda held: held),
    "transposed": (lambda w: np.ascontiguousarray(w.T), lambda held: held.T),
    "strided": (lambda w: np.repeat(w, 2, axis=1), lambda held: held[:, ::2]),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("single", [False, True])
def test_an_unaligned_weight_gives_the_aligned_product(layout, single):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 300), dtype=np.float32)
    w = rng.standard_normal((300, 260), dtype=np.float32)
    hold, view = LAYOUTS[layout]
    aligned, off = hold(w), unaligned(hold(w))
    got = matmul(x, view(off), single=single)
    np.testing.assert_allclose(got, x.astype(np.float64) @ w.astype(np.float64), rtol=1e-4, atol=1e-4)
    if layout != "strided":     # the same kernel either way: the same bits
        assert np.array_equal(got, matmul(x, view(aligned), single=single))


def test_packed_weights_are_held_within_their_budget(monkeypatch):
    """Sessions that hold a model's initializer weight (packed by onnxruntime) are kept within a byte budget,
    oldest first, and each still multiplies by its own weight."""
    from acompile.sim import gemm
    monkeypatch.setattr(gemm, "_PACKED", {})
    monkeypatch.setattr(gemm, "_MAX_PACKED_BYTES", 2 * 64 * 96 * 4)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 64)).astype(np.float32)
    weights = [rng.standard_normal((96, 64)).astype(np.float32) for _ in range(4)]
    for w in weights:
        y = matmul(a, w.T, as_onnxruntime=True, single=True, packed=True)
        np.testing.assert_allclose(y, a @ w.T, rtol=1e-5, atol=1e-5)
        assert sum(held.nbytes for _, held in gemm._PACKED.values()) <= gemm._MAX_PACKED_BYTES
    assert len(gemm._PACKED) == 2
    assert all(np.shares_memory(held, w) for (_, held), w in zip(gemm._PACKED.values(), weights[2:]))
