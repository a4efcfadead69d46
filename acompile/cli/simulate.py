"""``acompile simulate`` (run a compiled OUT folder) and ``acompile run`` (compile into a temporary
folder, then simulate): inputs, comparison with onnxruntime, the results file and the summary."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..errors import EXIT_OK, InvalidDataError, UsageError, clean
from ..units import decimal
from .compile import SEED, add_compile_options, add_set_option, bounded_int, compile_to, parse_input_shapes, say


def _read_inputs(path: str | None, graph) -> dict:
    from ..calibrate import load_arrays
    return load_arrays(path, list(graph.inputs), what="input") if _needed(path, list(graph.inputs)) else {}


def _needed(path: str | None, inputs: list[str]) -> bool:
    """Whether there is an --input file to read: a model without inputs (its values all constants) runs
    without one; any other model needs it."""
    if path is None and inputs:
        raise UsageError(f"--input is required: the model reads {', '.join(clean(n) for n in inputs)}",
                         hint="pass an .npz keyed by input name, or an .npy for a single input")
    return path is not None


def _simulate_folder(args, folder: Path, model_for_compare: str | None) -> int:
    from ..jsonio import dumps_json, json_safe
    from ..simulation import (accuracy, compare, load_compiled, non_idealities, per_layer, reference_caveat,
                              reference_outputs, simulate)
    from ..target import parse_settings
    html = getattr(args, "html", None)
    if html and not args.per_layer:
        raise UsageError("--html puts each layer's SNR beside its cost: it needs --per-layer")
    if args.result or html:
        from ..files import check_file_destination
        for path in filter(None, (args.result, html)):
            check_file_destination(Path(path))     # before the work, not after it
    overrides = parse_settings(getattr(args, "set", None))
    if args.repeats > 1 and args.mode != "noisy":
        raise UsageError("--repeats draws new chips: it needs --mode noisy")
    if args.drift_time is not None and args.mode != "noisy":
        raise UsageError("--drift-time reads a drifted chip: it needs --mode noisy")
    loaded = load_compiled(folder, args.mode, overrides=overrides, drift_time_s=args.drift_time)
    from ..sim.runtime import check_feeds
    feeds = check_feeds(loaded.graph, _read_inputs(args.input, loaded.graph))   # before onnxruntime sees them
    reference = None
    if model_for_compare:
        reference = reference_outputs(Path(model_for_compare), _reference_feeds(args, feeds))
    runs = []
    for instance in range(args.repeats):        # a new chip each time: new programming draws
        results = simulate(loaded, feeds, mode=args.mode, seed=args.seed, path=args.path,
                           progress=not args.quiet, instance=instance)
        labels = _read_labels(args.labels, results) if args.labels else None
        if reference is not None:
            runs.append(compare(results, reference, labels))
        elif labels is not None:
            runs.append(accuracy(results, labels))
    summary = {"mode": args.mode, "seed": args.seed, "outputs": {clean(k): list(v.shape) for k, v in results.items()}}
    if args.mode == "noisy":
        summary["non_idealities"] = non_idealities(loaded.noise)
    if runs:
        summary["comparison"] = runs[0]
        # said only where the outputs differ: where they agree, onnxruntime's kernels were exact on this data
        differs = any(isinstance(c, dict) and c.get("max_abs_error") for c in runs[0].values())
        caveat = reference_caveat(Path(model_for_compare)) if reference is not None and differs else None
        if caveat:
            summary["reference_caveat"] = caveat
    if args.repeats > 1:
        summary["repeats"] = _spread(runs, args.repeats)
    if args.per_layer:
        summary["per_layer"] = per_layer(loaded, feeds, args.mode, args.seed)
    if getattr(args, "calibration_note", None):
        summary["calibration_note"] = args.calibration_note
    if args.result:
        _write_results(Path(args.result), results)
    if html:
        _write_html_with_snr(Path(html), folder, loaded.mapping, summary["per_layer"], args.mode)
    if args.format == "json":
        print(dumps_json(json_safe(summary)), end="")
    else:
        say(args, _sim_text(summary))
        say(args, f"outputs written to {clean(args.result)}\n" if args.result else
            "outputs not kept (-r FILE.npz keeps them)\n")
    return EXIT_OK


def _write_html_with_snr(path: Path, folder: Path, mapping, per_layer: list[dict], mode: str) -> None:
    """The compile's report page with each analog layer's SNR (this run's mode) beside its cost."""
    from ..backends.html import render_html
    from ..files import atomic_file
    from ..safe_read import parse_json, read_input
    report_path = folder / "report.json"
    if not report_path.is_file():
        raise UsageError("--html needs the compile's report.json in the folder (compile with --emit report)",
                         where=clean(str(folder)))
    report = parse_json(read_input(report_path, "report"), "report", clean(str(report_path)))
    key = "noisy" if mode == "noisy" else "quantized"
    snr = {e["layer"]: e[key]["snr_db"] for e in per_layer if key in e}
    try:
        with atomic_file(path) as tmp:
            tmp.write_text(render_html(report, mapping, snr), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write the report page: {e.strerror or e}", where=clean(str(path)))


def _spread(runs: list[dict], repeats: int) -> dict:
    """Mean, standard deviation, min and max over the chip instances of every compared figure."""
    import numpy as np
    out: dict = {"chips": repeats}
    for name in runs[0] if runs else []:
        figures = {}
        for key, value in runs[0][name].items():
            if isinstance(value, float):
                v = np.array([r[name][key] for r in runs], np.float64)
                figures[key] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                                "max": float(v.max())}
        out[name] = figures
    return out


def _reference_feeds(args, feeds: dict) -> dict:
    """The simulator's inputs plus, for ``run --bind``, the bound values: onnxruntime runs the unbound model."""
    if not getattr(args, "bind", None):
        return feeds
    from ..calibrate import load_arrays
    return {**load_arrays(args.bind, [], what="--bind"), **feeds}


def _read_labels(path: str, results: dict):
    """Integer class labels, one per row of the classifier outputs (an .npy)."""
    from ..safe_read import read_arrays
    labels = read_arrays(path, "labels")
    where = clean(path)
    if not hasattr(labels, "dtype"):
        raise InvalidDataError("labels must be one .npy array of integer classes, not an .npz", where=where)
    if labels.dtype.kind not in "iu":
        raise InvalidDataError(f"labels must be integer classes (got dtype {labels.dtype})", where=where)
    rows = {v.size // v.shape[-1] for v in results.values() if v.ndim >= 2 and v.shape[-1] > 1}
    if not rows:
        raise InvalidDataError("--labels needs a classifier output (the model's outputs have no class axis)",
                               where=where)
    if labels.size not in rows:
        raise InvalidDataError(f"{labels.size} labels for {' or '.join(map(str, sorted(rows)))} outputs",
                               where=where, hint="one integer label per input row")
    return labels


def _write_results(path: Path, results: dict) -> None:
    """Outputs as an .npz (deterministic, no pickle), written atomically."""
    from ..backends.archive import ArchiveWriter
    from ..files import atomic_file
    from ..simulation import text_array as _text
    try:
        with atomic_file(path) as tmp:
            writer = ArchiveWriter(tmp)
            try:
                for name in sorted(results):
                    value = results[name]
                    if _text(value):                     # strings as fixed-width text: no pickle
                        value = value.astype(str)
                    if value.dtype != object:            # a sequence of maps (ZipMap) has no .npy form
                        writer.add_array(f"{name}.npy", value)
            finally:
                writer.close()
    except OSError as e:
        raise UsageError(f"cannot write the results: {e.strerror or e}", where=clean(str(path)))


def _sim_text(summary: dict) -> str:
    lines = [f"simulated in {summary['mode']} mode (seed {summary['seed']}): "
             + ", ".join(f"{k} {v}" for k, v in summary["outputs"].items())]
    if "non_idealities" in summary:
        lines.append("  non-idealities: " + (", ".join(summary["non_idealities"]) if summary["non_idealities"] else
                                             "none (the target enables none: noisy equals quantized)"))
    for name, c in summary.get("comparison", {}).items():
        parts = ["not compared (a sequence or map, not a tensor; not written to -r either)"] if c.get("compared") is False else []
        if "max_abs_error" in c:
            parts.append(f"max|err| {decimal(c['max_abs_error'])}, rel.err {decimal(c['relative_error'])}, "
                         f"SNR {decimal(c['snr_db'])} dB")
        if c.get("nan_in_both"):
            parts.append(f"{c['nan_in_both']:,} NaN in both, as the model computes them")
        if "equal_fraction" in c:
            parts.append(f"{c['equal_fraction']:.2%} of its strings equal")
        if "top1_agreement" in c:
            parts.append(f"top-1 agreement {c['top1_agreement']:.2%}")
        if "top1_accuracy_simulated" in c:
            parts.append(f"accuracy {c['top1_accuracy_simulated']:.2%}")
        if "top1_accuracy_onnxruntime" in c:
            parts.append(f"(onnxruntime {c['top1_accuracy_onnxruntime']:.2%})")
        lines.append(f"  {name}: " + "; ".join(parts))
    if "reference_caveat" in summary:
        lines.append(f"  note: {summary['reference_caveat']}")
    if "calibration_note" in summary:
        lines.append(f"  note: {summary['calibration_note']}")
    spread = summary.get("repeats")
    for name, figures in (spread or {}).items():
        if name == "chips":
            continue
        for key in ("top1_accuracy_simulated", "relative_error", "snr_db"):
            if key in figures:
                f = figures[key]
                lines.append(f"  {name} over {spread['chips']} chips: {key} mean {decimal(f['mean'])} "
                              f"± {decimal(f['std'])} (min {decimal(f['min'])}, max {decimal(f['max'])})")
    for e in summary.get("per_layer", []):
        for mode in ("quantized", "noisy"):
            if mode in e:
                f = e[mode]
                lines.append(f"  layer {e['layer']} ({mode}, {e['vectors']} vectors): SNR {decimal(f['snr_db'])} dB, "
                             f"rel.err {decimal(f['relative_error'])}, {decimal(f['effective_bits'])} effective bits, "
                             f"inputs clipped {f['inputs_clipped']:,} of {f['inputs']:,}, "
                             f"ADC clipped {f['adc_clipped']:,} of {f['adc_conversions']:,}")
    clipping = [e["layer"] for e in summary.get("per_layer", [])
                if any(e[m]["inputs_clipped"] for m in ("quantized", "noisy") if m in e)]
    if clipping:
        lines.append(f"  note: {len(clipping)} layer(s) clip inputs beyond their calibrated range "
                     f"({', '.join(clipping[:3])}{', ...' if len(clipping) > 3 else ''}): calibrate on "
                     f"representative inputs (--calibration DATA)")
    return "\n".join(lines) + "\n"


def run_simulate(args) -> int:
    return _simulate_folder(args, Path(args.folder), args.compare)


def run_run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="acompile-run-") as tmp:
        args.output = str(Path(tmp) / "out")
        from ..calibrate import load_arrays
        from ..errors import NonFiniteCalibration
        from ..frontend.input_shapes import data_shapes, input_dims, model_inputs
        inputs, weights = model_inputs(args.model)
        feeds = load_arrays(args.input, inputs, weights=weights) if _needed(args.input, inputs) else {}
        given = parse_input_shapes(args.input_shape)
        if None not in given:       # the dynamic dimensions --input-shape leaves take the sizes of the data run
            from ..sim.runtime import check_fixed_dims
            stored = input_dims(args.model)
            for name, dims in stored.items():   # the model's fixed sizes, before compiling
                if name in feeds and name not in given:
                    check_fixed_dims(name, feeds[name], dims)
            args.data_shapes = {name: dims for name, dims in data_shapes(stored, feeds, whole=True).items()
                                if name not in given}
        quiet = args.quiet
        args.quiet = True
        # ideal mode runs the program's float weights: it never reads the device file's cells
        emit = {"program"} if args.mode == "ideal" else {"program", "device"}
        try:
            compile_to(args, Path(args.output), emit)
        except NonFiniteCalibration as e:
            if args.calibration or args.input is None:
                raise
            # the seeded defaults go where the data never does (the root of a negative degree sum): the
            # data run is a calibration the model takes
            args.calibration = args.input
            args.calibration_note = f"calibrated on the --input data: on the default calibration data {e.reached}"
            compile_to(args, Path(args.output), emit)
        args.quiet = quiet
        return _simulate_folder(args, Path(args.output), args.compare or args.model)


def _sim_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", help="inputs: .npz keyed by input name, or .npy for one input (required unless "
                                         "the model has no inputs)")
    p.add_argument("--mode", default="ideal", choices=["ideal", "quantized", "noisy"],
                   help="ideal: float weights; quantized: DAC, crossbar and ADC bit-exact; noisy: quantized plus "
                        "the target's device noise")
    p.add_argument("--path", default="fast", choices=["fast", "reference"],
                   help="vectorised kernel or the slow loop-based reference")
    p.add_argument("--result", "-r", dest="result", help="write outputs to this .npz")
    p.add_argument("--labels", help=".npy of integer labels: report top-1 accuracy")
    p.add_argument("--repeats", type=bounded_int(1, 10_000), default=1, metavar="N",
                   help="noisy mode: simulate N chips (new programming draws each) and report the mean, standard "
                        "deviation, min and max of the comparison (default 1)")
    p.add_argument("--per-layer", action="store_true",
                   help="each analog layer's own error on the data's ideal inputs: SNR, relative error and "
                        "effective bits against the ideal output (quantized, and noisy in noisy mode), ADC clips")
    p.add_argument("--drift-time", type=float, metavar="SECONDS",
                   help="noisy mode: read the chip this long after programming (overrides noise.drift_time_s)")


def add_simulate_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Options of ``acompile simulate``."""
    p.add_argument("folder", help="folder written by acompile compile")
    _sim_options(p)
    p.add_argument("--seed", type=SEED, default=0, help="seed of the noise draws in noisy mode")
    add_set_option(p)
    p.add_argument("--compare", help="ONNX model to run in onnxruntime on the same inputs")
    p.add_argument("--html", metavar="FILE",
                   help="with --per-layer: write the compile's report page with each layer's SNR beside its cost")
    p.set_defaults(func=run_simulate)


def add_run_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Options of ``acompile run``."""
    add_compile_options(p, with_output=False)
    _sim_options(p)
    p.add_argument("--compare", help="ONNX model for the comparison (default: MODEL itself)")
    p.set_defaults(func=run_run)
