"""ONNX STFT computes each frame's discrete Fourier transform on the digital units; with a constant window,
frame length and step it is a strided Conv1d whose kernels are the window times the DFT's cosines and
(negated) sines, one kernel per frequency and part, so speech front ends run on crossbars.

STFT(signal [B, T, 1], or [B, T] as onnxruntime also takes it) becomes Reshape -> [B, 1, T], Conv
(2·bins kernels of the frame length, stride the step) -> [B, 2·bins, frames], Reshape -> [B, 2, bins,
frames], Transpose -> [B, frames, bins, 2]: the real parts, then the imaginary ones, as STFT lays them
out. The basis is computed in float64 and rounded once. Left as it is: a complex signal, a window,
length or step computed at run time, a signal of unknown length.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ._rewrite import kept_meta, new_node, new_value
from .base import CompileState, compile_pass


@compile_pass(requires={"folded"}, provides={"stft_conv"})
def stft_conv(state: CompileState) -> None:
    """Replace every STFT of a real signal with constant window, frame length and step by a strided Conv."""
    graph, out = state.graph, []
    for node in graph.nodes:
        out.extend(_as_conv(graph, node) or [node])
    graph.nodes = out


def _scalar(graph: Graph, name: str) -> int | None:
    if not name or not graph.is_constant(name) or graph.constants[name].size != 1:
        return None
    return int(graph.constants[name].reshape(-1)[0])


def _as_conv(graph: Graph, node: Node) -> list[Node] | None:
    if node.op_type != "STFT" or node.domain not in ("", "ai.onnx"):
        return None
    signal, step_name, window_name, length_name = (list(node.inputs) + [""] * 4)[:4]
    shape, dtype = graph.static_shape(signal), graph.dtype(signal)
    step, length = _scalar(graph, step_name), _scalar(graph, length_name)
    window = graph.constants.get(window_name) if window_name else None
    real = shape is not None and len(shape) in (2, 3) and shape[2:] in ((), (1,))
    if not real or dtype is None or np.dtype(dtype).kind != "f" or step is None or step < 1 \
            or (window_name and window is None):
        return None
    length = length if length is not None else (window.size if window is not None else None)
    if length is None or length < 1 or length > shape[1] or (window is not None and window.size != length):
        return None
    bins = length // 2 + 1 if node.attrs.get("onesided", 1) else length
    frames = (shape[1] - length) // step + 1
    w = np.ones(length) if window is None else window.astype(np.float64).reshape(-1)
    angle = 2 * np.pi * np.outer(np.arange(bins), np.arange(length)) / length
    kernels = np.concatenate([w * np.cos(angle), -w * np.sin(angle)]).astype(dtype)[:, None, :]
    batch, name = shape[0], node.name
    conv = {"kernel_shape": [length], "strides": [step]}
    across = new_value(graph, f"{name}_signal", (batch, 1, shape[1]), dtype)
    row = graph.add_constant(f"{name}_signal_shape", np.asarray([batch, 1, shape[1]], np.int64))
    spectra = new_value(graph, f"{name}_spectra", (batch, 2 * bins, frames), dtype)
    parts = new_value(graph, f"{name}_parts", (batch, 2, bins, frames), dtype)
    split = graph.add_constant(f"{name}_parts_shape", np.asarray([batch, 2, bins, frames], np.int64))
    return [new_node(graph, "Reshape", [signal, row], [across], base=f"{name}_across"),
            Node(name, "Conv", [across, graph.add_constant(f"{name}_basis", kernels)], [spectra], conv, "", graph.opset,
                 meta=kept_meta(node, conv)),
            new_node(graph, "Reshape", [spectra, split], [parts], base=f"{name}_parts"),
            new_node(graph, "Transpose", [parts], [node.outputs[0]], {"perm": [0, 3, 2, 1]}, base=f"{name}_frames")]
