"""The cost report: ``report.json`` for machines, ``report.md`` and two SVG
charts for people (report.html: :mod:`.html`), and a short table for the terminal.

All three are views of the same dictionary built by :func:`build_report`.
Every figure's unit is in its key name; JSON keys are sorted so reports diff
cleanly and are byte-identical for the same inputs.
"""

from __future__ import annotations

from pathlib import Path

from .._version import __version__
from ..errors import clean
from ..units import count, decimal, duration, energy, percent

REPORT_SCHEMA_VERSION = 1


# digital nodes: beyond this many, report.md and report.html list them by operator and show the most costly
# (an unrolled recurrent model has tens of thousands; report.json keeps every one)
DIGITAL_ROWS = 1000
MOST_COSTLY = 50


def digital_view(report: dict) -> tuple[list[dict] | None, list[dict]]:
    """What people read of the digital nodes: (None, every node) up to DIGITAL_ROWS nodes; beyond, (one row
    per operator -- ``op_type, nodes, ops, energy_pj, latency_ns`` summed over its nodes -- and the
    MOST_COSTLY nodes that take the most energy), both by energy, most first."""
    nodes = report["digital"]
    if len(nodes) <= DIGITAL_ROWS:
        return None, nodes
    by_op: dict[str, dict] = {}
    for x in nodes:
        row = by_op.setdefault(x["op_type"], {"op_type": x["op_type"], "nodes": 0, "ops": 0.0, "energy_pj": 0.0,
                                              "latency_ns": 0.0})
        row["nodes"] += 1
        row["ops"] += x["counts"]["digital_ops"]
        row["energy_pj"] += x["energy_total_pj"]
        row["latency_ns"] += x["latency_ns"]
    ops = sorted(by_op.values(), key=lambda r: (-r["energy_pj"], r["op_type"]))
    costly = sorted(range(len(nodes)), key=lambda i: (-nodes[i]["energy_total_pj"], i))[:MOST_COSTLY]
    return ops, [nodes[i] for i in costly]


def digital_flag(x: dict) -> str:
    """The note beside a digital node's op type: an estimated cost, an unknown op, or for control flow
    how many times its body runs (estimated when that depends on the data) and which analog-kind ops
    in the body run on the digital units."""
    if "iterations" in x:
        notes = [f"body runs {'~' if x.get('estimated') else ''}{count(x['iterations'])}×"
                 + (", cost estimated" if x.get("estimated") else "")]
        if x.get("body_analog"):
            notes.append(f"digital in the body: {', '.join(x['body_analog'])}")
        return f" ({'; '.join(notes)})"
    return " (cost estimated)" if x.get("estimated") else " (unknown op)" if x["unknown"] else ""


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
        "target": {"name": target.name, "summary": target.summary(),
                   **({"overrides": dict(target.overrides)} if target.overrides else {})},   # --set
        "options": {"batch": options.batch, "seed": options.seed, "allow_unsupported": options.allow_unsupported,
                    "calibration": options.calibration_name, "replicate": options.replicate,
                    **({"input_shapes": _input_shapes(graph, options.input_shapes)} if options.input_shapes else {})},
        "calibration_note": _calibration_note(graph, options),
        **_model_scales(mapping),
        "totals": cost.get("totals", {}),
        "layers": [_clean_names(x) for x in cost.get("layers", [])],
        "digital": [_clean_names(x) for x in cost.get("digital", [])],
        "per_event_figures": cost.get("figures", {}),
        "warnings": [clean(w, 300) for w in getattr(compiled, "warnings", [])],
        "unsupported": [{"node": clean(p.node), "op_type": clean(p.op_type), "domain": clean(p.domain),
                         "opset": p.opset, "category": p.category, "reason": p.reason}
                        for p in compiled.problems],
        "crossbars_per_tile": int(target["organisation.crossbars_per_core"]) * int(target["organisation.cores_per_tile"]),
        "chips_needed": mapping.chips_needed,
    }


def _model_scales(mapping) -> dict:
    """For a quantized model: the layers whose weight (and input) scales came from the model."""
    taken = [layer for layer in (mapping.layers if mapping else []) if layer.model_quant]
    if not taken:
        return {}
    return {"model_scales": {"weights": [clean(x.name) for x in taken],
                             "inputs": [clean(x.name) for x in taken if "input_scale" in x.model_quant]}}


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

