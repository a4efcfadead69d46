"""The blocks and crossbars of a mapping as tables: one int64 array per field, one entry per record.

A ResNet-50 on 128 x 128 crossbars is cut into some 12,500 blocks on as many crossbars, a VGG-16 into
67,000. As columns, the passes that cut, pack, copy and place them, the mapping's check, the cost model
and the device file's layout work on whole arrays; a record (:class:`Block`, :class:`Crossbar`) is made
only where one is read alone (a message, the floorplan's hover text).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np


class Columns:
    """Records of one kind: ``table.rows[i]`` is record ``i``'s ``rows``. Subclasses name the fields
    (``FIELDS``), their defaults (``DEFAULTS``, else 0) and the record type ``table[i]`` returns."""
    FIELDS: tuple[str, ...] = ()
    DEFAULTS: dict[str, int] = {}
    RECORD: type = tuple

    def __init__(self, **columns):
        unknown = sorted(set(columns) - set(self.FIELDS))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {unknown[0]!r}")
        given = {name: np.array(value, np.int64).reshape(-1) for name, value in columns.items()}
        n = len(next(iter(given.values()))) if given else 0
        for name in self.FIELDS:
            column = given.get(name)
            if column is None:
                column = np.full(n, self.DEFAULTS.get(name, 0), np.int64)
            elif len(column) != n:
                raise ValueError(f"{type(self).__name__}.{name} has {len(column)} entries, not {n}")
            setattr(self, name, column)

    @classmethod
    def from_records(cls, records: list[dict]):
        """The table of ``records`` ({field: value}, every field given or defaulted)."""
        return cls(**{name: [r.get(name, cls.DEFAULTS.get(name, 0)) for r in records] for name in cls.FIELDS})

    def __len__(self) -> int:
        return len(getattr(self, self.FIELDS[0]))

    def __getitem__(self, i: int):
        return self.RECORD(*(int(getattr(self, name)[i]) for name in self.FIELDS))

    def __iter__(self):
        return map(self.RECORD._make, zip(*(getattr(self, name).tolist() for name in self.FIELDS)))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and all(np.array_equal(getattr(self, f), getattr(other, f))
                                                 for f in self.FIELDS)

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} records)"

    def take(self, index):
        """The records at ``index`` (indices, as a list or an array, or a boolean array), as a table of their own."""
        index = np.asarray(index, None if isinstance(index, np.ndarray) else np.int64)
        return self._fresh(getattr(self, name)[index] for name in self.FIELDS)

    def concat(self, *others):
        """This table followed by ``others``."""
        tables = (self,) + others
        return self._fresh(np.concatenate([getattr(t, name) for t in tables]) for name in self.FIELDS)

    def _fresh(self, columns):
        """A table of this kind holding ``columns`` (new int64 arrays of one length, in FIELDS order) as they are."""
        out = object.__new__(type(self))
        for name, column in zip(self.FIELDS, columns):
            setattr(out, name, column)
        return out

    def records(self, fields: tuple[str, ...] | None = None) -> list[dict]:
        """Every record as {field: value}, of ``fields`` (default: all)."""
        names = fields or self.FIELDS
        return [dict(zip(names, row)) for row in zip(*(getattr(self, name).tolist() for name in names))]

    def stack(self, fields: tuple[str, ...]) -> np.ndarray:
        """The columns ``fields`` side by side: (records, fields) int64."""
        return np.stack([getattr(self, name) for name in fields], axis=1)


Block = namedtuple("Block", ("layer", "matrix", "row_block", "col_block", "row_start", "rows", "col_start", "cols",
                             "crossbar", "row_offset", "col_offset", "replica"))
Block.__doc__ = """One block: a rectangle of one matrix's cell array that lives on one crossbar."""


class Blocks(Columns):
    """Every block of a mapping. ``row_start``/``rows``: the rows of the layer matrix it holds (input indices k);
    ``col_start``/``cols``: its physical columns p; ``crossbar`` (-1 until packed) and ``row_offset``/
    ``col_offset``: where it sits; ``replica``: 0 for the original, k > 0 for the k-th copy of a layer made
    to share its vectors."""
    FIELDS = Block._fields
    DEFAULTS = {"crossbar": -1}
    RECORD = Block


Crossbar = namedtuple("Crossbar", ("index", "chip", "tile", "core", "slot", "rows_used", "cols_used"))
Crossbar.__doc__ = """One crossbar: its place (global tile, core within the tile, slot within the core) and the
rows and columns its blocks use."""


class Crossbars(Columns):
    """Every crossbar of a mapping, numbered in the order packing opened them. Its blocks are the blocks
    that name it (:meth:`.mapping.Mapping.held`)."""
    FIELDS = Crossbar._fields
    RECORD = Crossbar


def replica_numbers(keys: np.ndarray) -> np.ndarray:
    """For each row of ``keys`` (blocks' layer, matrix, row block and column block), how many rows before it
    are equal to it: a block's replica number, copies coming after their originals. (np.unique would do, but
    it imports numpy.ma: 7 ms of every reader's start.)"""
    n = len(keys)
    order = np.lexsort(keys.T[::-1]) if n else np.zeros(0, np.int64)     # stable: equal rows keep their order
    ranked = keys[order]
    first = np.flatnonzero(np.concatenate(([True], (ranked[1:] != ranked[:-1]).any(axis=1))))[:n]
    copies = np.empty(n, np.int64)
    copies[order] = np.arange(n) - np.repeat(first, np.diff(np.append(first, n)))
    return copies
