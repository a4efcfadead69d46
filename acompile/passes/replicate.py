"""Replicate the slowest layers onto spare crossbars to balance the pipeline.

With ``--replicate auto``, repeatedly picks the analog layer whose latency
(``n_vec · T · t_cycle / replication``) is the largest and gives it one more
copy of all its blocks, on fresh crossbars, while the copy still fits in the
chips the mapping already needs (never adding a chip) and the layer has more
input vectors than copies. Copies hold identical weights and split the
layer's input vectors between them (ISAAC balances its pipeline this way).
Appends blocks (``replica > 0``) and crossbars; runs between pack and place.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError
from ..hardware import adcs_per_crossbar, cycle_time_ns, pipeline_fill_ns
from ..blocks import Blocks
from .base import CompileState, compile_pass

REPLICATE = ("none", "auto")


def layer_timing(blocks: Blocks, target) -> tuple[float, float]:
    """(one input cycle, the pipeline's fill) of a layer whose blocks, copies included, are ``blocks``.

    The layer's crossbars are read at once, the blocks sharing one in turn; copies are left out of
    the cycle (they read other vectors at the same time). The fill is what the read -> sample-and-hold
    -> ADC pipeline adds before the first cycle completes (0 when they run in series).
    """
    adcs = adcs_per_crossbar(target.crossbar.cols, target.adc.columns_per_adc)
    times = (adcs, target.adc.conversion_ns, target.adc.sample_hold_ns, target.adc.pipelined)
    read, widths = target.crossbar.read_latency_ns, np.flatnonzero(np.bincount(blocks.cols))
    if not widths.size:
        return 0.0, 0.0
    # the formulas once per distinct block width
    cycle, fill = np.zeros((2, int(widths[-1]) + 1))
    cycle[widths] = [cycle_time_ns(read, int(c), *times) for c in widths]
    fill[widths] = [pipeline_fill_ns(read, int(c), *times) for c in widths]
    own = blocks.replica == 0
    per_bar = np.bincount(blocks.crossbar[own], weights=cycle[blocks.cols[own]])   # in block order, as += would
    on = np.bincount(blocks.crossbar[own], minlength=per_bar.size) > 0
    return float(per_bar[on].max()) if on.any() else 0.0, float(fill[blocks.cols].max())


def _base_latency(layer, mapping, target) -> float:
    cycle, _ = layer_timing(mapping.blocks.take(layer.blocks), target)
    return layer.n_vec * layer.input_cycles * cycle


@compile_pass(requires={"packed"}, provides={"replicated"})
def replicate(state: CompileState) -> None:
    """With ``options.replicate == "auto"``, copy the slowest layers onto spare crossbars."""
    mapping, target, mode = state.mapping, state.target, state.options.replicate
    if mode not in REPLICATE:
        raise UsageError(f"replicate={mode!r}: expected one of {', '.join(REPLICATE)}")
    if mode == "none" or not mapping.layers:
        return
    per_tile = target.organisation.crossbars_per_core * target.organisation.cores_per_tile
    per_chip = per_tile * target.organisation.tiles_per_chip
    budget = max(1, math.ceil(len(mapping.crossbars) / per_chip)) * per_chip
    base = {layer.index: _base_latency(layer, mapping, target) for layer in mapping.layers}
    replica = mapping.blocks.replica
    originals = {x.index: np.asarray(x.blocks, np.int64)[replica[x.blocks] == 0] for x in mapping.layers}
    bars_of = {i: np.array(sorted(set(mapping.blocks.crossbar[blocks].tolist())), np.int64)
               for i, blocks in originals.items()}
    bars, n_blocks, full = len(mapping.crossbars), len(mapping.blocks), set()
    copies: list[tuple] = []        # (layer, replica number, first crossbar) of each copy, made at the end
    while True:
        candidates = [layer for layer in mapping.layers if layer.index not in full and base[layer.index] > 0]
        if not candidates:
            break
        slowest = max(candidates, key=lambda l: (base[l.index] / l.replication, -l.index))
        need = len(bars_of[slowest.index])
        if bars + need > budget or slowest.replication >= slowest.n_vec:
            full.add(slowest.index)
            if len(full) == len(mapping.layers):
                break
            continue
        copies.append((slowest.index, slowest.replication, bars))
        slowest.blocks.extend(range(n_blocks, n_blocks + len(originals[slowest.index])))
        slowest.replication += 1
        bars, n_blocks = bars + need, n_blocks + len(originals[slowest.index])
    if copies:
        _add_copies(mapping, copies, originals, bars_of)


def _add_copies(mapping, copies: list[tuple], originals: dict, bars_of: dict) -> None:
    """Append every copy's blocks and crossbars at once: copy (layer, replica number, first crossbar) repeats
    the layer's original blocks, each original crossbar (``bars_of``, sorted) mirrored onto a new one
    numbered from its first crossbar (placed later, as the originals)."""
    layers, replicas, first_bars = (np.array(column, np.int64) for column in zip(*copies))
    counts = np.array([len(originals[i]) for i in layers.tolist()], np.int64)
    # each original's crossbar as its rank among its layer's crossbars
    rank = {i: np.searchsorted(bars_of[i], mapping.blocks.crossbar[blocks]) for i, blocks in originals.items()}
    copied = mapping.blocks.take(np.concatenate([originals[i] for i in layers.tolist()]))
    copied.crossbar = np.repeat(first_bars, counts) + np.concatenate([rank[i] for i in layers.tolist()])
    copied.replica = np.repeat(replicas, counts)
    mirrors = mapping.crossbars.take(np.concatenate([bars_of[i] for i in layers.tolist()]))
    mirrors.index = len(mapping.crossbars) + np.arange(len(mirrors))
    mapping.blocks = mapping.blocks.concat(copied)
    mapping.crossbars = mapping.crossbars.concat(mirrors)
