"""Resolving a target: following ``extends``, merging, defaults, required fields, rules between fields.

Bare names in ``extends`` are shipped targets (or files in ``search_dirs``);
anything else is a path relative to the extending file that must stay inside
that file's folder. ``name``, ``description``, ``extends`` and ``[published]``
describe one file and are not inherited.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from acompile.errors import InvalidTargetError

from .problems import Problem, fmt, join
from .read import BARE_NAME, TargetFile, display, find_named, is_path_like, parse, shipped_dir, unknown_name_hint
from .scaling import apply_rules, lookup, rule_checks
from .schema import Field, field_index, tree
from .validate import NAME_RE, check_table, check_version, value_ok

MAX_EXTENDS_DEPTH = 16        # longer chains are a mistake, not a design
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:|//|\\\\)")


class Resolver:
    """Follows one file's ``extends`` chain, merging tables and recording problems."""

    def __init__(self, search_dirs: Iterable[Path | str] | None):
        self.search_dirs = [Path(d).resolve() for d in (search_dirs or [])]
        self.problems: list[Problem] = []
        self.origin: dict[str, tuple[str, int | None]] = {}
        self.files: list[TargetFile] = []

    def resolve(self, path: Path, chain: tuple[Path, ...] = ()) -> dict | None:
        """Merged data of ``path`` and everything it extends, or None if unusable."""
        f = TargetFile(path, display(path), self.problems)
        self.files.append(f)
        raw = parse(f)
        if raw is None or not check_version(raw, f):
            return None
        check_table(raw, tree(), "", f)
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
        return merge(parent, own, "", f, self.origin)

    def _locate_parent(self, extends: str, f: TargetFile, chain: tuple[Path, ...]) -> Path | None:
        here = f.path.parent
        if _URL.match(extends):
            f.add("extends", f"expected a shipped target name or a relative path, found the URL {fmt(extends)}",
                  "targets are never fetched; download it and extend the local copy")
            return None
        if BARE_NAME.match(extends) and not extends.endswith(".toml"):
            found = find_named(extends, self.search_dirs)
            if found is None:
                f.add("extends", f"no target named {fmt(extends)}", unknown_name_hint(extends))
            return self._no_cycle(found, f, chain) if found else None
        if Path(extends).is_absolute() or "\\" in extends:
            f.add("extends", f"expected a path relative to this file's folder, found {fmt(extends)}",
                  "use forward slashes and no leading /")
            return None
        candidate = (here / extends).resolve()
        roots = [here.resolve(), shipped_dir().resolve(), *self.search_dirs]
        if not any(candidate.is_relative_to(root) for root in roots):
            f.add("extends", f"{fmt(extends)} leaves the folder of this file",
                  "a target may extend shipped targets and files in its own folder or below")
            return None
        if not candidate.is_file():
            f.add("extends", f"no such file: {fmt(extends)}")
            return None
        return self._no_cycle(candidate, f, chain)

    def _no_cycle(self, target: Path, f: TargetFile, chain: tuple[Path, ...]) -> Path | None:
        if target in chain:
            loop = [display(p) for p in chain[chain.index(target):]] + [display(target)]
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
        path = join(prefix, key)
        spec = field_index().get(path)
        if spec is not None and not spec.inherit:
            continue
        out[key] = _strip_uninherited(value, path) if isinstance(value, dict) else value
    return out


def merge(base: dict, over: dict, prefix: str, f: TargetFile, origin: dict) -> dict:
    """Deep merge: tables merge key by key, anything else in ``over`` replaces."""
    out = dict(base)
    for key, value in over.items():
        path = join(prefix, key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, path, f, origin)
        else:
            out[key] = value
            _record_origin(value, path, f, origin)
    return out


