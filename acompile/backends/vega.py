"""report.html's charts as Vega-Lite specifications, drawn in the browser by the vendored Vega,
Vega-Lite and vega-embed builds (``vendor/``, BSD-3-Clause) inlined into the page: no network fetches.

Compiling only writes the JSON specs (no drawing cost); the same three charts as :mod:`.charts`
(energy by component, energy by layer stacked by component, latency pipeline with replication and the
bottleneck marked). Specs are serialised with sorted keys, so a page is byte-identical run to run.
Each axis reads in one SI unit chosen for its largest value (pJ ... mJ, ns ... s), ticks in d3-format
``,.4~r`` and bar labels from :mod:`acompile.units`: no raw exponents.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..units import duration, energy
from .charts import MAX_BARS, PALETTE, colour, layer_energy_rows

VENDOR = Path(__file__).with_name("vendor")
LIBRARIES = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"   # an identifier only; never fetched
_WIDTH = 760
_FONT = 'system-ui,-apple-system,"Segoe UI",Roboto,sans-serif'
_CONFIG = {"font": _FONT, "view": {"stroke": None}, "axis": {"labelFontSize": 11, "titleFontSize": 12},
           "axisQuantitative": {"tickCount": 8},
           "title": {"fontSize": 14, "anchor": "start"}, "legend": {"labelFontSize": 11}}


_ENERGY = ((1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ"), (1.0, "pJ"))
_TIME = ((1e9, "s"), (1e6, "ms"), (1e3, "µs"), (1.0, "ns"))
_FORMAT = ",.4~r"   # axis ticks after scaling to one SI unit: 0.5, 12, 1,500 (never an exponent)


def _unit(largest: float, ladder) -> tuple[float, str]:
    """The SI unit an axis reads in: the largest prefix that keeps its largest value at least 1."""
    return next(((s, u) for s, u in ladder if largest >= s), ladder[-1])


def _spec(title: str, rows: int, layer_or_mark: dict, data: list[dict]) -> dict:
    return {"$schema": _SCHEMA, "title": title, "width": _WIDTH, "height": {"step": 18} if rows else 40,
            "data": {"values": data}, "config": _CONFIG, **layer_or_mark}


def _component_colours(report: dict, names: list[str]) -> list[str]:
    order = list(report["totals"]["energy_pj"])
    return [PALETTE[-1 - order.index(n) % len(PALETTE)] for n in names]


def energy_by_component(report: dict) -> dict:
    items = [(k, v) for k, v in report["totals"]["energy_pj"].items() if v > 0]
    scale, unit = _unit(max((v for _, v in items), default=0.0), _ENERGY)
    data = [{"component": k, "value": v / scale, "text": energy(v)} for k, v in items]
    names = [k for k, _ in items]
    y = {"field": "component", "type": "nominal", "sort": None, "title": None}
    return _spec("Energy per inference by component", len(items), {"encoding": {"y": y}, "layer": [
        {"mark": {"type": "bar", "tooltip": True},
         "encoding": {"x": {"field": "value", "type": "quantitative", "title": f"energy ({unit})",
                            "axis": {"format": _FORMAT}},
                      "tooltip": [{"field": "component"}, {"field": "text", "title": "energy"}],
                      "color": {"field": "component", "type": "nominal", "legend": None,
                                "scale": {"domain": names, "range": _component_colours(report, names)}}}},
        {"mark": {"type": "text", "align": "left", "dx": 4},
         "encoding": {"x": {"field": "value", "type": "quantitative"}, "text": {"field": "text"}}}]}, data)


def energy_by_layer(report: dict) -> dict:
    """One bar per analog layer (and one for all digital nodes), stacked by energy component."""
    rows, components = layer_energy_rows(report)
    scale, unit = _unit(max((sum(e.get(c, 0.0) for c in components) for _, e in rows), default=0.0), _ENERGY)
    data = [{"layer": n, "component": c, "order": i, "value": e[c] / scale, "text": energy(e[c])}
            for n, e in rows for i, c in enumerate(components) if e.get(c, 0.0) > 0]
    static = report["totals"]["energy_pj"].get("static", 0)
    x_title = f"energy ({unit})" + (f"; static energy ({energy(static)}) belongs to the tiles, not to a layer: "
                               "it is in the chart above only" if static > 0 else "")
    return _spec("Energy per inference by layer, stacked by component", len(rows), {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {"y": {"field": "layer", "type": "nominal", "sort": [n for n, _ in rows], "title": None},
                     "x": {"aggregate": "sum", "field": "value", "type": "quantitative", "title": x_title,
                           "axis": {"format": _FORMAT}},
                     "tooltip": [{"field": "layer"}, {"field": "component"}, {"field": "text", "title": "energy"}],
                     "color": {"field": "component", "type": "nominal", "title": "component",
                               "scale": {"domain": components, "range": _component_colours(report, components)},
                               "legend": {"orient": "bottom", "direction": "horizontal"}},
                     "order": {"field": "order", "type": "quantitative"}}}, data)


def latency_pipeline(report: dict) -> dict:
    """Each analog layer as a pipeline stage: a bar from its start (layers in order) for its latency,
    its replication written beside it and the slowest stage (the throughput bottleneck) in red."""
    layers = report["layers"][:MAX_BARS]
    slowest = max((x["latency_ns"] for x in layers), default=0.0)
    scale, unit = _unit(sum(x["latency_ns"] for x in layers), _TIME)
    data, start = [], 0.0
    for i, x in enumerate(layers):
        bottleneck = x["latency_ns"] == slowest and slowest > 0
        note = duration(x["latency_ns"]) + (f", ×{x['replication']} copies" if x["replication"] > 1 else "") \
            + ("  ◀ bottleneck" if bottleneck else "")
        data.append({"layer": x["name"], "start": start / scale, "end": (start + x["latency_ns"]) / scale,
                     "copies": x["replication"],
                     "colour": "#D55E00" if bottleneck else colour(i % 8), "note": note,
                     "stroke": "#000000" if bottleneck else "#ffffff"})
        start += x["latency_ns"]
    y = {"field": "layer", "type": "nominal", "sort": [x["name"] for x in layers], "title": None}
    return _spec("Latency per analog layer (pipeline stages in order; red: the slowest stage)", len(layers), {
        "encoding": {"y": y}, "layer": [
            {"mark": {"type": "bar", "strokeWidth": 1.5, "tooltip": True},
             "encoding": {"x": {"field": "start", "type": "quantitative", "title": f"time from the input ({unit})",
                                "axis": {"format": _FORMAT}, "scale": {"domain": [0, start / scale * 1.35 or 1]}},
                          "tooltip": [{"field": "layer"}, {"field": "note", "title": "latency"},
                                      {"field": "copies"}],
                          "x2": {"field": "end"}, "color": {"field": "colour", "type": "nominal", "scale": None},
                          "stroke": {"field": "stroke", "type": "nominal", "scale": None}}},
            {"mark": {"type": "text", "align": "left", "dx": 4},
             "encoding": {"x": {"field": "end", "type": "quantitative"}, "text": {"field": "note"}}}]}, data)


def specs(report: dict) -> dict[str, dict]:
    """Every chart of report.html, keyed by its container id."""
    out = {}
    if report["layers"] or report["digital"]:
        out["energy-components"] = energy_by_component(report)
        out["energy-layers"] = energy_by_layer(report)
    if report["layers"]:
        out["latency"] = latency_pipeline(report)
    return out


@lru_cache(maxsize=1)
def libraries() -> str:
    """The three vendored libraries as one inline script body (read once per process)."""
    parts = []
    for name in LIBRARIES:
        text = (VENDOR / name).read_text(encoding="utf-8")
        parts.append(text.replace("</script", "<\\/script"))
    return "\n".join(parts)


def container(chart_id: str) -> str:
    return f'<div class="chart vega" id="chart-{chart_id}"></div>'


def _json(spec: dict) -> str:
    """A spec as a JavaScript literal: sorted keys, and no "</" that could end the script element."""
    return json.dumps(spec, sort_keys=True, ensure_ascii=False).replace("</", "<\\/")


def embed_script(charts: dict[str, dict]) -> str:
    """One <script> with the libraries, then one with every vegaEmbed call (SVG renderer, no action menu)."""
    if not charts:
        return ""
    calls = "".join(f'vegaEmbed("#chart-{k}",{_json(v)},{{renderer:"svg",actions:false}})'
                    '.catch(function(e){console.error(e);});\n' for k, v in sorted(charts.items()))
    return f"<script>{libraries()}</script>\n<script>\n{calls}</script>"
