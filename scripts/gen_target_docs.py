"""Regenerate targets/README.md's generated blocks and targets/schema.json from the schema.

Run from anywhere with the package installed: ``python scripts/gen_target_docs.py``
(``--check`` exits 1 when a file is out of date instead of writing it).
tests/test_target.py fails when they are stale.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from acompile.target import FIELDS, TABLES, Field, json_schema_text, load_target, shipped_targets
from acompile.target.derived import figure, published
from acompile.target.schema import number_text

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = "<!-- BEGIN GENERATED: {name} (scripts/gen_target_docs.py; do not edit) -->"
_END = "<!-- END GENERATED: {name} -->"


def _default_text(f: Field) -> str:
    if f.default_from:
        return f"= `{f.default_from}`"
    if f.required:
        return "**required**"
    d = f.default
    if isinstance(d, bool):
        return f"`{str(d).lower()}`"
    if isinstance(d, str):
        return f'`"{d}"`'
    if isinstance(d, float) and math.isfinite(d):
        return f"`{number_text(d)}`" if d.is_integer() else f"`{d}`"
    return f"`{d}`"


def _type_text(f: Field) -> str:
    if f.kind == "enum":
        return " \\| ".join(f'"{c}"' for c in f.choices)
    return {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}[f.kind]


def render_field_reference() -> str:
    """Markdown tables of every field, grouped by table, outer to inner."""
    lines: list[str] = []
    groups: dict[str, list[Field]] = {}
    for f in FIELDS:
        groups.setdefault(f.table, []).append(f)
    for table, fields in groups.items():
        title = f"`[{table}]`" if table else "Top level"
        doc = TABLES.get(table) or TABLES.get(table.rsplit(".", 1)[0], "")
        lines += [f"#### {title}", "", doc[:1].upper() + doc[1:] + ".", ""]
        lines += ["| field | type | unit | range | default | meaning |", "|---|---|---|---|---|---|"]
        for f in fields:
            mark = " ¹" if f.contract else ""
            rng = f.range_text() if f.kind in ("int", "float") else ""
            doc_text = f.doc.replace("|", "\\|")
            if not f.inherit:
                doc_text += " (not inherited)"
            lines.append(f"| `{f.path}`{mark} | {_type_text(f)} | {f.unit} | {rng} | "
                         f"{_default_text(f)} | {doc_text} |")
        lines.append("")
    lines.append("¹ read by the compiler core (docs/ARCHITECTURE.md, \"Target access contract\").")
    return "\n".join(lines)


def render_shipped_table() -> str:
    """Markdown: each shipped target's derived figures beside its published ones."""
    head = ("| target | crossbars | chip power (W) | chip area (mm²) | peak TOPS | TOPS/W | TOPS/mm² "
            "| paper TOPS | paper TOPS/W | paper TOPS/mm² | paper W |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in shipped_targets():
        t = load_target(name)
        s, p = t.summary(), published(t.data)
        paper = [figure(p[k] or None, 3) if p[k] else "—"
                 for k in ("peak_tops", "tops_per_w", "tops_per_mm2", "power_w")]
        if p["scope"] != "chip" or p["scale"] != 1:
            name += " ²"
        lines.append(f"| {name} | {s['crossbars_per_chip']} | {figure(s['chip_power_w'] or None, 3)} | "
                     f"{figure(s['chip_area_mm2'] or None, 3)} | {figure(s['peak_tops'], 3)} | "
                     f"{figure(s['tops_per_w'], 3)} | {figure(s['tops_per_mm2'], 3)} | " + " | ".join(paper) + " |")
    lines += ["", "² the paper's figures cover the analog macro only, or were measured at another precision "
              "and are scaled to the file's (`published.scope`, `published.weight_bits`, `published.input_bits`)."]
    return "\n".join(lines)


def render_readme(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    blocks = {"field-reference": render_field_reference(), "shipped-targets": render_shipped_table()}
    for name, body in blocks.items():
        begin, end = _BLOCK.format(name=name), _END.format(name=name)
        start, stop = text.find(begin), text.find(end)
        if start < 0 or stop < start:
            raise ValueError(f"targets/README.md lacks the markers of the generated block {name!r}")
        text = text[: start + len(begin)] + "\n\n" + body + "\n\n" + text[stop:]
    return text


def generated_files() -> dict[Path, str]:
    """Each generated file and the text it should have."""
    readme = ROOT / "targets" / "README.md"
    return {readme: render_readme(readme.read_text(encoding="utf-8")),
            ROOT / "targets" / "schema.json": json_schema_text()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    outputs = generated_files()
    stale = [path for path, text in outputs.items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    for path in stale:
        if args.check:
            print(f"{path.relative_to(ROOT)} is out of date; run python scripts/gen_target_docs.py")
        else:
            path.write_text(outputs[path], encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
