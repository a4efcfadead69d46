"""``python -m acompile``: the same command as the ``acompile`` console script."""

from .cli import entry_point

if __name__ == "__main__":
    entry_point()
