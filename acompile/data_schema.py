"""Checking a parsed document (JSON, TOML) against a small schema: Int, Num, Opt, Seq, Map, OneOf, Any,
Either and dicts of them; an error names the first field that fails (``the device header's field
blocks[3].rows must be from 1 to ...``). Long lists of numbers or of records of them are tested in a few
C-level passes, not an item at a time.
"""

from __future__ import annotations

import math
from operator import itemgetter

from .errors import InvalidDataError, clean


class Int:
    """An integer (not a bool) in [lo, hi]."""
    def __init__(self, lo: int = 0, hi: int = 2**31):
        self.lo, self.hi = lo, hi


class Num:
    """A finite number."""


class Opt:
    """``inner`` or null."""
    def __init__(self, inner):
        self.inner = inner


class Seq:
    """A list of ``inner`` of at most ``max_len`` items."""
    def __init__(self, inner, max_len: int = 2**24, min_len: int = 0):
        self.inner, self.max_len, self.min_len = inner, max_len, min_len


class Map:
    """An object with any string keys, every value ``inner``."""
    def __init__(self, inner, max_len: int = 2**24):
        self.inner, self.max_len = inner, max_len


class OneOf:
    """One of the given string values."""
    def __init__(self, *values):
        self.values = values


class Any:
    """Anything (checked by whoever uses it)."""


class Either:
    """The first of ``options`` that fits (the error is the first option's)."""
    def __init__(self, *options):
        self.options = options


def _fits(schema):
    """One test of a whole item against a schema built of Int, Num, Seq and dicts without optional keys
    (what check_schema accepts, without its messages), else None."""
    if isinstance(schema, Int):
        lo, hi = schema.lo, schema.hi
        return lambda v: type(v) is int and lo <= v <= hi
    if isinstance(schema, Num):
        return lambda v: type(v) is int or type(v) is float and math.isfinite(v)
    if isinstance(schema, Seq):
        every, lo, hi = _all_fit(schema.inner), schema.min_len, schema.max_len
        return None if every is None else lambda v: type(v) is list and lo <= len(v) <= hi and every(v)
    if isinstance(schema, dict) and not any(key.endswith("?") for key in schema):
        fields = [(key, _fits(sub)) for key, sub in schema.items()]
        if any(f is None for _, f in fields):
            return None
        return lambda v: type(v) is dict and all(key in v and f(v[key]) for key, f in fields)
    return None


def _all_fit(schema):
    """One test of a whole list of items against ``schema`` (as :func:`_fits`), else None. Integers are
    tested in C-level passes over the list (their types, least and greatest): a device header's block table
    holds millions."""
    if isinstance(schema, Int):
        lo, hi = schema.lo, schema.hi
        return lambda v: not v or set(map(type, v)) == {int} and lo <= min(v) and max(v) <= hi
    if isinstance(schema, dict) and not any(key.endswith("?") for key in schema):
        # records, tested a field at a time: each field's column gathered in C (itemgetter) and tested whole
        columns = [(itemgetter(key), _all_fit(sub)) for key, sub in schema.items()]
        if any(every is None for _, every in columns):
            return None

        def every_record(v):
            try:
                return not v or set(map(type, v)) == {dict} and all(every(list(map(get, v))) for get, every in columns)
            except KeyError:
                return False
        return every_record
    one = _fits(schema)
    return None if one is None else lambda v: all(map(one, v))


def check_schema(obj, schema, what: str, where: str, path: str = "") -> None:
    """Check ``obj`` against ``schema``: a dict is an object with those keys (a key ending in "?" is
    optional; other keys are allowed), a type (str, bool) that type, or one of the classes above."""
    def fail(message: str):
        raise InvalidDataError(f"the {what}'s field {path or '(top level)'} {message}", where=where)

    def got(v) -> str:
        return clean(repr(v) if not isinstance(v, (dict, list)) else type(v).__name__, 40)

    if isinstance(schema, dict):
        if not isinstance(obj, dict):
            fail(f"must be an object (got {got(obj)})")
        for key, sub in schema.items():
            name, optional = (key[:-1], True) if key.endswith("?") else (key, False)
            sub_path = f"{path}.{name}" if path else name
            if name not in obj:
                if optional:
                    continue
                raise InvalidDataError(f"the {what} lacks the field {sub_path}", where=where)
            check_schema(obj[name], sub, what, where, sub_path)
    elif isinstance(schema, Int):
        if isinstance(obj, bool) or not isinstance(obj, int):
            fail(f"must be an integer (got {got(obj)})")
        if not schema.lo <= obj <= schema.hi:
            fail(f"must be from {schema.lo:,} to {schema.hi:,} (got {obj:,})")
    elif isinstance(schema, Num):
        if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
            fail(f"must be a number (got {got(obj)})")
    elif isinstance(schema, Opt):
        if obj is not None:
            check_schema(obj, schema.inner, what, where, path)
    elif isinstance(schema, Seq):
        if not isinstance(obj, list):
            fail(f"must be a list (got {got(obj)})")
        if not schema.min_len <= len(obj) <= schema.max_len:
            fail(f"must hold {schema.min_len:,} to {schema.max_len:,} items (got {len(obj):,})")
        every, fits = _all_fit(schema.inner), _fits(schema.inner)
        # a list of plain numbers or of records of them (a device header's crossbars: hundreds of thousands
        # of fields) is tested in one pass; the first item that fails, if any, is checked again for its message
        bad = None if fits is None else len(obj) if every(obj) else \
            next((i for i, v in enumerate(obj) if not fits(v)), len(obj))
        for i in range(len(obj)) if bad is None else range(bad, min(bad + 1, len(obj))):
            check_schema(obj[i], schema.inner, what, where, f"{path}[{i}]")
    elif isinstance(schema, Map):
        if not isinstance(obj, dict):
            fail(f"must be an object (got {got(obj)})")
        if len(obj) > schema.max_len:
            fail(f"must hold at most {schema.max_len:,} entries")
        for key, item in obj.items():
            check_schema(item, schema.inner, what, where, f"{path}[{clean(key, 40)!r}]")
    elif isinstance(schema, OneOf):
        if obj not in schema.values:
            fail(f"must be one of {', '.join(map(str, schema.values))} (got {got(obj)})")
    elif isinstance(schema, Any):
        return
    elif isinstance(schema, Either):
        first = None
        for option in schema.options:
            try:
                check_schema(obj, option, what, where, path)
                return
            except InvalidDataError as e:
                first = first or e
        raise first
    elif schema in (str, bool):
        if type(obj) is not schema:
            fail(f"must be {'a string' if schema is str else 'true or false'} (got {got(obj)})")
    else:
        raise TypeError(f"bad schema {schema!r}")
