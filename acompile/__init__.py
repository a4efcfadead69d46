"""acompile: map ONNX models onto analog in-memory-computing accelerators.

The public API (everything else is internal and may change)::

    import acompile
    target = acompile.load_target("isaac")
    compiled = acompile.compile_model("model.onnx", target, acompile.Options(batch=1))
    compiled.cost["totals"]["energy_total_pj"]
    acompile.check_model("model.onnx", "isaac")["verdict"]
    outputs = acompile.simulate(compiled, {"input": x}, mode="quantized")
"""

from ._version import __version__
from .lazy import exports

__all__ = ["load_model", "load_target", "compile_model", "check_model", "simulate", "sweep", "Options",
           "AcompileError"]


def load_model(path, *, batch: int = 1, bind=None):
    """Read, check and shape-infer an ONNX file into acompile's IR (a Graph)."""
    from .frontend.load import load_model as _load
    return _load(path, batch=batch, bind=bind)


def load_target(name_or_path):
    """A shipped target by name ("isaac", "puma", ...) or a target TOML file, validated."""
    from .target import load_target as _load
    return _load(name_or_path)


def compile_model(model, target, options=None):
    """Map a model (path or onnx.ModelProto) onto a target; returns the mapped graph and its cost."""
    from .compiler import compile_model as _compile
    return _compile(model, load_target(target) if isinstance(target, str) else target, options)


def check_model(model: str, target: str) -> dict:
    """The CI verdict for one model x target pair (what `acompile check` reports)."""
    from .check import check_model as _check
    return _check(model, target)


def simulate(compiled, inputs: dict, *, mode: str = "ideal", seed: int = 0, path: str = "fast"):
    """Run a compiled model (from compile_model, or an OUT folder written by `acompile compile`)."""
    from pathlib import Path
    if isinstance(compiled, (str, Path)):
        from .simulation import load_compiled, simulate as _run
        return _run(load_compiled(Path(compiled), mode), inputs, mode=mode, seed=seed, path=path)
    from .sim.runtime import Simulator, WeightsFromGraph
    from .simulation import noise_from_target
    noise = noise_from_target(compiled.target) if mode == "noisy" else None
    sim = Simulator(compiled.graph, compiled.mapping, WeightsFromGraph(compiled.graph, compiled.mapping),
                    mode=mode, path=path, noise=noise, seed=seed)
    return sim.run(inputs)


def sweep(models, target, settings=None, **kwargs):
    """A design-space sweep (what `acompile sweep` runs): a list of row dicts, or a pandas DataFrame with
    ``frame=True``. ``settings`` maps dotted target keys to values, e.g. {"adc.bits": [4, 6, 8]};
    keyword arguments: data, labels, mode, repeats, seed, batch, jobs, scheduler, output."""
    from .sweeps import as_frame, sweep as _sweep
    frame = kwargs.pop("frame", False)
    rows = _sweep(models, target, settings, **kwargs)
    return as_frame(rows) if frame else rows


__getattr__ = exports(__name__, {"Options": "compiler", "AcompileError": "errors"})
