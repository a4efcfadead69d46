"""The package version: one place, read by the CLI, the reports and ``acompile.__version__``."""

__version__ = "0.1.0"