def _record_origin(value: object, path: str, f: TargetFile, origin: dict) -> None:
    if isinstance(value, dict):
        origin[path] = (f.display, f.line_of(path))
        for key, sub in value.items():
            _record_origin(sub, join(path, key), f, origin)
    else:
        origin[path] = (f.display, f.line_of(path))


@dataclass
class _Completion:
    """What filling in a merged target needs to know to report missing fields well."""

    problems: list[Problem]
    top: TargetFile
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
        if not spec.inherit:    # schema_version, name: every file states its own
            hint = f"add it {place}: every file states its own, whatever it extends"
        elif self.extended:
            hint = f"set it {place} here or in the file this one extends"
        else:
            hint = f"add it {place}"
        self.problems.append(Problem(where, path, "missing required field", hint, line))


def _complete(merged: dict, node: dict, prefix: str, ctx: _Completion) -> dict:
    """A clean resolved table: valid values, defaults filled, missing ones reported."""
    out: dict = {}
    for key, spec in node.items():
        path = join(prefix, key)
        if key == "*":     # named entries, in the order the files wrote them
            for name, entry in merged.items():
                if name not in node and NAME_RE.match(name) and isinstance(entry, dict):
                    out[name] = _complete(entry, spec, join(prefix, name), ctx)
        elif isinstance(spec, dict):
            sub = merged.get(key)
            out[key] = _complete(sub if isinstance(sub, dict) else {}, spec, path, ctx)
        elif key in merged:
            if value_ok(spec, merged[key]):
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
        fallback = lookup(data, spec.default_from)
        for entry in (lookup(data, holder_path) or {}).values():
            if key not in entry and fallback is not None:
                entry[key] = fallback


