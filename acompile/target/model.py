"""The Target: a resolved, validated, immutable target, its typed sections, and the two entry points.

``load_target`` resolves and validates a file (raising on the first problem);
``validate_file`` returns every problem. A Target reads as ``target["adc.bits"]``
or, typed, as ``target.adc.bits``: one frozen dataclass per schema table,
generated from the field table, so an int field holds an int and a float field
a float even where the file wrote ``2`` for ``2.0``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, make_dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from types import MappingProxyType

from acompile.errors import InvalidTargetError

from .derived import breakdown, summary
from .problems import Problem, join, raise_first
from .read import TargetFile
from .resolve import finish, locate, lookup, merge, resolve_all
from .schema import TABLES, Field, leaf_paths, table_paths, tree
from .validate import check_table


def _schema_node(path: str) -> dict:
    node = tree()
    for part in path.split("."):
        node = node[part]
    return node


def _is_collection(node: dict) -> bool:
    """A table of named entries (``core.components``, ``digital.ops``) rather than fixed keys."""
    return list(node) == ["*"]


@lru_cache(maxsize=None)
def section_class(path: str) -> type:
    """The frozen dataclass of the table at schema path ``path`` (``*`` for a named entry)."""
    columns = []
    for key, spec in _schema_node(path).items():
        if isinstance(spec, Field):
            columns.append((key, spec.python_type))
        elif _is_collection(spec):
            entry = section_class(f"{path}.{key}.*")
            columns.append((key, Mapping[str, entry]))
        else:
            columns.append((key, section_class(f"{path}.{key}")))
    name = "".join(p.title().replace("_", "") for p in path.replace("*", "entry").split(".")) + "Section"
    cls = make_dataclass(name, columns, frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = TABLES.get(path) or TABLES.get(path.rsplit(".", 1)[0], "")
    return cls


def _section(path: str, data: Mapping) -> object:
    values = {}
    for key, spec in _schema_node(path).items():
        value = data[key]
        if isinstance(spec, Field):
            values[key] = float(value) if spec.kind == "float" else value
        elif _is_collection(spec):
            entries = f"{path}.{key}.*"
            values[key] = MappingProxyType({name: _section(entries, entry) for name, entry in value.items()})
        else:
            values[key] = _section(f"{path}.{key}", value)
    return section_class(path)(**values)


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
    """A resolved, validated, immutable target: ``target.adc.bits`` (typed) or ``target["adc.bits"]``.

    Every table of the schema is a property holding its typed section
    (:func:`section_class`); tables of named entries are read-only mappings.
    """

    name: str
    source: Path | None
    chain: tuple[str, ...]            # files merged to make it, this one first
    _tree: Mapping = field(repr=False, compare=False)
    _canonical: str = field(repr=False)
    overrides: tuple[tuple[str, object], ...] = field(default=(), compare=False)   # --set, in order

    @classmethod
    def from_data(cls, data: dict, source: Path | None = None, chain: tuple[str, ...] = ()) -> "Target":
        """Wrap already-resolved data (as ``load_target`` produces it)."""
        return cls(data["name"], source, chain, _freeze(data), json.dumps(data, sort_keys=True))

    def __getitem__(self, path: str) -> object:
        missing = object()
        value = lookup(self._tree, path, missing)
        if value is missing:
            close = difflib.get_close_matches(path, leaf_paths() + table_paths(), n=1)
            raise KeyError(f"{path!r} is not a field of target {self.name!r}"
                           + (f"; did you mean {close[0]!r}?" if close else ""))
        return value

    def get(self, path: str, default: object = None) -> object:
        return lookup(self._tree, path, default)

    @property
    def data(self) -> dict:
        """The resolved target as a fresh nested dict (safe to modify)."""
        return _thaw(self._tree)

    @cached_property
    def _sections(self) -> dict[str, object]:
        return {key: _section(key, self._tree[key]) for key, node in tree().items() if isinstance(node, dict)}

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
        f = TargetFile(Path("<overrides>"), "overrides", problems)
        check_table(nested, tree(), "", f)
        origin: dict = {}
        merged = merge(self.data, nested, "", f, origin)
        merged["name"] = name or self.name
        data = finish(merged, f, origin, True, problems, pinned=overrides)
        if problems:
            raise_first(problems)
        done = dict(self.overrides)
        done.update(overrides)
        return Target(data["name"], self.source, self.chain, _freeze(data), json.dumps(data, sort_keys=True),
                      tuple(done.items()))

    def digital_op(self, op_type: str) -> dict:
        """{energy_pj, latency_ns} of one element-op of ``op_type``, with the defaults applied."""
        own = self.get(join("digital.ops", op_type))
        if own is not None:
            return dict(own)
        return {"energy_pj": self["digital.energy_pj"], "latency_ns": self["digital.latency_ns"]}

    def breakdown(self) -> list[dict]:
        """Power and area item by item, level by level (the paper-style component table)."""
        return breakdown(self._tree)

    def summary(self) -> dict:
        """Derived totals: power and area per level, peak throughput and efficiencies (:mod:`.derived`)."""
        return summary(self._tree)


def _add_section_properties() -> None:
    """``Target.crossbar``, ``Target.adc``... one property per top-level table of the schema."""
    def getter(table: str):
        return lambda self: self._sections[table]

    for table, node in tree().items():
        if isinstance(node, dict):
            setattr(Target, table, property(getter(table), doc=TABLES[table]))


_add_section_properties()


def load_target(name_or_path: str | Path | Target, *, search_dirs: Iterable[Path | str] | None = None
                ) -> Target:
    """Load a shipped target by name ("isaac") or a target file by path; resolved and validated.

    Raises :class:`InvalidTargetError` (exit code 2) naming the file, field and
    what was expected for the first problem found.
    """
    if isinstance(name_or_path, Target):
        return name_or_path
    path = locate(name_or_path, search_dirs)
    data, problems, resolver = resolve_all(path, search_dirs)
    if problems:
        raise_first(problems)
    chain = tuple(f.display for f in resolver.files)
    return Target.from_data(data, path, chain)


def validate_file(path: str | Path, *, search_dirs: Iterable[Path | str] | None = None) -> list[Problem]:
    """Every problem of one target file (and the files it extends); [] when valid. Never raises."""
    try:
        located = locate(path, search_dirs)
    except InvalidTargetError as err:
        return [Problem(str(path), "", err.message, err.hint or "")]
    return resolve_all(located, search_dirs)[1]
