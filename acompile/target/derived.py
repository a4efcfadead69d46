"""Figures derived from a resolved target: the power/area breakdown and the peak-throughput summary.

Power and area add up component by component, core -> tile -> chip. Peak
throughput uses the hardware formulas of :mod:`acompile.hardware`, the same ones
the compiler, the simulator and the cost model use.
"""

from __future__ import annotations

from collections.abc import Mapping

from acompile import hardware as hw
from acompile.units import decimal

from .problems import fmt


def breakdown(d: Mapping) -> list[dict]:
    """Power and area item by item, level by level (the paper-style component table)."""
    xb, org = d["crossbar"], d["organisation"]
    adcs = hw.adcs_per_crossbar(xb["cols"], d["adc"]["columns_per_adc"])
    per_core = org["crossbars_per_core"]
    rows = [
        _item("core", "crossbar", per_core, xb["power_mw"], xb["area_um2"] / 1e6,
              f"{xb['rows']}x{xb['cols']}, {xb['cell_bits']}-bit cells"),
        _item("core", "dac", per_core * xb["rows"], d["dac"]["power_mw"], d["dac"]["area_um2"] / 1e6,
              "row driver, no DAC" if d["dac"]["kind"] == "none" else f"{d['dac']['bits']}-bit, one per row"),
        _item("core", "adc", per_core * adcs, d["adc"]["power_mw"], d["adc"]["area_um2"] / 1e6,
              f"{d['adc']['bits']}-bit, {adcs} per crossbar"),
        _item("core", "shift_add", d["shift_add"]["units_per_core"], d["shift_add"]["power_mw"],
              d["shift_add"]["area_um2"] / 1e6, ""),
        *_component_items("core", d["core"]["components"]),
    ]
    core_power, core_area = _totals(rows, "core")
    net = d["network"]
    rows += [
        _item("tile", "core", d["organisation"]["cores_per_tile"], core_power, core_area, "the core above"),
        _item("tile", "buffer", 1, d["buffer"]["power_mw"], d["buffer"]["area_mm2"],
              f"{fmt(d['buffer']['size_kb'])} KB"),
        _item("tile", "router", 1 / net["tiles_per_router"], net["router_power_mw"], net["router_area_mm2"],
              f"shared by {net['tiles_per_router']} tiles"),
        *_component_items("tile", d["tile"]["components"]),
    ]
    tile_power, tile_area = _totals(rows, "tile")
    chip = d["chip"]
    rows += [
        _item("chip", "tile", org["tiles_per_chip"], tile_power, tile_area, "the tile above"),
        _item("chip", "io_link", chip["io_links"], chip["io_link_power_mw"], chip["io_link_area_mm2"],
              "chip-to-chip link"),
        _item("chip", "static", 1, chip["static_power_mw"], 0.0, "not itemised"),
        *_component_items("chip", d["chip"]["components"]),
    ]
    return rows


def _item(level: str, name: str, count: float, power_mw: float, area_mm2: float, spec: str) -> dict:
    return {"level": level, "component": name, "count": count, "power_mw": power_mw, "area_mm2": area_mm2,
            "total_power_mw": count * power_mw, "total_area_mm2": count * area_mm2, "spec": spec}


def _component_items(level: str, components: Mapping) -> list[dict]:
    return [_item(level, name, c["count"] / c["shared_by"], c["power_mw"], c["area_mm2"], c["spec"])
            for name, c in components.items()]


def _totals(rows: list[dict], level: str) -> tuple[float, float]:
    mine = [r for r in rows if r["level"] == level]
    return sum(r["total_power_mw"] for r in mine), sum(r["total_area_mm2"] for r in mine)


