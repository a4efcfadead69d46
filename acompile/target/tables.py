"""The tables of a target file: path -> one-line description (README headings, JSON Schema
descriptions). Their fields are in :mod:`.schema`."""

from __future__ import annotations

# Tables: path -> one-line description (README headings, JSON Schema descriptions).
TABLES: dict[str, str] = {
    "": "what the file is",
    "precision": "number formats the compiler maps onto the hardware",
    "crossbar": "one analog array (the innermost level)",
    "dac": "one row driver / input DAC",
    "adc": "one column ADC",
    "shift_add": "digital shift-and-add units that recombine slices and input cycles",
    "organisation": "the hierarchy chip -> tile -> core -> crossbar",
    "core": "a core (ISAAC's IMA, PUMA's core): crossbars plus their periphery",
    "core.components": "extra core components (registers, sample & hold...), by name",
    "tile": "a tile: cores plus buffer, router share and digital units",
    "tile.components": "extra tile components (bus, activation units...), by name",
    "chip": "the whole chip and its chip-to-chip links",
    "chip.components": "extra chip components (global memory...), by name",
    "digital": "digital units that run non-MVM operations",
    "digital.ops": "per-op overrides, keyed by ONNX op type (e.g. [digital.ops.Relu])",
    "buffer": "the tile buffer that holds activations between layers",
    "network": "the on-chip network between tiles",
    "clock": "the digital clock",
    "noise": "non-idealities; all optional, zero/false = off (docs/analog.md)",
    "scaling": "how figures follow parameters, so other bits or sizes cost what they should (--set, sweeps)",
    "scaling.adc": "adc.* figures vs adc.bits", "scaling.dac": "dac.* figures vs dac.bits",
    "scaling.crossbar": "crossbar.* figures vs rows and columns",
    "published": "headline figures the design's paper reports; for comparison only, not inherited",
}
