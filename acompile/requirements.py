"""The installed dependencies against acompile's own requirements (its package metadata).

Asked only after an internal error: an onnx older than acompile needs (another tool's install can
downgrade it) fails deep inside a pass, and the user should read that onnx 1.16.1 is installed against
a requirement of onnx>=1.21, not only a bare AttributeError. Costs nothing on the way that works.
"""

from __future__ import annotations

import operator
import re
from importlib import metadata

_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*)")   # name, extras, clauses
_CLAUSE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([0-9][0-9A-Za-z.]*)\s*$")
_COMPARE = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt,
            "<": operator.lt}


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: '1.16.1' -> (1, 16, 1); '2.13.0+cpu' -> (2, 13, 0)."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.end() < len(piece):   # 1rc1, 0+cpu: the release ends here
            break
    return tuple(parts)


def _satisfies(version: str, clauses: list[tuple[str, str]]) -> bool:
    have = _release(version)
    for op, wanted in clauses:
        want = _release(wanted)
        width = max(len(have), len(want))
        if not _COMPARE[op](have + (0,) * (width - len(have)), want + (0,) * (width - len(want))):
            return False
    return True


def unmet(distribution: str = "acompile") -> list[tuple[str, str]]:
    """(what is wrong, the requirement) for each run-time requirement of ``distribution`` that the
    installed packages do not meet: ('onnx 1.16.1 is installed', 'onnx>=1.21'), ('onnx is not
    installed', 'onnx>=1.21'); [] when every one is met or acompile runs without its metadata."""
    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    problems = []
    for requirement in requires:
        if ";" in requirement:          # extras and markers: not needed to run
            continue
        name, spec = _REQUIREMENT.match(requirement).groups()
        clauses = [m.groups() for m in map(_CLAUSE.match, filter(None, spec.split(","))) if m]
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append((f"{name} is not installed", requirement))
            continue
        if clauses and not _satisfies(installed, clauses):
            problems.append((f"{name} {installed} is installed", requirement))
    return problems
