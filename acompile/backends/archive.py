"""Deterministic ZIP containers for numpy arrays and JSON (no pickle, no timestamps).

``numpy.savez`` stamps the current time into every entry, which breaks
byte-identical outputs; this writer uses a fixed date and stored (uncompressed)
entries so large arrays can also be streamed in chunks. Arrays are written in
the ``.npy`` format, so ``numpy.load(path, allow_pickle=False)`` reads them.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from ..errors import AcompileError, InvalidDataError, clean
from ..limits import Limits
from ..safe_read import read_npy, open_input, parse_json

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
STREAM_BYTES = 1 << 20   # arrays from this size on are streamed into the archive


class ArchiveWriter:
    """Writes an archive entry by entry; once closed, :meth:`index_sha256` and :meth:`crc32` identify what it
    holds. Entries appended to a closed archive give the bytes that writing them all at once gives."""

    def __init__(self, path: Path, append: bool = False):
        """A new archive at ``path``, or with ``append`` the entries to add after those of the one there."""
        self.path = Path(path)
        self.zf = zipfile.ZipFile(self.path, "a" if append else "w", compression=zipfile.ZIP_STORED, allowZip64=True)

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

    def crc32(self, name: str) -> int:
        """The CRC-32 of entry ``name``'s bytes, as the archive's index records it."""
        return self.zf.getinfo(name).CRC

    def index_sha256(self) -> str:
        """:func:`index_sha256` of the finished archive."""
        with open(self.path, "rb") as f:
            return index_sha256(f, self.zf.start_dir)


def index_sha256(f, start: int) -> str:
    """The sha256 of an archive's index: its bytes from ``start``, where its central directory begins, to the
    end (every entry's name, sizes, offset and CRC-32, then the end records).

    It identifies the archive's contents without reading them: every reader of these archives checks each
    entry's bytes against the CRC-32 the index gives as it reads them (``zipfile``), so an entry changed,
    replaced or cut short either changes the index or fails that check. Hashing the whole file instead costs
    about 50 ms per 100 MB on each side, where the CRC-32s cost nothing more than the ZIP's own.
    """
    import hashlib      # here: a forked writer of a device file's cells never hashes, nor loads OpenSSL
    f.seek(start)
    digest = hashlib.sha256()
    while chunk := f.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


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
                arr = read_npy(member, info.file_size, self.what, self.where, self.limits, name)
                if member.read(1):      # read to its end, where zipfile checks the entry's CRC-32
                    raise InvalidDataError(f"{self.what} entry {name!r} holds more than its array", where=self.where)
                return arr
        except AcompileError:
            raise
        except Exception as e:
            raise InvalidDataError(f"{self.what} entry {name!r} is not a valid array ({clean(str(e), 80)})",
                                   where=self.where)

    def index_sha256(self) -> str:
        """:func:`index_sha256` of this archive."""
        try:
            return index_sha256(self.zf.fp, self.zf.start_dir)
        except OSError as e:
            raise InvalidDataError(f"cannot read the {self.what} file ({clean(str(e), 120)})", where=self.where)

    def crc32(self, name: str) -> int | None:
        """The CRC-32 that the index records for entry ``name`` (None when there is no such entry)."""
        info = self.infos.get(name)
        return info.CRC if info is not None else None

    def close(self) -> None:
        fp = self.zf.fp
        self.zf.close()
        if fp is not None:
            fp.close()
