"""The check report for people and CI: text, JSON, Markdown (a CI job summary) and JUnit XML.

Every renderer takes the report document built by :func:`acompile.check.verdict.report`
and returns text; none of them reads anything else.
"""

from __future__ import annotations

import re

from ..units import count, duration, energy
from .schema import COMPATIBLE, ERROR, FALLBACK, INCOMPATIBLE

FORMATS = ("text", "json", "markdown", "junit")
_CATEGORY_TEXT = {
    "unsupported_op": "unsupported op", "unsupported_attribute": "unsupported attribute",
    "dynamic_weights": "weights not constant", "unknown_shape": "unknown shape",
    "unsupported_input": "input not a tensor",
    "unsupported": "cannot be mapped", "too_many_chips": "too many chips",
    "low_analog_fraction": "analog fraction too low",
}
_NODES_SHOWN = 3


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def _energy(pj) -> str:
    return "-" if pj is None else energy(pj)


def _figures_text(r: dict) -> str:
    f = r["figures"]
    if f is None:
        return "no figures (the model does not map)"
    chips, bars = f["chips"], f["crossbars"]
    text = (f"analog {_pct(f['analog_mac_fraction'])} of MACs, {count(bars, 'crossbar')}, "
            f"{count(chips, 'chip')}, utilisation {_pct(f['utilisation'])}, "
            f"{_energy(f['energy_per_inference_pj'])}/inference")
    return ("estimated with unsupported nodes as digital: " + text) if r["figures_estimated"] else text


def _op_label(reason: dict) -> str:
    if reason["op_type"] is None:
        return "-"
    op = f"{reason['domain']}.{reason['op_type']}" if reason["domain"] else reason["op_type"]
    return f"{op} (opset {reason['opset']})" if reason["opset"] else op


