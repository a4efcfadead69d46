"""Design-space sweeps: every model at every point of the ``--set`` lists, compiled (and simulated on data),
as one tidy table with Pareto fronts; locally or on a Dask cluster.

``sweep(models, target, {"adc.bits": [4, 6, 8]}, data=..., labels=...)`` returns
the rows; :func:`as_frame` makes a pandas DataFrame of them when pandas is installed.
"""

from .engine import sweep


def as_frame(rows: list[dict]):
    """The rows as a pandas DataFrame (pandas is optional: ImportError without it)."""
    import pandas
    return pandas.DataFrame(rows)


__all__ = ["as_frame", "sweep"]
