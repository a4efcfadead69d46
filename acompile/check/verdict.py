"""One verdict per model x target pair, the process pool that checks many, and the whole run's report.

``check`` runs exactly the frontend and mapping steps of ``compile``
(:func:`acompile.compiler.run_pipeline` without calibration, collecting every
problem instead of stopping at the first) and writes no files, so check and
compile cannot disagree. Results are plain JSON-ready data, described by
:data:`acompile.check.schema.CHECK_JSON_SCHEMA`.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field

from .._version import __version__
from ..errors import (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_UNMAPPABLE, AcompileError, InvalidModelError,
                      LimitError, UnsupportedError, UsageError, clean)
from ..ir import DOMAIN
from ..limits import collector_paused
from ..units import count
from .schema import (COMPATIBLE, ERROR, FALLBACK, INCOMPATIBLE, PATH_LIMIT, SCHEMA_VERSION, VERDICTS)

ACTIVATIONS = frozenset(
    "Relu LeakyRelu PRelu Clip ThresholdedRelu Celu Elu Selu HardSigmoid HardSwish Softsign "
    "Sigmoid Tanh Softplus Mish Gelu".split())


@dataclass(frozen=True)
class Settings:
    """What makes a mapped model acceptable (CLI choices; hardware facts stay in the target)."""
    max_chips: int | None = None
    min_analog_fraction: float | None = None
    digital_ok: frozenset[str] = field(default_factory=lambda: default_digital_ok())
    limits: object = None   # limits.Limits; None: from the environment
    verbose: bool = False   # print the traceback of an internal error
    overrides: tuple = ()   # --set: ((dotted key, value), ...) applied to every target
    input_shapes: tuple = ()  # --input-shape: ((input name or None, dims), ...) for every model
    bind: tuple = ()          # --bind: ((graph input name, array), ...) frozen in every model
    input_ranges: tuple = ()  # --input-range: ((input name, (lo, hi)), ...) for every model


@dataclass(frozen=True)
class Job:
    """One model x target pair. ``path`` is opened, ``model`` is shown (already cleaned)."""
    model: str
    path: str | None
    target: str
    error: tuple[str, int, str] | None = None   # (code, exit_code, message) known before checking


def default_digital_ok() -> frozenset[str]:
    """Digital op types that do not make a model 'with fallback': data movement and activations."""
    from ..frontend.ops import OPS
    moves = {op for (domain, op), sup in OPS.items() if not domain and sup.kind == "digital" and sup.moves_data}
    return frozenset(moves | ACTIVATIONS)


def _op_names() -> list[str]:
    """The op names a digital_ops list can hold: acompile's digital ops, every ONNX operator (another
    domain's as ``domain.Op``), and a crossbar op that a control-flow body runs (``MatMul in If``)."""
    from ..onnx_core import all_schemas
    from ..frontend.control_cost import WEIGHTED
    from ..frontend.ops import OPS, RECURRENT
    names = {op for (domain, op), sup in OPS.items() if not domain and sup.kind == "digital"}
    names |= {s.name if s.domain in ("", "ai.onnx") else f"{s.domain}.{s.name}" for s in all_schemas()}
    names |= {f"{op} in {flow}" for op in (*WEIGHTED, *RECURRENT) for flow in ("If", "Loop", "Scan")}
    return sorted(names)


def _runtime_op(name: str) -> bool:
    """An operator of onnxruntime's own domains (``com.microsoft.FusedConv``)."""
    domain, _, op = name.rpartition(".")
    if not domain:
        return False
    from ..onnx_exec import onnxruntime_runs
    return onnxruntime_runs(op, domain, 0)


