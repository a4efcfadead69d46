"""report.md's charts as SVG files: energy by component and energy by layer stacked by component
(report_energy.svg, report_layers.svg), and the palette every view shares.

Written straight as SVG by svgbars (milliseconds; matplotlib cost every compile 1-3 s of import
and drawing), byte-identical run to run. report.html draws the same charts, and the latency pipeline,
with Vega-Lite in the browser (:mod:`.vega`).
"""

from __future__ import annotations

from ..units import energy
from .svgbars import Bars, render

# colour-blind-safe qualitative palette (Okabe-Ito, then Tableau): components and layers
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
           "#4E79A7", "#F28E2B", "#59A14F", "#B07AA1", "#76B7B2", "#EDC948", "#FF9DA7", "#9C755F")
MAX_BARS = 40
EMPTY = '<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="300" height="30"><text x="4" y="20">' \
        'nothing to chart</text></svg>'


def colour(i: int) -> str:
    """The colour of layer ``i`` (the floorplan, legend and table use the same)."""
    return PALETTE[i % len(PALETTE)]


def _component_colour(report: dict, name: str) -> str:
    """Energy components take the palette from its far end, so they do not read as layers."""
    return PALETTE[-1 - list(report["totals"]["energy_pj"]).index(name) % len(PALETTE)]


def energy_by_component(report: dict) -> str:
    items = [(k, v) for k, v in report["totals"]["energy_pj"].items() if v > 0]
    return render(Bars("Energy per inference by component", [k for k, _ in items],
                       [[(0.0, v, _component_colour(report, k))] for k, v in items],
                       [energy(v) for _, v in items], energy), "energy-components")


def layer_energy_rows(report: dict) -> tuple[list[tuple[str, dict]], list[str]]:
    """(name, energy by component) for each analog layer shown and one row for all digital nodes, and
    the components that are non-zero somewhere, in the totals' order."""
    rows = [(x["name"], x["energy_pj"]) for x in report["layers"][:MAX_BARS]]
    if report["digital"]:
        dig: dict[str, float] = {}
        for x in report["digital"]:
            for k, v in x["energy_pj"].items():
                dig[k] = dig.get(k, 0.0) + v
        rows.append((f"digital ({len(report['digital'])})", dig))
    components = [k for k in report["totals"]["energy_pj"] if any(e.get(k, 0) > 0 for _, e in rows)]
    return rows, components


def energy_by_layer(report: dict) -> str:
    """One bar per analog layer (and one for all digital nodes), stacked by energy component."""
    rows, components = layer_energy_rows(report)
    segments, totals = [], []
    for _, e in rows:
        seg, start = [], 0.0
        for comp in components:
            v = e.get(comp, 0.0)
            seg.append((start, v, _component_colour(report, comp)))
            start += v
        segments.append(seg)
        totals.append(start)
    static = report["totals"]["energy_pj"].get("static", 0)
    xlabel = (f"static energy ({energy(static)}) belongs to the tiles, not to a layer: it is in the chart above "
              "only") if static > 0 else ""
    return render(Bars("Energy per inference by layer, stacked by component", [n for n, _ in rows], segments,
                       [energy(v) for v in totals], energy,
                       legend=[(c, _component_colour(report, c)) for c in components], xlabel=xlabel),
                  "energy-layers")


def render_all(report: dict) -> dict[str, str]:
    """The charts of report.md (report_energy.svg, report_layers.svg); report.html draws its own with Vega-Lite
    (:mod:`.vega`)."""
    out = {}
    if report["layers"] or report["digital"]:
        out["energy-components"] = energy_by_component(report)
        out["energy-layers"] = energy_by_layer(report)
    return out


def standalone(svg: str) -> str:
    """An inlined chart as a file of its own (report_*.svg)."""
    return '<?xml version="1.0" encoding="utf-8" standalone="no"?>\n' + svg + "\n"
