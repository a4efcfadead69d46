"""A deterministic TOML writer (``targets show --resolved``): nested tables, arrays, arrays of tables.

The standard library reads TOML but does not write it; this writes what a
resolved target contains, and round-trips through tomllib.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot write a {type(value).__name__} as TOML")


def _is_table_array(value: object) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, Mapping) for v in value)


def dumps_toml(data: Mapping, *, sort_keys: bool = True) -> str:
    """Deterministic TOML text for nested dicts, arrays and arrays of tables.

    Scalars come before sub-tables within a table; keys are sorted unless
    ``sort_keys`` is False (then insertion order, e.g. schema order, is kept).
    """
    lines: list[str] = []
    _emit_table(data, [], lines, sort_keys, header="")
    return "\n".join(lines).lstrip("\n") + "\n"


def _emit_table(table: Mapping, path: list[str], lines: list[str], sort_keys: bool, header: str) -> None:
    keys = sorted(table) if sort_keys else list(table)
    scalars = [k for k in keys if not isinstance(table[k], Mapping) and not _is_table_array(table[k])]
    tables = [k for k in keys if isinstance(table[k], Mapping)]
    arrays = [k for k in keys if _is_table_array(table[k])]
    if header or (path and (scalars or not (tables or arrays))):
        lines += ["", header or "[" + ".".join(_toml_key(p) for p in path) + "]"]
    lines += [f"{_toml_key(k)} = {_toml_value(table[k])}" for k in scalars]
    for k in tables:
        _emit_table(table[k], path + [k], lines, sort_keys, header="")
    for k in arrays:
        name = ".".join(_toml_key(p) for p in path + [k])
        for item in table[k]:
            _emit_table(item, path + [k], lines, sort_keys, header=f"[[{name}]]")