def _input_shapes(graph, given: dict) -> dict:
    """The shapes ``--input-shape`` (or the data) fixed, as the model's inputs now have them."""
    names = [n for n in graph.inputs if n in given] if None not in given else list(graph.inputs)
    return {clean(n): _shape(graph, n) for n in names}


def terminal_table(report: dict) -> str:
    t = report["totals"]
    fixed = "".join(f", {name} {'x'.join(map(str, dims))}"
                    for name, dims in report["options"].get("input_shapes", {}).items())
    lines = [f"acompile: {report['model']['source']} on {report['target']['name']} (batch "
             f"{report['options']['batch']}{fixed})",
             f"{'layer':<28} {'op':<13} {'matrix':>11} {'xbars':>6} {'util':>6} {'energy':>11} {'latency':>11}"]
    for x in report["layers"]:
        m = f"{x['matrix'][0]}x{x['matrix'][1]}" + (f"x{x['groups']}" if x["groups"] > 1 else "")
        lines.append(f"{x['name'][:28]:<28} {x['op_type']:<13} {m:>11} {x['counts']['crossbars']:>6} "
                     f"{x['utilisation']:>6.1%} {_pretty_e(x['energy_total_pj']):>11} {_pretty_t(x['latency_ns']):>11}")
    dig = sum(x["energy_total_pj"] for x in report["digital"])
    lines.append(f"{'digital ops (' + count(len(report['digital']), 'node') + ')':<28} {'':<13} {'':>11} {'':>6} "
                 f"{'':>6} {_pretty_e(dig):>11}")
    lines.append(f"total: {count(t['crossbars'], 'crossbar')} on {count(t['tiles'], 'tile')} "
                 f"({count(t['chips'], 'chip')}), utilisation {percent(t['utilisation'])}, "
                 f"energy {_pretty_e(t['energy_total_pj'])}, latency {_pretty_t(t['latency_ns'])}, "
                 f"{decimal(t['throughput_inferences_per_s'])} inferences/s, {decimal(t['tops_per_w'])} TOPS/W")
    if report["unsupported"]:
        lines.append(f"costed as unknown digital ops: {count(len(report['unsupported']), 'node')}")
    return "\n".join(lines) + "\n"


_pretty_e = energy
_pretty_t = duration


