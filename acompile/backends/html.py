"""``report.html``: the cost report for people in one self-contained page (no network fetches, prints
cleanly): summary, floorplan with legend, charts, sortable per-layer table with converter settings,
digital nodes, and per-layer SNR when a simulation attributed its error to layers.

It is a view of the report dictionary (:func:`acompile.backends.report.build_report`) plus the
mapping for the floorplan and converter settings; every number goes through :mod:`acompile.units`.
"""

from __future__ import annotations

from html import escape

from ..units import count, decimal, duration, energy, percent
from . import charts, vega
from .floorplan import AGGREGATE_ABOVE, floorplan_svg
from .report import digital_flag, digital_view

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1250px;color:#222;
padding:0 1em;line-height:1.35}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
.sub{color:#555;margin-top:0}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#eef1f4;position:sticky;top:0;white-space:normal;vertical-align:bottom} td.l,th.l{text-align:left}
table.sortable th{cursor:pointer} table.sortable th:after{content:" \\2195";color:#999;font-size:.8em}
.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:.5em}
.card{border:1px solid #ddd;border-radius:6px;padding:.4em .7em;background:#fafbfc}
.card b{display:block;font-size:1.2em} .card span{color:#555;font-size:.85em}
.legend{display:flex;flex-wrap:wrap;gap:.3em 1em;font-size:.85em;margin:.4em 0}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em;border:1px solid #666}
.scroll{overflow-x:auto} .floorplan{max-width:100%;height:auto} .chart{max-width:100%;overflow-x:auto;margin:.6em 0}
.no{color:#b00020} .yes{color:#1b6e20} .note{color:#555;font-size:.9em}
@media print{body{max-width:none;margin:0} th{position:static} .scroll{overflow:visible}
 h2{break-after:avoid} table,svg{break-inside:avoid}}
"""

# Sort a table by the clicked column: numbers by their data-v value, text alphabetically.
_JS = """
document.querySelectorAll("table.sortable").forEach(function(t){
  t.querySelectorAll("th").forEach(function(th,i){th.addEventListener("click",function(){
    var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),up=th.dataset.dir!=="up";
    th.dataset.dir=up?"up":"down";
    rows.sort(function(a,b){var x=a.cells[i],y=b.cells[i],p=x.dataset.v,q=y.dataset.v;
      var r=(p!==undefined&&q!==undefined)?(parseFloat(p)-parseFloat(q)):x.textContent.localeCompare(y.textContent);
      return up?r:-r;});
    rows.forEach(function(r){body.appendChild(r);});});});});
"""


def _num(value: float, text: str) -> str:
    return f'<td data-v="{value!r}">{escape(text)}</td>'


def _summary(report: dict) -> str:
    t = report["totals"]
    opts = report["options"]
    cards = [
        ("crossbars / tiles / chips", f"{count(t['crossbars'])} / {count(t['tiles'])} / {count(t['chips'])}",
         f"{count(report['crossbars_per_tile'])} crossbars per tile"),
        ("energy per inference", energy(t["energy_total_pj"]), f"{decimal(t['tops_per_w'])} TOPS/W"),
        ("latency", duration(t["latency_ns"]), "one inference, critical path"),
        ("throughput", f"{decimal(t['throughput_inferences_per_s'])} inferences/s",
         f"slowest stage {duration(t['slowest_stage_ns'])}"),
        ("area", f"{decimal(t['area_tiles_mm2'])} mm²", f"tiles used; {decimal(t['area_chips_mm2'])} mm² of chips"),
        ("utilisation", percent(t["utilisation"]), "weight cells / crossbar cells"),
        ("weights / MACs", f"{count(t['weights'])} / {count(t['macs'])}",
         f"{percent(t['analog_mac_fraction'])} of MACs analog"),
        ("layers", f"{count(t['analog_layers'], 'analog layer')}", count(t["digital_nodes"], "digital node")),
    ]
    html = ['<div class="summary">']
    html += [f'<div class="card"><span>{escape(a)}</span><b>{escape(b)}</b><span>{escape(c)}</span></div>'
             for a, b, c in cards]
    html.append("</div>")
    overrides = [f"batch {opts['batch']}", f"seed {opts['seed']}", f"calibration: {opts['calibration']}"]
    if opts.get("allow_unsupported"):
        overrides.append("unsupported ops allowed")
    if opts.get("replicate", "none") != "none":
        overrides.append(f"replication {opts['replicate']}")
    overrides += [f"target override {k} = {v}" for k, v in report["target"].get("overrides", {}).items()]
    html.append(f'<p class="note">{escape(", ".join(overrides))}. {escape(report["calibration_note"])}.</p>')
    return "".join(html)


def _legend(report: dict) -> str:
    items = [f'<span><i style="background:{charts.colour(i)}"></i>{escape(x["name"])}</span>'
             for i, x in enumerate(report["layers"])]
    return f'<div class="legend">{"".join(items)}</div>'


def _layer_table(report: dict, mapping, snr: dict | None) -> str:
    head = ["layer", "op", "matrix N × K", "blocks", "crossbars", "copies", "tiles",
            "bits in / DAC / weight / cell / ADC", "ADC full scale", "ADC lossless", "energy", "latency",
            "utilisation"] + (["SNR"] if snr else [])
    rows = []
    specs = {x.name: x for x in (mapping.layers if mapping else [])}
    for x in report["layers"]:
        layer = specs.get(x["name"])
        spec = layer.spec if layer is not None else None
        g = f" × {x['groups']}" if x["groups"] > 1 else ""
        cells = [f'<td class="l"><i style="display:inline-block;width:.7em;height:.7em;background:'
                 f'{charts.colour(report["layers"].index(x))}"></i> {escape(x["name"])}</td>',
                 f'<td class="l">{escape(x["op_type"])}</td>',
                 _num(x["matrix"][0] * x["matrix"][1], f"{x['matrix'][0]} × {x['matrix'][1]}{g}"),
                 _num(x["counts"]["blocks"], f"{x['row_blocks']} × {x['col_blocks']}"),
                 _num(x["counts"]["crossbars"], count(x["counts"]["crossbars"])),
                 _num(x["replication"], str(x["replication"])),
                 f'<td class="l">{escape(", ".join(map(str, x["tiles"][:8])) + (" …" if len(x["tiles"]) > 8 else ""))}</td>']
        if spec is not None:
            exact = spec.max_code >= x["adc_full_scale"]
            why = (f"{spec.max_code} codes for full scale {decimal(x['adc_full_scale'])} "
                   f"(worst case {decimal(spec.worst_case_full_scale)})")
            bits = f"{spec.input_bits} / {spec.dac_bits} / {spec.weight_bits} / {spec.cell_bits} / {spec.adc_bits}"
            cells += [_num(spec.adc_bits, bits),
                      _num(x["adc_full_scale"], decimal(x["adc_full_scale"])),
                      f'<td class="{"yes" if exact else "no"}" title="{escape(why)}">{"yes" if exact else "no"}</td>']
        else:
            cells += ["<td>-</td>"] * 3
        cells += [_num(x["energy_total_pj"], energy(x["energy_total_pj"])),
                  _num(x["latency_ns"], duration(x["latency_ns"])),
                  _num(x["utilisation"], percent(x["utilisation"]))]
        if snr:
            v = snr.get(x["name"])
            cells.append(_num(v, f"{decimal(v)} dB") if v is not None else "<td>-</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ths = "".join(f'<th{" class=l" if h in ("layer", "op", "tiles") else ""}>{escape(h)}</th>' for h in head)
    return (f'<div class="scroll"><table class="sortable" id="layers"><thead><tr>{ths}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _digital_table(report: dict) -> str:
    if not report["digital"]:
        return "<p>No digital nodes.</p>"
    by_op, nodes = digital_view(report)
    head = ""
    if by_op is not None:
        ops = "".join(f'<tr><td class="l">{escape(r["op_type"])}</td>' + _num(r["nodes"], count(r["nodes"]))
                      + _num(r["ops"], count(r["ops"])) + _num(r["energy_pj"], energy(r["energy_pj"]))
                      + _num(r["latency_ns"], duration(r["latency_ns"])) + "</tr>" for r in by_op)
        head = (f'<p class="note">{count(len(report["digital"]), "digital node")}, by operator (report.json lists '
                f'every node), then the {len(nodes)} that take the most energy.</p><div class="scroll"><table '
                'class="sortable" id="digital-ops"><thead><tr><th class=l>op</th><th>nodes</th><th>ops</th>'
                f'<th>energy</th><th>latency (sum)</th></tr></thead><tbody>{ops}</tbody></table></div>')
    rows = []
    for x in nodes:
        flag = digital_flag(x)
        rows.append(f'<tr><td class="l">{escape(x["name"])}</td><td class="l">{escape(x["op_type"] + flag)}</td>'
                    + _num(x["counts"]["digital_ops"], count(x["counts"]["digital_ops"]))
                    + _num(x["energy_total_pj"], energy(x["energy_total_pj"]))
                    + _num(x["latency_ns"], duration(x["latency_ns"])) + "</tr>")
    return (head + '<div class="scroll"><table class="sortable" id="digital"><thead><tr><th class=l>node</th>'
            '<th class=l>op</th><th>ops</th><th>energy</th><th>latency</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def render_html(report: dict, mapping, snr_db: dict[str, float] | None = None) -> str:
    """The page. ``snr_db``: per-layer SNR (dB) from a simulation's error attribution, keyed by layer name.
    The charts are Vega-Lite specs drawn by the browser (:mod:`.vega`): nothing is drawn here."""
    specs = vega.specs(report)
    chart = lambda k: vega.container(k) if k in specs else ""  # noqa: E731
    title = f"acompile: {report['model']['source']} on {report['target']['name']}"
    bars = report["totals"].get("crossbars", 0)
    view = (f"one box per tile (more than {count(AGGREGATE_ABOVE, 'crossbar')}): the coloured bar shows how many "
            "of the tile's crossbars each layer occupies" if bars > AGGREGATE_ABOVE else
            "chip → tiles → cores → crossbars; each crossbar shows the blocks it holds (hover for layer, block, "
            "size and utilisation); dashed squares are free crossbars of used tiles")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">model <code>{escape(report["model"]["name"] or report["model"]["source"])}</code>, '
        f'opset {report["model"]["opset"]}; acompile {escape(report["tool"]["version"])}</p>',
        "<h2>Summary</h2>", _summary(report),
        '<h2 id="floorplan">Floorplan</h2>', f'<p class="note">{escape(view)}.</p>', _legend(report),
        f'<div class="scroll">{floorplan_svg(mapping) if mapping is not None else ""}</div>',
        '<h2 id="energy">Energy</h2>', chart("energy-components"), chart("energy-layers"),
        '<h2 id="latency">Latency</h2>', chart("latency")]
    parts += ['<h2 id="layers-h">Analog layers</h2>',
              '<p class="note">Click a column header to sort. ADC lossless: the ADC has a code for every integer '
              'current up to the layer\'s full scale (step 1), so it adds no rounding within that range.</p>',
              _layer_table(report, mapping, snr_db), "<h2>Digital nodes</h2>", _digital_table(report)]
    if report["unsupported"]:
        items = "".join(f"<li><code>{escape(p['node'])}</code> ({escape(p['op_type'])}): {escape(p['reason'])}</li>"
                        for p in report["unsupported"])
        parts.append(f"<h2>Unsupported (costed as unknown digital ops)</h2><ul>{items}</ul>")
    parts += [f"<script>{_JS}</script>", vega.embed_script(specs), "</body></html>"]
    return "\n".join(parts) + "\n"


def write_html(path, report: dict, mapping, snr_db: dict[str, float] | None = None) -> None:
    from pathlib import Path
    Path(path).write_text(render_html(report, mapping, snr_db), encoding="utf-8")
