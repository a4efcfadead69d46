"""Loaded on first use: package attributes (PEP 562), so that a command pays only for the modules it reads,
and thread pools, so that a run that never hands work to one pays neither for its threads nor for importing
concurrent.futures (3 ms, logging with it)."""

from __future__ import annotations

import sys
from importlib import import_module


def exports(package: str, where: dict[str, str]):
    """A package's ``__getattr__``: each name in ``where`` comes from the submodule named beside it,
    imported the first time the name is asked for (``from package import name`` included). A name
    must not be a submodule's: importing that submodule binds its name in the package to the module."""
    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value
    return __getattr__


class LazyThreads:
    """A ThreadPoolExecutor of ``workers`` threads made by the first :meth:`submit`; as a context manager,
    shut down on leaving (waiting for its work) if it was ever made."""

    def __init__(self, workers: int, name: str = ""):
        self.workers, self.name = workers, name
        self._pool = None

    def submit(self, fn, /, *args, **kwargs):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
        return self._pool.submit(fn, *args, **kwargs)

    def __enter__(self) -> LazyThreads:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