def summary(d: Mapping) -> dict:
    """Derived totals: power and area per level, peak throughput and efficiencies.

    Peak throughput, every step an :mod:`acompile.hardware` formula::

        S  = slices(Bm, cell_bits)       Bm = Bw - 1 (differential) or Bw (offset)
        C  = columns_per_weight(S)       S, twice for a differential pair
        T  = input_cycles(Bx, dac_bits, signed=False)   ceil(Bx / dac_bits)
        t  = cycle_time_ns(t_read, cols, adcs_per_crossbar, t_adc, t_sh, pipelined)
        peak_tops = 2 * crossbars_per_chip * rows * cols / C / (T * t) / 1e3

    ``peak_tops`` is for unsigned inputs (a layer whose inputs the graph proves
    non-negative, e.g. after a Relu), the fastest case the compiler produces and
    so a bound on every report; ``peak_tops_signed_inputs`` is the same chip on
    signed inputs (the model's own inputs), with the cycle count the reports use
    for them (``input_cycles_signed``: the sign bit in its own cycle, or two
    phases in sign-magnitude). Both call the one ``input_cycles`` formula. One
    MAC counts as two operations. The cycle is the cost model's: reads and
    conversions in series, or the slowest stage when ``adc.pipelined``.
    ``tile_held_power_mw`` and ``chip_held_power_mw`` are the static power the
    cost model charges while a tile or chip is in use. ``tops_per_w`` divides
    by the itemised chip power (the paper's way); ``tops_per_w_events`` by the
    power the cost model charges when every crossbar reads every cycle (its
    per-event figures at the peak rate, plus the held power of every tile): no
    report's analog work can be more efficient than that.
    ``tops_per_w`` and ``tops_per_mm2`` are None when the file itemises no
    power or area.
    """
    xb, org, prec = d["crossbar"], d["organisation"], d["precision"]
    rows = breakdown(d)
    core_p, core_a = _totals(rows, "core")
    tile_p, tile_a = _totals(rows, "tile")
    chip_p, chip_a = _totals(rows, "chip")
    differential = xb["signed_weights"] == "differential"
    slices = hw.slices(hw.magnitude_bits(prec["weight_bits"], differential), xb["cell_bits"])
    columns_per_weight = hw.columns_per_weight(slices, differential)
    input_cycles = hw.input_cycles(prec["input_bits"], d["dac"]["bits"], signed=False,
                                   encoding=d["dac"]["input_encoding"])
    signed_cycles = hw.input_cycles(prec["input_bits"], d["dac"]["bits"], signed=True,
                                    encoding=d["dac"]["input_encoding"])
    adcs = hw.adcs_per_crossbar(xb["cols"], d["adc"]["columns_per_adc"])
    adc = d["adc"]
    cycle_ns = hw.cycle_time_ns(xb["read_latency_ns"], xb["cols"], adcs, adc["conversion_ns"],
                                adc["sample_hold_ns"], adc["pipelined"])
    crossbars = org["crossbars_per_core"] * org["cores_per_tile"] * org["tiles_per_chip"]
    macs_per_cycle = hw.macs_per_crossbar_cycle(xb["rows"], xb["cols"], columns_per_weight)
    peak_tops = hw.peak_tops(crossbars, macs_per_cycle, input_cycles, cycle_ns)
    peak_signed = hw.peak_tops(crossbars, macs_per_cycle, signed_cycles, cycle_ns)
    tile_held, chip_held = _held(d)
    # the cost model's own ceiling: every crossbar read every cycle at its per-event figures, all tiles held
    event_pj = (xb["read_energy_pj"] + xb["rows"] * d["dac"]["energy_pj"]
                + xb["cols"] * (adc["energy_pj"] + d["shift_add"]["energy_pj"]))
    busy_mw = crossbars * event_pj / cycle_ns + org["tiles_per_chip"] * tile_held + chip_held
    chip_power_w = chip_p / 1e3
    return {
        "core_power_mw": core_p, "core_area_mm2": core_a,
        "tile_power_mw": tile_p, "tile_area_mm2": tile_a,
        "chip_power_w": chip_power_w, "chip_area_mm2": chip_a,
        "crossbars_per_chip": crossbars,
        "weights_per_chip": crossbars * hw.weights_per_crossbar(xb["rows"], xb["cols"], columns_per_weight),
        "slices": slices, "columns_per_weight": columns_per_weight, "input_cycles": input_cycles,
        "input_cycles_signed": signed_cycles,
        "adcs_per_crossbar": adcs, "cycle_ns": cycle_ns, "macs_per_crossbar_cycle": macs_per_cycle,
        "peak_tops": peak_tops, "peak_tops_signed_inputs": peak_signed,
        "tile_held_power_mw": tile_held, "chip_held_power_mw": chip_held,
        "tops_per_w_events": peak_tops / (busy_mw / 1e3) if busy_mw > 0 else None,
        "tops_per_w": peak_tops / chip_power_w if chip_power_w > 0 else None,
        "tops_per_mm2": peak_tops / chip_a if chip_a > 0 else None,
    }


def _held(d: Mapping) -> tuple[float, float]:
    """(held power of one tile incl. its cores', of one chip beyond its tiles), in mW.

    The crossbars, DACs, ADCs, shift-adds, buffers, routers and links are priced per event by the
    cost model; the components listed by name (registers, sample-and-hold, buses...) and the chip's
    unitemised static power have no per-event figure and draw their power while held.
    """
    def held(level: str) -> float:
        return sum(r["total_power_mw"] for r in _component_items(level, d[level]["components"]))
    cores = d["organisation"]["cores_per_tile"]
    return cores * held("core") + held("tile"), held("chip") + d["chip"]["static_power_mw"]


def published(d: Mapping) -> dict:
    """The published figures, comparable with :func:`summary`.

    Figures measured at other precisions (``published.weight_bits`` and
    ``input_bits``) are scaled by (Bw_pub * Bx_pub) / (Bw * Bx): a design that
    streams input bits and spreads weight bits over columns does that much more
    work per operation at the file's precision. ``scale`` is that factor; a
    figure not published stays 0.
    """
    pub, prec = d["published"], d["precision"]
    bw, bx = prec["weight_bits"], prec["input_bits"]
    scale = (pub["weight_bits"] or bw) * (pub["input_bits"] or bx) / (bw * bx)
    figures = {k: pub[k] * scale for k in ("peak_tops", "tops_per_w", "tops_per_mm2")}
    return {**figures, "power_w": pub["power_w"], "scale": scale, "weight_bits": pub["weight_bits"] or bw,
            "input_bits": pub["input_bits"] or bx, "scope": pub["scope"], "source": pub["source"]}


def figure(value: float | None, digits: int = 4) -> str:
    """A derived figure for people: ``digits`` significant digits, or n/a when it cannot be derived."""
    return "n/a" if value is None else decimal(value, digits)
