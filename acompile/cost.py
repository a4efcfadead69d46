"""The cost model (docs/cost.md): counts from the mapping times figures from the target.

Every figure is built as ``count x per-event figure`` and the report keeps
both sides, so any number can be traced by hand. Counts are for one
inference at the compile batch size. The figures are typed records
(:class:`LayerCost`, :class:`DigitalCost`, :class:`Totals`); ``Cost.to_dict()``
is what report.json holds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np

from .frontend.control_cost import BodyCost, body_cost
from .frontend.control_flow import is_control_flow
from .frontend.ops import digital_ops, support
from .hardware import adcs_per_crossbar, columns_per_weight, encoding_ops
from .ir import DOMAIN, Graph
from .blocks import Blocks
from .mapping import AnalogLayer, Mapping
from .passes.place import mesh_position
from .passes.replicate import layer_timing

ENERGY_COMPONENTS = ("dac", "array", "adc", "shift_add", "digital", "buffer", "network", "io", "static")


@dataclass
class LayerCounts:
    """Events of one analog layer for one inference (docs/cost.md)."""
    input_vectors: int
    cycles_per_vector: int
    blocks: int
    crossbars: int                # replicas included
    dac_conversions: int
    array_reads: int
    adc_conversions: int
    shift_adds: int
    digital_ops: int              # partial sums, then scale and bias
    macs: int
    buffer_bytes: int
    weights: int
    network_bytes: int = 0
    network_hops: float = 0
    io_bytes: int = 0
    encoding_ops: int = 0         # the encoding's digital additions: input sums, flip corrections


@dataclass
class LayerCost:
    """One analog layer: its mapping, counts, energy by component (pJ) and latency."""
    name: str
    op_type: str
    groups: int
    replication: int
    uses: int
    matrix: list[int]             # [n_out, k_in] of the first matrix
    row_blocks: int
    col_blocks: int
    physical_columns: int
    input_signed: bool
    input_scale: float
    adc_full_scale: float
    tiles: list[int]
    counts: LayerCounts
    cycle_time_ns: float
    energy_pj: dict[str, float]
    latency_ns: float
    weight_cells: int
    crossbar_cells: float
    period_ns: float              # the layer's time per inference as a pipeline stage (no fill, no hop latency)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}    # asdict's deep copy: most of the time
        counts = {f.name: getattr(self.counts, f.name) for f in fields(self.counts)}     # numbers only
        out.update(matrix=list(self.matrix), tiles=list(self.tiles), counts=counts,
                   energy_pj=dict(self.energy_pj), kind="analog", energy_total_pj=sum(self.energy_pj.values()),
                   utilisation=self.weight_cells / self.crossbar_cells if self.crossbar_cells else 0.0)
        return out


@dataclass
class DigitalCost:
    """One node on the digital units."""
    name: str
    op_type: str
    unknown: bool
    digital_ops: float
    buffer_bytes: int
    energy_pj: dict[str, float]
    latency_ns: float
    estimated: bool = False      # runs through onnxruntime, outside acompile's op table: an estimate
    iterations: int | None = None   # control flow: body runs per execution (ops count every one)
    body: BodyCost | None = None    # control flow: what its bodies run, analog-kind ops among them

    def to_dict(self) -> dict:
        body_analog = self.body.analog_ops if self.body is not None else []
        return {"name": self.name, "op_type": self.op_type, "kind": "digital", "unknown": self.unknown,
                **({"estimated": True} if self.estimated else {}),
                **({"iterations": self.iterations} if self.iterations is not None else {}),
                **({"body_analog": body_analog, "body_layer_ops": self.body.layer_ops} if body_analog else {}),
                "counts": {"digital_ops": self.digital_ops, "buffer_bytes": self.buffer_bytes},
                "energy_pj": self.energy_pj, "energy_total_pj": sum(self.energy_pj.values()),
                "latency_ns": self.latency_ns}


@dataclass
class Totals:
    """The whole model for one inference."""
    analog_layers: int
    digital_nodes: int
    crossbars: int
    tiles: int
    chips: int
    fits_one_chip: bool
    weights: int
    macs: int
    ops: float
    analog_mac_fraction: float
    input_vectors: int
    dac_conversions: int
    adc_conversions: int
    array_reads: int
    shift_adds: int
    digital_ops: float
    buffer_bytes: int
    network_byte_hops: float
    energy_pj: dict[str, float]
    energy_total_pj: float
    latency_ns: float
    throughput_inferences_per_s: float
    slowest_stage_ns: float
    tops_per_w: float
    batch: int                    # samples per inference (the compile batch)
    held_power_mw: float          # static power of the tiles and chips in use (docs/cost.md, Static energy)
    energy_per_sample_pj: float   # energy_total_pj / batch
    average_power_mw: float       # at the pipelined throughput: dynamic energy per period + held power
    area_tiles_mm2: float
    area_chip_mm2: float
    area_chips_mm2: float
    utilisation: float
    weight_cells: int
    crossbar_cells: int


@dataclass
class Cost:
    layers: list[LayerCost]
    digital: list[DigitalCost]
    totals: Totals
    figures: dict[str, float]     # the per-event energies (pJ) the counts are multiplied by

    def to_dict(self) -> dict:
        return {"layers": [x.to_dict() for x in self.layers], "digital": [x.to_dict() for x in self.digital],
                "totals": asdict(self.totals), "figures": {f"{k}_pj_per_event": v for k, v in self.figures.items()}}


def _act_bytes(target) -> int:
    return math.ceil(target.precision.input_bits / 8)


def _digital_figures(target):
    """``figure(op_type, key)``: energy_pj or latency_ns of one element-op, each op type looked up once."""
    op = lru_cache(maxsize=None)(target.digital_op)
    return lambda op_type, key: float(op(op_type)[key])


def layer_counts(layer: AnalogLayer, blocks: Blocks, target) -> tuple[LayerCounts, float, float, float]:
    """(event counts, cycle time, time on the crossbars, pipeline fill) of one analog layer for one
    inference, from its blocks (copies included).

    The time is the layer's cycles; pipelined reads and conversions add the pipeline's fill to the
    latency, not to the period of a pipeline stage.
    """
    cycles = layer.input_cycles
    # copies of the layer (replicas) split its vectors: events are counted once, time is shared
    own = blocks.replica == 0
    n_blocks, rows, cols = int(own.sum()), int(blocks.rows[own].sum()), int(blocks.cols[own].sum())
    v = layer.n_vec
    n_total = sum(m.n_out for m in layer.matrices)
    psum_adds = sum((m.row_blocks - 1) * m.n_out for m in layer.matrices)
    t_cycle, fill_ns = layer_timing(blocks, target)
    k_total = sum(m.k_in for m in layer.matrices)
    counts = LayerCounts(
        input_vectors=v, cycles_per_vector=cycles, blocks=n_blocks,
        crossbars=int(np.count_nonzero(np.bincount(blocks.crossbar))),
        dac_conversions=v * cycles * rows, array_reads=v * cycles * n_blocks, adc_conversions=v * cycles * cols,
        shift_adds=v * cycles * cols, digital_ops=v * (psum_adds + 2 * n_total), macs=v * layer.macs_per_vec,
        buffer_bytes=v * k_total * _act_bytes(target) + v * n_total * _act_bytes(target), weights=layer.weights,
        encoding_ops=v * encoding_ops_per_vector(layer))
    return counts, t_cycle, v * cycles * t_cycle / max(layer.replication, 1), fill_ns


def encoding_ops_per_vector(layer: AnalogLayer) -> int:
    """The encoding's digital additions per input vector (hardware.encoding_ops, per matrix)."""
    sp = layer.spec
    return 0 if sp is None else sum(encoding_ops(m.k_in, m.n_out, m.row_blocks, sp.input_sum_offset, sp.flipped)
                                    for m in layer.matrices)