def problem_rows(reasons: list[dict]) -> list[tuple[str, int, str, str]]:
    """(Op, Count, Reason, Nodes) rows: one per op and reason, in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for reason in reasons:
        text = f"{_CATEGORY_TEXT[reason['category']]}: {reason['message']}"
        groups.setdefault((_op_label(reason), text), []).append(reason)
    rows = []
    for (op, text), items in groups.items():
        nodes = [i["node"] for i in items if i["node"] is not None]
        shown = ", ".join(nodes[:_NODES_SHOWN]) + (f" (+{len(nodes) - _NODES_SHOWN} more)"
                                                    if len(nodes) > _NODES_SHOWN else "")
        rows.append((op, len(items), text, shown))
    return rows


def _verdict_text(r: dict) -> str:
    if r["verdict"] == ERROR:
        e = r["error"]
        return f"error ({e['code']}, exit {e['exit_code']}): {e['message']}"
    if r["verdict"] == INCOMPATIBLE:
        n = len(r["reasons"])
        return f"incompatible ({n} reason{'' if n == 1 else 's'}) | {_figures_text(r)}"
    if r["verdict"] == FALLBACK:
        ops = ", ".join(f"{op} x{r['digital_ops'][op]}" for op in r["fallback_ops"])
        return f"compatible with digital fallback ({ops}) | {_figures_text(r)}"
    return f"compatible | {_figures_text(r)}"


def _table(header: tuple, rows: list[tuple], indent: str = "  ") -> list[str]:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    fmt = lambda row: indent + " | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return [fmt(cells[0]), indent + "-+-".join("-" * w for w in widths)] + [fmt(row) for row in cells[1:]]


def _status_line(doc: dict) -> str:
    s = doc["summary"]
    word = "PASSED" if doc["passed"] else "FAILED"
    return (f"{word}: {count(s['pairs'], 'model x target pair')}: {s['compatible']} compatible, "
            f"{s['compatible_with_fallback']} with digital fallback, {s['incompatible']} incompatible, "
            f"{count(s['error'], 'error')} in {duration(doc['elapsed_s'] * 1e9)}")


def render_text(doc: dict) -> str:
    """One line per model x target, a problem table under each incompatible pair, then PASSED/FAILED."""
    lines = []
    for r in doc["results"]:
        lines.append(f"{r['model']} [{r['target']}]: {_verdict_text(r)}")
        if r["reasons"]:
            lines += _table(("Op", "Count", "Reason", "Nodes"), problem_rows(r["reasons"]))
    lines.append(_status_line(doc))
    return "\n".join(lines) + "\n"


def render_json(doc: dict) -> str:
    from ..jsonio import dumps_json     # numpy: not before check's own imports (cli/check.py)
    return dumps_json(doc)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~<>])")


def _md(text: object) -> str:
    """Markdown-inert table-cell text: inline markup characters backslash-escaped, & as an entity."""
    return _MD_SPECIAL.sub(r"\\\1", str(text).replace("&", "&amp;"))


def render_markdown(doc: dict) -> str:
    """A CI job summary: a table of every pair, then the problems of each incompatible or failed pair."""
    s = doc["summary"]
    out = [f"## acompile check: {'PASSED' if doc['passed'] else 'FAILED'}", "",
           f"{count(s['pairs'], 'model x target pair')}: {s['compatible']} compatible, "
           f"{s['compatible_with_fallback']} with digital fallback, {s['incompatible']} incompatible, "
           f"{count(s['error'], 'error')}.", "",
           "| Model | Target | Verdict | Analog MACs | Crossbars | Chips | Utilisation | Energy / inference |",
           "|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        f = r["figures"] or {}
        verdict = r["verdict"] if r["verdict"] in (COMPATIBLE, FALLBACK) else f"**{r['verdict']}**"
        if r["verdict"] == FALLBACK:
            verdict += " (" + ", ".join(_md(op) for op in r["fallback_ops"]) + ")"
        est = " (est.)" if r["figures_estimated"] else ""
        out.append(f"| {_md(r['model'])} | {_md(r['target'])} | {verdict} | "
                   f"{_md(_pct(f.get('analog_mac_fraction')) + est)} | {f.get('crossbars', '-')} | "
                   f"{f.get('chips', '-')} | {_md(_pct(f.get('utilisation')))} | "
                   f"{_md(_energy(f.get('energy_per_inference_pj')))} |")
    for r in doc["results"]:
        if r["verdict"] not in (INCOMPATIBLE, ERROR):
            continue
        out += ["", f"### {_md(r['model'])} on {_md(r['target'])}: {r['verdict']}", ""]
        if r["verdict"] == ERROR:
            out.append(f"{_md(r['error']['code'])} (exit {r['error']['exit_code']}): {_md(r['error']['message'])}")
            continue
        out += ["| Op | Count | Reason | Nodes |", "|---|---|---|---|"]
        out += [f"| {_md(op)} | {n} | {_md(text)} | {_md(nodes)} |" for op, n, text, nodes in
                problem_rows(r["reasons"])]
    out += ["", f"_{_md(_status_line(doc))}_"]
    return "\n".join(out) + "\n"


# compiled on first use (re caches it): compiling these ranges costs every check process 5 ms otherwise
_XML_BAD = "[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


def _x(text: object) -> str:
    """Text that XML 1.0 can hold: characters it forbids are dropped (ElementTree escapes the rest)."""
    return re.sub(_XML_BAD, "", str(text))


def render_junit(doc: dict) -> str:
    """JUnit XML: one testcase per model x target (classname = model, name = target)."""
    import xml.etree.ElementTree as ET     # only this format needs it
    s = doc["summary"]
    failures, errors = str(s["incompatible"]), str(s["error"])
    suites = ET.Element("testsuites", name="acompile check", tests=str(s["pairs"]), failures=failures,
                        errors=errors, time=f"{doc['elapsed_s']:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="acompile check", tests=str(s["pairs"]), failures=failures,
                          errors=errors, skipped="0", time=f"{doc['elapsed_s']:.3f}")
    for r in doc["results"]:
        case = ET.SubElement(suite, "testcase", classname=_x(r["model"]), name=_x(r["target"]), time="0")
        if r["verdict"] == INCOMPATIBLE:
            rows = problem_rows(r["reasons"])
            first = rows[0]
            fail = ET.SubElement(case, "failure", type="incompatible",
                                 message=_x(f"{count(len(r['reasons']), 'reason')}; first: {first[0]}: {first[2]}"))
            fail.text = _x("\n".join(f"{op} x{n}: {text}" + (f" [{nodes}]" if nodes else "")
                                     for op, n, text, nodes in rows) + "\n" + _figures_text(r))
        elif r["verdict"] == ERROR:
            err = ET.SubElement(case, "error", type=_x(r["error"]["code"]), message=_x(r["error"]["message"]))
            err.text = _x(r["error"]["message"])
        out = ET.SubElement(case, "system-out")
        out.text = _x(f"{r['verdict']}" + ("" if r["verdict"] == ERROR else f": {_figures_text(r)}")
                      + (f"\ndigital ops: {', '.join(f'{k} x{v}' for k, v in r['digital_ops'].items())}"
                         if r["digital_ops"] else ""))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown, "junit": render_junit}
