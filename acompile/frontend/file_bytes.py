"""The bytes of a model file that weights view: read into memory of the process's own, or mapped.

``compile`` scales folded weights in place, so it reads the file into one numpy array (several pieces at
once); ``check`` writes none, so it maps the file and, on Linux, maps its pages ahead of the reads. Copies
stay within a share of the memory available; past it a file is mapped copy-on-write.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import weakref
from pathlib import Path

import numpy as np

from ..limits import available_memory, usable_cores

READ_PIECE = 16 << 20       # a copy is read in pieces of at least this many bytes, one per core at once


def map_file(path: Path, walked: os.stat_result, written: bool = True) -> mmap.mmap | np.ndarray | None:
    """The bytes of ``path``, the file ``walked`` describes: read into memory of the process's own where a pass
    may write weights in place (``written``: ``compile``), else mapped and read ahead; None when it cannot be
    read or is no longer that file (replaced or written since): read it whole then.

    Weights are views of these bytes (:func:`view`). ``compile`` scales folded weights in place: one read
    into a numpy array (2 MiB pages where the kernel gives them) takes 15-25 ms per 100 MB, where a
    copy-on-write mapping made the process's own page by page cost faults, page-table locks and TLB
    shootdowns that stalled the compile's other threads (ResNet-50's compile 0.72 -> 0.59 s). Copies stay
    within a share of the memory available (:func:`_claim_copy`); past it the file is mapped copy-on-write,
    only the pages written copied. ``check`` maps it and, on Linux, a thread maps its pages ahead of the
    reads (:func:`_prefault`). A mapped model file cut short while a page of it is still to be read ends
    the process (SIGBUS) when it is: rewrite models by renaming a new file into place.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != \
                    (walked.st_dev, walked.st_ino, walked.st_size, walked.st_mtime_ns):
                return None
            if written and _claim_copy(st.st_size):
                return _read_copy(f, st.st_size)
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):
        return None
    if hasattr(mmap, "MADV_WILLNEED"):
        mapped.madvise(mmap.MADV_WILLNEED)
    if sys.platform == "linux" and not written:     # mapped ahead for reading copies nothing
        threading.Thread(target=_prefault, args=(mapped,), name="acompile-prefault", daemon=True).start()
    return mapped


def _read_copy(f, size: int) -> np.ndarray | None:
    """The open file ``f`` (``size`` bytes) in a fresh uint8 array, which gives its claim back once no weight
    views it (a long-lived process loads many models); None if the file turns out shorter. A large file is
    read in pieces of at least READ_PIECE bytes, one per core, at once: fresh memory is slow to touch on a
    virtual machine whose host took it back (VGG-16's 553 MB in fresh processes, alternating: 0.25-1.47 s on
    one thread, 0.07-0.26 s on two; 70 against 63 ms once warm)."""
    buf = np.empty(size, np.uint8)
    weakref.finalize(buf, _release_copy, size)
    view, positioned = memoryview(buf), hasattr(os, "preadv")     # reads at an offset, side by side
    parts = max(1, min(usable_cores(), size // READ_PIECE)) if positioned else 1
    ends = [size * i // parts for i in range(parts + 1)]
    read = [False] * parts

    def piece(i: int) -> None:
        at, end = ends[i], ends[i + 1]
        try:
            while at < end:
                n = os.preadv(f.fileno(), [view[at:end]], at) if positioned else f.readinto(view[at:end])
                if not n:
                    return
                at += n
        except OSError:         # the caller reads the file whole instead, and reports what is wrong
            return
        read[i] = True

    others = [threading.Thread(target=piece, args=(i,), name="acompile-read") for i in range(1, parts)]
    for t in others:
        t.start()
    piece(0)
    for t in others:
        t.join()
    return buf if all(read) else None


MADV_POPULATE_READ = 22     # Linux 5.14 and later
PREFAULT_PIECE = 1 << 21
_copies_left = [None]     # bytes of model files this process may still hold copies of
_copies_lock = threading.Lock()


def _claim_copy(nbytes: int) -> bool:
    """Whether to copy ``nbytes`` more of model files into memory. A process copies at most its share of a
    quarter of the memory available when it first asks (shared among as many processes as it has cores:
    ``check --jobs``, a sweep's workers); past that, pages stay the page cache's, shared and reclaimable."""
    with _copies_lock:
        if _copies_left[0] is None:
            _copies_left[0] = available_memory() // (4 * usable_cores())
        if nbytes > _copies_left[0]:
            return False
        _copies_left[0] -= nbytes
        return True


def _release_copy(nbytes: int) -> None:
    """A model file's copy is gone (its arrays with it): its bytes count no longer."""
    with _copies_lock:
        _copies_left[0] += nbytes


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
        anchor = ctypes.c_char.from_buffer(mapped)
        address = ctypes.addressof(anchor)
        del anchor
        madvise = ctypes.CDLL(None).madvise
        for a in range(0, len(mapped), PREFAULT_PIECE):
            if madvise(ctypes.c_void_p(address + a), ctypes.c_size_t(min(PREFAULT_PIECE, len(mapped) - a)),
                       ctypes.c_int(MADV_POPULATE_READ)):
                break
    except (OSError, ValueError, TypeError, AttributeError):
        pass


def view(mapped: mmap.mmap | np.ndarray, offset: int, nbytes: int, dtype: np.dtype, dims) -> np.ndarray:
    """Bytes [offset, offset + nbytes) of a file's copy or mapping (:func:`map_file`) as a read-only array, as
    numpy_helper's arrays are.

    The view has a base of its own, so a pass may unlock it and write it in place (a copy is the
    process's own; a mapped page written becomes its own; the file never changes). It may be unaligned
    for its element type (payloads lie where protobuf put them): numpy and onnxruntime read it correctly.
    """
    out = np.frombuffer(memoryview(mapped)[offset:offset + nbytes], dtype).reshape(dims)
    out.flags.writeable = False
    return out
