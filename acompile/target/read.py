"""Finding target files and reading one: shipped folder, name lookup, bounded UTF-8 TOML, line map.

A UTF-8 byte-order mark is accepted and ignored (Windows editors write one).
Problems go to the file's :class:`TargetFile` record, never raised, so that
validation can list all of them.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..safe_read import loads_toml
from .problems import Problem
from .schema import SCHEMA_VERSION

MAX_FILE_BYTES = 1 << 20      # a target is a page of text; refuse anything huge
MAX_TABLE_DEPTH = 16          # the schema nests four tables deep; far more is not a target
BARE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def shipped_dir() -> Path:
    """The folder of shipped targets: the checkout's targets/ or the installed package."""
    checkout = Path(__file__).resolve().parents[2] / "targets"
    if (checkout / "isaac.toml").is_file():
        return checkout
    try:
        from importlib.resources import files

        return Path(str(files("acompile.shipped_targets")))
    except (ImportError, TypeError):    # not installed, or installed as a zip
        return checkout


def shipped_targets() -> list[str]:
    """Names of the shipped targets, sorted."""
    return sorted(p.stem for p in shipped_dir().glob("*.toml"))


def display(path: Path) -> str:
    """A short name for messages: relative to the cwd when possible."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def is_path_like(name: str) -> bool:
    return name.endswith(".toml") or "/" in name or "\\" in name


def find_named(name: str, search_dirs: Iterable[Path]) -> Path | None:
    """``name.toml`` in the first of ``search_dirs`` that has it, then among the shipped targets."""
    for folder in [*search_dirs, shipped_dir()]:
        candidate = Path(folder) / f"{name}.toml"
        if candidate.is_file():
            return candidate.resolve()
    return None


def unknown_name_hint(name: str) -> str:
    names = shipped_targets()
    close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"shipped targets: {', '.join(names)}; or give a path to a .toml file"


_HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_KEYLINE = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def _norm_key(text: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in text.split("."))


def _line_map(text: str) -> dict[str, int]:
    """First line where each dotted key or table is written (best effort, for messages)."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = _norm_key(header.group(1))
            lines.setdefault(table, number)
            continue
        key = _KEYLINE.match(line)
        if key:
            path = _norm_key(key.group(1))
            lines.setdefault(f"{table}.{path}" if table else path, number)
    return lines


@dataclass
class TargetFile:
    """One parsed file and where its problems go."""

    path: Path
    display: str
    problems: list[Problem]
    text: str = ""
    lines: dict[str, int] = field(default_factory=dict)

    def add(self, field_path: str, message: str, hint: str = "", line: int | None = None) -> None:
        line = line or self.line_of(field_path)
        self.problems.append(Problem(self.display, field_path, message, hint, line))

    def line_of(self, field_path: str) -> int | None:
        while field_path:
            if field_path in self.lines:
                return self.lines[field_path]
            field_path = field_path.rpartition(".")[0]
        return None


def _read_text(f: TargetFile) -> str | None:
    """The file's text, or None after recording why it cannot be read."""
    try:
        if not f.path.is_file():
            f.add("", "not a regular file" if f.path.exists() else "no such file")
            return None
        with open(f.path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        f.add("", f"cannot read the file: {err.strerror or err}")
        return None
    if len(raw) > MAX_FILE_BYTES:
        f.add("", f"file is larger than {MAX_FILE_BYTES // 1024} KiB; a target file is a page of text")
        return None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        f.add("", f"not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} cannot be decoded",
              "save the file as UTF-8", line=line)
        return None


def parse(f: TargetFile) -> dict | None:
    """Parse the file's TOML, or None after recording why not."""
    text = _read_text(f)
    if text is None:
        return None
    f.text = text
    if not text.strip():
        f.add("", "file is empty", f"a target needs at least schema_version = {SCHEMA_VERSION} and name")
        return None
    try:
        data = loads_toml(text)
    except tomllib.TOMLDecodeError as err:
        at = re.search(r"at line (\d+)", str(err))
        f.add("", f"not valid TOML: {err}", line=int(at.group(1)) if at else None)
        return None
    except RecursionError:
        f.add("", "not a usable TOML file: arrays or inline tables are nested too deeply")
        return None
    if _depth(data) > MAX_TABLE_DEPTH:      # dotted keys and [a.b.c] headers parse without recursion
        f.add("", f"not a usable TOML file: tables are nested more than {MAX_TABLE_DEPTH} deep")
        return None
    f.lines = _line_map(text)
    return data


def _depth(data: dict) -> int:
    """How deep tables and arrays nest in parsed TOML, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_TABLE_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))
    return deepest
