"""Analog crossbar numerics, pure numpy (docs/analog.md is the specification).

spec (AnalogSpec), quantise, dac (bit-serial inputs), encoding (weights to cell levels),
noise (non-idealities), adc, and product (what either executor of a layer's
matrix-vector product checks and needs). The executors themselves live in acompile.sim.
"""

from ..lazy import exports
from .folded import folded_integers, integer_form, release_folded
from .quantise import input_scale, quantize_inputs, quantize_weights, quantize_with_scales, scaled, weight_scales
from .spec import SIGNED_WEIGHT_SCHEMES, AnalogSpec

# what check never reads loads on first use
__getattr__ = exports(__name__, {"adc_step": "adc", "cycle_weights": "dac", "input_chunks": "dac",
                                 "Encoded": "encoding", "EncodedWeights": "encoding", "decode_weights": "encoding",
                                 "encode_weights": "encoding", "NoiseSpec": "noise", "program_cells": "noise"})

__all__ = [
    "SIGNED_WEIGHT_SCHEMES", "AnalogSpec", "quantize_weights", "weight_scales", "quantize_with_scales",
    "input_scale", "quantize_inputs", "integer_form", "folded_integers", "release_folded", "scaled", "cycle_weights",
    "input_chunks", "EncodedWeights", "Encoded",
    "encode_weights", "decode_weights", "NoiseSpec", "program_cells", "adc_step",
]
