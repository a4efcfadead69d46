"""The sweep's table: column order, results.csv, results.json, and sweep.md.

One row per model x point x repeat, in that order. Numbers are written as
Python writes them (``repr``), empty cells are missing values, so the same
sweep writes byte-identical files wherever its rows were computed.
"""

from __future__ import annotations

import csv
import io
import json

from ..units import si
from .run import COST_COLUMNS, DATA_COLUMNS

PARETO_COLUMNS = ("pareto_energy", "pareto_area")


def columns(keys: list[str]) -> list[str]:
    return ["model", "target", *keys, "repeat", "seed", *COST_COLUMNS, *DATA_COLUMNS, *PARETO_COLUMNS, "status"]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def to_csv(rows: list[dict], cols: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in cols])
    return buf.getvalue()


def to_json(rows: list[dict], cols: list[str], meta: dict) -> str:
    doc = {"sweep": meta, "columns": cols, "rows": [{c: row.get(c) for c in cols} for row in rows]}
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"


def _fmt(x: object, unit: str = "", given: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return si(x, unit, given=given) if unit else f"{x:.4g}"
    return str(x)


def to_markdown(rows: list[dict], keys: list[str], meta: dict, notes: list[str]) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [f"# acompile sweep on `{meta['target']}`", "",
             f"{len(meta['models'])} model(s) x {meta['points']} point(s) x {meta['repeats']} repeat(s) = "
             f"{len(rows)} rows; {len(ok)} ok, {len(rows) - len(ok)} not "
             f"(mode {meta['mode'] or 'none: costs only'}, seed {meta['seed']}).", ""]
    if keys:
        lines += ["Swept: " + ", ".join(f"`{k}` = {', '.join(str(v) for v in meta['axes'][k])}" for k in keys), ""]
    for note in notes:
        lines.append(f"> **Note:** {note}")
    if notes:
        lines.append("")
    front = [r for r in rows if r.get("pareto_energy") or r.get("pareto_area")]
    versus = "accuracy" if meta["mode"] else "latency"
    lines += [f"## Pareto fronts (energy and area against {versus}, each model's own; pareto.svg)", ""]
    head = ["model", *keys, "repeat", "energy/inf", "area", "latency", "accuracy", "rel. error", "front"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in front or ok:
        which = "+".join(n for n, c in (("energy", "pareto_energy"), ("area", "pareto_area")) if r.get(c)) or "-"
        cells = [r["model"], *(_fmt(r[k]) for k in keys), str(r["repeat"]), _fmt(r["energy_pj"], "J", "p"),
                 f"{_fmt(r['area_mm2'])} mm²", _fmt(r["latency_ns"], "s", "n"), _fmt(r["accuracy"]),
                 _fmt(r["rel_error"]), which]
        lines.append("| " + " | ".join(cells) + " |")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["", "## Rows that did not run", ""]
        lines += [f"- {r['model']} {', '.join(f'{k}={r[k]}' for k in keys)} repeat {r['repeat']}: {r['status']}"
                  for r in bad]
    lines += ["", "Every row reruns alone: `acompile run MODEL --target T --set KEY=VALUE... --seed SEED` "
              "(results.csv has each row's seed).", ""]
    return "\n".join(lines)
