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
moving data) and element-wise activations (:data:`ACTIVATIONS`);
``--digital-ok`` adds op types to that set (``*``: every op).

Exit status: 3 if an internal error hit any pair, else 2 if any input could
not be read, else 1 if any pair is incompatible, else 0.
"""

from __future__ import annotations

import argparse
import difflib
import math
import multiprocessing
import os
import re
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .errors import (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_UNMAPPABLE, AcompileError, InvalidDataError,
                     InvalidModelError, LimitError, UnsupportedError, UsageError, clean)

SCHEMA_VERSION = 1
FORMATS = ("text", "json", "markdown", "junit")
COMPATIBLE = "compatible"
FALLBACK = "compatible with digital fallback"
INCOMPATIBLE = "incompatible"
ERROR = "error"
VERDICTS = (COMPATIBLE, FALLBACK, INCOMPATIBLE, ERROR)

ACTIVATIONS = frozenset(
    "Relu LeakyRelu PRelu Clip ThresholdedRelu Celu Elu Selu HardSigmoid HardSwish Softsign "
    "Sigmoid Tanh Softplus Mish Gelu".split())

REASON_CATEGORIES = ("unsupported_op", "unsupported_attribute", "dynamic_weights", "unknown_shape",
                     "unsupported", "too_many_chips", "low_analog_fraction")
_CATEGORY_TEXT = {
    "unsupported_op": "unsupported op", "unsupported_attribute": "unsupported attribute",
    "dynamic_weights": "weights not constant", "unknown_shape": "unknown shape",
    "unsupported": "cannot be mapped", "too_many_chips": "too many chips",
    "low_analog_fraction": "analog fraction too low",
}
FIGURE_KEYS = ("analog_mac_fraction", "macs", "weights", "crossbars", "tiles", "chips", "utilisation",
               "energy_per_inference_pj", "latency_ns")
_NODES_SHOWN = 3
_PATH_LIMIT = 1000


# ---------------------------------------------------------------------------
# JSON output schema (draft 2020-12); tests validate every JSON output against it
# ---------------------------------------------------------------------------

_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}

CHECK_JSON_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "acompile check result",
    "type": "object",
    "required": ["schema_version", "tool", "version", "passed", "exit_code", "settings", "summary",
                 "results", "elapsed_s"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "tool": {"const": "acompile check"},
        "version": {"type": "string"},
        "passed": {"type": "boolean"},
        "exit_code": {"type": "integer", "enum": [EXIT_OK, EXIT_UNMAPPABLE, EXIT_BAD_INPUT, EXIT_INTERNAL]},
        "elapsed_s": {"type": "number", "minimum": 0},
        "settings": {
            "type": "object",
            "required": ["targets", "max_chips", "min_analog_fraction", "digital_ok"],
            "additionalProperties": False,
            "properties": {
                "targets": {"type": "array", "items": {"type": "string"}},
                "max_chips": {"type": ["integer", "null"], "minimum": 0},
                "min_analog_fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "digital_ok": {"type": "array", "items": {"type": "string"}},
            },
        },
        "summary": {
            "type": "object",
            "required": ["pairs", "models", "compatible", "compatible_with_fallback", "incompatible", "error"],
            "additionalProperties": False,
            "properties": {k: {"type": "integer", "minimum": 0} for k in
                           ("pairs", "models", "compatible", "compatible_with_fallback", "incompatible", "error")},
        },
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["model", "target", "verdict", "reasons", "figures", "figures_estimated",
                             "digital_ops", "fallback_ops", "error"],
                "additionalProperties": False,
                "properties": {
                    "model": {"type": "string"},
                    "target": {"type": "string"},
                    "verdict": {"enum": list(VERDICTS)},
                    "reasons": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["category", "node", "op_type", "domain", "opset", "message"],
                            "additionalProperties": False,
                            "properties": {
                                "category": {"enum": list(REASON_CATEGORIES)},
                                "node": _STR_OR_NULL,
                                "op_type": _STR_OR_NULL,
                                "domain": {"type": "string"},
                                "opset": _INT_OR_NULL,
                                "message": {"type": "string"},
                            },
                        },
                    },
                    "figures": {
                        "type": ["object", "null"],
                        "required": list(FIGURE_KEYS),
                        "additionalProperties": False,
                        "properties": {k: (_INT_OR_NULL if k in ("macs", "weights", "crossbars", "tiles", "chips")
                                           else _NUM_OR_NULL) for k in FIGURE_KEYS},
                    },
                    "figures_estimated": {"type": "boolean"},
                    "digital_ops": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
                    "fallback_ops": {"type": "array", "items": {"type": "string"}},
                    "error": {
                        "type": ["object", "null"],
                        "required": ["code", "exit_code", "message"],
                        "additionalProperties": False,
                        "properties": {"code": {"type": "string"}, "exit_code": {"type": "integer"},
                                       "message": {"type": "string"}},
                    },
                },
            },
        },
    },
}


# ---------------------------------------------------------------------------
# settings and the work list
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """What makes a mapped model acceptable (CLI choices; hardware facts stay in the target)."""
    max_chips: int | None = None
    min_analog_fraction: float | None = None
    digital_ok: frozenset[str] = field(default_factory=lambda: default_digital_ok())
    limits: object = None   # frontend.load.Limits; None: from the environment
    verbose: bool = False   # print the traceback of an internal error


@dataclass(frozen=True)
class Job:
    """One model x target pair. ``path`` is opened, ``model`` is shown (already cleaned)."""
    model: str
    path: str | None
    target: str
    error: tuple[str, int, str] | None = None   # (code, exit_code, message) known before checking


def default_digital_ok() -> frozenset[str]:
    """Digital op types that do not make a model 'with fallback': data movement and activations."""
    from .frontend.ops import OPS
    moves = {op for (domain, op), sup in OPS.items() if not domain and sup.kind == "digital" and sup.moves_data}
    return frozenset(moves | ACTIVATIONS)


def parse_digital_ok(values: list[str] | None) -> frozenset[str]:
    """The default expected set plus the comma-separated op types given; '*' accepts every op."""
    from .frontend.ops import OPS
    known = sorted({op for (domain, op), sup in OPS.items() if not domain and sup.kind == "digital"})
    extra = {x.strip() for v in (values or []) for x in v.split(",") if x.strip()}
    if "*" in extra:
        return frozenset({"*"})
    for op in sorted(extra):
        if op not in known:
            close = difflib.get_close_matches(op, known, n=1) or [k for k in known if k.lower() == op.lower()]
            hint = f"did you mean {close[0]!r}?" if close else "'acompile ops' lists the digital ops"
            raise UsageError(f"--digital-ok: {clean(op)!r} is not a digital op type acompile knows", hint=hint)
    return default_digital_ok() | frozenset(extra)


def discover(paths: list[str]) -> list[tuple[str, str | None, tuple[str, int, str] | None]]:
    """(shown name, path to open, error) for every model named or found below a folder.

    A folder contributes every ``*.onnx`` below it, sorted; sub-folder links are
    not entered, a linked file that resolves outside the folder is refused
    (an ``error`` verdict, not silently skipped), and a link to a model that is
    itself in the folder is skipped. The same file named twice is checked once.
    """
    found: list[tuple[str, str | None, tuple[str, int, str] | None]] = []
    seen: set[str] = set()

    def add(shown: str, path: str | None, error=None) -> None:
        key = os.path.realpath(path) if path is not None else shown
        if key in seen:
            return
        seen.add(key)
        found.append((clean(shown, _PATH_LIMIT), path, error))

    for arg in paths:
        if not os.path.isdir(arg):
            add(arg, arg)
            continue
        root = os.path.realpath(arg)
        files, walk_errors = [], []
        for dirpath, dirnames, filenames in os.walk(arg, followlinks=False, onerror=walk_errors.append):
            dirnames.sort()
            files += [os.path.join(dirpath, f) for f in filenames if f.lower().endswith(".onnx")]
        files.sort(key=lambda f: Path(os.path.relpath(f, arg)).parts)
        for e in walk_errors:
            where = getattr(e, "filename", None) or arg
            err = InvalidModelError(f"cannot list folder: {e.strerror or e}", where=clean(where, _PATH_LIMIT))
            add(str(where), None, (err.code, err.exit_code, err.one_line()))
        if not files and not walk_errors:
            err = InvalidModelError("no .onnx files below this folder", where=clean(arg, _PATH_LIMIT))
            add(arg, None, (err.code, err.exit_code, err.one_line()))
        plain = {os.path.realpath(f) for f in files if not os.path.islink(f)}
        for f in files:
            if os.path.islink(f):
                real = os.path.realpath(f)
                if real in plain:
                    continue   # an alias of a file checked under its own name
                if not real.startswith(root + os.sep):
                    err = InvalidModelError(f"symbolic link leads outside {clean(arg)!r}; not followed",
                                            where=clean(f, _PATH_LIMIT))
                    add(f, None, (err.code, err.exit_code, err.one_line()))
                    continue
            add(f, f)
    return found


# ---------------------------------------------------------------------------
# checking one pair (runs in worker processes too: takes and returns plain data)
# ---------------------------------------------------------------------------

_TARGETS: dict[str, object] = {}


def _target(spec: str):
    """Targets are loaded once per process; a failure is cached and raised again."""
    if spec not in _TARGETS:
        from .target import load_target
        try:
            _TARGETS[spec] = load_target(spec)
        except AcompileError as e:
            _TARGETS[spec] = e
    t = _TARGETS[spec]
    if isinstance(t, AcompileError):
        raise t
    return t


def _result(job: Job, verdict: str, **kw) -> dict:
    return {"model": job.model, "target": clean(job.target, _PATH_LIMIT), "verdict": verdict,
            "reasons": kw.get("reasons", []), "figures": kw.get("figures"),
            "figures_estimated": kw.get("figures_estimated", False), "digital_ops": kw.get("digital_ops", {}),
            "fallback_ops": kw.get("fallback_ops", []), "error": kw.get("error")}


def _error(job: Job, code: str, exit_code: int, message: str) -> dict:
    return _result(job, ERROR, error={"code": code, "exit_code": exit_code, "message": message})


def _reason(category: str, message: str, *, node=None, op_type=None, domain="", opset=None) -> dict:
    return {"category": category, "node": None if node is None else clean(node),
            "op_type": None if op_type is None else clean(op_type), "domain": clean(domain),
            "opset": opset, "message": clean(message, 600)}


def _problem_reason(p) -> dict:
    return _reason(p.category, p.reason, node=p.node, op_type=p.op_type, domain=p.domain, opset=int(p.opset))


def _finite(x, kind=float):
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return kind(v) if math.isfinite(v) else None


def _figures(cost: dict) -> dict | None:
    t = cost.get("totals")
    if not t:
        return None
    return {
        "analog_mac_fraction": _finite(t.get("analog_mac_fraction")),
        "macs": _finite(t.get("macs"), int), "weights": _finite(t.get("weights"), int),
        "crossbars": _finite(t.get("crossbars"), int), "tiles": _finite(t.get("tiles"), int),
        "chips": _finite(t.get("chips"), int), "utilisation": _finite(t.get("utilisation")),
        "energy_per_inference_pj": _finite(t.get("energy_total_pj")), "latency_ns": _finite(t.get("latency_ns")),
    }


def _digital_ops(graph) -> dict[str, int]:
    """Digital op types of the model (not acompile's own boundary nodes, not unsupported ones) -> count."""
    counts: dict[str, int] = {}
    for n in graph.nodes:
        if n.kind == "digital" and n.domain != "acompile" and not n.meta.get("unknown"):
            name = clean(f"{n.domain}.{n.op_type}" if n.domain else n.op_type)
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _limit_reasons(figures: dict | None, settings: Settings) -> list[dict]:
    if figures is None:
        return []
    out = []
    chips = figures["chips"]
    if settings.max_chips is not None and chips is not None and chips > settings.max_chips:
        out.append(_reason("too_many_chips", f"needs {chips} chip(s) ({figures['crossbars']} crossbars); "
                                             f"--max-chips is {settings.max_chips}"))
    frac = figures["analog_mac_fraction"]
    if settings.min_analog_fraction is not None and frac is not None and frac < settings.min_analog_fraction:
        out.append(_reason("low_analog_fraction", f"{frac:.1%} of MACs run on crossbars; "
                                                  f"--min-analog-fraction is {settings.min_analog_fraction:.1%}"))
    return out


def check_pair(job: Job, settings: Settings) -> dict:
    """The verdict for one model x target pair, as JSON-ready data. Never raises for user input."""
    if job.error is not None:
        return _error(job, *job.error)
    try:
        return _check_pair(job, settings)
    except AcompileError as e:
        return _error(job, e.code, e.exit_code, e.one_line())
    except RecursionError:
        e = InvalidModelError("the model nests too deeply to process", where=job.model)
        return _error(job, e.code, e.exit_code, e.one_line())
    except MemoryError:
        e = LimitError("out of memory; the model is too large for this machine", where=job.model)
        return _error(job, e.code, e.exit_code, e.one_line())
    except Exception as e:  # a bug: reported for this pair, the others are still checked
        if settings.verbose:
            traceback.print_exc()
        return _error(job, "internal", EXIT_INTERNAL,
                      f"{job.model}: internal error: {type(e).__name__}: {clean(str(e))} -- please report this")


def _check_pair(job: Job, settings: Settings) -> dict:
    from .compiler import Options, run_pipeline
    from .frontend.load import Limits
    target = _target(job.target)
    limits = settings.limits or Limits.from_env()
    try:
        compiled = run_pipeline(job.path, target, Options(limits=limits),
                                with_calibration=False, stop_on_problems=False)
    except UnsupportedError as e:   # what compile rejects after classification (exit 1 there too)
        reasons = [_problem_reason(p) for p in e.problems] or [_reason("unsupported", e.one_line())]
        return _result(job, INCOMPATIBLE, reasons=reasons)
    reasons = [_problem_reason(p) for p in compiled.problems]
    figures, estimated, graph = _figures(compiled.cost), False, compiled.graph
    if reasons:
        # compile stops here; for the summary figures, cost the unsupported nodes as unknown digital ops
        try:
            rough = run_pipeline(job.path, target, Options(limits=limits, allow_unsupported=True),
                                 with_calibration=False, stop_on_problems=False)
            figures, estimated = _figures(rough.cost), True
        except Exception:   # best effort: an estimate that fails must not hide the reasons above
            figures = None
    reasons += _limit_reasons(figures, settings)
    digital = _digital_ops(graph)
    fallback = [] if "*" in settings.digital_ok else [op for op in digital if op not in settings.digital_ok]
    verdict = INCOMPATIBLE if reasons else (FALLBACK if fallback else COMPATIBLE)
    return _result(job, verdict, reasons=reasons, figures=figures, figures_estimated=estimated,
                   digital_ops=digital, fallback_ops=fallback)


def check_model(model: str, target: str, settings: Settings | None = None) -> dict:
    """Library entry point: the verdict record for one model file and one target name or file."""
    return check_pair(Job(clean(model, _PATH_LIMIT), model, target), settings or Settings())


def run_checks(jobs: list[Job], settings: Settings, n_jobs: int = 1) -> list[dict]:
    """Check every pair, in parallel processes when ``n_jobs > 1``; results in ``jobs`` order."""
    if n_jobs <= 1 or len(jobs) <= 1:
        return [check_pair(j, settings) for j in jobs]
    # fork where it is safe and cheap (Linux): workers inherit the imported modules
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    results = []
    pool = ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=multiprocessing.get_context(method))
    try:
        futures = [pool.submit(check_pair, j, settings) for j in jobs]
        for job, fut in zip(jobs, futures):
            try:
                results.append(fut.result())
            except Exception as e:   # the worker died (killed, out of memory): report, keep going
                results.append(_error(job, "internal", EXIT_INTERNAL,
                                      f"{job.model}: the checking process failed: {type(e).__name__}: "
                                      f"{clean(str(e))}"))
    finally:   # on Ctrl-C or SIGTERM, do not start the pairs still queued
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def exit_code(results: list[dict]) -> int:
    """3 internal error > 2 unreadable input > 1 incompatible > 0."""
    code = EXIT_OK
    for r in results:
        if r["verdict"] == ERROR:
            code = max(code, EXIT_INTERNAL if r["error"]["exit_code"] == EXIT_INTERNAL else EXIT_BAD_INPUT)
        elif r["verdict"] == INCOMPATIBLE:
            code = max(code, EXIT_UNMAPPABLE)
    return code