def layer_cells(layer: AnalogLayer, blocks: Blocks, bar_cells: np.ndarray,
                cells_per_bar: int) -> tuple[int, float]:
    """(cells holding the layer's weights, the layer's share of the cells of the crossbars it uses).

    A crossbar shared by several layers is apportioned by the cells each layer's blocks occupy
    (``bar_cells``: the cells all blocks occupy, per crossbar).
    """
    per_weight = columns_per_weight(layer.spec.slices, layer.spec.differential)
    occupied = np.bincount(blocks.crossbar, weights=blocks.rows * blocks.cols)      # exact: integers below 2^53
    bars = np.fromiter(dict.fromkeys(blocks.crossbar.tolist()), np.int64)          # in order of first use
    share = np.add.accumulate(cells_per_bar * occupied[bars] / bar_cells[bars])    # summed in that order
    return layer.weights * per_weight * layer.replication, float(share[-1]) if share.size else 0.0


def _hops(a_tile: int, b_tile: int, tiles_per_chip: int) -> tuple[int, bool]:
    ca, xa, ya = mesh_position(a_tile, tiles_per_chip)
    cb, xb, yb = mesh_position(b_tile, tiles_per_chip)
    return abs(xa - xb) + abs(ya - yb), ca != cb


def _home_tiles(mapping: Mapping) -> dict[int, int]:
    tile, bar = mapping.crossbars.tile, mapping.blocks.crossbar
    return {layer.index: int(tile[bar[layer.blocks[0]]]) if layer.blocks else 0 for layer in mapping.layers}