def _cross_checks(d: dict) -> Iterable[tuple[str, str, str]]:
    """Rules between fields: (path, message, hint) for each one broken.

    A rule is skipped when one of its fields is missing or invalid: that
    problem has been reported already.
    """
    def get(path: str) -> object:
        return lookup(d, path)

    g_min, g_max = get("crossbar.g_min_us"), get("crossbar.g_max_us")
    if g_min is not None and g_max is not None and g_min >= g_max:
        yield ("crossbar.g_min_us", f"expected less than crossbar.g_max_us = {fmt(g_max)}, found {fmt(g_min)}",
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
        yield ("noise.stuck_at_max_rate", f"stuck-at rates add up to {fmt(sum(stuck))}, more than every cell",
               "the two rates are fractions of all cells")
    yield from _check_drift(get("noise.drift_time_s"), get("noise.drift_t0_s"))
    yield from _check_cell_technology(get)
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


_ANALOG_ONLY = ("crossbar.g_min_us", "noise.programming_sigma", "noise.stuck_at_zero_rate",
                "noise.stuck_at_max_rate", "noise.drift_nu_mean", "noise.drift_nu_std")


def _check_cell_technology(get):
    """Rules of the storage, compute, DAC and offset-subtraction choices."""
    if get("crossbar.storage") == "digital":
        for path in _ANALOG_ONLY:
            if get(path):
                yield (path, f"expected 0 for cells that store bits (crossbar.storage = \"digital\"), "
                       f"found {fmt(get(path))}", "an SRAM bit is exact: no leakage level, programming noise, "
                       "stuck cells or drift; or set crossbar.storage = \"analog\"")
    if get("dac.kind") == "none" and get("dac.bits") not in (None, 1):
        yield ("dac.bits", f"expected 1 when dac.kind = \"none\", found {get('dac.bits')}",
               "without a DAC the row drivers apply one input bit per cycle")
    cap, swing = get("crossbar.unit_capacitance_ff"), get("crossbar.full_scale_mv")
    if cap and get("crossbar.compute") == "current":
        yield ("crossbar.unit_capacitance_ff", "is set but crossbar.compute is \"current\"",
               "set crossbar.compute = \"charge\" or remove crossbar.unit_capacitance_ff")
    if cap is not None and swing is not None and bool(cap) != bool(swing):
        missing = "crossbar.full_scale_mv" if cap else "crossbar.unit_capacitance_ff"
        yield (missing, "expected a number > 0: kT/C noise needs both the unit capacitance and the full-scale "
               "swing", "set both, or neither (no kT/C noise)")
    if get("crossbar.offset_subtraction") == "analog" and get("crossbar.signed_weights") == "differential":
        yield ("crossbar.offset_subtraction", "is \"analog\" but crossbar.signed_weights is \"differential\", "
               "which has no reference column", "remove crossbar.offset_subtraction")
    if get("crossbar.offset_subtraction") == "analog" and get("adc.bits") == 1:
        yield ("adc.bits", "expected at least 2 when crossbar.offset_subtraction = \"analog\", found 1",
               "the ADC then converts signed values and needs a sign bit")


def _check_drift(t: float | None, t0: float | None):
    if t is None or t0 is None or t == 0:
        return
    if t0 <= 0:
        yield ("noise.drift_t0_s", "expected a number > 0 when noise.drift_time_s is set, found 0",
               "t0 is the time of the reference read after programming, e.g. 20 s")
    elif t < t0:
        yield ("noise.drift_time_s", f"expected at least noise.drift_t0_s = {fmt(t0)}, found {fmt(t)}",
               "the drift law g*(t/t0)^(-nu) holds from t0 on")


def resolve_all(path: Path, search_dirs) -> tuple[dict | None, list[Problem], Resolver]:
    """Everything validation knows about one file: resolved data (or None) and problems."""
    resolver = Resolver(search_dirs)
    merged = resolver.resolve(path)
    if merged is None:
        return None, _in_reading_order(resolver.problems, resolver), resolver
    data = finish(merged, resolver.files[0], resolver.origin, len(resolver.files) > 1, resolver.problems)
    return data, _in_reading_order(resolver.problems, resolver), resolver


def finish(merged: dict, top: TargetFile, origin: dict, extended: bool, problems: list[Problem],
           pinned: Iterable[str] = ()) -> dict:
    """Merged data -> resolved data: defaults filled, required and cross-field rules checked, figures
    scaled to the parameters (:mod:`.scaling`; ``pinned`` figures were set at them and stay)."""
    ctx = _Completion(problems, top, origin, extended, {p.field for p in problems})
    data = _complete(merged, tree(), "", ctx)
    data.pop("extends", None)      # merged away: Target.chain records it
    _fill_defaults_from(data)
    before = len(problems)
    for field_path, message, hint in (*_cross_checks(data), *rule_checks(data)):
        where, line = origin.get(field_path, (top.display, None))
        problems.append(Problem(where, field_path, message, hint, line))
    if len(problems) == before:
        for field_path, value in apply_rules(data, pinned):
            spec = field_index()[field_path]
            if not value_ok(spec, value):
                problems.append(Problem(top.display, field_path, f"scaled by its rule to {fmt(value)}, expected "
                                        f"{spec.expected()}", "check the scaling rule and its at_* anchor"))
    return data


def _in_reading_order(problems: list[Problem], resolver: Resolver) -> list[Problem]:
    """Problems file by file (the loaded file first), each file top to bottom."""
    order = {f.display: i for i, f in reversed(list(enumerate(resolver.files)))}
    return sorted(problems, key=lambda p: (order.get(p.file, len(order)), p.line or 0))


def locate(name_or_path: str | Path, search_dirs) -> Path:
    """The file a name or path refers to; raises InvalidTargetError if none."""
    if isinstance(name_or_path, Path) or is_path_like(str(name_or_path)):
        return Path(name_or_path).resolve()
    name = str(name_or_path)
    found = find_named(name, [Path(d) for d in (search_dirs or [])]) if BARE_NAME.match(name) else None
    if found is None:
        raise InvalidTargetError(f"no target named {fmt(name)}", where="target", hint=unknown_name_hint(name))
    return found

