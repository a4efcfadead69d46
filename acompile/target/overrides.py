"""``--set KEY=VALUE``: target fields changed on the command line, checked like a target file.

Values are read as TOML values (``6``, ``0.5``, ``true``, ``"text"``), a bare
word being a string (``adc.range=calibrated``). The changed target goes through
the same schema, cross-field and scaling rules as a file (:meth:`Target.with_overrides`)
and remembers its overrides (``target.overrides``) for the report.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable

from acompile.errors import InvalidTargetError, UsageError, clean
from acompile.safe_read import loads_toml

from .schema import field_index, leaf_paths


def parse_value(text: str) -> object:
    """A TOML value; a bare word (not a number or boolean) is a string."""
    text = text.strip()
    try:
        return loads_toml(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _known(key: str) -> bool:
    parts = key.split(".")
    return any(len(p.split(".")) == len(parts) and all(a == b or a == "*" for a, b in zip(p.split("."), parts))
               for p in field_index())


def split_setting(text: str, option: str = "--set") -> tuple[str, str]:
    """``"adc.bits=6"`` -> ("adc.bits", "6"); exit 2 naming the key (with did-you-mean) if it is no field."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not key or not value.strip():
        raise UsageError(f"{option} expects KEY=VALUE with a dotted target key, got {clean(text)!r}",
                         hint="e.g. --set adc.bits=6")
    if not _known(key):
        close = difflib.get_close_matches(key, leaf_paths(), n=1)
        raise UsageError(f"{option} {clean(key)}: not a target field",
                         hint=(f"did you mean {close[0]!r}?" if close else "targets/README.md lists the fields"))
    return key, value


def parse_settings(items: Iterable[str] | None) -> dict[str, object]:
    """Repeated ``--set`` options -> {dotted key: typed value}; a later one for the same key wins."""
    out: dict[str, object] = {}
    for item in items or []:
        key, value = split_setting(item)
        out[key] = parse_value(value)
    return out


def apply_overrides(target, overrides: dict[str, object], option: str = "--set", hint: str = ""):
    """``target`` with ``overrides`` applied and validated; exit 2 naming ``option`` (the flag that gave
    them) and the field if one breaks a rule, with ``hint`` when the flag has one of its own."""
    if not overrides:
        return target
    try:
        return target.with_overrides(overrides)
    except InvalidTargetError as e:
        raise InvalidTargetError(e.message, where=option, hint=hint or e.hint) from None