def _sources(graph: Graph) -> dict[str, set[int]]:
    """For every tensor, the analog layers (indices) whose results flow into it; -1 is the graph input."""
    src: dict[str, set[int]] = {name: {-1} for name in graph.inputs}
    for node in graph.nodes:
        if node.domain == DOMAIN and node.op_type == "FromVectors":
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
    return math.prod(s) if s is not None else 0


def cost_model(graph: Graph, mapping: Mapping, target, batch: int = 1) -> Cost:
    """Per-layer and total figures for one inference: counts, energy by component, latency, area."""
    e = {
        "dac": target.dac.energy_pj, "array": target.crossbar.read_energy_pj,
        "adc": target.adc.energy_pj, "shift_add": target.shift_add.energy_pj,
        "buffer": target.buffer.energy_per_byte_pj,
        "network": target.network.energy_per_byte_hop_pj, "io": target.chip.io_energy_per_byte_pj,
    }
    figure = _digital_figures(target)
    layers = _layer_costs(graph, mapping, target, e, figure)
    digital = [_digital_cost(graph, node, target, e, figure) for node in graph.nodes if node.domain != DOMAIN]
    latency = {f"{x.name}/CrossbarRead": x.latency_ns for x in layers}
    latency.update((x.name, x.latency_ns) for x in digital)
    period = max([x.period_ns for x in layers] + [x.latency_ns for x in digital], default=0.0)
    charge_idle(layers, target, period)
    return Cost(layers, digital, _totals(graph, mapping, target, layers, digital, latency, period, batch), e)


def charge_idle(layers: list[LayerCost], target, stage_ns: float) -> None:
    """Add to each layer's ``energy_pj.static`` what its crossbars, ADCs and DACs draw held but idle
    over one pipeline period: ``stage_ns`` minus their busy time (docs/cost.md, Idle power)."""
    adcs = adcs_per_crossbar(target.crossbar.cols, target.adc.columns_per_adc)
    per_bar_mw = (target.crossbar.idle_power_mw + adcs * target.adc.idle_power_mw
                  + target.crossbar.rows * target.dac.idle_power_mw)
    if per_bar_mw <= 0:
        return
    for x in layers:
        c = x.counts
        busy = c.input_vectors * c.cycles_per_vector * x.cycle_time_ns / max(x.replication, 1)
        x.energy_pj["static"] = per_bar_mw * c.crossbars * max(stage_ns - busy, 0.0)   # mW x ns = pJ


