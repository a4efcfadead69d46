"""Problems found in target files: the one-line record, how values are quoted in it, raising the first.

Every check of a target file (reading, schema, ``extends``, cross-field rules)
reports through :class:`Problem`, so ``targets validate`` and ``load_target``
word the same fault the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from acompile.errors import InvalidTargetError, clean


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a target file, printable as one line."""

    file: str
    field: str
    message: str
    hint: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = clean(self.file) + (f":{self.line}" if self.line else "")
        what = f"{clean(self.field)}: " if self.field else ""
        hint = f" ({clean(self.hint, 300)})" if self.hint else ""
        return f"{where}: {what}{clean(self.message, 600)}{hint}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field,
                "message": self.message, "hint": self.hint, "text": str(self)}


def raise_first(problems: list[Problem]) -> None:
    """Stop at the first problem, as ``compile`` does; mention how many more."""
    first = problems[0]
    where = first.file + (f":{first.line}" if first.line else "")
    message = f"{first.field}: {first.message}" if first.field else first.message
    more = len(problems) - 1
    hint = first.hint
    if more:
        extra = f"and {more} more problem{'s' if more > 1 else ''}; 'acompile targets validate' lists all"
        hint = f"{hint}; {extra}" if hint else extra
    raise InvalidTargetError(message, where=where, hint=hint or None)


def fmt(value: object) -> str:
    """A value as a target file would write it, shortened for a message."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return json.dumps(value[:60] + ("..." if len(value) > 60 else ""), ensure_ascii=False)
    return str(value)


def describe(value: object) -> str:
    """The value and what kind of thing it is, for a 'found ...' clause."""
    if isinstance(value, bool):
        return f"the boolean {fmt(value)}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {fmt(value)}"
    if isinstance(value, str):
        return f"the string {fmt(value)}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__.replace('datetime', 'date-time')}"


def join(prefix: str, key: str) -> str:
    """The dotted path of ``key`` inside the table ``prefix``."""
    return f"{prefix}.{key}" if prefix else key
