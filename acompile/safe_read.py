"""Every file acompile reads back, opened, sized and parsed in one place.

:func:`open_input` opens a path as a regular file or refuses it (a folder, FIFO,
device, socket -- also behind a symlink) without ever blocking, and checks its
size against a limit before a byte is read; :func:`read_input` reads it within a
time bound. :func:`read_arrays` reads ``.npy``/``.npz`` data: member names, dtypes
and the sizes their headers declare are checked before anything is decompressed,
and pickles are never loaded. :func:`parse_json` and :func:`loads_toml` parse text
with integer and nesting limits, then check it field by field (:mod:`.data_schema`)
so every missing key, wrong type or out-of-range size is an exit-2 error naming the field.
"""

from __future__ import annotations

import json
import math
import os
import stat
import time
import tomllib
import zipfile
from typing import BinaryIO

import numpy as np

from .data_schema import check_schema
from .errors import InvalidDataError, clean
from .limits import Limits

READ_SECONDS = 600.0         # no single file read may take longer (a hung network mount)
CHUNK = 1 << 20
MAX_MEMBERS = 65536          # members of one .npz
MAX_INT_DIGITS = 40          # integers in JSON documents acompile reads (int64 has 19 digits)
ARRAY_KINDS = "biufU"        # bool, integers, floats, fixed-width text: what an ONNX input can hold


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_input(path, what: str, limit: str = "max_data_bytes",
               limits: Limits | None = None) -> tuple[BinaryIO, int]:
    """Open ``path`` for reading as a regular file of at most ``limits.<limit>`` bytes; return (file, size).

    The open never blocks (O_NONBLOCK: a FIFO with no writer would otherwise hang it) and
    the checks run on the opened descriptor, so a path swapped between check and read
    cannot slip a device or FIFO through.
    """
    limits = limits or Limits.from_env()
    where = clean(str(path))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InvalidDataError(f"{what} not found", where=where)
    except OSError as e:
        raise InvalidDataError(f"cannot open the {what}: {e.strerror or type(e).__name__}", where=where)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidDataError(f"the {what} is {_kind_of(st.st_mode)}, not a regular file", where=where)
        if st.st_size > getattr(limits, limit):
            raise limits.refuse(limit, f"the {what} ({st.st_size:,} bytes)", st.st_size, where=where)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f, st.st_size


def read_exact(f: BinaryIO, n: int, what: str, where: str, deadline: float | None = None) -> bytearray:
    """Exactly ``n`` bytes of ``f`` (in pieces, within the time bound); a short read is a truncated file."""
    deadline = deadline or time.monotonic() + READ_SECONDS
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    while pos < n:
        got = f.readinto(view[pos:pos + CHUNK])
        if not got:
            raise InvalidDataError(f"the {what} is truncated ({pos:,} of {n:,} bytes)", where=where)
        pos += got
        if time.monotonic() > deadline:
            raise InvalidDataError(f"reading the {what} took longer than {READ_SECONDS:.0f} s", where=where)
    return buf


def read_input(path, what: str, limit: str = "max_data_bytes", limits: Limits | None = None) -> bytes:
    """The whole content of the regular file ``path`` (see :func:`open_input`)."""
    f, size = open_input(path, what, limit, limits)
    with f:
        data = read_exact(f, size, what, clean(str(path)))
        if f.read(1):          # grew while read: the size checked was not the size read
            raise InvalidDataError(f"the {what} changed while it was read", where=clean(str(path)))
    return bytes(data)


def sha256_input(path, what: str, limit: str = "max_device_bytes", limits: Limits | None = None) -> str:
    """sha256 of a regular file, read in pieces within the time bound."""
    import hashlib
    f, size = open_input(path, what, limit, limits)
    h = hashlib.sha256()
    deadline = time.monotonic() + READ_SECONDS
    with f:
        left = size
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
            if time.monotonic() > deadline:
                raise InvalidDataError(f"reading the {what} took longer than {READ_SECONDS:.0f} s",
                                       where=clean(str(path)))
    return h.hexdigest()


# --------------------------------------------------------------------------- arrays

def read_arrays(path, what: str, limits: Limits | None = None, names: set[str] | None = None
                ) -> np.ndarray | dict[str, np.ndarray]:
    """An ``.npy`` file as one array, or an ``.npz`` as {name: array}; only bool/int/float arrays.

    ``names`` (when given) are the only member names allowed. Every member's name, dtype
    and declared size is checked before any member is read or decompressed; an array
    may not exceed ``max_tensor_bytes``, the file ``max_data_bytes``.
    """
    limits = limits or Limits.from_env()
    where = clean(str(path))
    try:
        f, size = open_input(path, f"{what} file", "max_data_bytes", limits)
        with f:
            magic = f.read(6)
            f.seek(0)
            if magic == b"\x93NUMPY":
                return read_npy(f, size, what, where, limits, "")
            if not magic.startswith(b"PK"):
                raise InvalidDataError(f"the {what} file is neither an .npy array nor an .npz archive",
                                       where=where, hint="save it with numpy.save or numpy.savez")
            return _read_npz(f, what, where, limits, names)
    except InvalidDataError as e:
        if e.message.endswith("not found"):
            raise
        raise InvalidDataError(f"cannot read {what} data: {e.message}", where=e.where, hint=e.hint) from None


