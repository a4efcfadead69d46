"""acompile check: for every model and target, will it map, and if not, why?

``check`` runs exactly the frontend and mapping steps of ``compile``
(:func:`acompile.compiler.run_pipeline` without calibration, collecting every
problem instead of stopping at the first) and writes no files, so check and
compile cannot disagree. Each model x target pair gets one verdict:

* ``compatible`` -- maps; every digital op is an *expected* one (see below);
* ``compatible with digital fallback`` -- maps, but some digital op types that
  are not expected run on the digital units (they are listed);
* ``incompatible`` -- every reason is listed: unsupported op or attribute,
  weights that are not constant, unknown shapes, anything compile rejects,
  more chips than ``--max-chips``, analog share of MACs below
  ``--min-analog-fraction``;
* ``error`` -- the model or target could not be read (one line, error code).

Expected digital ops are pure data movement (the ops the op table marks as
moving data) and element-wise activations (:data:`.verdict.ACTIVATIONS`);
``--digital-ok`` adds op types to that set (``*``: every op).

Exit status: 3 if an internal error hit any pair, else 2 if any input could
not be read, else 1 if any pair is incompatible, else 0.

Modules: :mod:`.discover` (which files), :mod:`.verdict` (one verdict per pair,
the process pool, the report), :mod:`.render` (text, JSON, Markdown, JUnit),
:mod:`.schema` (the report's JSON Schema). The command line is in
:mod:`acompile.cli.check`.
"""

from ..lazy import exports
from .schema import CHECK_JSON_SCHEMA

__all__ = ["check_model", "render_text", "render_json", "render_markdown", "render_junit", "CHECK_JSON_SCHEMA"]

# on first use: the command line reads its options (discover, render, schema) before numpy is imported
__getattr__ = exports(__name__, {"check_model": "verdict", "render_text": "render", "render_json": "render",
                                 "render_markdown": "render", "render_junit": "render"})