def parse_digital_ok(values: list[str] | None) -> frozenset[str]:
    """The default expected set plus the comma-separated op types given; '*' accepts every op."""
    extra = {x.strip() for v in (values or []) for x in v.split(",") if x.strip()}
    if "*" in extra:
        return frozenset({"*"})
    known = _op_names() if extra else []
    for op in sorted(extra):
        if op not in known and not _runtime_op(op):
            import difflib
            close = [k for k in known if k.lower() == op.lower()] or difflib.get_close_matches(op, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "'acompile ops' lists the digital ops"
            raise UsageError(f"--digital-ok: {clean(op)!r} is not a digital op type acompile knows", hint=hint)
    return default_digital_ok() | frozenset(extra)


# Checking one pair runs in worker processes too: it takes and returns plain data.

_TARGETS: dict[tuple, object] = {}


def _target(spec: str, overrides: tuple = ()):
    """Targets are loaded once per process; a failure is cached and raised again."""
    if (spec, overrides) not in _TARGETS:
        from ..target import apply_overrides, load_target
        try:
            _TARGETS[spec, overrides] = apply_overrides(load_target(spec), dict(overrides))
        except AcompileError as e:
            _TARGETS[spec, overrides] = e
    t = _TARGETS[spec, overrides]
    if isinstance(t, AcompileError):
        raise t
    return t


def _result(job: Job, verdict: str, **kw) -> dict:
    return {"model": job.model, "target": clean(job.target, PATH_LIMIT), "verdict": verdict,
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


def _digital_ops(graph, cost) -> dict[str, int]:
    """Digital op types of the model (not acompile's own boundary nodes, not unsupported ones) -> count;
    a Conv, Gemm or MatMul with constant weights that a control-flow body runs digitally counts as
    ``"MatMul in If"``, once per control-flow node."""
    counts: dict[str, int] = {}
    for n in graph.nodes:
        if n.kind == "digital" and n.domain != DOMAIN and not n.meta.get("unknown"):
            name = clean(f"{n.domain}.{n.op_type}" if n.domain else n.op_type)
            counts[name] = counts.get(name, 0) + 1
    for d in (cost or {}).get("digital", []):
        for op in d.get("body_layer_ops", []):
            name = clean(f"{op} in {d['op_type']}")
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _limit_reasons(figures: dict | None, settings: Settings) -> list[dict]:
    if figures is None:
        return []
    out = []
    chips = figures["chips"]
    if settings.max_chips is not None and chips is not None and chips > settings.max_chips:
        out.append(_reason("too_many_chips", f"needs {count(chips, 'chip')} ({count(figures['crossbars'], 'crossbar')}); "
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
            import traceback
            traceback.print_exc()
        return _error(job, "internal", EXIT_INTERNAL,
                      f"{job.model}: internal error: {type(e).__name__}: {clean(str(e))} -- please report this")


def _check_pair(job: Job, settings: Settings) -> dict:
    from ..compiler import Options, run_pipeline
    from ..limits import Limits
    target = _target(job.target, settings.overrides)
    limits = settings.limits or Limits.from_env()
    try:
        shapes, bind = dict(settings.input_shapes) or None, dict(settings.bind) or None
        ranges = dict(settings.input_ranges)
        compiled = run_pipeline(job.path, target, Options(limits=limits, input_shapes=shapes, bind=bind,
                                                          input_ranges=ranges),
                                with_calibration=False, stop_on_problems=False)
    except UnsupportedError as e:   # what compile rejects after classification (exit 1 there too)
        reasons = [_problem_reason(p) for p in e.problems] or [_reason("unsupported", e.one_line())]
        return _result(job, INCOMPATIBLE, reasons=reasons)
    reasons = [_problem_reason(p) for p in compiled.problems]
    figures, estimated, graph = _figures(compiled.cost), False, compiled.graph
    if reasons:
        # compile stops here; for the summary figures, cost the unsupported nodes as unknown digital ops
        try:
            rough = run_pipeline(job.path, target, Options(limits=limits, allow_unsupported=True, input_shapes=shapes,
                                                           bind=bind, input_ranges=ranges),
                                 with_calibration=False, stop_on_problems=False)
            figures, estimated = _figures(rough.cost), True
        except Exception:   # best effort: an estimate that fails must not hide the reasons above
            figures = None
    reasons += _limit_reasons(figures, settings)
    digital = _digital_ops(graph, compiled.cost)
    fallback = [] if "*" in settings.digital_ok else [op for op in digital if op not in settings.digital_ok]
    verdict = INCOMPATIBLE if reasons else (FALLBACK if fallback else COMPATIBLE)
    return _result(job, verdict, reasons=reasons, figures=figures, figures_estimated=estimated,
                   digital_ops=digital, fallback_ops=fallback)


def check_model(model: str, target: str, settings: Settings | None = None) -> dict:
    """Library entry point: the verdict record for one model file and one target name or file."""
    return check_pair(Job(clean(model, PATH_LIMIT), model, target), settings or Settings())


def run_checks(jobs: list[Job], settings: Settings, n_jobs: int = 1, progress=None) -> list[dict]:
    """Check every pair, in parallel processes when ``n_jobs > 1``; results in ``jobs`` order.

    ``progress(text)``, if given, hears of each pair as it starts (serial) or finishes (parallel)."""
    def tell(i: int, job: Job) -> None:
        if progress is not None:
            progress(f"{i}/{len(jobs)} {job.model} on {job.target}")
    if n_jobs <= 1 or len(jobs) <= 1:
        results = []
        with collector_paused():
            for i, j in enumerate(jobs, 1):
                if i > 1:
                    gc.collect(0)   # the last pair's cycles, if any: only what it allocated is traversed
                tell(i, j)
                results.append(check_pair(j, settings))
        return results
    from ..process_pool import process_pool     # here: a serial check does not pay for the pool's imports
    results = []
    # gc.enable: workers collect garbage as usual, whatever the parent process paused; on Ctrl-C or SIGTERM
    # the pairs still queued are not started
    with process_pool(min(n_jobs, len(jobs)), gc.enable) as pool:
        futures = [pool.submit(check_pair, j, settings) for j in jobs]
        for i, (job, fut) in enumerate(zip(jobs, futures), 1):
            try:
                results.append(fut.result())
                tell(i, job)
            except Exception as e:   # the worker died (killed, out of memory): report, keep going
                results.append(_error(job, "internal", EXIT_INTERNAL,
                                      f"{job.model}: the checking process failed: {type(e).__name__}: "
                                      f"{clean(str(e))}"))
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
    """The whole run as the JSON document described by :data:`acompile.check.schema.CHECK_JSON_SCHEMA`."""
    code = exit_code(results)
    return {
        "schema_version": SCHEMA_VERSION, "tool": "acompile check", "version": __version__,
        "passed": code == EXIT_OK, "exit_code": code,
        "settings": {"targets": [clean(t, PATH_LIMIT) for t in targets], "max_chips": settings.max_chips,
                     "min_analog_fraction": settings.min_analog_fraction,
                     "digital_ok": sorted(settings.digital_ok),
                     **({"overrides": dict(settings.overrides)} if settings.overrides else {})},
        "summary": summary(results), "results": results, "elapsed_s": round(elapsed_s, 3),
    }