def summary(results: list[dict]) -> dict:
    count = {v: sum(r["verdict"] == v for r in results) for v in VERDICTS}
    return {"pairs": len(results), "models": len({r["model"] for r in results}),
            "compatible": count[COMPATIBLE], "compatible_with_fallback": count[FALLBACK],
            "incompatible": count[INCOMPATIBLE], "error": count[ERROR]}


def report(results: list[dict], settings: Settings, targets: list[str], elapsed_s: float) -> dict:
    """The whole run as the JSON document described by :data:`CHECK_JSON_SCHEMA`."""
    code = exit_code(results)
    return {
        "schema_version": SCHEMA_VERSION, "tool": "acompile check", "version": __version__,
        "passed": code == EXIT_OK, "exit_code": code,
        "settings": {"targets": [clean(t, _PATH_LIMIT) for t in targets], "max_chips": settings.max_chips,
                     "min_analog_fraction": settings.min_analog_fraction,
                     "digital_ok": sorted(settings.digital_ok)},
        "summary": summary(results), "results": results, "elapsed_s": round(elapsed_s, 3),
    }


# ---------------------------------------------------------------------------
# output formats
# ---------------------------------------------------------------------------

def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def _energy(pj) -> str:
    if pj is None:
        return "-"
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def _figures_text(r: dict) -> str:
    f = r["figures"]
    if f is None:
        return "no figures (the model does not map)"
    chips, bars = f["chips"], f["crossbars"]
    text = (f"analog {_pct(f['analog_mac_fraction'])} of MACs, {bars} crossbar{'' if bars == 1 else 's'}, "
            f"{chips} chip{'' if chips == 1 else 's'}, utilisation {_pct(f['utilisation'])}, "
            f"{_energy(f['energy_per_inference_pj'])}/inference")
    return ("estimated with unsupported nodes as digital: " + text) if r["figures_estimated"] else text


