"""The check report's vocabulary and its hand-written JSON Schema (draft 2020-12).

Verdict names, reason categories and figure keys are defined here once; the
verdict code fills the report with them and the tests validate every JSON
output against :data:`CHECK_JSON_SCHEMA`.
"""

from __future__ import annotations

from ..errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_UNMAPPABLE

SCHEMA_VERSION = 1
COMPATIBLE = "compatible"
FALLBACK = "compatible with digital fallback"
INCOMPATIBLE = "incompatible"
ERROR = "error"
VERDICTS = (COMPATIBLE, FALLBACK, INCOMPATIBLE, ERROR)

REASON_CATEGORIES = ("unsupported_op", "unsupported_attribute", "dynamic_weights", "unknown_shape", "unsupported_input",
                     "unsupported", "too_many_chips", "low_analog_fraction")
FIGURE_KEYS = ("analog_mac_fraction", "macs", "weights", "crossbars", "tiles", "chips", "utilisation",
               "energy_per_inference_pj", "latency_ns")
PATH_LIMIT = 1000   # longest model or target name shown in the report

_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}

CHECK_JSON_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "acompile check result",
    "type": "object",
    "required": ["schema_version", "tool", "version", "passed", "exit_code", "settings", "summary",
                 "results", "elapsed_s"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "tool": {"const": "acompile check"},
        "version": {"type": "string"},
        "passed": {"type": "boolean"},
        "exit_code": {"type": "integer", "enum": [EXIT_OK, EXIT_UNMAPPABLE, EXIT_BAD_INPUT, EXIT_INTERNAL]},
        "elapsed_s": {"type": "number", "minimum": 0},
        "settings": {
            "type": "object",
            "required": ["targets", "max_chips", "min_analog_fraction", "digital_ok"],
            "additionalProperties": False,
            "properties": {
                "targets": {"type": "array", "items": {"type": "string"}},
                "max_chips": {"type": ["integer", "null"], "minimum": 0},
                "min_analog_fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "digital_ok": {"type": "array", "items": {"type": "string"}},
                "overrides": {"type": "object"},
            },
        },
        "summary": {
            "type": "object",
            "required": ["pairs", "models", "compatible", "compatible_with_fallback", "incompatible", "error"],
            "additionalProperties": False,
            "properties": {k: {"type": "integer", "minimum": 0} for k in
                           ("pairs", "models", "compatible", "compatible_with_fallback", "incompatible", "error")},
        },
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["model", "target", "verdict", "reasons", "figures", "figures_estimated",
                             "digital_ops", "fallback_ops", "error"],
                "additionalProperties": False,
                "properties": {
                    "model": {"type": "string"},
                    "target": {"type": "string"},
                    "verdict": {"enum": list(VERDICTS)},
                    "reasons": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["category", "node", "op_type", "domain", "opset", "message"],
                            "additionalProperties": False,
                            "properties": {
                                "category": {"enum": list(REASON_CATEGORIES)},
                                "node": _STR_OR_NULL,
                                "op_type": _STR_OR_NULL,
                                "domain": {"type": "string"},
                                "opset": _INT_OR_NULL,
                                "message": {"type": "string"},
                            },
                        },
                    },
                    "figures": {
                        "type": ["object", "null"],
                        "required": list(FIGURE_KEYS),
                        "additionalProperties": False,
                        "properties": {k: (_INT_OR_NULL if k in ("macs", "weights", "crossbars", "tiles", "chips")
                                           else _NUM_OR_NULL) for k in FIGURE_KEYS},
                    },
                    "figures_estimated": {"type": "boolean"},
                    "digital_ops": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
                    "fallback_ops": {"type": "array", "items": {"type": "string"}},
                    "error": {
                        "type": ["object", "null"],
                        "required": ["code", "exit_code", "message"],
                        "additionalProperties": False,
                        "properties": {"code": {"type": "string"}, "exit_code": {"type": "integer"},
                                       "message": {"type": "string"}},
                    },
                },
            },
        },
    },
}
