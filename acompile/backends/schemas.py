"""The fields of program.json and of a device file's header, with their types and ranges.

Checked (by :func:`acompile.safe_read.check_schema`) before either is used, so a
damaged or edited file is an exit-2 error that names the field, never an internal error.
"""

from __future__ import annotations

from ..hardware import INPUT_ENCODINGS
from ..numerics.spec import SIGNED_WEIGHT_SCHEMES
from ..data_schema import Any, Either, Int, Map, Num, OneOf, Opt, Seq

RECOMPILE = "compile the model again with this acompile"   # the hint of a file of another format version
COUNT = Int(0, 2**31)          # indices, counts, bit widths' neighbours: fit an int32
SIZE = Int(0, 2**40)           # element and byte counts
POSITIVE = Int(1, 2**31)
DIM = Either(Int(0, 2**40), str)
SHAPE = Opt(Seq(Opt(DIM), max_len=64))

SPEC = {"weight_bits": Int(2, 24), "input_bits": Int(1, 24), "dac_bits": Int(1, 16), "cell_bits": Int(1, 8),
        "adc_bits": Int(1, 24), "rows": Int(1, 1 << 20), "signed_weights": OneOf(*SIGNED_WEIGHT_SCHEMES),
        "input_encoding?": OneOf(*INPUT_ENCODINGS),
        "offset_subtraction?": OneOf("digital", "analog", "input_sum")}
MATRIX = {"group": COUNT, "n_out": POSITIVE, "k_in": POSITIVE, "physical_cols": POSITIVE,
          "row_blocks": POSITIVE, "col_blocks": POSITIVE}
GEOMETRY = {"input_shape": Seq(SIZE, max_len=64), "output_shape?": Seq(SIZE, max_len=64),
            "kernel?": Seq(POSITIVE, max_len=8), "strides?": Seq(POSITIVE, max_len=8),
            # a ConvTranspose whose output_shape asks for more than its full output has negative pads
            "dilations?": Seq(POSITIVE, max_len=8), "pads?": Seq(Int(-2**31, 2**31), max_len=16),
            "output_padding?": Seq(COUNT, max_len=8)}
LAYER = {"index": COUNT, "name": str, "op_type": OneOf("Conv", "ConvTranspose", "Linear"), "weight": str,
         "bias": str, "groups": POSITIVE, "matrices": Seq(MATRIX, min_len=1), "n_vec": SIZE,
         "in_channels": POSITIVE, "out_channels": POSITIVE, "geometry": GEOMETRY, "spec": SPEC,
         "input_signed": bool, "input_range": Num(), "input_scale": Num(), "adc_full_scale": Num(),
         "replication": POSITIVE, "uses?": POSITIVE}
TENSOR = {"name": str, "dtype": Opt(str), "shape": SHAPE}
OP = {"name": str, "op": str, "domain": str, "opset": Int(1, 1000), "inputs": Seq(str, max_len=1 << 16),
      "outputs": Seq(str, min_len=1, max_len=1 << 16), "kind?": str, "chain?": str, "layer?": COUNT,
      "attrs": Map(Any()), "attr_types?": Map(Int(0, 100)), "shape?": SHAPE,
      "outer?": Seq(str, max_len=1 << 16), "opsets?": Map(Int(0, 100000))}
PROGRAM = {"format": OneOf("acompile-program"), "version": Int(3, 3), "target": str, "batch": POSITIVE,
           "opset": Int(1, 1000), "seed?": Int(0, 2**63 - 1), "dynamic_batch?": bool, "model?": str, "inputs": Seq(TENSOR),
           "outputs": Seq(TENSOR, min_len=1), "constants_index_sha256": str, "target_sha256?": str,
           "constants": Map({"entry": str, "dtype": str, "shape": Seq(SIZE, max_len=64),
                             "scales?": {"entry": str, "axis": Int(0, 63)}}),
           "layers": Seq(LAYER), "ops": Seq(OP, min_len=1)}

DEVICE_LAYER = {"index": COUNT, "name": str, "op_type": str, "spec": SPEC,
                "matrices": Seq(MATRIX, min_len=1),
                "dac": {"input_scale": Num()}, "adc": {"full_scale": Num()}}
HEADER = {"format": OneOf("acompile-device"), "version": Int(3, 3), "target": str, "program_sha256": str,
          "levels_bytes": SIZE, "levels_crc32": Int(0, 0xFFFFFFFF), "flip_marks_sha256?": str, "tiles_used": COUNT,
          "chips_needed": COUNT,
          "geometry": {"rows": POSITIVE, "cols": POSITIVE, "crossbars_per_core": POSITIVE,
                       "cores_per_tile": POSITIVE, "tiles_per_chip": POSITIVE},
          "layers": Seq(DEVICE_LAYER), "block_columns": Seq(str), "crossbar_columns": Seq(str)}