def _read_npz(f: BinaryIO, what: str, where: str, limits: Limits, names: set[str] | None) -> dict:
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise InvalidDataError(f"the {what} file is not a valid .npz ({clean(str(e), 100)})", where=where)
    if len(infos) > MAX_MEMBERS:
        raise InvalidDataError(f"the {what} file has {len(infos):,} members; at most {MAX_MEMBERS:,} are read",
                               where=where)
    seen, total = set(), 0
    for info in infos:
        name = info.filename
        key = name[:-4] if name.endswith(".npy") else None
        if key is None or not key:
            raise InvalidDataError(f"the {what} file holds {clean(name)!r}, which is not an .npy array",
                                   where=where, hint="an .npz keyed by input name, as numpy.savez writes")
        if key in seen:
            raise InvalidDataError(f"the {what} file holds {clean(key)!r} twice", where=where)
        seen.add(key)
        if names is not None and key not in names:
            raise InvalidDataError(f"the {what} file holds an unexpected name {clean(key)!r} (the model's "
                                   f"input names: {', '.join(clean(n, 60) for n in sorted(names)) or 'none'})",
                                   where=where)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InvalidDataError(f"the {what} file's member {clean(name)!r} uses an unsupported compression",
                                   where=where)
        if info.flag_bits & 0x1:
            raise InvalidDataError(f"the {what} file's member {clean(name)!r} is encrypted", where=where)
        if info.file_size > limits.max_tensor_bytes + 65536:
            raise limits.refuse("max_tensor_bytes", f"{what} array {clean(key)!r}", info.file_size, where=where)
        total += info.file_size
        if total > limits.max_data_bytes:
            raise limits.refuse("max_data_bytes", f"the {what} file's arrays", total, where=where)
    out = {}
    for info in infos:
        try:
            with zf.open(info) as member:
                out[info.filename[:-4]] = read_npy(member, info.file_size, what, where, limits,
                                                   info.filename[:-4])
        except InvalidDataError:
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise InvalidDataError(f"the {what} file's member {clean(info.filename)!r} is corrupt "
                                   f"({clean(str(e), 100)})", where=where)
    return out


def read_npy(f: BinaryIO, available: int, what: str, where: str, limits: Limits, name: str) -> np.ndarray:
    label = f"{what} array {clean(name)!r}" if name else f"{what} array"
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=10000)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=10000)
        else:
            raise ValueError(f"npy format version {version} is not read")
    except (ValueError, SyntaxError, TypeError, EOFError, OverflowError) as e:
        raise InvalidDataError(f"the {label} has a bad .npy header ({clean(str(e), 100)})", where=where)
    if dtype.hasobject or dtype.names is not None or dtype.shape != () or dtype.kind not in ARRAY_KINDS:
        raise InvalidDataError(f"the {label} has dtype {clean(str(dtype), 60)}; only bool, integer, float "
                               f"and text arrays are read (never pickles)", where=where)
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise InvalidDataError(f"the {label} has a bad shape {clean(shape, 60)}", where=where)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limits.max_tensor_bytes:
        raise limits.refuse("max_tensor_bytes", f"the {label} (shape {clean(list(shape), 60)})", nbytes,
                            where=where)
    if nbytes > available:
        raise InvalidDataError(f"the {label} is truncated: its header declares {nbytes:,} bytes, "
                               f"the file holds fewer", where=where)
    data = read_exact(f, nbytes, label, where)
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


# --------------------------------------------------------------------------- text documents

class _TooLong(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS and len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _TooLong(f"an integer of {len(text.lstrip('-')):,} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _TooLong(f"the number {clean(text, 30)} is out of range")
    return value


_DIGIT_RUNS = bytes(ord("0") if ord("0") <= b <= ord("9") else ord(" ") for b in range(256))   # digits kept
_LONG_RUN = b"0" * (MAX_INT_DIGITS + 1)


def _refuse_constant(text: str):
    raise _TooLong(f"{text} is not a JSON number")


def parse_json(raw: bytes, what: str, where: str, schema=None):
    """Parse JSON bytes (UTF-8); then :func:`check_schema` it when a schema is given."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidDataError(f"the {what} is not UTF-8 text (byte at offset {e.start})", where=where)
    # Without a run of more than MAX_INT_DIGITS digits anywhere in the text (strings included), no integer can
    # be too long, and json's own C parser reads them: a device header of 300,000 crossbars holds millions, and
    # a Python call for each took seconds. Floats and NaN/Infinity, few, always go through the checks.
    long_run = _LONG_RUN in raw.translate(_DIGIT_RUNS)
    try:
        obj = json.loads(text, parse_float=_parse_float, parse_constant=_refuse_constant,
                         **({"parse_int": _parse_int} if long_run else {}))
    except _TooLong as e:
        raise InvalidDataError(f"the {what} holds {e}", where=where)
    except json.JSONDecodeError as e:
        raise InvalidDataError(f"the {what} is not valid JSON ({clean(str(e), 80)})", where=where)
    except (RecursionError, ValueError) as e:
        raise InvalidDataError(f"the {what} is not usable JSON ({type(e).__name__})", where=where)
    if schema is not None:
        check_schema(obj, schema, what, where)
    return obj


def loads_toml(text: str) -> dict:
    """``tomllib.loads``, with an integer too long to convert reported as a TOMLDecodeError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except ValueError as e:
        raise tomllib.TOMLDecodeError(f"a number cannot be read ({clean(str(e), 60)})") from None
