"""Unroll recurrent layers (LSTM, GRU, RNN) with constant weights and a static sequence length:
one ``acompile.Linear`` for every step's input projection, per step a ``Linear`` on the previous
hidden state (all steps share its weight, so the *same* crossbars: see ``lower.py``) and the gates
as digital ops. What cannot be unrolled stays, with ``meta["unsupported_reason"]`` for classify.
"""

from __future__ import annotations

import numpy as np

from ..ir import DOMAIN, LINEAR, Graph, Node, TensorInfo
from .base import CompileState, compile_pass

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
SIMPLE_ACTIVATIONS = {"Sigmoid", "Tanh", "Relu"}


class _Builder:
    """Appends nodes with static shapes to a list, naming values after the recurrent node."""

    def __init__(self, graph: Graph, origin: Node):
        self.graph, self.origin, self.nodes = graph, origin, []
        self.dtype = np.dtype(np.float32)

    def value(self, tag: str, shape, dtype=None) -> str:
        name = self.graph.unique_name(f"{self.origin.name}/{tag}")
        self.graph.tensors[name] = TensorInfo(name, np.dtype(dtype or self.dtype), tuple(shape))
        return name

    def const(self, tag: str, value: np.ndarray) -> str:
        return self.graph.add_constant(f"{self.origin.name}/{tag}", value)

    def op(self, op_type: str, inputs: list[str], shape, tag: str, attrs=None, n_out: int = 1,
           shapes=None, dtype=None) -> str | list[str]:
        outs = [self.value(f"{tag}_{i}" if n_out > 1 else tag, (shapes[i] if shapes else shape), dtype)
                for i in range(n_out)]
        self.nodes.append(Node(self.graph.unique_name(f"{self.origin.name}/{tag}"), op_type, inputs, outs,
                               dict(attrs or {}), opset=self.graph.opset))
        return outs if n_out > 1 else outs[0]

    def linear(self, x: str, w: str, b: str, shape, tag: str) -> str:
        out = self.value(tag, shape)
        self.nodes.append(Node(self.graph.unique_name(f"{self.origin.name}/{tag}"), LINEAR, [x, w, b], [out],
                               domain=DOMAIN, opset=1, meta={"origin": self.origin.op_type}))
        return out

    def act(self, name: str, x: str, shape, tag: str) -> str:
        return self.op(name, [x], shape, tag)


def _reason(graph: Graph, node: Node) -> str | None:
    """Why this recurrent node cannot be unrolled, or None."""
    ins = list(node.inputs) + [""] * (8 - len(node.inputs))
    if not all(graph.is_constant(i) for i in ins[1:3]) or (ins[3] and not graph.is_constant(ins[3])):
        return "weights are not constant"
    if graph.static_shape(ins[0]) is None:
        return "the input's shape cannot be inferred"
    acts = node.attrs.get("activations", DEFAULT_ACTIVATIONS[node.op_type])
    if not set(acts) <= SIMPLE_ACTIVATIONS or "activation_alpha" in node.attrs:
        return f"activations {acts} are not supported (Sigmoid, Tanh, Relu are)"
    if node.attrs.get("input_forget", 0):
        return "input_forget=1 is not supported"
    return None


@compile_pass(requires={"folded"}, provides={"recurrent_unrolled"})
def unroll_recurrent(state: CompileState) -> None:
    """Replace every mappable LSTM/GRU/RNN node by its unrolled analog + digital form.

    Layouts 0 and 1, forward/reverse/bidirectional, clip, peepholes, initial states and
    ``sequence_lens`` (each step past a row's length keeps its state and writes zeros, so a reverse
    direction starts at the row's last step) are handled; activations other than Sigmoid/Tanh/Relu
    and ``input_forget`` leave the node in place with the reason.
    """
    graph = state.graph
    out: list[Node] = []
    for node in graph.nodes:
        if node.op_type not in GATES or node.domain:
            out.append(node)
            continue
        reason = _reason(graph, node)
        if reason:
            node.meta["unsupported_reason"] = reason
            out.append(node)
            continue
        out.extend(_unroll(graph, node))
    graph.nodes = out


