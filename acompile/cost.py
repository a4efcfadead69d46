"""The cost model (DESIGN §4): counts from the mapping times figures from the target.

Every figure is built as ``count x per-event figure`` and the report keeps
both sides, so any number can be traced by hand. Counts are for one
inference at the compile batch size.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from .frontend.ops import digital_ops, support
from .ir import Graph
from .mapping import AnalogLayer, Mapping
from .passes.place import mesh_position
from .sim import analog

ENERGY_COMPONENTS = ("dac", "array", "adc", "shift_add", "digital", "buffer", "network", "io", "static")


def _act_bytes(target) -> int:
    return math.ceil(int(target["precision.input_bits"]) / 8)


def adcs_per_crossbar(target) -> int:
    return math.ceil(int(target["crossbar.cols"]) / int(target["adc.columns_per_adc"]))


def _digital_figure(target, op_type: str, key: str) -> float:
    return float(target.digital_op(op_type)[key])


def layer_counts(layer: AnalogLayer, mapping: Mapping, target) -> dict:
    """Event counts of one analog layer for one inference (DESIGN §4)."""
    spec = layer.spec
    cycles = len(analog.input_cycles(spec, layer.input_signed))
    # copies of the layer (replicas) split its vectors: events are counted once, time is shared
    blocks = [mapping.blocks[b] for b in layer.blocks if mapping.blocks[b].replica == 0]
    rows = sum(b.rows for b in blocks)
    cols = sum(b.cols for b in blocks)
    v = layer.n_vec
    n_total = sum(m.n_out for m in layer.matrices)
    psum_adds = sum((m.row_blocks - 1) * m.n_out for m in layer.matrices)
    t_read = float(target["crossbar.read_latency_ns"])
    t_adc = float(target["adc.conversion_ns"])
    adcs = adcs_per_crossbar(target)
    per_bar = defaultdict(float)
    for b in blocks:  # blocks sharing a crossbar are read one after another
        per_bar[b.crossbar] += t_read + math.ceil(b.cols / adcs) * t_adc
    t_cycle = max(per_bar.values()) if per_bar else 0.0
    k_total = sum(m.k_in for m in layer.matrices)
    return {
        "input_vectors": v,
        "cycles_per_vector": cycles,
        "blocks": len(blocks),
        "crossbars": len({mapping.blocks[b].crossbar for b in layer.blocks}),   # replicas included
        "dac_conversions": v * cycles * rows,
        "array_reads": v * cycles * len(blocks),
        "adc_conversions": v * cycles * cols,
        "shift_adds": v * cycles * cols,
        "digital_ops": v * (psum_adds + 2 * n_total),   # partial sums, then scale and bias
        "macs": v * layer.macs_per_vec,
        "buffer_bytes": v * k_total * _act_bytes(target) + v * n_total * _act_bytes(target),
        "cycle_time_ns": t_cycle,
        "latency_ns": v * cycles * t_cycle / max(layer.replication, 1),
        "weights": layer.weights,
    }


def layer_cells(layer: AnalogLayer, mapping: Mapping, cells_per_bar: int) -> tuple[int, float]:
    """(cells holding the layer's weights, the layer's share of the cells of the crossbars it uses).

    A crossbar shared by several layers is apportioned by the cells each layer's blocks occupy.
    """
    from .passes.precision import slices
    spec = layer.spec
    per_weight = slices(spec) * (2 if spec.signed_weights == "differential" else 1)
    occupied: dict[int, int] = defaultdict(int)
    for b in layer.blocks:
        blk = mapping.blocks[b]
        occupied[blk.crossbar] += blk.rows * blk.cols
    share = 0.0
    for bar_index, cells in occupied.items():
        bar = mapping.crossbars[bar_index]
        total = sum(mapping.blocks[b].rows * mapping.blocks[b].cols for b in bar.blocks)
        share += cells_per_bar * cells / total
    return layer.weights * per_weight * layer.replication, share


def _hops(a_tile: int, b_tile: int, tiles_per_chip: int) -> tuple[int, bool]:
    ca, xa, ya = mesh_position(a_tile, tiles_per_chip)
    cb, xb, yb = mesh_position(b_tile, tiles_per_chip)
    return abs(xa - xb) + abs(ya - yb), ca != cb


def _home_tiles(mapping: Mapping) -> dict[int, int]:
    return {layer.index: (mapping.crossbars[mapping.blocks[layer.blocks[0]].crossbar].tile if layer.blocks else 0)
            for layer in mapping.layers}


def _sources(graph: Graph) -> dict[str, set[int]]:
    """For every tensor, the analog layers (indices) whose results flow into it; -1 is the graph input."""
    src: dict[str, set[int]] = {name: {-1} for name in graph.inputs}
    for node in graph.nodes:
        if node.domain == "acompile" and node.op_type == "FromVectors":
            here = {node.meta["layer"]}
        else:
            here = set()
            for i in node.inputs:
                here |= src.get(i, set())
        for o in node.outputs:
            src[o] = here
    return src


def _numel(graph: Graph, name: str) -> int:
    s = graph.static_shape(name)
    return int(np.prod(s)) if s is not None else 0


def cost_model(graph: Graph, target) -> dict:
    """Per-layer and total figures for one inference: counts, energy by component, latency, area."""
    mapping: Mapping = graph.meta["mapping"]
    act = _act_bytes(target)
    e = {
        "dac": float(target["dac.energy_pj"]), "array": float(target["crossbar.read_energy_pj"]),
        "adc": float(target["adc.energy_pj"]), "shift_add": float(target["shift_add.energy_pj"]),
        "buffer": float(target["buffer.energy_per_byte_pj"]),
        "network": float(target["network.energy_per_byte_hop_pj"]), "io": float(target["chip.io_energy_per_byte_pj"]),
    }
    hop_ns = float(target["network.hop_latency_ns"])
    link_bytes_per_ns = float(target["network.bytes_per_ns"])
    tiles_per_chip = int(target["organisation.tiles_per_chip"])
    lanes = int(target["digital.lanes_per_tile"])
    cells_per_bar = int(target["crossbar.rows"]) * int(target["crossbar.cols"])
    home = _home_tiles(mapping)
    sources = _sources(graph)
    readers: dict[int, list] = defaultdict(list)
    for n in graph.nodes:
        if n.domain == "acompile" and n.op_type == "ToVectors":
            readers[n.meta["layer"]].append(n)
    by_layer_node = {}
    layers_out = []
    for layer in mapping.layers:
        c = layer_counts(layer, mapping, target)
        in_bytes, byte_hops, io_bytes = 0, 0, 0
        for node_in in readers.get(layer.index, []):      # every use of the layer's crossbars
            nbytes = _numel(graph, node_in.inputs[0]) * act
            hops, cross_chip = 0, False
            for s in sources.get(node_in.inputs[0], {-1}):
                h, x = _hops(home.get(s, 0), home[layer.index], tiles_per_chip)
                hops, cross_chip = max(hops, h), cross_chip or x
            in_bytes += nbytes
            byte_hops += nbytes * hops
            io_bytes += nbytes if cross_chip else 0
        hops = byte_hops / in_bytes if in_bytes else 0
        c["network_bytes"] = in_bytes
        c["network_hops"] = hops
        c["io_bytes"] = io_bytes
        d_energy = _digital_figure(target, "Add", "energy_pj")
        energy = {
            "dac": c["dac_conversions"] * e["dac"],
            "array": c["array_reads"] * e["array"],
            "adc": c["adc_conversions"] * e["adc"],
            "shift_add": c["shift_adds"] * e["shift_add"],
            "digital": c["digital_ops"] * d_energy,
            "buffer": c["buffer_bytes"] * e["buffer"],
            "network": byte_hops * e["network"],
            "io": c["io_bytes"] * e["io"],
        }
        transfer_ns = hops * hop_ns + (in_bytes / link_bytes_per_ns if byte_hops else 0.0)
        latency = c["latency_ns"] + c["digital_ops"] * _digital_figure(target, "Add", "latency_ns") / lanes \
            + transfer_ns
        weight_cells, used_cells = layer_cells(layer, mapping, cells_per_bar)
        entry = {
            "name": layer.name, "op_type": layer.op_type, "kind": "analog", "groups": layer.groups,
            "replication": layer.replication, "uses": layer.uses,
            "matrix": [layer.matrices[0].n_out, layer.matrices[0].k_in],
            "row_blocks": layer.matrices[0].row_blocks, "col_blocks": layer.matrices[0].col_blocks,
            "physical_columns": layer.matrices[0].physical_cols,
            "input_signed": layer.input_signed, "input_scale": layer.input_scale,
            "adc_full_scale": layer.adc_full_scale,
            "tiles": sorted({mapping.crossbars[mapping.blocks[b].crossbar].tile for b in layer.blocks}),
            "counts": {k: v for k, v in c.items() if k not in ("cycle_time_ns", "latency_ns")},
            "cycle_time_ns": c["cycle_time_ns"],
            "energy_pj": energy,
            "energy_total_pj": sum(energy.values()),
            "latency_ns": latency,
            "weight_cells": weight_cells,
            "crossbar_cells": used_cells,
            "utilisation": weight_cells / used_cells if used_cells else 0.0,
        }
        by_layer_node[f"{layer.name}/CrossbarRead"] = latency
        layers_out.append(entry)

    digital_out = []
    for node in graph.nodes:
        if node.domain == "acompile":
            continue
        ops = digital_ops(graph, node)
        ops = 0.0 if math.isnan(ops) else ops
        sup = support(node)
        moved = sum(_numel(graph, i) for i in node.inputs if i and not graph.is_constant(i)) + \
            sum(_numel(graph, o) for o in node.outputs if o)
        energy = {"digital": ops * _digital_figure(target, node.op_type, "energy_pj"),
                  "buffer": moved * act * e["buffer"]}
        latency = ops * _digital_figure(target, node.op_type, "latency_ns") / lanes
        by_layer_node[node.name] = latency
        digital_out.append({
            "name": node.name, "op_type": node.op_type, "kind": "digital",
            "unknown": bool(node.meta.get("unknown")) or sup is None,
            "counts": {"digital_ops": ops, "buffer_bytes": moved * act},
            "energy_pj": energy, "energy_total_pj": sum(energy.values()), "latency_ns": latency,
        })

    latency_ns = _critical_path(graph, by_layer_node)
    stage_ns = max(by_layer_node.values(), default=0.0)
    summary = target.summary()
    static_mw = float(summary.get("tile_static_power_mw", 0.0)) * mapping.tiles_used
    total_energy = defaultdict(float)
    for entry in layers_out + digital_out:
        for k, v in entry["energy_pj"].items():
            total_energy[k] += v
    total_energy["static"] = static_mw * 1e-3 * latency_ns * 1e3   # mW x ns = pJ
    energy_pj = {k: total_energy.get(k, 0.0) for k in ENERGY_COMPONENTS}
    macs = sum(x["counts"]["macs"] for x in layers_out)
    digital_total = sum(x["counts"]["digital_ops"] for x in digital_out) + \
        sum(x["counts"]["digital_ops"] for x in layers_out)
    ops = 2 * macs + digital_total
    e_total = sum(energy_pj.values())
    weight_cells = sum(x["weight_cells"] for x in layers_out)
    crossbar_cells = len(mapping.crossbars) * int(target["crossbar.rows"]) * int(target["crossbar.cols"])
    totals = {
        "analog_layers": len(mapping.layers),
        "digital_nodes": len(digital_out),
        "crossbars": len(mapping.crossbars),
        "tiles": mapping.tiles_used,
        "chips": mapping.chips_needed,
        "fits_one_chip": mapping.chips_needed <= 1,
        "weights": sum(layer.weights for layer in mapping.layers),
        "macs": macs,
        "ops": ops,
        "analog_mac_fraction": macs / (macs + digital_total / 2) if macs + digital_total else 0.0,
        "input_vectors": sum(x["counts"]["input_vectors"] for x in layers_out),
        "dac_conversions": sum(x["counts"]["dac_conversions"] for x in layers_out),
        "adc_conversions": sum(x["counts"]["adc_conversions"] for x in layers_out),
        "array_reads": sum(x["counts"]["array_reads"] for x in layers_out),
        "shift_adds": sum(x["counts"]["shift_adds"] for x in layers_out),
        "digital_ops": digital_total,
        "buffer_bytes": sum(x["counts"]["buffer_bytes"] for x in layers_out + digital_out),
        "network_byte_hops": sum(x["counts"]["network_bytes"] * x["counts"]["network_hops"] for x in layers_out),
        "energy_pj": energy_pj,
        "energy_total_pj": e_total,
        "latency_ns": latency_ns,
        "throughput_inferences_per_s": 1e9 / stage_ns if stage_ns > 0 else 0.0,
        "slowest_stage_ns": stage_ns,
        "tops_per_w": ops / e_total if e_total else 0.0,      # ops per pJ == TOPS/W
        "area_tiles_mm2": mapping.tiles_used * float(summary["tile_area_mm2"]),
        "area_chip_mm2": float(summary["chip_area_mm2"]),
        "area_chips_mm2": max(mapping.chips_needed, 1) * float(summary["chip_area_mm2"]),
        "utilisation": weight_cells / crossbar_cells if crossbar_cells else 0.0,
        "weight_cells": weight_cells,
        "crossbar_cells": crossbar_cells,
    }
    return {"layers": layers_out, "digital": digital_out, "totals": totals,
            "figures": {f"{k}_pj_per_event": v for k, v in e.items()}}


def _critical_path(graph: Graph, latency: dict[str, float]) -> float:
    """Longest latency path through the graph (a topological sweep, no recursion)."""
    done: dict[str, float] = {}
    finish = 0.0
    for node in graph.nodes:
        start = max((done.get(i, 0.0) for i in node.inputs if i), default=0.0)
        end = start + latency.get(node.name, 0.0)
        for o in node.outputs:
            done[o] = end
        finish = max(finish, end)
    return finish