def _op_label(reason: dict) -> str:
    if reason["op_type"] is None:
        return "-"
    op = f"{reason['domain']}.{reason['op_type']}" if reason["domain"] else reason["op_type"]
    return f"{op} (opset {reason['opset']})" if reason["opset"] else op


def problem_rows(reasons: list[dict]) -> list[tuple[str, int, str, str]]:
    """(Op, Count, Reason, Nodes) rows: one per op and reason, in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for reason in reasons:
        text = f"{_CATEGORY_TEXT[reason['category']]}: {reason['message']}"
        groups.setdefault((_op_label(reason), text), []).append(reason)
    rows = []
    for (op, text), items in groups.items():
        nodes = [i["node"] for i in items if i["node"] is not None]
        shown = ", ".join(nodes[:_NODES_SHOWN]) + (f" (+{len(nodes) - _NODES_SHOWN} more)"
                                                    if len(nodes) > _NODES_SHOWN else "")
        rows.append((op, len(items), text, shown))
    return rows


def _verdict_text(r: dict) -> str:
    if r["verdict"] == ERROR:
        e = r["error"]
        return f"error ({e['code']}, exit {e['exit_code']}): {e['message']}"
    if r["verdict"] == INCOMPATIBLE:
        n = len(r["reasons"])
        return f"incompatible ({n} reason{'' if n == 1 else 's'}) | {_figures_text(r)}"
    if r["verdict"] == FALLBACK:
        ops = ", ".join(f"{op} x{r['digital_ops'][op]}" for op in r["fallback_ops"])
        return f"compatible with digital fallback ({ops}) | {_figures_text(r)}"
    return f"compatible | {_figures_text(r)}"


def _table(header: tuple, rows: list[tuple], indent: str = "  ") -> list[str]:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    fmt = lambda row: indent + " | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return [fmt(cells[0]), indent + "-+-".join("-" * w for w in widths)] + [fmt(row) for row in cells[1:]]


def _status_line(doc: dict) -> str:
    s = doc["summary"]
    word = "PASSED" if doc["passed"] else "FAILED"
    return (f"{word}: {s['pairs']} model x target pair(s): {s['compatible']} compatible, "
            f"{s['compatible_with_fallback']} with digital fallback, {s['incompatible']} incompatible, "
            f"{s['error']} error(s) in {doc['elapsed_s']:.2f} s")


def render_text(doc: dict) -> str:
    """One line per model x target, a problem table under each incompatible pair, then PASSED/FAILED."""
    lines = []
    for r in doc["results"]:
        lines.append(f"{r['model']} [{r['target']}]: {_verdict_text(r)}")
        if r["reasons"]:
            lines += _table(("Op", "Count", "Reason", "Nodes"), problem_rows(r["reasons"]))
    lines.append(_status_line(doc))
    return "\n".join(lines) + "\n"


def render_json(doc: dict) -> str:
    from .compiler import dumps_json
    return dumps_json(doc)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~<>])")


def _md(text: object) -> str:
    """Markdown-inert table-cell text: inline markup characters backslash-escaped, & as an entity."""
    return _MD_SPECIAL.sub(r"\\\1", str(text).replace("&", "&amp;"))


def render_markdown(doc: dict) -> str:
    """A CI job summary: a table of every pair, then the problems of each incompatible or failed pair."""
    s = doc["summary"]
    out = [f"## acompile check: {'PASSED' if doc['passed'] else 'FAILED'}", "",
           f"{s['pairs']} model x target pair(s): {s['compatible']} compatible, "
           f"{s['compatible_with_fallback']} with digital fallback, {s['incompatible']} incompatible, "
           f"{s['error']} error(s).", "",
           "| Model | Target | Verdict | Analog MACs | Crossbars | Chips | Utilisation | Energy / inference |",
           "|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        f = r["figures"] or {}
        verdict = r["verdict"] if r["verdict"] in (COMPATIBLE, FALLBACK) else f"**{r['verdict']}**"
        if r["verdict"] == FALLBACK:
            verdict += " (" + ", ".join(_md(op) for op in r["fallback_ops"]) + ")"
        est = " (est.)" if r["figures_estimated"] else ""
        out.append(f"| {_md(r['model'])} | {_md(r['target'])} | {verdict} | "
                   f"{_md(_pct(f.get('analog_mac_fraction')) + est)} | {f.get('crossbars', '-')} | "
                   f"{f.get('chips', '-')} | {_md(_pct(f.get('utilisation')))} | "
                   f"{_md(_energy(f.get('energy_per_inference_pj')))} |")
    for r in doc["results"]:
        if r["verdict"] not in (INCOMPATIBLE, ERROR):
            continue
        out += ["", f"### {_md(r['model'])} on {_md(r['target'])}: {r['verdict']}", ""]
        if r["verdict"] == ERROR:
            out.append(f"{_md(r['error']['code'])} (exit {r['error']['exit_code']}): {_md(r['error']['message'])}")
            continue
        out += ["| Op | Count | Reason | Nodes |", "|---|---|---|---|"]
        out += [f"| {_md(op)} | {n} | {_md(text)} | {_md(nodes)} |" for op, n, text, nodes in
                problem_rows(r["reasons"])]
    out += ["", f"_{_md(_status_line(doc))}_"]
    return "\n".join(out) + "\n"


_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: object) -> str:
    """Text that XML 1.0 can hold: characters it forbids are dropped (ElementTree escapes the rest)."""
    return _XML_BAD.sub("", str(text))


def render_junit(doc: dict) -> str:
    """JUnit XML: one testcase per model x target (classname = model, name = target)."""
    s = doc["summary"]
    failures, errors = str(s["incompatible"]), str(s["error"])
    suites = ET.Element("testsuites", name="acompile check", tests=str(s["pairs"]), failures=failures,
                        errors=errors, time=f"{doc['elapsed_s']:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="acompile check", tests=str(s["pairs"]), failures=failures,
                          errors=errors, skipped="0", time=f"{doc['elapsed_s']:.3f}")
    for r in doc["results"]:
        case = ET.SubElement(suite, "testcase", classname=_x(r["model"]), name=_x(r["target"]), time="0")
        if r["verdict"] == INCOMPATIBLE:
            rows = problem_rows(r["reasons"])
            first = rows[0]
            fail = ET.SubElement(case, "failure", type="incompatible",
                                 message=_x(f"{len(r['reasons'])} reason(s); first: {first[0]}: {first[2]}"))
            fail.text = _x("\n".join(f"{op} x{n}: {text}" + (f" [{nodes}]" if nodes else "")
                                     for op, n, text, nodes in rows) + "\n" + _figures_text(r))
        elif r["verdict"] == ERROR:
            err = ET.SubElement(case, "error", type=_x(r["error"]["code"]), message=_x(r["error"]["message"]))
            err.text = _x(r["error"]["message"])
        out = ET.SubElement(case, "system-out")
        out.text = _x(f"{r['verdict']}" + ("" if r["verdict"] == ERROR else f": {_figures_text(r)}")
                      + (f"\ndigital ops: {', '.join(f'{k} x{v}' for k, v in r['digital_ops'].items())}"
                         if r["digital_ops"] else ""))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown, "junit": render_junit}


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and os.replace."""
    target = Path(path)
    if target.is_dir():
        raise UsageError("-o names a folder; give a file name", where=clean(path, _PATH_LIMIT))
    folder = target.absolute().parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise InvalidDataError(f"cannot write the output file: {e.strerror}", where=clean(path, _PATH_LIMIT))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as e:
        raise InvalidDataError(f"cannot write the output file: {e.strerror}", where=clean(path, _PATH_LIMIT))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``acompile check`` (its --format has more choices than the other commands')."""
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="output format: text (default), json, markdown (CI job summary) or junit (XML)")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of internal errors")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("paths", nargs="+", metavar="PATH", help="model files, or folders (every .onnx below them)")
    p.add_argument("--target", "-t", action="append", required=True, metavar="T",
                   help="shipped target name or .toml file; repeat for several targets")
    p.add_argument("-o", "--output", metavar="FILE", help="write the chosen format to FILE (text still printed)")
    p.add_argument("--max-chips", type=int, metavar="N", help="incompatible if the mapping needs more than N chips")
    p.add_argument("--digital-ok", action="append", metavar="OPS",
                   help="comma-separated digital op types that are expected (besides data movement and "
                        "activations); '*' accepts every digital op")
    p.add_argument("--min-analog-fraction", type=float, metavar="F",
                   help="incompatible if less than this fraction (0..1) of the MACs runs on crossbars")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="check in N processes (0: one per CPU); output does not depend on N")


