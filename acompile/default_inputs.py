"""The default calibration data: what compile calibrates on when no data is given.

One batch of seeded standard-normal samples per float input (``DEFAULT_SAMPLES`` for a model with a
dynamic batch), or uniform in the ``--input-range`` bounds. Integer inputs take what the model does
with them where the graph says it:

* the indices of a Gather from a constant table (token ids into an embedding, through casts and
  reshapes; a float input that the model casts to integers too) are seeded draws, uniform over the
  table's rows, as text is made of many tokens;
* the lengths that reach a recurrent layer's ``sequence_lens`` (through casts, a sort, anything;
  the unroll pass records those values) are the whole sequence, a batch of full rows;

and the others, and booleans, one value of ``DEFAULT_FILLS``, tried in turn by calibration until
every analog layer sees a finite input.
"""

from __future__ import annotations

import numpy as np

from .errors import LimitError, clean
from .ir import Graph
from .limits import Limits, byte_size

DEFAULT_SAMPLES = 8
# What the default data puts in boolean and integer inputs, tried in turn until every analog layer sees a
# finite input: true and 0 first (an attention mask that attends everywhere); then false and 1 (torch's
# key_padding_mask, where true masks a position out, and lengths or counts that 0 would make 0/0); then
# the other two pairings. Float inputs, token ids and full lengths are the same draws each time.
DEFAULT_FILLS = ((True, 0), (False, 1), (True, 1), (False, 0))
_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}   # the same values, reshaped


def default_data(graph: Graph, batch: int, seed: int, limits: Limits,
                 fill: tuple[bool, int] = DEFAULT_FILLS[0], ranges=()) -> dict[str, np.ndarray]:
    """One batch of seeded standard-normal samples per float input (DEFAULT_SAMPLES for a dynamic batch),
    uniform in [LO, HI] for one ``ranges`` bounds (``--input-range``: the values the input takes), token
    ids and full lengths as the module says, ``fill`` = (boolean value, integer value) in the others."""
    bounds = dict(ranges)
    rows, lengths = table_rows(graph), full_lengths(graph)
    rng = np.random.default_rng(seed)
    data = {}
    for name in graph.inputs:
        info = graph.tensors[name]
        shape = [d if isinstance(d, int) else batch for d in (info.shape or ())]
        if shape and graph.meta.get("dynamic_batch"):
            shape[0] = DEFAULT_SAMPLES      # one batch of samples; a fixed-batch model gets one batch
        dtype = info.dtype or np.dtype(np.float32)
        nbytes = int(np.prod(shape, dtype=np.float64)) * 8
        if nbytes > limits.max_tensor_bytes:
            raise LimitError(f"default calibration data for input {clean(name)!r} would take "
                             f"{byte_size(nbytes)}", hint="pass --calibration DATA, or raise ACOMPILE_MAX_TENSOR_MB")
        if dtype.kind == "f" and name in bounds:
            low, high = bounds[name]
            data[name] = rng.uniform(low, high, shape).astype(dtype)
        elif dtype.kind in "iuf" and name in rows:      # float ids too, cast to integers by the model
            data[name] = rng.integers(0, rows[name], shape).astype(dtype)
        elif dtype.kind == "f":
            data[name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
        elif dtype.kind in "iu" and name in lengths:
            data[name] = np.full(shape, lengths[name], dtype)
        else:
            data[name] = np.full(shape, fill[0] if dtype.kind == "b" else fill[1], dtype)
    return data


def table_rows(graph: Graph) -> dict[str, int]:
    """Graph inputs that index a constant table (a Gather's indices, through ``_PASS_THROUGH`` ops: a float
    input cast to integers too), with the rows every table they index has."""
    producers = graph.producers()
    rows: dict[str, int] = {}
    for node in graph.nodes:
        if node.op_type != "Gather" or node.domain or len(node.inputs) < 2 or not graph.is_constant(node.inputs[0]):
            continue
        table = graph.constants[node.inputs[0]]
        if table.ndim == 0:
            continue
        source = node.inputs[1]
        while source in producers and producers[source].op_type in _PASS_THROUGH and not producers[source].domain:
            source = producers[source].inputs[0]
        if source in graph.inputs:
            size = table.shape[int(node.attrs.get("axis", 0)) % table.ndim]
            rows[source] = min(rows.get(source, size), size)
    return {name: n for name, n in rows.items() if n > 0}


def full_lengths(graph: Graph) -> dict[str, int]:
    """Integer graph inputs from which a recurrent layer's ``sequence_lens`` is computed
    (``graph.meta["sequence_lens"]``: value -> sequence length), with the shortest such length."""
    producers = graph.producers()
    lengths: dict[str, int] = {}
    for value, seq in graph.meta.get("sequence_lens", {}).items():
        seen, todo = set(), [value]
        while todo:
            name = todo.pop()
            if name in seen or not name:
                continue
            seen.add(name)
            if name in graph.inputs:
                lengths[name] = min(lengths.get(name, seq), seq)
            elif name in producers:
                todo.extend(producers[name].inputs)
    return lengths


def describe(graph: Graph) -> str:
    """What the default data put in integer inputs beyond the fill, for the report ("" when nothing)."""
    rows, lengths = table_rows(graph), full_lengths(graph)
    lengths = {name: n for name, n in lengths.items()
               if name not in rows and (graph.tensors[name].dtype or np.dtype("f4")).kind in "iu"}
    parts = [f"token ids uniform over the {n} rows of the table {clean(name)!r} indexes" for name, n in rows.items()]
    parts += [f"the whole sequence ({n}) in the lengths {clean(name)!r}" for name, n in lengths.items()]
    return "; ".join(parts)
