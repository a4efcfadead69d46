"""The points of a sweep: ``--set KEY=V1,V2`` / ``KEY=LO:HI[:STEP]`` lists, their cross product, and seeds.

A point is one assignment of every swept key; the rows of the table are
model x point x repeat, in that order, whatever order they finish in. Each
row's seed is derived from the sweep's ``--seed``, the model's bytes, the point
and the repeat, so a row can be rerun alone (``acompile run ... --seed S``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

from ..errors import UsageError, clean
from ..target.overrides import parse_value, split_setting

MAX_POINTS = 100_000    # a typo (0:100000) should not queue a week of work


def _range(text: str, key: str) -> list[int]:
    parts = text.split(":")
    try:
        lo, hi, step = int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 1
    except (ValueError, IndexError):
        raise UsageError(f"--set {clean(key)}: a range is LO:HI or LO:HI:STEP with integers, got {clean(text)!r}")
    if len(parts) > 3 or step < 1 or hi < lo:
        raise UsageError(f"--set {clean(key)}: expected LO <= HI and STEP >= 1, got {clean(text)!r}")
    return list(range(lo, hi + 1, step))


def parse_axes(items: list[str] | None) -> dict[str, list[object]]:
    """``["adc.bits=4:8:2", "adc.range=worst_case,calibrated"]`` -> {key: [values]} (ranges include HI)."""
    axes: dict[str, list[object]] = {}
    for item in items or []:
        key, text = split_setting(item)
        if ":" in text and "," not in text and not text.strip().startswith('"'):
            values: list[object] = list(_range(text.strip(), key))
        else:
            values = [parse_value(v) for v in text.split(",") if v.strip()]
        if key in axes:
            raise UsageError(f"--set {clean(key)} is given twice", hint="list every value in one --set K=V1,V2")
        axes[key] = list(dict.fromkeys(values))
    return axes


def points(axes: dict[str, list[object]]) -> list[dict[str, object]]:
    """The cross product, the first key varying slowest."""
    keys = list(axes)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]
    if len(combos) > MAX_POINTS:
        raise UsageError(f"the sweep has {len(combos)} points, more than {MAX_POINTS}",
                         hint="narrow the --set lists")
    return combos


@dataclass(frozen=True)
class Row:
    """One row to compute: which model, which point, which repeat, with which seed."""
    model: int          # index into the sweep's models
    point: int          # index into points()
    repeat: int
    seed: int


def derive_seed(base_seed: int, model_sha: str, point: dict, repeat: int) -> int:
    """A 31-bit seed that depends on nothing but these (stable across machines and Python versions)."""
    text = json.dumps([base_seed, model_sha, point, repeat], sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def rows(model_shas: list[str], combos: list[dict], repeats: int, base_seed: int) -> list[Row]:
    return [Row(m, p, r, derive_seed(base_seed, sha, combos[p], r))
            for m, sha in enumerate(model_shas) for p in range(len(combos)) for r in range(repeats)]
