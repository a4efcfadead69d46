"""Target files: loading, ``extends``, validation, derived summaries, CLI commands.

A target file is TOML that describes one accelerator (see ``targets/README.md``).
What it may contain is the field table in :mod:`acompile.target_schema`; this
module only applies it.

Public API::

    load_target(name_or_path, *, search_dirs=None) -> Target   # raises InvalidTargetError
    validate_file(path, *, search_dirs=None) -> list[Problem]  # every problem, never raises
    shipped_targets() -> list[str]
    Target["adc.bits"], .name, .source, .data, .summary(), .breakdown(), .digital_op(op)
    cmd_validate / cmd_show / cmd_list / cmd_diff / cmd_schema   # for cli.py

Decisions worth knowing: a UTF-8 byte-order mark is accepted and ignored (Windows
editors write one); bare names in ``extends`` are shipped targets, anything else
is a path relative to the extending file that must stay inside that file's
folder; ``name``, ``description``, ``extends`` and ``[published]`` describe one
file and are not inherited.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Iterable, Mapping

from acompile.errors import EXIT_BAD_INPUT, EXIT_OK, InvalidTargetError, clean
from acompile.target_schema import (
    NAME_PATTERN,
    SCHEMA_VERSION,
    Field,
    field_index,
    json_schema_text,
    leaf_paths,
    render_field_reference,
    table_paths,
    tree,
)

MAX_FILE_BYTES = 1 << 20      # a target is a page of text; refuse anything huge
MAX_EXTENDS_DEPTH = 16        # longer chains are a mistake, not a design
_BARE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:|//|\\\\)")
_NAME_RE = re.compile(NAME_PATTERN)


# --- problems ----------------------------------------------------------------

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


def _raise_first(problems: list[Problem]) -> None:
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


# --- where targets live ------------------------------------------------------

def shipped_dir() -> Path:
    """The folder of shipped targets: the checkout's targets/ or the installed package."""
    checkout = Path(__file__).resolve().parent.parent / "targets"
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


def _display(path: Path) -> str:
    """A short name for messages: relative to the cwd when possible."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _is_path_like(name: str) -> bool:
    return name.endswith(".toml") or "/" in name or "\\" in name


def _find_named(name: str, search_dirs: Iterable[Path]) -> Path | None:
    for folder in [*search_dirs, shipped_dir()]:
        candidate = Path(folder) / f"{name}.toml"
        if candidate.is_file():
            return candidate.resolve()
    return None


def _unknown_name_hint(name: str) -> str:
    names = shipped_targets()
    close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"shipped targets: {', '.join(names)}; or give a path to a .toml file"


# --- reading one file --------------------------------------------------------

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
class _File:
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


def _read_text(f: _File) -> str | None:
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
        raw = raw[3:]       # a UTF-8 byte-order mark: accepted and ignored
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        f.add("", f"not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} cannot be decoded",
              "save the file as UTF-8", line=line)
        return None


def _parse(f: _File) -> dict | None:
    """Parse the file's TOML, or None after recording why not."""
    text = _read_text(f)
    if text is None:
        return None
    f.text = text
    if not text.strip():
        f.add("", "file is empty", f"a target needs at least schema_version = {SCHEMA_VERSION} and name")
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        at = re.search(r"at line (\d+)", str(err))
        f.add("", f"not valid TOML: {err}", line=int(at.group(1)) if at else None)
        return None
    except RecursionError:
        f.add("", "not a usable TOML file: arrays or inline tables are nested too deeply")
        return None
    f.lines = _line_map(text)
    return data


# --- checking values against the schema --------------------------------------

def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return json.dumps(value[:60] + ("..." if len(value) > 60 else ""), ensure_ascii=False)
    return str(value)


def _describe(value: object) -> str:
    """The value and what kind of thing it is, for a 'found ...' clause."""
    if isinstance(value, bool):
        return f"the boolean {_fmt(value)}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {_fmt(value)}"
    if isinstance(value, str):
        return f"the string {_fmt(value)}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__.replace('datetime', 'date-time')}"


def _type_ok(spec: Field, value: object) -> bool:
    if spec.kind == "bool":
        return isinstance(value, bool)
    if spec.kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec.kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def _value_problem(spec: Field, value: object) -> tuple[str, str] | None:
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
        return f"expected {expected}, found {_describe(value)}", hint
    if spec.kind == "float" and not math.isfinite(value):
        return f"expected a finite number {spec.range_text()}, found {_fmt(value)}", ""
    if spec.kind in ("int", "float") and not spec.in_range(value):
        return f"expected {expected}, found {_fmt(value)}", ""
    if spec.kind == "enum" and value not in spec.choices:
        close = difflib.get_close_matches(value.lower(), spec.choices, n=1, cutoff=0.5)
        return f"expected {expected}, found {_fmt(value)}", (f"did you mean '{close[0]}'?" if close else "")
    if spec.kind == "str" and len(value) > spec.max_len:
        return f"expected {expected}, found a string of {len(value)} characters", ""
    return None