def _unroll(graph: Graph, node: Node) -> list[Node]:
    bld = _Builder(graph, node)
    ins = list(node.inputs) + [""] * (8 - len(node.inputs))
    x, layout = ins[0], int(node.attrs.get("layout", 0))
    shape = graph.static_shape(x)
    seq, batch, n_in = (shape[1], shape[0], shape[2]) if layout else shape
    if layout:
        x = bld.op("Transpose", [x], (seq, batch, n_in), "x_seq_first", {"perm": [1, 0, 2]})
    hidden = int(node.attrs["hidden_size"])
    g = GATES[node.op_type]
    direction = node.attrs.get("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    W, R = graph.constants[ins[1]].astype(np.float32), graph.constants[ins[2]].astype(np.float32)
    B = graph.constants[ins[3]].astype(np.float32) if ins[3] else np.zeros((dirs, 2 * g * hidden), np.float32)
    acts = node.attrs.get("activations", DEFAULT_ACTIVATIONS[node.op_type] * dirs)
    per_dir = len(acts) // dirs
    clip = node.attrs.get("clip")
    lbr = int(node.attrs.get("linear_before_reset", 0))
    ys, hs, cs = [], [], []
    valid = _valid_rows(bld, graph, ins[4], seq, batch)
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        f_act = acts[d * per_dir:(d + 1) * per_dir]
        wb, rb = B[d, :g * hidden], B[d, g * hidden:]
        if seq == 0:        # no step: an empty Y, and the initial states as the last ones
            ys.append(bld.const(f"y{d}_empty", np.zeros((0, batch, hidden), np.float32)))
            hs.append(_initial(bld, graph, ins[5], d, batch, hidden, f"h0_{d}"))
            cs.append(_initial(bld, graph, ins[6], d, batch, hidden, f"c0_{d}") if node.op_type == "LSTM" else None)
            continue
        xp = bld.linear(x, bld.const(f"W{d}", W[d]), bld.const(f"Wb{d}", wb), (seq, batch, g * hidden), f"xproj{d}")
        h = _initial(bld, graph, ins[5], d, batch, hidden, f"h0_{d}")
        c = _initial(bld, graph, ins[6], d, batch, hidden, f"c0_{d}") if node.op_type == "LSTM" else None
        peep = graph.constants[ins[7]][d].astype(np.float32) if node.op_type == "LSTM" and ins[7] else None
        rw = _recurrent_weights(bld, node.op_type, R[d], rb, hidden, lbr, d)
        steps = []
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            xt = bld.op("Gather", [xp, bld.const(f"t{t}", np.array(t, np.int64))], (batch, g * hidden), f"x{d}_{t}",
                        {"axis": 0})
            h_prev, c_prev = h, c
            if node.op_type == "LSTM":
                h, c = _lstm_step(bld, xt, h, c, rw, peep, f_act, clip, batch, hidden, f"{d}_{t}")
            elif node.op_type == "GRU":
                h = _gru_step(bld, xt, h, rw, f_act, clip, lbr, batch, hidden, f"{d}_{t}")
            else:
                pre = bld.op("Add", [xt, bld.linear(h, *rw[0], (batch, hidden), f"rproj{d}_{t}")], (batch, hidden),
                             f"pre{d}_{t}")
                h = bld.act(f_act[0], _clip(bld, pre, clip, (batch, hidden), f"pre{d}_{t}"), (batch, hidden),
                            f"h{d}_{t}")
            if valid is None:
                steps.append(h)
                continue
            steps.append(bld.op("Where", [valid(t), h, bld.const("zeros", np.zeros((), np.float32))],
                                (batch, hidden), f"y{d}_{t}_valid"))
            h = bld.op("Where", [valid(t), h, h_prev], (batch, hidden), f"h{d}_{t}_valid")
            c = c if c is None else bld.op("Where", [valid(t), c, c_prev], (batch, hidden), f"c{d}_{t}_valid")
        if reverse:
            steps = steps[::-1]
        axis0 = bld.const("axis0", np.array([0], np.int64))
        ys.append(bld.op("Concat", [bld.op("Unsqueeze", [s, axis0], (1, batch, hidden), f"y{d}_{i}")
                                    for i, s in enumerate(steps)], (seq, batch, hidden), f"y{d}", {"axis": 0}))
        hs.append(h)
        cs.append(c)
    tail = _outputs(bld, node, ys, hs, cs, seq, batch, hidden, dirs, layout)
    return bld.nodes + tail


def _valid_rows(bld: _Builder, graph: Graph, lens: str, seq: int, batch: int):
    """``valid(t)``: a (batch, 1) bool value, whether step t lies within each row's ``sequence_lens``
    (made once per step, shared by both directions); None when there is no such input or every row is
    the whole sequence long."""
    if not lens or (graph.is_constant(lens) and np.all(graph.constants[lens] == seq)):
        return None
    if not graph.is_constant(lens):     # the default calibration makes its rows whole (default_inputs.py)
        lengths = graph.meta.setdefault("sequence_lens", {})
        lengths[lens] = min(lengths.get(lens, seq), seq)
    dtype = graph.constants[lens].dtype if graph.is_constant(lens) else graph.dtype(lens) or np.dtype(np.int32)
    rows = bld.op("Unsqueeze", [lens, bld.const("axis1", np.array([1], np.int64))], (batch, 1), "lens_rows",
                  dtype=dtype)
    made: dict[int, str] = {}

    def valid(t: int) -> str:
        if t not in made:
            made[t] = bld.op("Less", [bld.const(f"step{t}", np.array(t, dtype)), rows], (batch, 1), f"valid{t}",
                             dtype=bool)
        return made[t]
    return valid


def _initial(bld: _Builder, graph: Graph, name: str, d: int, batch: int, hidden: int, tag: str) -> str:
    if not name:
        return bld.const(tag, np.zeros((batch, hidden), np.float32))
    if graph.is_constant(name):
        return bld.const(tag, graph.constants[name][d].astype(np.float32))
    return bld.op("Gather", [name, bld.const(f"{tag}_dir", np.array(d, np.int64))], (batch, hidden), tag, {"axis": 0})


def _recurrent_weights(bld: _Builder, op: str, r: np.ndarray, rb: np.ndarray, hidden: int, lbr: int, d: int):
    """(weight, bias) constant pairs of the recurrent Linear layer(s) of one direction."""
    if op == "GRU" and not lbr:   # R_h multiplies r*h, so it is a layer of its own
        return [(bld.const(f"Rzr{d}", r[:2 * hidden]), bld.const(f"Rbzr{d}", rb[:2 * hidden])),
                (bld.const(f"Rh{d}", r[2 * hidden:]), bld.const(f"Rbh{d}", rb[2 * hidden:]))]
    return [(bld.const(f"R{d}", r), bld.const(f"Rb{d}", rb))]


def _clip(bld: _Builder, x: str, clip, shape, tag: str) -> str:
    if clip is None:
        return x
    lo, hi = bld.const("clip_lo", np.array(-clip, np.float32)), bld.const("clip_hi", np.array(clip, np.float32))
    return bld.op("Clip", [x, lo, hi], shape, f"{tag}_clip")


def _split(bld: _Builder, x: str, parts: int, batch: int, hidden: int, tag: str) -> list[str]:
    sizes = bld.const("split", np.full(parts, hidden, np.int64))
    return bld.op("Split", [x, sizes], None, tag, {"axis": 1}, n_out=parts, shapes=[(batch, hidden)] * parts)


def _lstm_step(bld, xt, h, c, rw, peep, acts, clip, batch, hidden, tag):
    shape = (batch, hidden)
    gates = bld.op("Add", [xt, bld.linear(h, *rw[0], (batch, 4 * hidden), f"rproj{tag}")], (batch, 4 * hidden),
                   f"gates{tag}")
    i, o, f, cc = _split(bld, gates, 4, batch, hidden, f"iofc{tag}")

    def gate(pre, k, state, name, act):
        """act(clip(pre + peephole ⊙ state)): ONNX clips the input of every activation."""
        if peep is not None:
            p = bld.const(f"P{name}", peep[k * hidden:(k + 1) * hidden])
            pre = bld.op("Add", [pre, bld.op("Mul", [state, p], shape, f"p{name}{tag}")], shape, f"{name}pp{tag}")
        return bld.act(act, _clip(bld, pre, clip, shape, f"{name}{tag}"), shape, f"{name}{tag}")

    i = gate(i, 0, c, "i", acts[0])
    f = gate(f, 2, c, "f", acts[0])
    cc = bld.act(acts[1], _clip(bld, cc, clip, shape, f"c~{tag}"), shape, f"c~{tag}")
    c_new = bld.op("Add", [bld.op("Mul", [f, c], shape, f"fc{tag}"), bld.op("Mul", [i, cc], shape, f"ic{tag}")],
                   shape, f"c{tag}")
    o = gate(o, 1, c_new, "o", acts[0])
    h_new = bld.op("Mul", [o, bld.act(acts[2], c_new, shape, f"hc{tag}")], shape, f"h{tag}")
    return h_new, c_new


def _gru_step(bld, xt, h, rw, acts, clip, lbr, batch, hidden, tag):
    shape = (batch, hidden)
    xz, xr, xh = _split(bld, xt, 3, batch, hidden, f"x_zrh{tag}")
    if lbr:
        rz, rr, rh = _split(bld, bld.linear(h, *rw[0], (batch, 3 * hidden), f"rproj{tag}"), 3, batch, hidden,
                            f"r_zrh{tag}")
    else:
        rz, rr = _split(bld, bld.linear(h, *rw[0], (batch, 2 * hidden), f"rproj{tag}"), 2, batch, hidden, f"r_zr{tag}")
    z = bld.act(acts[0], _clip(bld, bld.op("Add", [xz, rz], shape, f"zpre{tag}"), clip, shape, f"z{tag}"), shape,
                f"z{tag}")
    r = bld.act(acts[0], _clip(bld, bld.op("Add", [xr, rr], shape, f"rpre{tag}"), clip, shape, f"r{tag}"), shape,
                f"r{tag}")
    if lbr:
        hpre = bld.op("Add", [xh, bld.op("Mul", [r, rh], shape, f"rrh{tag}")], shape, f"hpre{tag}")
    else:
        rh = bld.linear(bld.op("Mul", [r, h], shape, f"rh{tag}"), *rw[1], shape, f"rhproj{tag}")
        hpre = bld.op("Add", [xh, rh], shape, f"hpre{tag}")
    hh = bld.act(acts[1], _clip(bld, hpre, clip, shape, f"h~{tag}"), shape, f"h~{tag}")
    # H = (1 - z) * hh + z * h = hh + z * (h - hh)
    diff = bld.op("Sub", [h, hh], shape, f"dh{tag}")
    return bld.op("Add", [hh, bld.op("Mul", [z, diff], shape, f"zdh{tag}")], shape, f"h{tag}")


def _outputs(bld, node, ys, hs, cs, seq, batch, hidden, dirs, layout) -> list[Node]:
    """Connect Y, Y_h, Y_c to the node's original output names."""
    outs = list(node.outputs) + [""] * 3
    axis = bld.const("axis1", np.array([1], np.int64))
    axis0 = bld.const("axis0", np.array([0], np.int64))
    nodes = []

    def emit(op, inputs, out, attrs=None):
        nodes.append(Node(bld.graph.unique_name(f"{node.name}/{op}"), op, inputs, [out], dict(attrs or {}),
                          opset=bld.graph.opset))

    if outs[0]:
        y = bld.op("Concat", [bld.op("Unsqueeze", [v, axis], (seq, 1, batch, hidden), f"ydir{d}")
                              for d, v in enumerate(ys)], (seq, dirs, batch, hidden), "y_all", {"axis": 1})
        if layout:
            emit("Transpose", [y], outs[0], {"perm": [2, 0, 1, 3]})
        else:
            emit("Identity", [y], outs[0])
    for states, out in ((hs, outs[1]), (cs, outs[2])):
        if out and all(s is not None for s in states):
            st = bld.op("Concat", [bld.op("Unsqueeze", [s, axis0], (1, batch, hidden), "state") for s in states],
                        (dirs, batch, hidden), "states", {"axis": 0})
            if layout:
                emit("Transpose", [st], out, {"perm": [1, 0, 2]})
            else:
                emit("Identity", [st], out)
    return nodes
