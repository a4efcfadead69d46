"""A call into C++ code that may end the process (onnx's shape inference on some graphs), run in a forked
child so that acompile survives it and can say so, or try another way."""

from __future__ import annotations

import faulthandler
import os


class Crashed(Exception):
    """The child process running onnx's C++ code died."""


def in_child(call, payload: bytes) -> bytes:
    """call(payload) in a forked child; its exception comes back as a RuntimeError with its message,
    its death as :class:`Crashed`."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: no Python clean-up, nothing of the parent's flushed twice
        try:
            faulthandler.disable()      # its death is expected, and the parent's error line says enough
            os.close(read)
            try:
                out = b"\x00" + call(payload)
            except Exception as e:
                out = b"\x01" + f"{type(e).__name__}: {e}".encode("utf-8", "replace")
            with os.fdopen(write, "wb") as f:
                f.write(out)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise Crashed()
    if data[:1] == b"\x01":
        raise RuntimeError(data[1:].decode("utf-8", "replace"))
    return data[1:]
