"""Atomic writes of output files and folders, and interrupts.

Everything acompile writes goes into a temporary file or folder beside the
destination and is renamed into place at the end, so a failed or interrupted
run leaves the destination exactly as it was (an OUT folder is, during the two
renames that replace it, momentarily absent; never half-written). An existing
OUT is only replaced when it is an acompile output folder, so ``-o .`` can never
delete a user's files, and OUT is checked again just before it is replaced.
SIGTERM, SIGHUP and SIGQUIT become :class:`Interrupted` so that this cleanup runs; :func:`interruption` finds an interrupt behind a wrapped error.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError, clean

OUR_FILES = {"program.json", "program.npz", "target.toml", "device.acdev", "report.json", "report.md", "report_energy.svg",
             "report_layers.svg", "report.html", "mapped.onnx"}


# The signals a terminal or CI runner sends to stop a process: held during renames, turned into exceptions
HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
                     if hasattr(signal, name))


class Interrupted(BaseException):
    """SIGTERM (or SIGHUP, SIGQUIT) turned into an exception (by the CLI's handler) so cleanup runs."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


def interruption(e: BaseException | None) -> BaseException | None:
    """The KeyboardInterrupt or Interrupted that ``e`` was raised from, if any (``e`` itself included).

    A signal handler that raises while a C extension initialises (onnxruntime's
    first import) comes back as ``ImportError: initialization failed`` caused by
    the interrupt, and may then be wrapped again into an AcompileError.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (KeyboardInterrupt, Interrupted)):
            return e
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path`` (mode 0644).

    On any failure the temporary file is removed and ``path`` is untouched;
    OSError propagates for the caller to word.
    """
    path = Path(path)
    check_file_destination(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.absolute().parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def check_file_destination(path: Path) -> None:
    """Only a regular file (or nothing) may be replaced: never a folder, device, FIFO or socket."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise UsageError(f"cannot write there: {e.strerror}", where=clean(str(path)))
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise UsageError(f"the output path is {kind}; refusing to replace it", where=clean(str(path)),
                         hint="name a new or regular file")


def _snapshot(out: Path) -> dict | None:
    """What ``out`` holds now: None if nothing is there, else {name: (inode, size, mtime)} (lstat)."""
    if not os.path.lexists(out):
        return None
    if out.is_symlink() or not out.is_dir():
        return {"": ()}
    snap = {}
    for name in os.listdir(out):
        st = os.lstat(out / name)
        snap[name] = (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns)
    return snap


def check_replaceable(out: Path) -> dict | None:
    """Refuse an OUT that is not an acompile output folder; return its snapshot."""
    snap = _snapshot(out)
    if snap is None:
        return None
    if "" in snap:
        raise UsageError("output path exists and is not a folder", where=clean(str(out)),
                         hint="choose another -o")
    ours = set(snap) <= OUR_FILES and all(stat.S_ISREG(v[0]) for v in snap.values())
    if snap and not (ours and snap.keys() & {"program.json", "report.json"}):
        raise UsageError("output folder exists and holds files acompile did not write; refusing to replace it",
                         where=clean(str(out)), hint="choose an empty or new folder with -o")
    return snap


def _refuse_changed(out: Path, before: dict | None, tmp: Path, parent: Path) -> None:
    """OUT changed while acompile worked (a user's file, a second writer): keep it, put the new output beside."""
    now = _snapshot(out)
    if now == before or (before is None and now is None):
        return
    new = Path(tempfile.mkdtemp(prefix=f"{out.name}.new-", dir=parent))
    os.rename(tmp, new)
    raise UsageError("the output folder changed while acompile was writing (another program wrote to it); "
                     f"it was left as it is and the new output is in {clean(str(new))}",
                     where=clean(str(out)), hint="move the new output into place yourself, or rerun")


@contextmanager
def _signals_held():
    """Hold SIGINT, SIGTERM, SIGHUP and SIGQUIT until the block ends, so a rename pair or a cleanup is never cut in half.

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
        for signum in HELD_SIGNALS:
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
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out``, on any failure it is removed.

    Creating the temporary folder, the renames that put it in place and the
    cleanup run with those signals held, so an interrupt leaves OUT as it was (or
    complete and new) and no temporary folder behind. Only SIGKILL between the two
    renames can leave OUT absent, with the previous one in ``.OUT.acompile-old-*``.
    """
    out = Path(out)
    before = check_replaceable(out)
    parent = out.absolute().parent
    missing = []            # the folders above OUT this call creates: removed again unless OUT is put in place
    while not parent.exists() and parent not in missing and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    parent = out.absolute().parent
    tmp, placed = None, False
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
            _refuse_changed(out, before, tmp, parent)
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
            placed = True
    finally:
        with _signals_held():
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            for folder in missing if not placed else ():
                try:
                    folder.rmdir()
                except OSError:
                    break
