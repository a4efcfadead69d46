"""Deterministic JSON: the one place that turns acompile's data (numpy values included) into JSON text.

Keys are sorted and NaN/infinity are refused, so the same data always gives the
same bytes; :func:`json_safe` spells non-finite floats as strings first where a
document may legitimately hold them (simulation error figures).
"""

from __future__ import annotations

import json
import math

import numpy as np


def dumps_json(obj) -> str:
    """Deterministic JSON: sorted keys, floats rounded to a stable repr, numpy scalars converted."""
    return json.dumps(obj, sort_keys=True, indent=2, default=json_default, allow_nan=False) + "\n"


def dumps_lines(obj, depth: int = 2) -> str:
    """The same document (sorted keys, numpy values converted, NaN refused) indented to ``depth`` levels, each
    value below them on one line: a program's every constant, op and layer a line of its own.

    ``json`` indents in Python, value by value; every line here is written by its C encoder, which makes
    a program.json of tens of thousands of per-channel scales in half the time.
    """
    return _lines(obj, depth, "") + "\n"


def _lines(obj, depth: int, pad: str) -> str:
    if depth == 0 or not isinstance(obj, (dict, list)) or not obj:
        return _one_line(obj)
    inner = pad + "  "
    if isinstance(obj, dict):
        rows = [f"{inner}{_one_line(_key(k))}: {_lines(v, depth - 1, inner)}" for k, v in sorted(obj.items())]
        return "{\n" + ",\n".join(rows) + "\n" + pad + "}"
    return "[\n" + ",\n".join([inner + _lines(v, depth - 1, inner) for v in obj]) + "\n" + pad + "]"


def _key(k) -> str:
    """A key as JSON spells it (json writes a number, true, false or null key as a string)."""
    return k if isinstance(k, str) else next(iter(json.loads(json.dumps({k: 0}))))


def json_default(o):
    """numpy scalars and arrays, sets: as plain JSON values (``json.dumps(default=...)``)."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


_ONE_LINE = json.JSONEncoder(sort_keys=True, separators=(", ", ": "), default=json_default, allow_nan=False)
# json's C encoder for those lines, made once: JSONEncoder.encode makes one for every value it is given (about
# 1 µs a line: an unrolled LSTM's 18,000-line program.json 114 -> 105 ms). Without the check for circular
# references (markers None), which would share one dict between threads; acompile's documents have none.
_ONE_LINE_C = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, json_default, json.encoder.encode_basestring_ascii, None, ": ", ", ", True, False, False)


def _one_line(obj) -> str:
    """``_ONE_LINE.encode(obj)``."""
    return "".join(_ONE_LINE_C(obj, 0)) if _ONE_LINE_C else _ONE_LINE.encode(obj)


def json_safe(obj):
    """``obj`` with every non-finite float as its string ("inf", "nan"), which strict JSON can hold."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
