"""Every file acompile reads back, opened, sized and parsed in one place.

:func:`open_input` opens a path as a regular file or refuses it (a folder, FIFO,
device, socket -- also behind a symlink) without ever blocking, and checks its
size against a limit before a byte is read; :func:`read_input` reads it within a
time bound. :func:`read_arrays` reads ``.npy``/``.npz`` data: member names, dtypes
and the sizes their headers declare are checked before anything is decompressed,
and pickles are never loaded. :func:`parse_json` and :func:`loads_toml` parse text
with integer and nesting limits; :func:`check_schema` checks a parsed document
field by field so every missing key, wrong type or out-of-range size is an exit-2
error naming the field.
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


def _refuse_constant(text: str):
    raise _TooLong(f"{text} is not a JSON number")


def parse_json(raw: bytes, what: str, where: str, schema=None):
    """Parse JSON bytes (UTF-8); then :func:`check_schema` it when a schema is given."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidDataError(f"the {what} is not UTF-8 text (byte at offset {e.start})", where=where)
    try:
        obj = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
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


# --------------------------------------------------------------------------- schemas

class Int:
    """An integer (not a bool) in [lo, hi]."""
    def __init__(self, lo: int = 0, hi: int = 2**31):
        self.lo, self.hi = lo, hi


class Num:
    """A finite number."""


class Opt:
    """``inner`` or null."""
    def __init__(self, inner):
        self.inner = inner


class Seq:
    """A list of ``inner`` of at most ``max_len`` items."""
    def __init__(self, inner, max_len: int = 2**24, min_len: int = 0):
        self.inner, self.max_len, self.min_len = inner, max_len, min_len


class Map:
    """An object with any string keys, every value ``inner``."""
    def __init__(self, inner, max_len: int = 2**24):
        self.inner, self.max_len = inner, max_len


class OneOf:
    """One of the given string values."""
    def __init__(self, *values):
        self.values = values


class Any:
    """Anything (checked by whoever uses it)."""


class Either:
    """The first of ``options`` that fits (the error is the first option's)."""
    def __init__(self, *options):
        self.options = options


def _fits(schema):
    """One test of a whole item against a schema built of Int, Num, Seq and dicts without optional keys
    (what check_schema accepts, without its messages), else None."""
    if isinstance(schema, Int):
        lo, hi = schema.lo, schema.hi
        return lambda v: type(v) is int and lo <= v <= hi
    if isinstance(schema, Num):
        return lambda v: type(v) is int or type(v) is float and math.isfinite(v)
    if isinstance(schema, Seq):
        inner, lo, hi = _fits(schema.inner), schema.min_len, schema.max_len
        return None if inner is None else lambda v: type(v) is list and lo <= len(v) <= hi and all(map(inner, v))
    if isinstance(schema, dict) and not any(key.endswith("?") for key in schema):
        fields = [(key, _fits(sub)) for key, sub in schema.items()]
        if any(f is None for _, f in fields):
            return None
        return lambda v: type(v) is dict and all(key in v and f(v[key]) for key, f in fields)
    return None


def check_schema(obj, schema, what: str, where: str, path: str = "") -> None:
    """Check ``obj`` against ``schema``: a dict is an object with those keys (a key ending in "?" is
    optional; other keys are allowed), a type (str, bool) that type, or one of the classes above."""
    def fail(message: str):
        raise InvalidDataError(f"the {what}'s field {path or '(top level)'} {message}", where=where)

    def got(v) -> str:
        return clean(repr(v) if not isinstance(v, (dict, list)) else type(v).__name__, 40)

    if isinstance(schema, dict):
        if not isinstance(obj, dict):
            fail(f"must be an object (got {got(obj)})")
        for key, sub in schema.items():
            name, optional = (key[:-1], True) if key.endswith("?") else (key, False)
            sub_path = f"{path}.{name}" if path else name
            if name not in obj:
                if optional:
                    continue
                raise InvalidDataError(f"the {what} lacks the field {sub_path}", where=where)
            check_schema(obj[name], sub, what, where, sub_path)
    elif isinstance(schema, Int):
        if isinstance(obj, bool) or not isinstance(obj, int):
            fail(f"must be an integer (got {got(obj)})")
        if not schema.lo <= obj <= schema.hi:
            fail(f"must be from {schema.lo:,} to {schema.hi:,} (got {obj:,})")
    elif isinstance(schema, Num):
        if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
            fail(f"must be a number (got {got(obj)})")
    elif isinstance(schema, Opt):
        if obj is not None:
            check_schema(obj, schema.inner, what, where, path)
    elif isinstance(schema, Seq):
        if not isinstance(obj, list):
            fail(f"must be a list (got {got(obj)})")
        if not schema.min_len <= len(obj) <= schema.max_len:
            fail(f"must hold {schema.min_len:,} to {schema.max_len:,} items (got {len(obj):,})")
        fits = _fits(schema.inner)
        # a list of plain numbers or of records of them (a device header's crossbars: hundreds of thousands
        # of fields) is tested in one pass; the first item that fails, if any, is checked again for its message
        bad = None if fits is None else next((i for i, v in enumerate(obj) if not fits(v)), len(obj))
        for i in range(len(obj)) if bad is None else range(bad, min(bad + 1, len(obj))):
            check_schema(obj[i], schema.inner, what, where, f"{path}[{i}]")
    elif isinstance(schema, Map):
        if not isinstance(obj, dict):
            fail(f"must be an object (got {got(obj)})")
        if len(obj) > schema.max_len:
            fail(f"must hold at most {schema.max_len:,} entries")
        for key, item in obj.items():
            check_schema(item, schema.inner, what, where, f"{path}[{clean(key, 40)!r}]")
    elif isinstance(schema, OneOf):
        if obj not in schema.values:
            fail(f"must be one of {', '.join(map(str, schema.values))} (got {got(obj)})")
    elif isinstance(schema, Any):
        return
    elif isinstance(schema, Either):
        first = None
        for option in schema.options:
            try:
                check_schema(obj, option, what, where, path)
                return
            except InvalidDataError as e:
                first = first or e
        raise first
    elif schema in (str, bool):
        if type(obj) is not schema:
            fail(f"must be {'a string' if schema is str else 'true or false'} (got {got(obj)})")
    else:
        raise TypeError(f"bad schema {schema!r}")
