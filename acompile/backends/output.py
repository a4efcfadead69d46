"""Atomic output folders.

Everything is written into a temporary folder beside OUT and renamed into
place at the end, so a failed or interrupted run leaves OUT exactly as it was
(or, during the two renames that replace an existing OUT, momentarily absent;
never half-written). An existing OUT is only replaced when it is an acompile
output folder, so ``-o .`` can never delete a user's files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError, clean

OUR_FILES = {"program.json", "program.npz", "device.acdev", "report.json", "report.md", "report_energy.svg",
             "report_layers.svg"}


def _check_replaceable(out: Path) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise UsageError("output path exists and is not a folder", where=clean(str(out)),
                         hint="choose another -o")
    entries = set(os.listdir(out))
    if entries and not (entries <= OUR_FILES):
        raise UsageError("output folder exists and holds files acompile did not write; refusing to replace it",
                         where=clean(str(out)), hint="choose an empty or new folder with -o")


@contextmanager
def atomic_folder(out: Path):
    """Yield a temporary folder; on success it replaces ``out``, on any failure it is removed."""
    out = Path(out)
    _check_replaceable(out)
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.acompile-tmp-", dir=parent))
    except OSError as e:
        raise UsageError(f"cannot create the output folder: {e.strerror}", where=clean(str(out)))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.acompile-old-", dir=parent))
            os.rename(out, old / "previous")
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old / "previous", out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
