"""Scaling rules: how a component's per-event figures follow its parameters (``[scaling.*]`` tables).

A target states ``adc.energy_pj`` (and area, conversion time) at one resolution,
``scaling.adc.at_bits``; a rule says how the figure changes with the bits, so a
target resolved with other ``adc.bits`` (an extending file, ``--set``, a sweep)
carries figures for those bits. The same for the DAC (``dac.bits``) and the
array (``crossbar.rows`` x ``crossbar.cols``). Rules are ratios, applied when the
target is resolved; the resolved target then states its figures at its own
parameters (``at_*`` rewritten), so resolving it again changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

# rule name -> figure(parameter) up to a constant; only ratios matter
_LAWS: dict[str, Callable[[float], float]] = {
    "fixed": lambda p: 1.0,
    "walden": lambda b: 2.0 ** b,       # constant Walden FoM: E = FoM * 2^ENOB
    "thermal": lambda b: 4.0 ** b,      # constant thermal (Schreier) FoM: E ~ 4^ENOB, kT/C-limited
    "exponential": lambda b: 2.0 ** b,  # binary-weighted capacitor array doubles per bit
    "linear": lambda b: float(b),       # one SAR step (or one unit) per bit
    "cells": lambda n: float(n),        # every cell of the array conducts in a read
    "rows": lambda n: float(n),         # bitline capacitance grows with the rows it spans
}

# The rule fields of the schema ([scaling.*] in target/schema.py): path below "scaling.", doc, choices (law names)
RULE_FIELDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("adc.energy", "adc.energy_pj, adc.power_mw vs adc.bits: fixed, x2 per bit (constant Walden FoM), x4 per bit "
     "(constant thermal FoM, noise-limited ADCs)", ("fixed", "walden", "thermal")),
    ("adc.area", "adc.area_um2 vs adc.bits: fixed, x2 per bit (binary capacitor DAC), or proportional to bits",
     ("fixed", "exponential", "linear")),
    ("adc.conversion", "adc.conversion_ns vs adc.bits: fixed, proportional (a SAR resolves one bit per step), or "
     "x2 per bit (a ramp counts 2^bits steps)", ("fixed", "linear", "exponential")),
    ("dac.energy", "dac.energy_pj, dac.power_mw vs dac.bits: fixed, x2 per bit, or proportional to bits",
     ("fixed", "exponential", "linear")),
    ("crossbar.read_energy", "crossbar.read_energy_pj: fixed, or ~ rows x cols", ("fixed", "cells")),
    ("crossbar.read_latency", "crossbar.read_latency_ns: fixed, or ~ rows (bitline load)", ("fixed", "rows")),
    ("crossbar.area", "crossbar.area_um2: fixed, or ~ rows x cols", ("fixed", "cells")),
)
# (table, parameter, upper bound): scaling.<table>.at_<parameter>, where a table's figures are stated
ANCHOR_FIELDS = (("adc", "bits", 16), ("dac", "bits", 16), ("crossbar", "rows", 8192), ("crossbar", "cols", 8192))

# (rule field, figure fields it scales, parameter(s) whose product drives it, anchor field(s))
RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    ("scaling.adc.energy", ("adc.energy_pj", "adc.power_mw"), ("adc.bits",), ("scaling.adc.at_bits",)),
    ("scaling.adc.area", ("adc.area_um2",), ("adc.bits",), ("scaling.adc.at_bits",)),
    ("scaling.adc.conversion", ("adc.conversion_ns",), ("adc.bits",), ("scaling.adc.at_bits",)),
    ("scaling.dac.energy", ("dac.energy_pj", "dac.power_mw"), ("dac.bits",), ("scaling.dac.at_bits",)),
    ("scaling.crossbar.read_energy", ("crossbar.read_energy_pj", "crossbar.power_mw"),
     ("crossbar.rows", "crossbar.cols"),
     ("scaling.crossbar.at_rows", "scaling.crossbar.at_cols")),
    ("scaling.crossbar.read_latency", ("crossbar.read_latency_ns",), ("crossbar.rows",),
     ("scaling.crossbar.at_rows",)),
    ("scaling.crossbar.area", ("crossbar.area_um2",), ("crossbar.rows", "crossbar.cols"),
     ("scaling.crossbar.at_rows", "scaling.crossbar.at_cols")),
)
_RULE = {rule: (params, anchors) for rule, _figures, params, anchors in RULES}
# power = energy per event / time per event: the rule whose time divides an energy rule's power figure
_TIME_OF = {"scaling.adc.energy": "scaling.adc.conversion",
            "scaling.crossbar.read_energy": "scaling.crossbar.read_latency"}


def lookup(data: Mapping, path: str, default: object = None) -> object:
    """The value at a dotted path of nested mappings, or ``default``."""
    node: object = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _set(data: dict, path: str, value: object) -> None:
    *tables, key = path.split(".")
    node = data
    for part in tables:
        node = node.setdefault(part, {})
    node[key] = value


def rule_checks(data: dict) -> Iterable[tuple[str, str, str]]:
    """(path, message, hint) for each rule that is on but has no anchor to scale from."""
    for rule, _figures, params, anchors in RULES:
        if lookup(data, rule) in (None, "fixed"):
            continue
        for param, anchor in zip(params, anchors):
            if lookup(data, anchor) == 0:
                yield (anchor, f"expected the {param} at which the figures are stated, since {rule} = "
                       f"{lookup(data, rule)!r} scales them from there; found 0", f"set {anchor} = {lookup(data, param)}")


def _ratio(data: dict, rule: str) -> float:
    """figure(parameters now) / figure(parameters at the anchors) under the law ``rule`` names."""
    law = _LAWS.get(lookup(data, rule) or "fixed", _LAWS["fixed"])
    params, anchors = _RULE[rule]
    ratio = 1.0
    for param, anchor in zip(params, anchors):
        now, then = lookup(data, param), lookup(data, anchor)
        if now is None or not then:
            return 1.0
        ratio *= law(now) / law(then)
    return ratio


def apply_rules(data: dict, pinned: Iterable[str] = ()) -> list[tuple[str, float]]:
    """Scale the figures of ``data`` in place to its parameters; returns [(figure path, new value)].

    ``pinned`` figures (set explicitly at the new parameters, e.g. by ``--set``)
    are left as given. Anchors are rewritten to the parameters afterwards.
    """
    pinned = set(pinned)
    changed: list[tuple[str, float]] = []
    for rule, figures, _params, _anchors in RULES:
        ratio = _ratio(data, rule)
        power_ratio = ratio / (_ratio(data, _TIME_OF[rule]) if rule in _TIME_OF else 1.0)
        for figure in figures:
            value = lookup(data, figure)
            scale = power_ratio if figure.endswith("_mw") else ratio
            if figure in pinned or not isinstance(value, (int, float)) or scale == 1.0:
                continue
            _set(data, figure, float(value * scale))
            changed.append((figure, float(value * scale)))
    for _rule, _figures, params, anchors in RULES:
        for param, anchor in zip(params, anchors):
            if lookup(data, anchor):
                _set(data, anchor, lookup(data, param))
    return changed


def connected(target_data: dict, key: str) -> bool:
    """Whether a scaling rule of this target ties the parameter ``key`` (e.g. "adc.bits") to a cost figure."""
    return any(key in params and lookup(target_data, rule) not in (None, "fixed")
               for rule, _figures, params, _anchors in RULES)


SCALED_PARAMETERS = tuple(dict.fromkeys(p for _r, _f, params, _a in RULES for p in params))
