"""Analog crossbar numerics, pure numpy (docs/analog.md is the specification).

spec (AnalogSpec), quantise, dac (bit-serial inputs), encoding (weights to cell levels),
noise (non-idealities), adc, and product (what either executor of a layer's
matrix-vector product checks and needs). The executors themselves live in acompile.sim.
"""

from .adc import adc_step
from .dac import cycle_weights, input_chunks
from .encoding import Encoded, EncodedWeights, decode_weights, encode_weights
from .noise import NoiseSpec, program_cells
from .quantise import input_scale, quantize_inputs, quantize_weights, quantize_with_scales, weight_scales
from .spec import SIGNED_WEIGHT_SCHEMES, AnalogSpec

__all__ = [
    "SIGNED_WEIGHT_SCHEMES", "AnalogSpec", "quantize_weights", "weight_scales", "quantize_with_scales",
    "input_scale", "quantize_inputs", "cycle_weights", "input_chunks", "EncodedWeights", "Encoded",
    "encode_weights", "decode_weights", "NoiseSpec", "program_cells", "adc_step",
]
