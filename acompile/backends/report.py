"""The cost report: ``report.json`` for machines, ``report.md`` and two SVG
charts for people, and a short table for the terminal.

All three are views of the same dictionary built by :func:`build_report`.
Every figure's unit is in its key name; JSON keys are sorted so reports diff
cleanly and are byte-identical for the same inputs.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from .. import __version__
from ..errors import clean

REPORT_SCHEMA_VERSION = 1


def build_report(compiled) -> dict:
    graph, target, options = compiled.graph, compiled.target, compiled.options
    mapping = compiled.mapping
    cost = compiled.cost
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": {"name": "acompile", "version": __version__},
        "model": {
            "source": clean(Path(graph.source).name if graph.source else "<model>"),
            "name": clean(graph.name),
            "opset": graph.opset,
            "inputs": {clean(n): _shape(graph, n) for n in graph.inputs},
            "outputs": {clean(n): _shape(graph, n) for n in graph.outputs},
        },
        "target": {"name": target.name, "summary": target.summary()},
        "options": {"batch": options.batch, "seed": options.seed, "allow_unsupported": options.allow_unsupported,
                    "calibration": options.calibration_name},
        "calibration_note": ("input scales and ADC ranges from the calibration file" if options.calibration
                             else "No calibration data given: input scales come from 8 seeded standard-normal "
                                  "samples per input (pass --calibration DATA for real activations)"),
        "totals": cost.get("totals", {}),
        "layers": [_clean_names(x) for x in cost.get("layers", [])],
        "digital": [_clean_names(x) for x in cost.get("digital", [])],
        "per_event_figures": cost.get("figures", {}),
        "unsupported": [{"node": clean(p.node), "op_type": clean(p.op_type), "domain": clean(p.domain),
                         "opset": p.opset, "category": p.category, "reason": p.reason}
                        for p in compiled.problems],
        "crossbars_per_tile": int(target["organisation.crossbars_per_core"]) * int(target["organisation.cores_per_tile"]),
        "chips_needed": mapping.chips_needed,
    }


def _shape(graph, name):
    s = graph.shape(name)
    return [d if isinstance(d, int) else clean(str(d)) for d in s] if s is not None else None


def _clean_names(entry: dict) -> dict:
    out = dict(entry)
    out["name"] = clean(out["name"])
    return out


# ---------------------------------------------------------------------------
# human views
# ---------------------------------------------------------------------------

def _si(value: float, unit: str) -> str:
    prefixes = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")]
    for scale, p in prefixes:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {p}{unit}"
    return f"{value:.3g} {unit}"


def _energy(pj: float) -> str:
    return _si(pj * 1e-12, "J") if pj >= 1 else f"{pj:.3g} pJ"


def _time(ns: float) -> str:
    return _si(ns * 1e-9, "s") if ns >= 1 else f"{ns:.3g} ns"


def _si_small(value: float, unit: str) -> str:
    for scale, p in [(1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")]:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {p}{unit}"
    return f"{value:.3g} {unit}"


def terminal_table(report: dict) -> str:
    t = report["totals"]
    lines = [f"acompile: {report['model']['source']} on {report['target']['name']} (batch {report['options']['batch']})",
             f"{'layer':<28} {'op':<13} {'matrix':>11} {'xbars':>6} {'util':>6} {'energy':>11} {'latency':>11}"]
    for x in report["layers"]:
        m = f"{x['matrix'][0]}x{x['matrix'][1]}" + (f"x{x['groups']}" if x["groups"] > 1 else "")
        lines.append(f"{x['name'][:28]:<28} {x['op_type']:<13} {m:>11} {x['counts']['crossbars']:>6} "
                     f"{x['utilisation']:>6.1%} {_pretty_e(x['energy_total_pj']):>11} {_pretty_t(x['latency_ns']):>11}")
    dig = sum(x["energy_total_pj"] for x in report["digital"])
    lines.append(f"{'digital ops (' + str(len(report['digital'])) + ' nodes)':<28} {'':<13} {'':>11} {'':>6} {'':>6} "
                 f"{_pretty_e(dig):>11}")
    lines.append(f"total: {t['crossbars']} crossbars on {t['tiles']} tiles ({t['chips']} chip(s)), "
                 f"utilisation {t['utilisation']:.1%}, energy {_pretty_e(t['energy_total_pj'])}, "
                 f"latency {_pretty_t(t['latency_ns'])}, {t['throughput_inferences_per_s']:.4g} inf/s, "
                 f"{t['tops_per_w']:.3g} TOPS/W")
    if report["unsupported"]:
        lines.append(f"costed as unknown digital ops: {len(report['unsupported'])} node(s)")
    return "\n".join(lines) + "\n"


def _pretty_e(pj: float) -> str:
    return _si_small(pj * 1e-12, "J") if pj < 1e12 else _si(pj * 1e-12, "J")


def _pretty_t(ns: float) -> str:
    return _si_small(ns * 1e-9, "s") if ns < 1e9 else _si(ns * 1e-9, "s")


def markdown(report: dict) -> str:
    t = report["totals"]
    md = [f"# acompile report: `{report['model']['source']}` on `{report['target']['name']}`", "",
          f"Batch {report['options']['batch']}, seed {report['options']['seed']}. {report['calibration_note']}.", "",
          "## Totals", "", "| figure | value |", "|---|---|"]
    rows = [
        ("crossbars / tiles / chips", f"{t['crossbars']} / {t['tiles']} / {t['chips']}"),
        ("weights", f"{t['weights']:,}"),
        ("utilisation (weight cells / crossbar cells)", f"{t['utilisation']:.2%}"),
        ("MACs (analog)", f"{t['macs']:,}"),
        ("analog fraction of MACs", f"{t['analog_mac_fraction']:.2%}"),
        ("energy per inference", _pretty_e(t["energy_total_pj"])),
        ("latency (single inference)", _pretty_t(t["latency_ns"])),
        ("throughput (pipelined)", f"{t['throughput_inferences_per_s']:.4g} inferences/s"),
        ("efficiency", f"{t['tops_per_w']:.3g} TOPS/W"),
        ("area of the tiles used", f"{t['area_tiles_mm2']:.4g} mm²"),
        ("area of the chip(s)", f"{t['area_chips_mm2']:.4g} mm²"),
    ]
    md += [f"| {a} | {b} |" for a, b in rows]
    md += ["", "![energy by component](report_energy.svg)", "", "## Energy by component", "",
           "| component | energy (pJ) | share |", "|---|---:|---:|"]
    total = t["energy_total_pj"] or 1.0
    for k, v in t["energy_pj"].items():
        md.append(f"| {k} | {v:.6g} | {v / total:.1%} |")
    md += ["", "## Analog layers", "", "![energy per layer](report_layers.svg)", "",
           "| layer | op | matrix N×K (×groups) | row×col blocks | crossbars | vectors | cycles | DAC conv. | "
           "ADC conv. | reads | energy (pJ) | latency (ns) | utilisation |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in report["layers"]:
        c = x["counts"]
        g = f" ×{x['groups']}" if x["groups"] > 1 else ""
        md.append(f"| {_md(x['name'])} | {x['op_type']} | {x['matrix'][0]}×{x['matrix'][1]}{g} | "
                  f"{x['row_blocks']}×{x['col_blocks']} | {c['crossbars']} | {c['input_vectors']} | "
                  f"{c['cycles_per_vector']} | {c['dac_conversions']} | {c['adc_conversions']} | {c['array_reads']} | "
                  f"{x['energy_total_pj']:.6g} | {x['latency_ns']:.6g} | {x['utilisation']:.1%} |")
    md += ["", "## Digital operations", "", "| node | op | ops | energy (pJ) | latency (ns) |", "|---|---|---:|---:|---:|"]
    for x in report["digital"]:
        flag = " (unknown op)" if x["unknown"] else ""
        md.append(f"| {_md(x['name'])} | {x['op_type']}{flag} | {x['counts']['digital_ops']:.6g} | "
                  f"{x['energy_total_pj']:.6g} | {x['latency_ns']:.6g} |")
    if report["unsupported"]:
        md += ["", "## Unsupported (costed as unknown digital ops)", ""]
        md += [f"- `{_md(p['node'])}` ({p['op_type']}, opset {p['opset']}): {p['reason']}" for p in report["unsupported"]]
    md += ["", "## Per-event figures of the target", "", "| event | pJ |", "|---|---:|"]
    md += [f"| {k} | {v:.6g} |" for k, v in sorted(report["per_event_figures"].items())]
    return "\n".join(md) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def bar_chart_svg(title: str, items: list[tuple[str, float]], unit: str) -> str:
    """A small dependency-free horizontal bar chart (deterministic bytes)."""
    items = items[:40]
    width, bar_h, left = 760, 18, 230
    height = 40 + bar_h * len(items) + 20
    peak = max((v for _, v in items), default=0.0) or 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12">', f'<text x="10" y="20" font-size="14">{escape(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = 32 + i * bar_h
        w = (width - left - 110) * value / peak
        out.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(label[:34])}</text>')
        out.append(f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 4}" fill="#4a7ab5"/>')
        out.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}">{value:.4g} {escape(unit)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_report(report: dict, folder: Path, dumps) -> list[str]:
    (folder / "report.json").write_text(dumps(report))
    (folder / "report.md").write_text(markdown(report))
    comps = [(k, v) for k, v in report["totals"]["energy_pj"].items()]
    (folder / "report_energy.svg").write_text(bar_chart_svg("Energy per inference by component", comps, "pJ"))
    layers = [(x["name"], x["energy_total_pj"]) for x in report["layers"]]
    (folder / "report_layers.svg").write_text(bar_chart_svg("Energy per analog layer", layers, "pJ"))
    return ["report.json", "report.md", "report_energy.svg", "report_layers.svg"]
