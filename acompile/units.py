"""Numbers for people: the one formatter (SI prefixes with units, thousands separators for counts,
plurals) used by the terminal, report.md, report.html and check.

Figures are stored in fixed units (pJ, ns, mm²) and JSON keeps them raw; only what people read is
scaled. No function here ever writes an exponent (``1e+03``).
"""

from __future__ import annotations

import functools
import math

_LADDER = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""),
           (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"))


def decimal(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, in positional notation with thousands separators
    (``1234567`` -> ``1,230,000``; ``0.000123`` -> ``0.000123``); inf and nan as words."""
    if not math.isfinite(value):
        return "n/a" if math.isnan(value) else ("-∞" if value < 0 else "∞")
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    rounded = round(value, digits - 1 - exponent)
    if rounded and math.floor(math.log10(abs(rounded))) > exponent:   # 9.996 -> 10.0: one place fewer
        exponent += 1
    places = max(digits - 1 - exponent, 0)
    text = f"{rounded:,.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def si(value: float, unit: str, *, given: str = "", digits: int = 3) -> str:
    """``value`` in ``given`` + ``unit`` (``given="p", unit="J"``: picojoules) with the largest SI prefix
    that keeps it at least 1, to ``digits`` significant digits (``si(2.5e6, "J", given="p")`` -> ``2.5 µJ``).

    The prefixes run from tera down to pico of the *given* scale: a value in pJ is shown at most in
    TJ and at least in pJ; outside the ladder the number is written out in full (never an exponent).
    """
    if not math.isfinite(value):
        return f"{decimal(value)} {unit}"
    ladder = _ladder(given)
    for i, (scale, prefix) in enumerate(ladder):
        if abs(value) >= scale or i == len(ladder) - 1:
            if i == 0 or abs(value) < scale:     # beyond either end: write the number out
                return f"{decimal(value / scale, digits)} {prefix}{unit}"
            scaled = float(f"{value / scale:.{digits}g}")
            if abs(scaled) >= 1000:              # 999.7 rounds to 1000: the next prefix up
                scale, prefix = ladder[i - 1]
                scaled = value / scale
            return f"{decimal(scaled, digits)} {prefix}{unit}"
    return f"0 {given}{unit}"


@functools.cache
def _ladder(given: str) -> tuple[tuple[float, str], ...]:
    """(scale, prefix) from the largest down, for values given in ``given`` units (a report formats its
    figures by the thousand)."""
    prefixes = [p for _, p in _LADDER]
    shift = prefixes.index(given) - prefixes.index("")
    return tuple(zip([s for s, _ in _LADDER], prefixes[shift:]))


def energy(pj: float) -> str:
    """An energy given in pJ, e.g. ``2.56 µJ``."""
    return si(pj, "J", given="p")


def duration(ns: float) -> str:
    """A time given in ns, e.g. ``849 µs``."""
    return si(ns, "s", given="n")


def count(n: float, noun: str | None = None, plural: str | None = None) -> str:
    """A count with thousands separators and, given a noun, the right plural: ``count(1, "tile")`` ->
    ``1 tile``, ``count(1200, "crossbar")`` -> ``1,200 crossbars``; ``plural`` for irregular nouns."""
    text = f"{int(n):,}" if float(n).is_integer() else decimal(n)
    if noun is None:
        return text
    return f"{text} {noun if n == 1 else (plural or noun + 's')}"


def percent(fraction: float, places: int = 1) -> str:
    """A fraction as a percentage (``0.515`` -> ``51.5%``)."""
    return f"{fraction:.{places}%}" if math.isfinite(fraction) else decimal(fraction)