def _layer_costs(graph: Graph, mapping: Mapping, target, e: dict[str, float], figure) -> list[LayerCost]:
    act = _act_bytes(target)
    hop_ns = target.network.hop_latency_ns
    link_bytes_per_ns = target.network.bytes_per_ns
    tiles_per_chip = target.organisation.tiles_per_chip
    lanes = target.digital.lanes_per_tile
    cells_per_bar = target.crossbar.rows * target.crossbar.cols
    home = _home_tiles(mapping)
    sources = _sources(graph)
    readers: dict[int, list] = defaultdict(list)
    for n in graph.nodes:
        if n.domain == DOMAIN and n.op_type == "ToVectors":
            readers[n.meta["layer"]].append(n)
    table, bar_tile = mapping.blocks, mapping.crossbars.tile
    bar_cells = np.bincount(table.crossbar, weights=table.rows * table.cols, minlength=len(mapping.crossbars))
    out = []
    for layer in mapping.layers:
        blocks = table.take(layer.blocks)
        c, t_cycle, crossbar_ns, fill = layer_counts(layer, blocks, target)
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
        c.network_bytes, c.network_hops, c.io_bytes = in_bytes, hops, io_bytes
        energy = {
            "dac": c.dac_conversions * e["dac"],
            "array": c.array_reads * e["array"],
            "adc": c.adc_conversions * e["adc"],
            "shift_add": c.shift_adds * e["shift_add"],
            "digital": (c.digital_ops + c.encoding_ops) * figure("Add", "energy_pj"),
            "buffer": c.buffer_bytes * e["buffer"],
            "network": byte_hops * e["network"],
            "io": c.io_bytes * e["io"],
        }
        stream_ns = in_bytes / link_bytes_per_ns if byte_hops else 0.0
        period = crossbar_ns + c.digital_ops * figure("Add", "latency_ns") / lanes + stream_ns
        latency = period + hops * hop_ns + fill
        weight_cells, used_cells = layer_cells(layer, blocks, bar_cells, cells_per_bar)
        first = layer.matrices[0]
        out.append(LayerCost(
            layer.name, layer.op_type, layer.groups, layer.replication, layer.uses, [first.n_out, first.k_in],
            first.row_blocks, first.col_blocks, first.physical_cols, layer.input_signed, layer.input_scale,
            layer.adc_full_scale, np.flatnonzero(np.bincount(bar_tile[blocks.crossbar])).tolist(),
            c, t_cycle, energy, latency, weight_cells, used_cells, period))
    return out


def _digital_cost(graph: Graph, node, target, e: dict[str, float], figure) -> DigitalCost:
    flow = body_cost(graph, node) if is_control_flow(node) else None
    ops = digital_ops(graph, node) if flow is None else flow.ops
    ops = 0.0 if math.isnan(ops) else ops
    moved = sum(_numel(graph, i) for i in node.inputs if i and not graph.is_constant(i)) + \
        sum(_numel(graph, o) for o in node.outputs if o)
    act = _act_bytes(target)
    energy = {"digital": ops * figure(node.op_type, "energy_pj"), "buffer": moved * act * e["buffer"]}
    latency = ops * figure(node.op_type, "latency_ns") / target.digital.lanes_per_tile
    if flow is not None:
        return DigitalCost(node.name, node.op_type, bool(node.meta.get("unknown")), ops, moved * act, energy,
                           latency, flow.estimated, flow.iterations, flow)
    return DigitalCost(node.name, node.op_type, bool(node.meta.get("unknown")) or support(node) is None, ops,
                       moved * act, energy, latency, bool(node.meta.get("cost_estimated")))


