"""Calls run in a forked child of this process: one into C++ code that may end the process (onnx's shape
inference on some graphs: :func:`in_child`), so that acompile survives it and can say so, or try another
way; and work done beside this process with a GIL of its own (:func:`beside`: the device file's cells while a
compile calibrates and writes its other files).

A forked child starts with the parent's memory, copied only where either writes, so it needs no arguments
sent to it; it runs none of the parent's Python clean-up or signal handlers, and sends back what its call
returned or raised.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import signal
import sys
import threading
import time
import weakref


class Crashed(Exception):
    """A forked child died before it said what its call returned or raised (onnx's C++ code ended it, a
    signal killed it)."""


# Threads that end on their own soon (a model file's read-ahead): :func:`beside` waits for them, then forks.
_ENDING_SOON: weakref.WeakSet = weakref.WeakSet()


def ends_soon(thread: threading.Thread) -> threading.Thread:
    """Mark ``thread`` as one that ends on its own shortly, which :func:`beside` may wait for; return it."""
    _ENDING_SOON.add(thread)
    return thread


class Child:
    """A call running in a forked child: :meth:`result` waits for it, :meth:`cancel` ends it."""

    def __init__(self, pid: int, read_fd: int, what: str):
        self.pid, self._read, self.what = pid, read_fd, what
        self._outcome: tuple[bool, object] | None = None

    def result(self):
        """What the call returned; what it raised is raised here (an exception that cannot be sent back,
        as a RuntimeError naming it), and a child that died before it said either as :class:`Crashed`.

        The child is not waited for once it has said it: it still has its copy of the memory to let go
        of (milliseconds for a large model), and is reaped later (:func:`reap_ended`).
        """
        if self._outcome is None:
            if self._read is None:
                raise Crashed(f"the {self.what} process was stopped")
            chunks = []
            try:
                while chunk := os.read(self._read, 1 << 20):
                    chunks.append(chunk)
            except BaseException:
                self.cancel()
                raise
            os.close(self._read)
            self._read = None
            data = b"".join(chunks)
            try:
                self._outcome = (data[:1] == b"\x00", pickle.loads(data[1:]))
            except Exception:   # nothing, or cut short: it died
                raise Crashed(f"the {self.what} process ended {_how(_wait(self.pid))} before it finished") from None
            _ENDED.append(self.pid)
            reap_ended()
        ok, value = self._outcome
        if not ok:
            raise value
        return value

    def cancel(self) -> None:
        """End the child at once, if it still runs, and reap it."""
        if self._read is None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(self._read)
        self._read = None
        _wait(self.pid)


_ENDED: list[int] = []      # children that said what they had to, not yet reaped


def reap_ended(wait: bool = False) -> None:
    """Reap the children of :data:`_ENDED` that have exited (with ``wait``, every one, once it has: their CPU
    time and memory then count among the process's children's)."""
    for pid in list(_ENDED):
        if wait:
            _wait(pid)
        else:
            try:
                if not os.waitpid(pid, os.WNOHANG)[0]:
                    continue    # still letting go of its memory
            except ChildProcessError:
                pass
        _ENDED.remove(pid)


def _wait(pid: int) -> int:
    """Reap child ``pid``; its wait status (0 when another part of the program reaped it)."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"by {signal.Signals(number).name}"
        except ValueError:
            return f"by signal {number}"
    return f"with exit code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"(status {status})"


def fork_call(call, *args, what: str = "worker") -> Child:
    """``call(*args)`` in a forked child; its :class:`Child`. OSError when the system forks no more (a limit
    on processes, no memory for another)."""
    reap_ended()
    read, write = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        raise
    if pid == 0:        # the child: no Python clean-up, nothing of the parent's flushed twice
        try:
            os.close(read)
            _quiet_child(parent)
            try:
                out = b"\x00" + pickle.dumps(call(*args))
            except BaseException as e:      # sent back; a KeyboardInterrupt too, which the parent raises again
                out = b"\x01" + _pickled_exception(e)
            with os.fdopen(write, "wb") as f:
                f.write(out)
        finally:
            os._exit(0)
    os.close(write)
    return Child(pid, read, what)


def _quiet_child(parent: int) -> None:
    """The child's own handling of its end: default signal dispositions instead of the parent's Python
    handlers (an interrupt ends it; the parent has its own), no fault handler and its standard streams on
    the null device (the parent says what happened, and whoever reads the parent's output sees it end with
    the parent, not when the child has let go of its memory), and on Linux it ends with its parent."""
    faulthandler.disable()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    for signum in signal.valid_signals():
        try:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    if sys.platform == "linux":
        try:
            import ctypes
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)     # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:      # the parent ended before the line above
            os._exit(1)


def _pickled_exception(e: BaseException) -> bytes:
    try:
        data = pickle.dumps(e)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(e).__name__}: {e}"))


def in_child(call, payload: bytes) -> bytes:
    """call(payload) in a forked child; its exception comes back as a RuntimeError with its message,
    its death as :class:`Crashed`."""
    try:
        return fork_call(call, payload, what="onnx").result()
    except (Crashed, KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        raise RuntimeError(f"{type(e).__name__}: {e}") from None


def beside(call, *args, what: str) -> Child | None:
    """``call(*args)`` in a forked child running beside this process, or None where forking is not safe or
    the system refuses (the caller then runs it on a thread of its own).

    Forking is safe on Linux from the main thread of a process that runs no other thread, of Python or
    native code (the threads of :func:`ends_soon` are waited for first): a thread holding a lock as the
    process forks would leave that lock held in the child for good.
    """
    if sys.platform != "linux" or not hasattr(os, "fork") or threading.current_thread() is not threading.main_thread():
        return None
    waited = False
    for thread in list(_ENDING_SOON):
        if thread.is_alive():
            thread.join()
            waited = True
    if not _one_thread(0.02 if waited else 0.0):
        return None
    try:
        return fork_call(call, *args, what=what)
    except OSError:     # no more processes for this user, no memory to fork: a thread does the work
        return None


def _one_thread(settle_s: float) -> bool:
    """Whether this process runs one thread, of Python or native code; for up to ``settle_s`` seconds, while
    a thread just joined may still be leaving the system's list."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            if len(os.listdir("/proc/self/task")) == 1:
                return True
        except OSError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0005)
