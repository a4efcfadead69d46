"""The onnx package's own operator conformance cases, through compile + simulate (ideal mode).

Every case that maps onto crossbars (Conv, ConvTranspose, Gemm, MatMul with a bound weight)
must pass. Every other case of a supported operator must pass or be refused with one clean
error (docs/conformance.md lists those and why: exotic dtypes onnxruntime cannot run).
The default run takes the analog operators' cases and those of every tenth operator;
``-m slow`` runs all of them.
"""

import pytest

import conformance
from acompile.target import load_target

ANALOG_NAMES = ("test_conv", "test_basic_conv", "test_convtranspose", "test_gemm", "test_matmul_", "test_lstm_",
                "test_gru_", "test_simple_rnn_", "test_rnn_")
# onnxruntime (which runs the digital units) disagrees with the onnx reference on these
KNOWN_MISMATCHES = ("test_averagepool_2d_ceil_last_window", "test_cast_", "test_castlike_",
                    "test_resize_downsample_scales_", "test_training_dropout", "test_attention_4d_causal_fp16",
                    "test_attention_4d_with_past_and_present_qk_matmul_bias_")
SAMPLE_STRIDE = 10


def run(cases):
    target = load_target("isaac")
    return [(case, conformance.run_case(case, target)) for case in cases]


def is_analog(case, result) -> bool:
    return case.name.startswith(ANALOG_NAMES) or result.analog_layers > 0


def assert_clean(results) -> None:
    failed = [(c.name, r.detail) for c, r in results if is_analog(c, r) and r.status != "pass"]
    assert not failed
    mismatched = sorted(c.name for c, r in results if r.status == "mismatch")
    assert [n for n in mismatched if not n.startswith(KNOWN_MISMATCHES)] == []


@pytest.fixture(scope="module")
def results():
    return run(conformance.supported_cases())


def test_a_sample_of_cases_passes_or_fails_cleanly():
    """The analog operators' cases and those of every tenth operator: the default run's sample."""
    sample = run(conformance.sample_cases(SAMPLE_STRIDE))
    assert len(sample) >= 150
    assert sum(r.analog_layers > 0 for _, r in sample) >= 25, "the weights were bound and mapped"
    assert sum(r.status == "pass" for _, r in sample) >= 0.8 * len(sample)
    assert_clean(sample)


@pytest.mark.slow
def test_every_analog_case_passes(results):
    analog = [(c, r) for c, r in results if is_analog(c, r)]
    assert len(analog) >= 30
    assert_clean(analog)
    assert sum(r.analog_layers > 0 for _, r in analog) >= 25, "the weights were bound and mapped"


@pytest.mark.slow
def test_other_cases_pass_or_fail_cleanly(results):
    assert sum(r.status == "pass" for _, r in results) >= 900
    assert_clean(results)
