"""The JSON Schema (draft 2020-12) of a target file, derived from the field table.

``acompile targets schema`` prints it and ``targets/schema.json`` holds a copy
(scripts/gen_target_docs.py writes it; a test keeps the two equal).
"""

from __future__ import annotations

import json
from functools import lru_cache

from .schema import NAME_PATTERN, TABLES, Field, tree

def _json_type(f: Field) -> dict:
    out: dict = {"description": f.doc + (f" [{f.unit}]" if f.unit else "")}
    if f.kind == "int":
        out["type"] = "integer"
    elif f.kind == "float":
        out["type"] = "number"
    elif f.kind == "bool":
        out["type"] = "boolean"
    elif f.kind == "str":
        out["type"] = "string"
        out["maxLength"] = f.max_len
    else:
        out["type"] = "string"
        out["enum"] = list(f.choices)
    if f.kind in ("int", "float"):
        if f.lo is not None:
            out["exclusiveMinimum" if f.lo_open else "minimum"] = _json_num(f.lo, f.kind)
        if f.hi is not None:
            out["exclusiveMaximum" if f.hi_open else "maximum"] = _json_num(f.hi, f.kind)
    if not f.required and not f.default_from:
        out["default"] = f.default
    return out


def _json_num(x: float, kind: str):
    return int(x) if kind == "int" or float(x).is_integer() else x


def _json_table(node: dict, path: str) -> dict:
    props: dict = {}
    out: dict = {"type": "object", "additionalProperties": False}
    if TABLES.get(path):
        out["description"] = TABLES[path]
    for key, child in node.items():
        child_path = f"{path}.{key}" if path else key
        if key == "*":
            out["propertyNames"] = {"pattern": NAME_PATTERN}
            out["additionalProperties"] = _json_table(child, child_path)
            continue
        props[key] = _json_type(child) if isinstance(child, Field) else _json_table(child, child_path)
    if props:
        out["properties"] = props
    return out


def _json_required(node: dict, path: str) -> dict | None:
    """The 'required' constraints of a complete (non-extending) file, nested.

    Kept apart from the type constraints because a file that ``extends``
    another may leave out anything its parent sets.
    """
    out: dict = {}
    required = [k for k, c in node.items() if isinstance(c, Field) and c.required]
    props: dict = {}
    for key, child in node.items():
        if not isinstance(child, dict):
            continue
        sub = _json_required(child, f"{path}.{key}" if path else key)
        if not sub:
            continue
        if key == "*":
            out["additionalProperties"] = sub
        else:
            props[key] = sub
            if sub.get("required"):
                required.append(key)
    if required:
        out["required"] = required
    if props:
        out["properties"] = props
    return out or None


@lru_cache(maxsize=1)
def _json_schema_cached() -> str:
    schema = _json_table(tree(), "")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://acompile.invalid/targets/schema.json",
        "title": "acompile target file",
        "description": ("An analog in-memory-computing accelerator for acompile. Generated from "
                        "acompile/target/schema.py; do not edit. A file with 'extends' may leave out any "
                        "field its parent sets; a file without it must set every required field."),
        **{k: v for k, v in schema.items() if k != "description"},
        "required": ["schema_version", "name"],
        "if": {"not": {"required": ["extends"]}},
        "then": _json_required(tree(), ""),
    }
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False)


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a target file, as a fresh dict."""
    return json.loads(_json_schema_cached())


def json_schema_text() -> str:
    """``targets/schema.json`` exactly as it should be on disk."""
    return _json_schema_cached() + "\n"
