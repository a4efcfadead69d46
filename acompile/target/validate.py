"""Checking one file's values against the field table: types, ranges, choices, unknown keys, version.

Each fault becomes a :class:`~acompile.target.problems.Problem` on the file,
with a did-you-mean hint where one helps. Rules between fields live in
:mod:`.resolve`, since they need the merged target.
"""

from __future__ import annotations

import difflib
import math
import re

from acompile.errors import clean

from .problems import describe, fmt, join
from .read import TargetFile
from .schema import NAME_PATTERN, SCHEMA_VERSION, Field, leaf_paths, table_paths

NAME_RE = re.compile(NAME_PATTERN)


def _type_ok(spec: Field, value: object) -> bool:
    if spec.kind == "bool":
        return isinstance(value, bool)
    if spec.kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec.kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def value_problem(spec: Field, value: object) -> tuple[str, str] | None:
    """(message, hint) when the value does not fit the field, else None."""
    expected = spec.expected()
    if not _type_ok(spec, value):
        hint = ""
        if spec.kind == "int" and isinstance(value, float) and value.is_integer():
            hint = f"write {int(value)} without the decimal point"
        elif spec.kind in ("int", "float") and isinstance(value, str):
            hint = "write the number without quotes"
        elif spec.kind == "bool" and isinstance(value, str):
            hint = "write true or false without quotes"
        return f"expected {expected}, found {describe(value)}", hint
    if spec.kind == "float" and not math.isfinite(value):
        return f"expected a finite number {spec.range_text()}, found {fmt(value)}", ""
    if spec.kind in ("int", "float") and not spec.in_range(value):
        return f"expected {expected}, found {fmt(value)}", ""
    if spec.kind == "enum" and value not in spec.choices:
        close = difflib.get_close_matches(value.lower(), spec.choices, n=1, cutoff=0.5)
        return f"expected {expected}, found {fmt(value)}", (f"did you mean '{close[0]}'?" if close else "")
    if spec.kind == "str" and len(value) > spec.max_len:
        return f"expected {expected}, found a string of {len(value)} characters", ""
    return None


def value_ok(spec: Field, value: object) -> bool:
    return value_problem(spec, value) is None


def _unknown_hint(key: str, node: dict, prefix: str) -> str:
    """Did-you-mean for an unknown key: a close sibling, or the same key elsewhere."""
    siblings = [k for k in node if k != "*"]
    close = difflib.get_close_matches(key.lower(), siblings, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{join(prefix, close[0])}'?"
    elsewhere = [p for p in [*leaf_paths(), *table_paths()]
                 if p.rsplit(".", 1)[-1] == key.lower() and "*" not in p]
    if elsewhere:
        return f"did you mean '{elsewhere[0]}'?"
    full = difflib.get_close_matches(join(prefix, key).lower(), [p for p in leaf_paths() if "*" not in p],
                                     n=1, cutoff=0.75)
    if full:
        return f"did you mean '{full[0]}'?"
    if "*" in node:
        return ""
    return "known here: " + ", ".join(siblings)


def check_table(raw: dict, node: dict, prefix: str, f: TargetFile) -> None:
    """Record unknown keys and ill-typed or out-of-range values, however deep."""
    for key, value in raw.items():
        path = join(prefix, key)
        spec = node.get(key)
        if spec is None and "*" in node:
            if not NAME_RE.match(key):
                f.add(path, f"'{clean(key, 80)}' is not a usable name",
                      "start with a letter; letters, digits, _ and - only; at most 64 characters")
                continue
            spec = node["*"]
        if spec is None:
            f.add(path, "unknown field", _unknown_hint(key, node, prefix))
        elif isinstance(spec, Field):
            problem = value_problem(spec, value)
            if problem:
                f.add(path, *problem)
        elif not isinstance(value, dict):
            f.add(path, f"expected a table [{path}], found {describe(value)}")
        else:
            check_table(value, spec, path, f)


def check_version(raw: dict, f: TargetFile) -> bool:
    """False when the file declares a schema version this code cannot read."""
    version = raw.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        f.add("schema_version", f"version {version} is not supported (this acompile reads version "
              f"{SCHEMA_VERSION})", "upgrade acompile, or write the file for version 1")
        return False
    return True