def markdown(report: dict) -> str:
    t = report["totals"]
    md = [f"# acompile report: `{report['model']['source']}` on `{report['target']['name']}`", "",
          f"Batch {report['options']['batch']}, seed {report['options']['seed']}. {report['calibration_note']}."
          + "".join(f" Target override: `{k} = {v}`." for k, v in report["target"].get("overrides", {}).items())
          + (f" Weight scales from the quantized model: {', '.join(map(_md, report['model_scales']['weights']))}; "
             f"input scales and zero points: {', '.join(map(_md, report['model_scales']['inputs'])) or 'none'}."
             if "model_scales" in report else ""), "",
          "## Totals", "", "| figure | value |", "|---|---|"]
    rows = [
        ("crossbars / tiles / chips", f"{count(t['crossbars'])} / {count(t['tiles'])} / {count(t['chips'])}"),
        ("weights", count(t["weights"])),
        ("utilisation (weight cells / crossbar cells)", percent(t["utilisation"], 2)),
        ("MACs (analog)", count(t["macs"])),
        ("analog fraction of MACs", percent(t["analog_mac_fraction"], 2)),
        ("energy per inference", _pretty_e(t["energy_total_pj"])),
        ("latency (single inference)", _pretty_t(t["latency_ns"])),
        ("throughput (pipelined)", f"{decimal(t['throughput_inferences_per_s'], 4)} inferences/s"),
        ("efficiency", f"{decimal(t['tops_per_w'])} TOPS/W"),
        ("area of the tiles used", f"{decimal(t['area_tiles_mm2'], 4)} mm²"),
        ("area of the chips", f"{decimal(t['area_chips_mm2'], 4)} mm²"),
    ]
    md += [f"| {a} | {b} |" for a, b in rows]
    md += ["", "![energy by component](report_energy.svg)", "", "## Energy by component", "",
           "| component | energy | share |", "|---|---:|---:|"]
    total = t["energy_total_pj"] or 1.0
    for k, v in t["energy_pj"].items():
        md.append(f"| {k} | {energy(v)} | {percent(v / total)} |")
    md += ["", "## Analog layers", "", "![energy per layer](report_layers.svg)", "",
           "| layer | op | matrix N×K (×groups) | row×col blocks | crossbars | vectors | cycles | DAC conv. | "
           "ADC conv. | reads | energy | latency | utilisation |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in report["layers"]:
        c = x["counts"]
        g = f" ×{x['groups']}" if x["groups"] > 1 else ""
        md.append(f"| {_md(x['name'])} | {x['op_type']} | {x['matrix'][0]}×{x['matrix'][1]}{g} | "
                  f"{x['row_blocks']}×{x['col_blocks']} | {count(c['crossbars'])} | {count(c['input_vectors'])} | "
                  f"{count(c['cycles_per_vector'])} | {count(c['dac_conversions'])} | {count(c['adc_conversions'])} | "
                  f"{count(c['array_reads'])} | {energy(x['energy_total_pj'])} | {duration(x['latency_ns'])} | "
                  f"{percent(x['utilisation'])} |")
    md += ["", "## Digital operations", ""]
    by_op, nodes = digital_view(report)
    if by_op is not None:
        md += [f"{count(len(report['digital']), 'digital node')}, by operator (report.json lists every node):", "",
               "| op | nodes | ops | energy | latency (sum) |", "|---|---:|---:|---:|---:|"]
        md += [f"| {_md(r['op_type'])} | {count(r['nodes'])} | {count(r['ops'])} | {energy(r['energy_pj'])} | "
               f"{duration(r['latency_ns'])} |" for r in by_op]
        md += ["", f"The {len(nodes)} that take the most energy:", ""]
    md += ["| node | op | ops | energy | latency |", "|---|---|---:|---:|---:|"]
    for x in nodes:
        flag = digital_flag(x)
        md.append(f"| {_md(x['name'])} | {x['op_type']}{flag} | {count(x['counts']['digital_ops'])} | "
                  f"{energy(x['energy_total_pj'])} | {duration(x['latency_ns'])} |")
    if report["unsupported"]:
        md += ["", "## Unsupported (costed as unknown digital ops)", ""]
        md += [f"- `{_md(p['node'])}` ({p['op_type']}, opset {p['opset']}): {p['reason']}" for p in report["unsupported"]]
    md += ["", "## Per-event figures of the target", "", "| event | energy |", "|---|---:|"]
    md += [f"| {k.removesuffix('_pj_per_event')} | {energy(v)} |" for k, v in sorted(report["per_event_figures"].items())]
    return "\n".join(md) + "\n"


def _md(text: str) -> str:
    """A name as Markdown table text: no column breaks, and no HTML a Markdown viewer would render."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("`", "'")


def _calibration_note(graph, options) -> str:
    if graph.meta.get("calibration_unneeded"):
        unused = " (the calibration file is not needed)" if options.calibration else ""
        return ("No calibration run: every analog layer takes the quantized model's own input scale, and the "
                "ADC range is the worst case" + unused)
    if options.calibration:
        return "input scales and ADC ranges from the calibration file"
    samples = graph.meta.get("default_calibration_samples")
    if samples is None:     # nothing calibrated: no analog layer
        return "No calibration data given, and no analog layer needs it"
    fill = graph.meta.get("default_calibration_fill")
    fill = f"; {fill}, the first defaults under which every analog layer sees a finite input" if fill else ""
    integers = graph.meta.get("default_calibration_integers")
    integers = f"; {integers}" if integers else ""
    floats = any(getattr(graph.tensors[n].dtype, "kind", "f") == "f" for n in graph.inputs)     # unknown: float
    samples = count(samples, "seeded standard-normal sample" if floats else "seeded sample")
    return (f"No calibration data given: input scales come from {samples} "
            f"per input{integers}{fill} (pass --calibration DATA for real activations)")


def write_report(report: dict, folder: Path, dumps) -> list[str]:
    """report.json, report.md and its two charts (SVG by :mod:`.charts`); return the file names."""
    from . import charts
    drawn = charts.render_all(report)
    (folder / "report.json").write_text(dumps(report))
    (folder / "report.md").write_text(markdown(report))
    (folder / "report_energy.svg").write_text(charts.standalone(drawn.get("energy-components", charts.EMPTY)))
    (folder / "report_layers.svg").write_text(charts.standalone(drawn.get("energy-layers", charts.EMPTY)))
    return ["report.json", "report.md", "report_energy.svg", "report_layers.svg"]
