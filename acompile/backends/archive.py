"""Deterministic ZIP containers for numpy arrays and JSON (no pickle, no timestamps).

``numpy.savez`` stamps the current time into every entry, which breaks
byte-identical outputs; this writer uses a fixed date and stored (uncompressed)
entries so large arrays can also be streamed in chunks. Arrays are written in
the ``.npy`` format, so ``numpy.load(path, allow_pickle=False)`` reads them.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from ..errors import AcompileError, InvalidDataError, clean
from ..limits import Limits
from ..safe_read import read_npy, open_input, parse_json

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
STREAM_BYTES = 1 << 20   # arrays from this size on are streamed into the archive


class _HashedFile:
    """A file written front to back that hashes its bytes as they go. It cannot seek, so ZipFile puts each
    entry's checksum and sizes in a data descriptor after its data rather than going back to its header:
    every byte is written once, in order, and the hash is the finished file's."""

    def __init__(self, path: Path):
        self.f, self.hash, self.at = open(path, "wb"), hashlib.sha256(), 0

    def write(self, data) -> int:
        self.hash.update(data)
        n = self.f.write(data)
        self.at += n
        return n

    def tell(self) -> int:
        return self.at

    def seek(self, *args):
        raise OSError("written front to back")

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class ArchiveWriter:
    """``hashed``: keep the sha256 of the file as it is written (:meth:`sha256`), rather than read it back."""

    def __init__(self, path: Path, hashed: bool = False):
        self.file = _HashedFile(path) if hashed else None
        self.zf = zipfile.ZipFile(self.file or path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        self.zf.writestr(self._info(name), data)

    def add_json(self, name: str, obj, dumps) -> None:
        self.add_bytes(name, dumps(obj).encode("utf-8"))

    def add_array(self, name: str, array: np.ndarray) -> None:
        # C order, or a matrix that is the transposed view of one (a MatMul's weight: stored as the model holds it,
        # the .npy says fortran_order); ascontiguousarray would turn a 0-d array into (1,)
        array = np.asarray(array, order="A" if np.ndim(array) == 2 else "C")
        if array.ndim and array.nbytes >= STREAM_BYTES and array.dtype.kind in "biuf" and array.dtype.names is None:
            # The same bytes as below (writestr is open(zinfo, "w") with the size set first), without
            # two in-memory copies of a large array.
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(array))
            info = self._info(name)
            info.file_size = head.tell() + array.nbytes
            with self.zf.open(info, "w") as out:
                out.write(head.getvalue())
                out.write(memoryview(array.reshape(-1, order="A")).cast("B"))
            return
        buf = io.BytesIO()
        np.lib.format.write_array(buf, array, allow_pickle=False)
        self.add_bytes(name, buf.getvalue())

    def open_stream(self, name: str):
        return self.zf.open(self._info(name), "w", force_zip64=True)

    def close(self) -> None:
        """Finish the archive. With an entry still open (a write cut short by an interrupt) there is no
        archive to finish: the handle is dropped, and the caller discards the half-written file."""
        if self.zf.fp is not None and getattr(self.zf, "_writing", False):
            fp, self.zf.fp = self.zf.fp, None      # so that ZipFile.__del__ has nothing left to finish
            fp.close()
            return
        self.zf.close()
        if self.file is not None:
            self.file.close()

    def sha256(self) -> str:
        """The sha256 of the finished archive (``hashed``)."""
        return self.file.hash.hexdigest()


class ArchiveReader:
    """Reads an archive this module wrote: a regular file within ``limits.max_device_bytes``, each
    entry's declared size checked before it is read (JSON entries within ``max_json_bytes``)."""

    def __init__(self, path: Path, what: str, limits: Limits | None = None):
        self.path, self.what = Path(path), what
        self.limits = limits or Limits.from_env()
        self.where = clean(str(path))
        f, _ = open_input(self.path, f"{what} file", "max_device_bytes", self.limits)
        try:
            self.zf = zipfile.ZipFile(f, "r")
            self.infos = {info.filename: info for info in self.zf.infolist()}
            self.names = set(self.infos)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            f.close()
            raise InvalidDataError(f"not a valid {what} file ({clean(str(e), 120)})", where=self.where)

    def _read(self, name: str, limit: str = "max_device_bytes") -> bytes:
        info = self.infos.get(name)
        if info is None:
            raise InvalidDataError(f"{self.what} file lacks its entry {name!r} (truncated or not an acompile file?)",
                                   where=self.where)
        if info.file_size > getattr(self.limits, limit):
            raise self.limits.refuse(limit, f"{self.what} entry {name!r}", info.file_size, where=self.where)
        try:
            with self.zf.open(info) as member:
                data = member.read(info.file_size + 1)
        except Exception as e:  # CRC errors, truncation
            raise InvalidDataError(f"{self.what} file is corrupt ({type(e).__name__}: {clean(str(e), 120)})",
                                   where=self.where)
        if len(data) != info.file_size:
            raise InvalidDataError(f"{self.what} file is corrupt (entry {name!r} is not the size it declares)",
                                   where=self.where)
        return data

    def json(self, name: str, schema=None):
        return parse_json(self._read(name, "max_json_bytes"), f"{self.what} entry {name!r}", self.where, schema)

    def bytes(self, name: str) -> bytes:
        return self._read(name)

    def array(self, name: str) -> np.ndarray:
        info = self.infos.get(name)
        if info is None:
            raise InvalidDataError(f"{self.what} file lacks its entry {name!r} (truncated or not an acompile file?)",
                                   where=self.where)
        try:
            with self.zf.open(info) as member:
                return read_npy(member, info.file_size, self.what, self.where, self.limits, name)
        except AcompileError:
            raise
        except Exception as e:
            raise InvalidDataError(f"{self.what} entry {name!r} is not a valid array ({clean(str(e), 80)})",
                                   where=self.where)

    def close(self) -> None:
        fp = self.zf.fp
        self.zf.close()
        if fp is not None:
            fp.close()