def _settings(args) -> Settings:
    if args.max_chips is not None and args.max_chips < 0:
        raise UsageError(f"--max-chips must be 0 or more (got {args.max_chips})")
    f = args.min_analog_fraction
    if f is not None and not (0.0 <= f <= 1.0):
        raise UsageError(f"--min-analog-fraction must be between 0 and 1 (got {f})",
                         hint="a fraction: 0.9 means 90%")
    if args.jobs < 0:
        raise UsageError(f"--jobs must be 0 (one per CPU) or more (got {args.jobs})")
    return Settings(max_chips=args.max_chips, min_analog_fraction=f, digital_ok=parse_digital_ok(args.digital_ok),
                    verbose=bool(getattr(args, "verbose", False)))


def cmd_check(args) -> int:
    start = time.perf_counter()
    settings = _settings(args)
    targets = list(dict.fromkeys(args.target))
    models = discover(args.paths)
    jobs = [Job(shown, path, t, error) for shown, path, error in models for t in targets]
    n_jobs = args.jobs or os.cpu_count() or 1
    results = run_checks(jobs, settings, n_jobs)
    doc = report(results, settings, targets, time.perf_counter() - start)
    fmt = args.format if args.format in RENDERERS else "text"
    quiet = getattr(args, "quiet", False)
    if args.output:
        write_atomic(args.output, RENDERERS[fmt](doc))
        if not quiet:
            sys.stdout.write(render_text(doc))
    elif fmt != "text" or not quiet:
        sys.stdout.write(RENDERERS[fmt](doc))
    if quiet:   # errors are still said, once each
        for message in dict.fromkeys(r["error"]["message"] for r in results if r["verdict"] == ERROR):
            print(f"acompile: error: {message}", file=sys.stderr)
    return doc["exit_code"]
