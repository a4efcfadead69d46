"""Which model files ``acompile check`` looks at: paths named, and every ``*.onnx`` below a folder."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidModelError, clean
from .schema import PATH_LIMIT


def discover(paths: list[str]) -> list[tuple[str, str | None, tuple[str, int, str] | None]]:
    """(shown name, path to open, error) for every model named or found below a folder.

    A folder contributes every ``*.onnx`` below it, sorted; sub-folder links are
    not entered, a linked file that resolves outside the folder is refused
    (an ``error`` verdict, not silently skipped), and a link to a model that is
    itself in the folder is skipped. The same file named twice is checked once.
    """
    found: list[tuple[str, str | None, tuple[str, int, str] | None]] = []
    seen: set[str] = set()

    def add(shown: str, path: str | None, error=None) -> None:
        key = os.path.realpath(path) if path is not None else shown
        if key in seen:
            return
        seen.add(key)
        found.append((clean(shown, PATH_LIMIT), path, error))

    for arg in paths:
        if not os.path.isdir(arg):
            add(arg, arg)
            continue
        root = os.path.realpath(arg)
        files, walk_errors = [], []
        for dirpath, dirnames, filenames in os.walk(arg, followlinks=False, onerror=walk_errors.append):
            dirnames.sort()
            files += [os.path.join(dirpath, f) for f in filenames if f.lower().endswith(".onnx")]
        files.sort(key=lambda f: Path(os.path.relpath(f, arg)).parts)
        for e in walk_errors:
            where = getattr(e, "filename", None) or arg
            err = InvalidModelError(f"cannot list folder: {e.strerror or e}", where=clean(where, PATH_LIMIT))
            add(str(where), None, (err.code, err.exit_code, err.one_line()))
        if not files and not walk_errors:
            err = InvalidModelError("no .onnx files below this folder", where=clean(arg, PATH_LIMIT))
            add(arg, None, (err.code, err.exit_code, err.one_line()))
        plain = {os.path.realpath(f) for f in files if not os.path.islink(f)}
        for f in files:
            if os.path.islink(f):
                real = os.path.realpath(f)
                if real in plain:
                    continue   # an alias of a file checked under its own name
                if not real.startswith(root + os.sep):
                    err = InvalidModelError(f"symbolic link leads outside {clean(arg)!r}; not followed",
                                            where=clean(f, PATH_LIMIT))
                    add(f, None, (err.code, err.exit_code, err.one_line()))
                    continue
            add(f, f)
    return found
