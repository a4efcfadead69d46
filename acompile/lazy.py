"""Package attributes loaded on first use (PEP 562): a command pays only for the modules it reads."""

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
