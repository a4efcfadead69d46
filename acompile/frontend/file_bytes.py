"""The bytes of a model file that weights view: a read-only mapping of the file, its pages mapped ahead.

Nothing writes a model's bytes: a pass that changes a weight (``fold_affine`` scaling it) writes an array
of its own and lets go of the pages the old one viewed (:func:`release`), so the file is never copied and
its page cache is shared with every other process reading it.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from pathlib import Path

import numpy as np

from ..isolated import ends_soon


def map_file(path: Path, walked: os.stat_result) -> mmap.mmap | None:
    """The bytes of ``path``, the file ``walked`` (an ``os.stat_result``) describes, mapped read-only and
    read ahead; None when it cannot be mapped or is no longer that file (replaced or written since): read
    it whole then.

    Weights are views of these bytes (:func:`view`). On Linux a thread maps the page cache's pages into the
    mapping ahead of the reads (:func:`_prefault`). Compile used to read the file into memory of its own, so
    that BatchNorm folding could scale weights in place: touching that much fresh memory cost more than the
    folded weights' own (VGG-16, 553 MB and nothing folded: its compile 1.81 -> 1.38 s on a 2-core virtual
    machine; ResNet-50, every weight folded, unchanged).
    A mapped model file cut short while a page of it is still to be read ends the process (SIGBUS) when it
    is: rewrite models by renaming a new file into place.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != \
                    (walked.st_dev, walked.st_ino, walked.st_size, walked.st_mtime_ns):
                return None
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    if hasattr(mmap, "MADV_WILLNEED"):
        mapped.madvise(mmap.MADV_WILLNEED)
    if sys.platform == "linux":
        ends_soon(threading.Thread(target=_prefault, args=(mapped,), name="acompile-prefault", daemon=True)).start()
    return mapped


MADV_POPULATE_READ = 22     # Linux 5.14 and later
PREFAULT_PIECE = 1 << 21


def _prefault(mapped: mmap.mmap) -> None:
    """Map the page cache's pages of a mapping into it ahead of its reads (a thread of its own runs this),
    so that the reader finds them present rather than faulting on each.

    The calls go through ctypes, which lets go of the GIL (mmap.madvise holds it), 2 MiB at a time: one
    call over the whole file holds the process's memory-map lock throughout and stalls the parsing
    thread's allocations. Where the kernel refuses (before Linux 5.14, a file cut short), pages fault in
    as they are touched.
    """
    import ctypes
    try:
        address = _address(mapped)
        madvise = ctypes.CDLL(None).madvise
        for a in range(0, len(mapped), PREFAULT_PIECE):
            if madvise(ctypes.c_void_p(address + a), ctypes.c_size_t(min(PREFAULT_PIECE, len(mapped) - a)),
                       ctypes.c_int(MADV_POPULATE_READ)):
                break
    except (OSError, ValueError, TypeError, AttributeError):
        pass


def _address(mapped: mmap.mmap) -> int:
    """Where a (read-only) mapping lies in this process's memory."""
    return np.frombuffer(mapped, np.uint8).__array_interface__["data"][0]


def view(mapped: mmap.mmap, offset: int, nbytes: int, dtype: np.dtype, dims) -> np.ndarray:
    """Bytes [offset, offset + nbytes) of a file's mapping (:func:`map_file`) as a read-only array, as
    numpy_helper's arrays are; it cannot be made writable, so no pass writes the file's pages. It may be
    unaligned for its element type (payloads lie where protobuf put them): numpy and onnxruntime read it
    correctly.
    """
    out = np.frombuffer(memoryview(mapped)[offset:offset + nbytes], dtype).reshape(dims)
    out.flags.writeable = False
    return out


def release(weight) -> None:
    """Let go of the mapped pages that only ``weight`` (a :func:`view`) lies on: a pass has replaced it by
    an array of its own, and the process need not hold both (its peak memory counts the pages it maps).
    The page cache keeps them; a later read of ``weight`` maps them again. Anything else: nothing."""
    mapped = weight
    while isinstance(mapped, np.ndarray) and mapped.base is not None:
        mapped = mapped.base
    mapped = mapped.obj if isinstance(mapped, memoryview) else None
    if not isinstance(mapped, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED") or not weight.flags.c_contiguous:
        return
    try:
        start = weight.__array_interface__["data"][0] - _address(mapped)
        lo, hi = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, (start + weight.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if lo < hi:     # whole pages inside the weight: no other weight lies on them
            mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (OSError, ValueError):
        pass