def _totals(graph: Graph, mapping: Mapping, target, layers: list[LayerCost], digital: list[DigitalCost],
            latency: dict[str, float], stage_ns: float, batch: int) -> Totals:
    latency_ns = _critical_path(graph, latency)
    summary = target.summary()
    static_mw = held_power_mw(summary, mapping.tiles_used, max(mapping.chips_needed, 1))
    total_energy: dict[str, float] = defaultdict(float)
    for entry in [*layers, *digital]:
        for k, v in entry.energy_pj.items():
            total_energy[k] += v
    idle_pj = total_energy["static"]                               # idle components (charge_idle)
    total_energy["static"] += static_mw * latency_ns              # mW x ns = pJ
    energy_pj = {k: total_energy.get(k, 0.0) for k in ENERGY_COMPONENTS}
    macs = sum(x.counts.macs for x in layers)
    digital_total = sum(x.digital_ops for x in digital) + sum(x.counts.digital_ops for x in layers)
    ops = 2 * macs + digital_total
    e_total = sum(energy_pj.values())
    throughput = batch * 1e9 / stage_ns if stage_ns > 0 else 0.0
    # steady state: one inference per pipeline period, the tiles and chips held all the time
    dynamic = e_total - energy_pj["static"] + idle_pj           # idle charge is per period, like events
    average_mw = (dynamic / stage_ns + static_mw) if stage_ns > 0 else static_mw   # pJ/ns = mW
    weight_cells = sum(x.weight_cells for x in layers)
    crossbar_cells = len(mapping.crossbars) * target.crossbar.rows * target.crossbar.cols
    return Totals(
        analog_layers=len(mapping.layers), digital_nodes=len(digital), crossbars=len(mapping.crossbars),
        tiles=mapping.tiles_used, chips=mapping.chips_needed, fits_one_chip=mapping.chips_needed <= 1,
        weights=sum(layer.weights for layer in mapping.layers), macs=macs, ops=ops,
        analog_mac_fraction=macs / (macs + digital_total / 2) if macs + digital_total else 0.0,
        input_vectors=sum(x.counts.input_vectors for x in layers),
        dac_conversions=sum(x.counts.dac_conversions for x in layers),
        adc_conversions=sum(x.counts.adc_conversions for x in layers),
        array_reads=sum(x.counts.array_reads for x in layers),
        shift_adds=sum(x.counts.shift_adds for x in layers),
        digital_ops=digital_total,
        buffer_bytes=sum(x.counts.buffer_bytes for x in layers) + sum(x.buffer_bytes for x in digital),
        network_byte_hops=sum(x.counts.network_bytes * x.counts.network_hops for x in layers),
        energy_pj=energy_pj, energy_total_pj=e_total, latency_ns=latency_ns,
        throughput_inferences_per_s=throughput, slowest_stage_ns=stage_ns,
        tops_per_w=ops / e_total if e_total else 0.0,      # ops per pJ == TOPS/W
        batch=batch, held_power_mw=static_mw, energy_per_sample_pj=e_total / batch, average_power_mw=average_mw,
        area_tiles_mm2=mapping.tiles_used * float(summary["tile_area_mm2"]),
        area_chip_mm2=float(summary["chip_area_mm2"]),
        area_chips_mm2=max(mapping.chips_needed, 1) * float(summary["chip_area_mm2"]),
        utilisation=weight_cells / crossbar_cells if crossbar_cells else 0.0,
        weight_cells=weight_cells, crossbar_cells=crossbar_cells)


def held_power_mw(summary: dict, tiles: int, chips: int) -> float:
    """Static power of ``tiles`` tiles on ``chips`` chips: what the target itemises with no per-event figure.

    The crossbars, DACs, ADCs, shift-adds, buffers, routers and links are priced per event; the rest
    (core and tile components such as registers and sample-and-hold, chip components and
    ``chip.static_power_mw``) draws its power as long as the tile or chip is held (docs/cost.md).
    """
    return tiles * float(summary["tile_held_power_mw"]) + chips * float(summary["chip_held_power_mw"])


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
