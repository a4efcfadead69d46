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
import signal
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
    if entries and not (entries <= OUR_FILES and all((out / e).is_file() and not (out / e).is_symlink()
                                                     for e in entries)):
        raise UsageError("output folder exists and holds files acompile did not write; refusing to replace it",
                         where=clean(str(out)), hint="choose an empty or new folder with -o")


@contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM until the block ends, so a rename pair or a cleanup is never cut in half.

    Python runs signal handlers in the main thread whatever its signal mask (the
    signal may land on any thread), so the handlers themselves are swapped for
    one that only remembers; at the end the first remembered signal goes to the
    handler that was there before (KeyboardInterrupt, the CLI's Interrupted, or
    the default action). Outside the main thread there is nothing to hold: Python
    never runs handlers there.
    """
    received: list[int] = []
    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda n, frame: received.append(n))
    except ValueError:      # not the main thread
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if received:
            handler = previous.get(received[0])
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])


@contextmanager
def atomic_folder(out: Path):
    """Yield a temporary folder; on success it replaces ``out``, on any failure it is removed.

    Creating the temporary folder, the renames that put it in place and the
    cleanup run with SIGINT/SIGTERM held, so an interrupt leaves OUT as it was (or
    complete and new) and no temporary folder behind. Only SIGKILL between the two
    renames can leave OUT absent, with the previous one in ``.OUT.acompile-old-*``.
    """
    out = Path(out)
    _check_replaceable(out)
    parent = out.absolute().parent
    tmp = None
    try:
        with _signals_held():
            try:
                parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.acompile-tmp-", dir=parent))
            except OSError as e:
                raise UsageError(f"cannot create the output folder: {e.strerror}", where=clean(str(out)))
        yield tmp
        with _signals_held():
            os.chmod(tmp, 0o755)
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.acompile-old-", dir=parent))
                try:
                    os.rename(out, old / "previous")
                except BaseException:
                    os.rmdir(old)
                    raise
                try:
                    os.rename(tmp, out)
                except BaseException:
                    os.rename(old / "previous", out)
                    os.rmdir(old)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, out)
    finally:
        with _signals_held():
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
