"""``acompile ops``: per ONNX operator, whether it runs on the crossbars (analog), on the digital
units, or both depending on its operands."""

from __future__ import annotations

import argparse
import json

from ..errors import EXIT_OK

# Ops the frontend passes turn into (or fold into) analog layers when their operands allow it.
_ANALOG_WHEN = {
    "Gemm": "with a constant weight operand: becomes acompile.Linear on crossbars",
    "MatMul": "with a constant weight operand: becomes acompile.Linear on crossbars",
    "BatchNormalization": "after a Conv/Gemm: folded into its weights and bias",
    "Mul": "per-channel constant after a Conv/Gemm: folded into its weights",
    "Div": "per-channel constant after a Conv/Gemm: folded into its weights",
    "Add": "per-channel constant after a Conv/Gemm: folded into its bias",
    "Sub": "per-channel constant after a Conv/Gemm: folded into its bias",
    "com.microsoft.FusedConv": "a Conv on crossbars, its sum and activation digital (ONNX operators)",
    "com.microsoft.FusedGemm": "a Gemm on crossbars, its activation digital (an ONNX operator)",
    "com.microsoft.FusedMatMul": "with a constant operand: a MatMul on crossbars (its transposes and scale digital)",
    "com.microsoft.DynamicQuantizeMatMul": "with constant weights: the model's integers on crossbars "
                                           "(as quantize_dynamic's MatMulInteger)",
    "com.microsoft.MatMulIntegerToFloat": "with constant weights: the model's integers on crossbars "
                                          "(as quantize_dynamic's MatMulInteger)",
    "com.microsoft.Attention": "with constant weights: its merged Q, K, V product on crossbars, the attention "
                               "a com.microsoft.MultiHeadAttention",
    "com.microsoft.QAttention": "with constant weights: its merged Q, K, V product on crossbars as a MatMulInteger's, "
                                "the attention a com.microsoft.MultiHeadAttention",
}


def rows() -> list[dict]:
    """One entry per operator name: analog (when), digital (how it is costed)."""
    from ..frontend.ops import supported_table
    table: dict[str, dict] = {}
    for op, kind, note in supported_table():
        entry = table.setdefault(op, {"op_type": op, "analog": "", "digital": ""})
        entry[kind] = note
    for op, when in _ANALOG_WHEN.items():
        if op in table:
            table[op]["analog"] = when
    return [table[k] for k in sorted(table)]


def run(args) -> int:
    entries = rows()
    if args.format == "json":
        print(json.dumps(entries, indent=2))
    else:
        width = max(len(e["op_type"]) for e in entries) + 1
        print(f"{'op':<{width}} {'analog':<7} {'digital':<8} notes")
        for e in entries:
            notes = "; ".join(f"{k}: {e[k]}" for k in ("analog", "digital") if e[k])
            analog, digital = ("yes" if e[k] else "-" for k in ("analog", "digital"))
            print(f"{e['op_type']:<{width}} {analog:<7} {digital:<8} {notes}")
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """``acompile ops`` takes only the common options."""
    p.set_defaults(func=run)
