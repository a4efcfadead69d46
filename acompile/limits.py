"""Resource limits (model file, external data, tensor, data-file, device-file and constant-folding sizes;
node, crossbar and unrolled-node counts), each with the environment variable that changes it; the cores this
process may use (:func:`usable_cores`) and the memory available (:func:`available_memory`); and
:func:`collector_paused`, the garbage collector's pause for short commands.

Checked before work is attempted, so no input can make the compiler allocate
without bound. docs/troubleshooting.md lists them all.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace

from .errors import LimitError, clean

MiB = 1024**2

# field -> (environment variable, unit in bytes or 1 for counts)
ENV = {
    "max_external_bytes": ("ACOMPILE_MAX_EXTERNAL_MB", MiB),
    "max_tensor_bytes": ("ACOMPILE_MAX_TENSOR_MB", MiB),
    "max_data_bytes": ("ACOMPILE_MAX_DATA_MB", MiB),
    "max_device_bytes": ("ACOMPILE_MAX_DEVICE_MB", MiB),
    "max_json_bytes": ("ACOMPILE_MAX_JSON_MB", MiB),
    "max_nodes": ("ACOMPILE_MAX_NODES", 1),
    "max_crossbars": ("ACOMPILE_MAX_CROSSBARS", 1),
    "max_unrolled_nodes": ("ACOMPILE_MAX_UNROLLED_NODES", 1),
}


@dataclass(frozen=True)
class Limits:
    """Resource limits checked before work is attempted (all configurable)."""
    max_model_bytes: int = 2 * 1024**3     # the .onnx file: the protobuf format's own limit
    # a model's external data: mapped, not read (the .onnx file can name no more than its folder holds), and
    # what a compile writes is about 1.5x as large
    max_external_bytes: int = 16 * 1024**3
    max_tensor_bytes: int = 4 * 1024**3
    fold_budget_bytes: int = 1024**3
    max_nodes: int = 100_000                # each node costs time in checking, folding and calibration
    max_data_bytes: int = 4 * 1024**3       # an .npz/.npy the user hands in (inputs, calibration, --bind, labels)
    max_device_bytes: int = 4 * 1024**3     # device.acdev and program.npz read back
    max_json_bytes: int = 256 * MiB         # program.json, a device header, any JSON document read
    max_crossbars: int = 100_000            # crossbar blocks a mapping may cut (each a row of the device file's layout)
    max_unrolled_nodes: int = 10_000        # nodes unrolling Loop/Scan bodies may copy (beyond: they stay digital)

    @staticmethod
    def from_env() -> "Limits":
        base = Limits()
        changes = {}
        for name, (var, unit) in ENV.items():
            text = os.environ.get(var)
            if text:
                changes[name] = _parse(var, text, unit)
        limits = replace(base, **changes)
        if "max_tensor_bytes" in changes:
            limits = replace(limits, fold_budget_bytes=min(limits.max_tensor_bytes, base.fold_budget_bytes))
        return limits

    @staticmethod
    def env_var(name: str) -> str:
        """The environment variable that sets the limit ``name`` (a field of :class:`Limits`)."""
        return ENV[name][0]

    def refuse(self, name: str, what: str, need: float, where: str | None = None) -> LimitError:
        """The error for work that would need ``need`` (bytes or a count) beyond the limit ``name``."""
        var, unit = ENV.get(name, ("", 1))
        limit = getattr(self, name)
        if unit == MiB:
            figure = f"{what} would take {byte_size(need)}; the limit is {byte_size(limit)}"
        else:
            figure = f"{what}: {need:,.0f}; the limit is {limit:,}"
        return LimitError(figure, where=where, hint=f"set {var} to raise it" if var else None)


def _parse(var: str, text: str, unit: int) -> int:
    try:
        value = int(float(text) * unit)
    except (ValueError, OverflowError):      # "abc", "nan", "inf", "1e400"
        raise LimitError(f"{var}={clean(text, 40)!r} is not a number",
                         hint="give a positive number" + (" of MiB, e.g. 4096" if unit == MiB else ""))
    if value <= 0:
        raise LimitError(f"{var}={clean(text, 40)!r} must be a positive number" + (" of MiB" if unit == MiB else ""))
    return value


def byte_size(n: float) -> str:
    """A byte count for a message: GiB, MiB (3 significant digits) or bytes. Any count a model can
    make: dimensions multiply to integers far beyond what a float holds, which are given by their
    order of magnitude."""
    if n >= 1024**3 * 10**15:
        return f"about 10^{len(str(int(n))) - 1} bytes"
    if n >= 1024**3:
        return f"{n / 1024**3:.3g} GiB"
    if n >= MiB:
        return f"{n / MiB:.3g} MiB"
    return f"{n:,.0f} bytes"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def available_memory() -> int:
    """MemAvailable of /proc/meminfo (free memory plus what the kernel can reclaim), in bytes; 0 if unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@contextmanager
def collector_paused():
    """No automatic cyclic garbage collection inside (``check``, ``compile``).

    A compile or check allocates a model's worth of small objects (nodes, blocks, crossbars) and
    little cyclic garbage; each automatic collection also walks every object numpy and onnx left
    behind, which cost a ResNet-50 check 40-60 ms (a tenth of the process) and its compile
    0.15 s of CPU. Reference counting still frees everything else. At the end, what is still alive
    joins the oldest generation (freeze, then unfreeze: two list moves), so that turning the
    collector back on does not begin with one pass over all of it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if not gc.get_freeze_count():     # (an unfreeze would also release what a caller froze)
            gc.freeze()
            gc.unfreeze()
        if was:
            gc.enable()