def _value_ok(spec: Field, value: object) -> bool:
    return _value_problem(spec, value) is None


def _unknown_hint(key: str, node: dict, prefix: str) -> str:
    """Did-you-mean for an unknown key: a close sibling, or the same key elsewhere."""
    siblings = [k for k in node if k != "*"]
    close = difflib.get_close_matches(key.lower(), siblings, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{_join(prefix, close[0])}'?"
    elsewhere = [p for p in [*leaf_paths(), *table_paths()]
                 if p.rsplit(".", 1)[-1] == key.lower() and "*" not in p]
    if elsewhere:
        return f"did you mean '{elsewhere[0]}'?"
    full = difflib.get_close_matches(_join(prefix, key).lower(), [p for p in leaf_paths() if "*" not in p],
                                     n=1, cutoff=0.75)
    if full:
        return f"did you mean '{full[0]}'?"
    if "*" in node:
        return ""
    return "known here: " + ", ".join(siblings)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_table(raw: dict, node: dict, prefix: str, f: _File) -> None:
    """Record unknown keys and ill-typed or out-of-range values, however deep."""
    for key, value in raw.items():
        path = _join(prefix, key)
        spec = node.get(key)
        if spec is None and "*" in node:
            if not _NAME_RE.match(key):
                f.add(path, f"'{clean(key, 80)}' is not a usable name",
                      "start with a letter; letters, digits, _ and - only; at most 64 characters")
                continue
            spec = node["*"]
        if spec is None:
            f.add(path, "unknown field", _unknown_hint(key, node, prefix))
        elif isinstance(spec, Field):
            problem = _value_problem(spec, value)
            if problem:
                f.add(path, *problem)
        elif not isinstance(value, dict):
            f.add(path, f"expected a table [{path}], found {_describe(value)}")
        else:
            _check_table(value, spec, path, f)


def _check_version(raw: dict, f: _File) -> bool:
    """False when the file declares a schema version this code cannot read."""
    version = raw.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        f.add("schema_version", f"version {version} is not supported (this acompile reads version "
              f"{SCHEMA_VERSION})", "upgrade acompile, or write the file for version 1")
        return False
    return True


# --- extends -----------------------------------------------------------------

class _Resolver:
    """Follows one file's ``extends`` chain, merging tables and recording problems."""

    def __init__(self, search_dirs: Iterable[Path | str] | None):
        self.search_dirs = [Path(d).resolve() for d in (search_dirs or [])]
        self.problems: list[Problem] = []
        self.origin: dict[str, tuple[str, int | None]] = {}
        self.files: list[_File] = []

    def resolve(self, path: Path, chain: tuple[Path, ...] = ()) -> dict | None:
        """Merged data of ``path`` and everything it extends, or None if unusable."""
        f = _File(path, _display(path), self.problems)
        self.files.append(f)
        raw = _parse(f)
        if raw is None or not _check_version(raw, f):
            return None
        _check_table(raw, tree(), "", f)
        parent: dict = {}
        extends = raw.get("extends")
        if isinstance(extends, str) and extends:
            parent_path = self._locate_parent(extends, f, chain + (path,))
            if parent_path is None:
                return None
            got = self.resolve(parent_path, chain + (path,))
            if got is None:
                return None
            parent = _strip_uninherited(got)
        own = {k: v for k, v in raw.items() if k != "extends"}
        return _merge(parent, own, "", f, self.origin)

    def _locate_parent(self, extends: str, f: _File, chain: tuple[Path, ...]) -> Path | None:
        here = f.path.parent
        if _URL.match(extends):
            f.add("extends", f"expected a shipped target name or a relative path, found the URL {_fmt(extends)}",
                  "targets are never fetched; download it and extend the local copy")
            return None
        if _BARE_NAME.match(extends) and not extends.endswith(".toml"):
            found = _find_named(extends, self.search_dirs)
            if found is None:
                f.add("extends", f"no target named {_fmt(extends)}", _unknown_name_hint(extends))
            return self._no_cycle(found, f, chain) if found else None
        if Path(extends).is_absolute() or "\\" in extends:
            f.add("extends", f"expected a path relative to this file's folder, found {_fmt(extends)}",
                  "use forward slashes and no leading /")
            return None
        candidate = (here / extends).resolve()
        roots = [here.resolve(), shipped_dir().resolve(), *self.search_dirs]
        if not any(candidate.is_relative_to(root) for root in roots):
            f.add("extends", f"{_fmt(extends)} leaves the folder of this file",
                  "a target may extend shipped targets and files in its own folder or below")
            return None
        if not candidate.is_file():
            f.add("extends", f"no such file: {_fmt(extends)}")
            return None
        return self._no_cycle(candidate, f, chain)

    def _no_cycle(self, target: Path, f: _File, chain: tuple[Path, ...]) -> Path | None:
        if target in chain:
            loop = [_display(p) for p in chain[chain.index(target):]] + [_display(target)]
            f.add("extends", "extends cycle: " + " -> ".join(loop))
            return None
        if len(chain) >= MAX_EXTENDS_DEPTH:
            f.add("extends", f"extends chain is longer than {MAX_EXTENDS_DEPTH} files")
            return None
        return target


def _strip_uninherited(data: dict, prefix: str = "") -> dict:
    """A copy without the per-file metadata a child must not inherit (name, [published]...)."""
    out = {}
    for key, value in data.items():
        path = _join(prefix, key)
        spec = field_index().get(path)
        if spec is not None and not spec.inherit:
            continue
        out[key] = _strip_uninherited(value, path) if isinstance(value, dict) else value
    return out


def _merge(base: dict, over: dict, prefix: str, f: _File, origin: dict) -> dict:
    """Deep merge: tables merge key by key, anything else in ``over`` replaces."""
    out = dict(base)
    for key, value in over.items():
        path = _join(prefix, key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, path, f, origin)
        else:
            out[key] = value
            _record_origin(value, path, f, origin)
    return out


def _record_origin(value: object, path: str, f: _File, origin: dict) -> None:
    if isinstance(value, dict):
        origin[path] = (f.display, f.line_of(path))
        for key, sub in value.items():
            _record_origin(sub, _join(path, key), f, origin)
    else:
        origin[path] = (f.display, f.line_of(path))


# --- defaults, required fields, cross-field rules ----------------------------

@dataclass
class _Completion:
    """What filling in a merged target needs to know to report missing fields well."""

    problems: list[Problem]
    top: _File
    origin: dict
    extended: bool
    reported: set[str]      # paths with a problem already: nothing below them is 'missing'

    def missing(self, path: str, prefix: str, spec: Field) -> None:
        if any(path == r or path.startswith(r + ".") for r in self.reported if r):
            return
        where, line = (self.top.display, None)
        if "*" in spec.path:    # a named entry: blame the file that wrote it
            where, line = self.origin.get(prefix, (where, None))
        place = f"under [{prefix}]" if prefix else "at the top of the file"
        hint = (f"set it {place} here or in the file this one extends" if self.extended
                else f"add it {place}")
        self.problems.append(Problem(where, path, "missing required field", hint, line))


def _complete(merged: dict, node: dict, prefix: str, ctx: _Completion) -> dict:
    """A clean resolved table: valid values, defaults filled, missing ones reported."""
    out: dict = {}
    for key, spec in node.items():
        path = _join(prefix, key)
        if key == "*":     # named entries, in the order the files wrote them
            for name, entry in merged.items():
                if name not in node and _NAME_RE.match(name) and isinstance(entry, dict):
                    out[name] = _complete(entry, spec, _join(prefix, name), ctx)
        elif isinstance(spec, dict):
            sub = merged.get(key)
            out[key] = _complete(sub if isinstance(sub, dict) else {}, spec, path, ctx)
        elif key in merged:
            if _value_ok(spec, merged[key]):
                out[key] = merged[key]
        elif spec.required:
            ctx.missing(path, prefix, spec)
        elif not spec.default_from:
            out[key] = spec.default
    return out


def _fill_defaults_from(data: dict) -> None:
    """Fields whose default is another field (digital.ops.X.energy_pj <- digital.energy_pj)."""
    for spec in field_index().values():
        if not spec.default_from:
            continue
        table_path, key = spec.path.rsplit(".", 1)
        holder_path, _, _ = table_path.rpartition(".*")
        fallback = _lookup(data, spec.default_from)
        for entry in (_lookup(data, holder_path) or {}).values():
            if key not in entry and fallback is not None:
                entry[key] = fallback


def _lookup(data: Mapping, path: str, default: object = None) -> object:
    node: object = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _cross_checks(d: dict) -> Iterable[tuple[str, str, str]]:
    """Rules between fields: (path, message, hint) for each one broken.

    A rule is skipped when one of its fields is missing or invalid: that
    problem has been reported already.
    """
    def get(path: str) -> object:
        return _lookup(d, path)

    g_min, g_max = get("crossbar.g_min_us"), get("crossbar.g_max_us")
    if g_min is not None and g_max is not None and g_min >= g_max:
        yield ("crossbar.g_min_us", f"expected less than crossbar.g_max_us = {_fmt(g_max)}, found {_fmt(g_min)}",
               "level 0 must conduct less than the top level")
    cols, per_adc = get("crossbar.cols"), get("adc.columns_per_adc")
    if cols is not None and per_adc is not None and per_adc > cols:
        yield ("adc.columns_per_adc", f"expected at most crossbar.cols = {cols}, found {per_adc}",
               "an ADC cannot serve more columns than one crossbar has")
    yield from _check_weight_bits(get("precision.weight_bits"), get("crossbar.cell_bits"),
                                  get("crossbar.signed_weights"))
    percentile = get("adc.percentile")
    if percentile is not None and percentile != 100.0 and get("adc.range") == "worst_case":
        yield ("adc.percentile", "is set but adc.range is \"worst_case\", which ignores it",
               "set adc.range = \"calibrated\" or remove adc.percentile")
    stuck = (get("noise.stuck_at_zero_rate"), get("noise.stuck_at_max_rate"))
    if None not in stuck and sum(stuck) > 1.0:
        yield ("noise.stuck_at_max_rate", f"stuck-at rates add up to {_fmt(sum(stuck))}, more than every cell",
               "the two rates are fractions of all cells")
    yield from _check_drift(get("noise.drift_time_s"), get("noise.drift_t0_s"))
    per_router, tiles = get("network.tiles_per_router"), get("organisation.tiles_per_chip")
    if per_router is not None and tiles is not None and per_router > tiles:
        yield ("network.tiles_per_router", f"expected at most organisation.tiles_per_chip = {tiles}, "
               f"found {per_router}", "")


def _check_weight_bits(bw: int | None, cell_bits: int | None, scheme: str | None):
    if None in (bw, cell_bits, scheme):
        return
    magnitude = bw - 1 if scheme == "differential" else bw
    if magnitude < cell_bits:
        yield ("precision.weight_bits",
               f"{bw}-bit {scheme} weights have {magnitude} magnitude bits, fewer than crossbar.cell_bits = "
               f"{cell_bits}, so the top levels of every cell would never be used",
               f"raise weight_bits to {cell_bits + (1 if scheme == 'differential' else 0)} "
               f"or lower crossbar.cell_bits to {magnitude}")


def _check_drift(t: float | None, t0: float | None):
    if t is None or t0 is None or t == 0:
        return
    if t0 <= 0:
        yield ("noise.drift_t0_s", "expected a number > 0 when noise.drift_time_s is set, found 0",
               "t0 is the time of the reference read after programming, e.g. 20 s")
    elif t < t0:
        yield ("noise.drift_time_s", f"expected at least noise.drift_t0_s = {_fmt(t0)}, found {_fmt(t)}",
               "the drift law g*(t/t0)^(-nu) holds from t0 on")


def _resolve_all(path: Path, search_dirs) -> tuple[dict | None, list[Problem], _Resolver]:
    """Everything validation knows about one file: resolved data (or None) and problems."""
    resolver = _Resolver(search_dirs)
    merged = resolver.resolve(path)
    if merged is None:
        return None, _in_reading_order(resolver.problems, resolver), resolver
    data = _finish(merged, resolver.files[0], resolver.origin, len(resolver.files) > 1, resolver.problems)
    return data, _in_reading_order(resolver.problems, resolver), resolver


def _finish(merged: dict, top: _File, origin: dict, extended: bool, problems: list[Problem]) -> dict:
    """Merged data -> resolved data: defaults filled, required and cross-field rules checked."""
    ctx = _Completion(problems, top, origin, extended, {p.field for p in problems})
    data = _complete(merged, tree(), "", ctx)
    data.pop("extends", None)      # merged away: Target.chain records it
    _fill_defaults_from(data)
    for field_path, message, hint in _cross_checks(data):
        where, line = origin.get(field_path, (top.display, None))
        problems.append(Problem(where, field_path, message, hint, line))
    return data


def _in_reading_order(problems: list[Problem], resolver: _Resolver) -> list[Problem]:
    """Problems file by file (the loaded file first), each file top to bottom."""
    order = {f.display: i for i, f in reversed(list(enumerate(resolver.files)))}
    return sorted(problems, key=lambda p: (order.get(p.file, len(order)), p.line or 0))


# --- the Target --------------------------------------------------------------

def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _thaw(value: object) -> object:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Target:
    """A resolved, validated, immutable target: read fields as ``target["adc.bits"]``."""

    name: str
    source: Path | None
    chain: tuple[str, ...]            # files merged to make it, this one first
    _tree: Mapping = field(repr=False, compare=False)
    _canonical: str = field(repr=False)

    @classmethod
    def from_data(cls, data: dict, source: Path | None = None, chain: tuple[str, ...] = ()) -> "Target":
        """Wrap already-resolved data (as ``load_target`` produces it)."""
        return cls(data["name"], source, chain, _freeze(data), json.dumps(data, sort_keys=True))

    def __getitem__(self, path: str) -> object:
        missing = object()
        value = _lookup(self._tree, path, missing)
        if value is missing:
            close = difflib.get_close_matches(path, leaf_paths() + table_paths(), n=1)
            raise KeyError(f"{path!r} is not a field of target {self.name!r}"
                           + (f"; did you mean {close[0]!r}?" if close else ""))
        return value

    def get(self, path: str, default: object = None) -> object:
        return _lookup(self._tree, path, default)

    @property
    def data(self) -> dict:
        """The resolved target as a fresh nested dict (safe to modify)."""
        return _thaw(self._tree)

    def with_overrides(self, overrides: Mapping[str, object], name: str | None = None) -> "Target":
        """A validated copy with some fields changed, e.g. ``{"adc.bits": 6}`` (for sweeps).

        Raises InvalidTargetError, naming the field, when a change breaks a rule.
        """
        nested: dict = {}
        for path, value in overrides.items():
            *tables, key = path.split(".")
            holder = nested
            for part in tables:
                holder = holder.setdefault(part, {})
            holder[key] = value
        problems: list[Problem] = []
        f = _File(Path("<overrides>"), "overrides", problems)
        _check_table(nested, tree(), "", f)
        origin: dict = {}
        merged = _merge(self.data, nested, "", f, origin)
        merged["name"] = name or self.name
        data = _finish(merged, f, origin, True, problems)
        if problems:
            _raise_first(problems)
        return Target.from_data(data, self.source, self.chain)

    def digital_op(self, op_type: str) -> dict:
        """{energy_pj, latency_ns} of one element-op of ``op_type``, with the defaults applied."""
        own = self.get(f"digital.ops.{op_type}")
        if own is not None:
            return dict(own)
        return {"energy_pj": self["digital.energy_pj"], "latency_ns": self["digital.latency_ns"]}

    def breakdown(self) -> list[dict]:
        """Power and area item by item, level by level (the paper-style component table)."""
        return _breakdown(self._tree)

    def summary(self) -> dict:
        """Derived totals: power and area per level, peak throughput and efficiencies.

        Peak throughput (DESIGN §2 and §4, the same numbers the cost model uses)::

            S  = ceil(Bm / cell_bits)      Bm = Bw - 1 (differential) or Bw (offset)
            C  = S * (2 if differential else 1)       physical columns per weight
            T  = ceil(Bx / dac_bits)                   input cycles per vector
            t  = t_read + ceil(cols / ceil(cols / columns_per_adc)) * t_adc   one cycle
            peak_tops = 2 * crossbars_per_chip * rows * cols / C / (T * t) / 1e3

        One MAC counts as two operations. The cycle charges reads and
        conversions one after the other, as the cost model does; designs that
        overlap them (ISAAC's sample-and-hold pipeline) publish more.
        ``tops_per_w`` and ``tops_per_mm2`` are None when the file itemises no
        power or area.
        """
        return _summary(self._tree)


def _breakdown(d: Mapping) -> list[dict]:
    xb, org = d["crossbar"], d["organisation"]
    adcs = math.ceil(xb["cols"] / d["adc"]["columns_per_adc"])
    per_core = org["crossbars_per_core"]
    rows = [
        _item("core", "crossbar", per_core, xb["power_mw"], xb["area_um2"] / 1e6,
              f"{xb['rows']}x{xb['cols']}, {xb['cell_bits']}-bit cells"),
        _item("core", "dac", per_core * xb["rows"], d["dac"]["power_mw"], d["dac"]["area_um2"] / 1e6,
              f"{d['dac']['bits']}-bit, one per row"),
        _item("core", "adc", per_core * adcs, d["adc"]["power_mw"], d["adc"]["area_um2"] / 1e6,
              f"{d['adc']['bits']}-bit, {adcs} per crossbar"),
        _item("core", "shift_add", d["shift_add"]["units_per_core"], d["shift_add"]["power_mw"],
              d["shift_add"]["area_um2"] / 1e6, ""),
        *_component_items("core", d["core"]["components"]),
    ]
    core_power, core_area = _totals(rows, "core")
    net = d["network"]
    rows += [
        _item("tile", "core", d["organisation"]["cores_per_tile"], core_power, core_area, "the core above"),
        _item("tile", "buffer", 1, d["buffer"]["power_mw"], d["buffer"]["area_mm2"],
              f"{_fmt(d['buffer']['size_kb'])} KB"),
        _item("tile", "router", 1 / net["tiles_per_router"], net["router_power_mw"], net["router_area_mm2"],
              f"shared by {net['tiles_per_router']} tiles"),
        *_component_items("tile", d["tile"]["components"]),
    ]
    tile_power, tile_area = _totals(rows, "tile")
    chip = d["chip"]
    rows += [
        _item("chip", "tile", org["tiles_per_chip"], tile_power, tile_area, "the tile above"),
        _item("chip", "io_link", chip["io_links"], chip["io_link_power_mw"], chip["io_link_area_mm2"],
              "chip-to-chip link"),
        _item("chip", "static", 1, chip["static_power_mw"], 0.0, "not itemised"),
        *_component_items("chip", d["chip"]["components"]),
    ]
    return rows


def _item(level: str, name: str, count: float, power_mw: float, area_mm2: float, spec: str) -> dict:
    return {"level": level, "component": name, "count": count, "power_mw": power_mw, "area_mm2": area_mm2,
            "total_power_mw": count * power_mw, "total_area_mm2": count * area_mm2, "spec": spec}


def _component_items(level: str, components: Mapping) -> list[dict]:
    return [_item(level, name, c["count"] / c["shared_by"], c["power_mw"], c["area_mm2"], c["spec"])
            for name, c in components.items()]


def _totals(rows: list[dict], level: str) -> tuple[float, float]:
    mine = [r for r in rows if r["level"] == level]
    return sum(r["total_power_mw"] for r in mine), sum(r["total_area_mm2"] for r in mine)


def _summary(d: Mapping) -> dict:
    xb, org, prec = d["crossbar"], d["organisation"], d["precision"]
    rows = _breakdown(d)
    core_p, core_a = _totals(rows, "core")
    tile_p, tile_a = _totals(rows, "tile")
    chip_p, chip_a = _totals(rows, "chip")
    differential = xb["signed_weights"] == "differential"
    magnitude_bits = prec["weight_bits"] - (1 if differential else 0)
    slices = math.ceil(magnitude_bits / xb["cell_bits"])
    columns_per_weight = slices * (2 if differential else 1)
    input_cycles = math.ceil(prec["input_bits"] / d["dac"]["bits"])
    adcs = math.ceil(xb["cols"] / d["adc"]["columns_per_adc"])
    cycle_ns = xb["read_latency_ns"] + math.ceil(xb["cols"] / adcs) * d["adc"]["conversion_ns"]
    crossbars = org["crossbars_per_core"] * org["cores_per_tile"] * org["tiles_per_chip"]
    macs_per_cycle = xb["rows"] * xb["cols"] / columns_per_weight
    peak_tops = 2 * crossbars * macs_per_cycle / (input_cycles * cycle_ns) / 1e3
    chip_power_w = chip_p / 1e3
    return {
        "core_power_mw": core_p, "core_area_mm2": core_a,
        "tile_power_mw": tile_p, "tile_area_mm2": tile_a,
        "chip_power_w": chip_power_w, "chip_area_mm2": chip_a,
        "crossbars_per_chip": crossbars,
        "weights_per_chip": crossbars * xb["rows"] * (xb["cols"] // columns_per_weight),
        "slices": slices, "columns_per_weight": columns_per_weight, "input_cycles": input_cycles,
        "adcs_per_crossbar": adcs, "cycle_ns": cycle_ns, "macs_per_crossbar_cycle": macs_per_cycle,
        "peak_tops": peak_tops,
        "tops_per_w": peak_tops / chip_power_w if chip_power_w > 0 else None,
        "tops_per_mm2": peak_tops / chip_a if chip_a > 0 else None,
    }


# --- public entry points -----------------------------------------------------

def _locate(name_or_path: str | Path, search_dirs) -> Path:
    """The file a name or path refers to; raises InvalidTargetError if none."""
    if isinstance(name_or_path, Path) or _is_path_like(str(name_or_path)):
        return Path(name_or_path).resolve()
    name = str(name_or_path)
    found = _find_named(name, [Path(d) for d in (search_dirs or [])]) if _BARE_NAME.match(name) else None
    if found is None:
        raise InvalidTargetError(f"no target named {_fmt(name)}", where="target", hint=_unknown_name_hint(name))
    return found


def load_target(name_or_path: str | Path | Target, *, search_dirs: Iterable[Path | str] | None = None
                ) -> Target:
    """Load a shipped target by name ("isaac") or a target file by path; resolved and validated.

    Raises :class:`InvalidTargetError` (exit code 2) naming the file, field and
    what was expected for the first problem found.
    """
    if isinstance(name_or_path, Target):
        return name_or_path
    path = _locate(name_or_path, search_dirs)
    data, problems, resolver = _resolve_all(path, search_dirs)
    if problems:
        _raise_first(problems)
    chain = tuple(f.display for f in resolver.files)
    return Target.from_data(data, path, chain)


def validate_file(path: str | Path, *, search_dirs: Iterable[Path | str] | None = None) -> list[Problem]:
    """Every problem of one target file (and the files it extends); [] when valid. Never raises."""
    try:
        located = _locate(path, search_dirs)
    except InvalidTargetError as err:
        return [Problem(str(path), "", err.message, err.hint or "")]
    return _resolve_all(located, search_dirs)[1]


# --- TOML writer -------------------------------------------------------------

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


# --- CLI commands (cli.py wires them into argparse) --------------------------

def _out(stream: IO[str] | None) -> IO[str]:
    return stream if stream is not None else sys.stdout


def _err(stream: IO[str] | None) -> IO[str]:
    return stream if stream is not None else sys.stderr


def cmd_validate(paths: Iterable[str], fmt: str = "text", *, out: IO[str] | None = None) -> int:
    """``acompile targets validate FILE...``: every problem, one line each; exit 0 valid, 2 not."""
    report = []
    for path in paths:
        problems = validate_file(path)
        report.append({"file": str(path), "valid": not problems, "problems": [p.to_json() for p in problems]})
    stream = _out(out)
    if fmt == "json":
        stream.write(json.dumps({"files": report}, indent=2, ensure_ascii=False) + "\n")
    else:
        for entry in report:
            if entry["valid"]:
                stream.write(f"{clean(entry['file'])}: valid\n")
            for problem in entry["problems"]:
                stream.write(problem["text"] + "\n")
    return EXIT_OK if all(e["valid"] for e in report) else EXIT_BAD_INPUT


def _guarded(action, err: IO[str] | None) -> int:
    """Run a command body; an invalid target becomes one line on stderr and exit 2."""
    try:
        action()
    except InvalidTargetError as error:
        _err(err).write(f"error: {error}\n")
        return error.exit_code
    return EXIT_OK


def cmd_show(name: str, *, resolved: bool = False, fmt: str = "toml", summary: bool = False,
             out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """``acompile targets show NAME [--resolved] [--format toml|json] [--summary]``.

    Plain ``show`` prints the file as written; ``--resolved`` the merged target
    with defaults; ``--summary`` the derived power, area and throughput (text,
    or JSON with ``--format json``).
    """
    def action() -> None:
        target = load_target(name)
        stream = _out(out)
        if summary:
            stream.write(_summary_json(target) if fmt == "json" else _summary_text(target))
        elif resolved:
            stream.write(json.dumps(target.data, indent=2, ensure_ascii=False) + "\n" if fmt == "json"
                         else f"# {target.name}, resolved from {' <- '.join(target.chain)}\n"
                              + dumps_toml(target.data, sort_keys=False))
        elif fmt == "json":
            raw = tomllib.loads(target.source.read_text(encoding="utf-8-sig"))
            stream.write(json.dumps(raw, indent=2, ensure_ascii=False, default=str) + "\n")
        else:
            stream.write(target.source.read_text(encoding="utf-8-sig"))
    return _guarded(action, err)


def _summary_json(target: Target) -> str:
    body = {"name": target.name, "source": str(target.source), "summary": target.summary(),
            "breakdown": target.breakdown(), "published": target.data["published"]}
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def _g(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _summary_text(target: Target) -> str:
    s, pub = target.summary(), target.data["published"]
    lines = [f"{target.name}  ({_display(target.source) if target.source else 'in memory'})", "",
             f"{'level':<6} {'component':<22} {'count':>9} {'power_mw':>11} {'area_mm2':>11}  spec"]
    for r in target.breakdown():
        if r["count"] == 0 or (r["total_power_mw"] == 0 and r["total_area_mm2"] == 0):
            continue
        lines.append(f"{r['level']:<6} {clean(r['component'], 22):<22} {_g(r['count'], 6):>9} "
                     f"{_g(r['total_power_mw'], 5):>11} {_g(r['total_area_mm2'], 5):>11}  {clean(r['spec'], 60)}")
    lines += ["",
              f"core   {_g(s['core_power_mw'])} mW   {_g(s['core_area_mm2'])} mm2",
              f"tile   {_g(s['tile_power_mw'])} mW   {_g(s['tile_area_mm2'])} mm2",
              f"chip   {_g(s['chip_power_w'])} W    {_g(s['chip_area_mm2'])} mm2",
              "",
              f"{s['crossbars_per_chip']} crossbars, {s['weights_per_chip'] / 1e6:.4g} M weights; "
              f"{s['slices']} slice(s), {s['columns_per_weight']} column(s) per weight, "
              f"{s['input_cycles']} input cycle(s) of {_g(s['cycle_ns'])} ns",
              f"peak   {_g(s['peak_tops'])} TOPS   {_g(s['tops_per_w'])} TOPS/W   "
              f"{_g(s['tops_per_mm2'])} TOPS/mm2   (derived)"]
    if any(pub[k] for k in ("peak_tops", "tops_per_w", "tops_per_mm2")):
        shown = [f"{_g(pub[k])} {unit}" for k, unit in
                 (("peak_tops", "TOPS"), ("tops_per_w", "TOPS/W"), ("tops_per_mm2", "TOPS/mm2")) if pub[k]]
        lines.append(f"paper  {'   '.join(shown)}   ({clean(pub['source'], 200)})")
    return "\n".join(lines) + "\n"


def cmd_list(*, out: IO[str] | None = None, cwd: Path | None = None) -> int:
    """``acompile targets list``: shipped targets, then *.toml in the current folder; one line each."""
    stream = _out(out)
    for name in shipped_targets():
        path = shipped_dir() / f"{name}.toml"
        stream.write(f"{name:<12} shipped  {_first_line(path)}\n")
    for path in sorted(Path(cwd or Path.cwd()).glob("*.toml")):
        if not _looks_like_target(path):
            continue   # pyproject.toml and other TOML files that are not targets
        problems = validate_file(path)
        state = "valid  " if not problems else "INVALID"
        stream.write(f"{clean(path.name):<12} {state}  {_first_line(path) if not problems else problems[0]}\n")
    return EXIT_OK


def _looks_like_target(path: Path) -> bool:
    """A local .toml is listed when it declares schema_version or extends, as every target does."""
    try:
        head = path.read_bytes()[:65536].decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    return any(line.lstrip().startswith(("schema_version", "extends")) for line in head.splitlines())


def _first_line(path: Path) -> str:
    """The first line of a file's description, for listings (no validation)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return "(unreadable)"
    text = data.get("description") if isinstance(data.get("description"), str) else ""
    return clean(text.strip().splitlines()[0] if text.strip() else "", 100)


def _flatten(data: Mapping, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        path = _join(prefix, key)
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def cmd_diff(a: str, b: str, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """``acompile targets diff A B``: resolved fields that differ, then derived figures; exit 0."""
    def action() -> None:
        left, right = load_target(a), load_target(b)
        stream = _out(out)
        stream.write(f"--- {left.name} ({_display(left.source)})\n+++ {right.name} ({_display(right.source)})\n")
        lines = _diff_lines(_flatten(left.data), _flatten(right.data))
        derived = _diff_lines(left.summary(), right.summary(), prefix="summary.")
        stream.write("\n".join(lines + derived) + "\n" if lines or derived else "no differences\n")
    return _guarded(action, err)


def _diff_lines(left: Mapping, right: Mapping, prefix: str = "") -> list[str]:
    lines = []
    for key in [*left, *(k for k in right if k not in left)]:
        if key not in right:
            lines.append(f"- {prefix}{key} = {_fmt(left[key])}")
        elif key not in left:
            lines.append(f"+ {prefix}{key} = {_fmt(right[key])}")
        elif left[key] != right[key]:
            lines.append(f"  {prefix}{key}: {_diff_value(left[key])} -> {_diff_value(right[key])}")
    return lines


def _diff_value(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else _fmt(value)


def cmd_schema(*, out: IO[str] | None = None) -> int:
    """``acompile targets schema``: the JSON Schema of a target file (as in targets/schema.json)."""
    _out(out).write(json_schema_text())
    return EXIT_OK


# --- generated documentation -------------------------------------------------

_BLOCK = "<!-- BEGIN GENERATED: {name} (scripts/gen_target_docs.py; do not edit) -->"
_END = "<!-- END GENERATED: {name} -->"


def render_shipped_table() -> str:
    """Markdown: each shipped target's derived figures beside its published ones."""
    head = ("| target | crossbars | chip power (W) | chip area (mm²) | peak TOPS | TOPS/W | TOPS/mm² "
            "| paper TOPS | paper TOPS/W | paper TOPS/mm² |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for name in shipped_targets():
        t = load_target(name)
        s, p = t.summary(), t.data["published"]
        paper = [_g(p[k] or None, 3) if p[k] else "—" for k in ("peak_tops", "tops_per_w", "tops_per_mm2")]
        lines.append(f"| {name} | {s['crossbars_per_chip']} | {_g(s['chip_power_w'] or None, 3)} | "
                     f"{_g(s['chip_area_mm2'] or None, 3)} | {_g(s['peak_tops'], 3)} | {_g(s['tops_per_w'], 3)} | "
                     f"{_g(s['tops_per_mm2'], 3)} | " + " | ".join(paper) + " |")
    return "\n".join(lines)


def _generated_blocks() -> dict[str, str]:
    return {"field-reference": render_field_reference(), "shipped-targets": render_shipped_table()}


def render_readme(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    for name, body in _generated_blocks().items():
        begin, end = _BLOCK.format(name=name), _END.format(name=name)
        start, stop = text.find(begin), text.find(end)
        if start < 0 or stop < start:
            raise ValueError(f"targets/README.md lacks the markers of the generated block {name!r}")
        text = text[: start + len(begin)] + "\n\n" + body + "\n\n" + text[stop:]
    return text
