"""What a pass is and what it runs on.

A pass is a named function over an explicit :class:`CompileState` (the graph, the
mapping once one exists, the problems found so far). It declares the facts it
*requires* (provided by earlier passes) and the facts it *provides*; the pass
manager (``compiler.py``) checks the declarations before running anything, times
each pass, verifies the graph and the mapping after it, and can dump both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:   # annotations only: the state is built by the compiler, above this layer
    from ..ir import Graph
    from ..mapping import Mapping


@dataclass
class CompileState:
    """Everything a pass may read or change. Passes never use side channels such as ``graph.meta``."""
    graph: "Graph"
    target: Any                          # the resolved Target (None for target-free passes in tests)
    options: Any                         # compile choices: batch, seed, limits, calibration, ...
    mapping: "Mapping | None" = None     # created by lower_analog
    problems: list = field(default_factory=list)   # nodes that cannot map (classify)
    facts: set[str] = field(default_factory=set)   # what the passes run so far have provided
    # False when nothing after the mapping reads the weights' values (check): folded per-channel scales
    # then stay beside the weights (fold_affine), which only their shapes and finiteness are read for
    weights_read: bool = True
    pending_scales: dict = field(default_factory=dict)     # weight name -> fold_affine.PendingScale


@dataclass(frozen=True)
class Pass:
    """A named step ``run(state) -> None`` with the facts it needs and establishes."""
    name: str
    run: Callable[[CompileState], None]
    requires: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset()
    doc: str = ""

    def __call__(self, state: CompileState) -> CompileState:
        missing = self.requires - state.facts
        if missing:
            raise RuntimeError(f"pass {self.name} needs {sorted(missing)}, which no earlier pass provides")
        self.run(state)
        state.facts |= self.provides
        return state


def compile_pass(*, requires: Iterable[str] = (), provides: Iterable[str] = ()):
    """Declare a function ``f(state)`` as a :class:`Pass` named after it, documented by its docstring."""
    def wrap(fn: Callable[[CompileState], None]) -> Pass:
        return Pass(fn.__name__, fn, frozenset(requires), frozenset(provides), (fn.__doc__ or "").strip())
    return wrap


def check_order(passes: Iterable[Pass], given: Iterable[str] = ()) -> None:
    """Raise if some pass requires a fact that no earlier pass in the list provides."""
    facts = set(given)
    for p in passes:
        missing = p.requires - facts
        if missing:
            raise RuntimeError(f"pass {p.name} needs {sorted(missing)}, which no earlier pass provides")
        facts |= p.provides
