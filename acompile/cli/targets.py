"""``acompile targets``: validate, show, list, diff and schema of target files.

Each ``cmd_*`` writes to ``out``/``err`` (stdout/stderr by default) and returns
the exit code; :func:`add_parser` registers the subcommand and :func:`run`
dispatches to them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

from ..errors import EXIT_BAD_INPUT, EXIT_OK, AcompileError, InvalidTargetError, UsageError, clean
from ..safe_read import loads_toml, open_input
from ..target import (Target, dumps_toml, json_schema_text, load_target, shipped_dir, shipped_targets,
                      validate_file)
from ..target.derived import figure, published
from ..target.problems import fmt as fmt_value, join
from ..target.read import display
from ..units import count


def add_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """The actions of ``acompile targets``; ``common`` holds the options every command takes."""
    tsub = p.add_subparsers(dest="targets_action")
    v = tsub.add_parser("validate", parents=[common], help="report every problem in target files")
    v.add_argument("files", nargs="+", help="target .toml files")
    s = tsub.add_parser("show", help="print a target (merged with what it extends)")
    s.add_argument("name", help="shipped target name or a .toml file")
    s.add_argument("--resolved", action="store_true", help="show the merged result with defaults")
    s.add_argument("--summary", action="store_true", help="derived power, area, TOPS, TOPS/W, TOPS/mm2")
    s.add_argument("--format", choices=["toml", "json", "text"], default="toml", help="how to print it")
    tsub.add_parser("list", help="shipped and local targets")
    d = tsub.add_parser("diff", help="fields that differ between two targets")
    d.add_argument("a", help="first target (name or .toml)")
    d.add_argument("b", help="second target (name or .toml)")
    tsub.add_parser("schema", help="JSON Schema of target files")
    p.set_defaults(func=run)


def run(args) -> int:
    """Dispatch ``acompile targets ACTION``; the exit code."""
    action = args.targets_action
    if action == "validate":
        return cmd_validate(args.files, fmt=args.format)
    if action == "show":
        return cmd_show(args.name, resolved=args.resolved, fmt=args.format, summary=args.summary)
    if action == "list":
        return cmd_list()
    if action == "diff":
        return cmd_diff(args.a, args.b)
    if action == "schema":
        return cmd_schema()
    raise UsageError("targets needs an action: validate, show, list, diff or schema")


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
            raw = loads_toml(target.source.read_text(encoding="utf-8-sig"))
            stream.write(json.dumps(raw, indent=2, ensure_ascii=False, default=str) + "\n")
        else:
            stream.write(target.source.read_text(encoding="utf-8-sig"))
    return _guarded(action, err)


def _summary_json(target: Target) -> str:
    body = {"name": target.name, "source": str(target.source), "summary": target.summary(),
            "breakdown": target.breakdown(), "published": target.data["published"],
            "published_comparable": published(target.data)}
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def _summary_text(target: Target) -> str:
    s = target.summary()
    lines = [f"{target.name}  ({display(target.source) if target.source else 'in memory'})", "",
             f"{'level':<6} {'component':<22} {'count':>9} {'power_mw':>11} {'area_mm2':>11}  spec"]
    for r in target.breakdown():
        if r["count"] == 0 or (r["total_power_mw"] == 0 and r["total_area_mm2"] == 0):
            continue
        lines.append(f"{r['level']:<6} {clean(r['component'], 22):<22} {figure(r['count'], 6):>9} "
                     f"{figure(r['total_power_mw'], 5):>11} {figure(r['total_area_mm2'], 5):>11}  {clean(r['spec'], 60)}")
    lines += ["",
              f"core   {figure(s['core_power_mw'])} mW   {figure(s['core_area_mm2'])} mm2",
              f"tile   {figure(s['tile_power_mw'])} mW   {figure(s['tile_area_mm2'])} mm2",
              f"chip   {figure(s['chip_power_w'])} W    {figure(s['chip_area_mm2'])} mm2",
              "",
              f"{count(s['crossbars_per_chip'], 'crossbar')}, {count(s['weights_per_chip'], 'weight')}; "
              f"{count(s['slices'], 'slice')}, {count(s['columns_per_weight'], 'column')} per weight, "
              f"{count(s['input_cycles'], 'input cycle')} of {figure(s['cycle_ns'])} ns "
              f"({count(s['input_cycles_signed'], 'cycle')} for signed inputs)",
              f"peak   {figure(s['peak_tops'])} TOPS   {figure(s['tops_per_w'])} TOPS/W   "
              f"{figure(s['tops_per_mm2'])} TOPS/mm2   (derived, unsigned inputs; "
              f"{figure(s['peak_tops_signed_inputs'])} TOPS on signed inputs)",
              f"events {figure(s['tops_per_w_events'])} TOPS/W   (every crossbar busy, priced per event + static)",
              f"static {figure(s['tile_held_power_mw'])} mW per tile in use, "
              f"{figure(s['chip_held_power_mw'])} mW per chip in use (no per-event figure)"]
    pub = published(target.data)
    if any(pub[k] for k in ("peak_tops", "tops_per_w", "tops_per_mm2", "power_w")):
        shown = [f"{figure(pub[k])} {unit}" for k, unit in (("peak_tops", "TOPS"), ("tops_per_w", "TOPS/W"),
                 ("tops_per_mm2", "TOPS/mm2"), ("power_w", "W")) if pub[k]]
        notes = [] if pub["scope"] == "chip" else [f"{pub['scope']} only"]
        if pub["scale"] != 1:
            p = target.data["precision"]
            notes.append(f"{pub['weight_bits']}b x {pub['input_bits']}b figures scaled to "
                         f"{p['weight_bits']}b x {p['input_bits']}b")
        lines.append(f"paper  {'   '.join(shown)}   ({'; '.join(notes + [clean(pub['source'], 200)])})")
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
        f, _ = open_input(path, "target file", "max_json_bytes")   # a FIFO named x.toml must not hang the listing
        with f:
            head = f.read(65536).decode("utf-8-sig", errors="replace")
    except (OSError, AcompileError):
        return False
    return any(line.lstrip().startswith(("schema_version", "extends")) for line in head.splitlines())


def _first_line(path: Path) -> str:
    """The first line of a file's description, for listings (no validation)."""
    try:
        data = loads_toml(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return "(unreadable)"
    text = data.get("description") if isinstance(data.get("description"), str) else ""
    return clean(text.strip().splitlines()[0] if text.strip() else "", 100)


def _flatten(data: Mapping, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        path = join(prefix, key)
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
        stream.write(f"--- {left.name} ({display(left.source)})\n+++ {right.name} ({display(right.source)})\n")
        lines = _diff_lines(_flatten(left.data), _flatten(right.data))
        derived = _diff_lines(left.summary(), right.summary(), prefix="summary.")
        stream.write("\n".join(lines + derived) + "\n" if lines or derived else "no differences\n")
    return _guarded(action, err)


def _diff_lines(left: Mapping, right: Mapping, prefix: str = "") -> list[str]:
    lines = []
    for key in [*left, *(k for k in right if k not in left)]:
        if key not in right:
            lines.append(f"- {prefix}{key} = {fmt_value(left[key])}")
        elif key not in left:
            lines.append(f"+ {prefix}{key} = {fmt_value(right[key])}")
        elif left[key] != right[key]:
            lines.append(f"  {prefix}{key}: {_diff_value(left[key])} -> {_diff_value(right[key])}")
    return lines


def _diff_value(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else fmt_value(value)


def cmd_schema(*, out: IO[str] | None = None) -> int:
    """``acompile targets schema``: the JSON Schema of a target file (as in targets/schema.json)."""
    _out(out).write(json_schema_text())
    return EXIT_OK
