"""acompile.lazy: package attributes loaded on first use."""

import subprocess
import sys
from pathlib import Path


def test_check_never_imports_the_numerics_it_does_not_use():
    model = Path(__file__).resolve().parents[1] / "samples" / "mlp.onnx"
    code = ("import sys\nfrom acompile.cli.app import main\n"
            f"code = main(['check', {str(model)!r}, '--target', 'isaac', '-q'])\n"
            "print(code, sorted(m for m in sys.modules if m.startswith('acompile.numerics.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split(" ", 1)[0] == "0"
    assert out.split(" ", 1)[1].strip() == str(["acompile.numerics.folded", "acompile.numerics.quantise", "acompile.numerics.spec"])


def test_the_lazy_names_are_the_submodules_own():
    import acompile.numerics as numerics
    from acompile.numerics import adc, dac, encoding, noise
    from acompile.numerics import NoiseSpec, adc_step, cycle_weights, encode_weights
    assert (NoiseSpec, adc_step, cycle_weights, encode_weights) == \
        (noise.NoiseSpec, adc.adc_step, dac.cycle_weights, encoding.encode_weights)
    assert all(getattr(numerics, name) is not None for name in numerics.__all__)
    try:
        numerics.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_compile_and_check_load_openblas_on_one_thread_unless_told_otherwise():
    """An idle OpenBLAS worker spins on the core that compile's writers and check's jobs need: those two
    commands set one thread before numpy loads; other commands, and a count the user set, are left alone."""
    import os
    model = Path(__file__).resolve().parents[1] / "samples" / "mlp.onnx"

    def threads(command: list, **env) -> str:
        code = ("import os, sys\nfrom acompile.cli.app import main\n"
                f"code = main({command!r})\n"
                "print(code, 'numpy' in sys.modules, os.environ.get('OPENBLAS_NUM_THREADS'))")
        unset = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
        clean = {k: v for k, v in os.environ.items() if k not in unset}
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**clean, **env}).stdout.splitlines()[-1].split()

    assert threads(["check", str(model), "--target", "isaac", "-q"]) == ["0", "True", "1"]
    assert threads(["check", str(model), "--target", "isaac", "-q"], OMP_NUM_THREADS="2") == ["0", "True", "None"]
    assert threads(["targets", "list"])[::2] == ["0", "None"]


def test_compile_check_and_the_device_reader_never_import_numpy_ma(tmp_path):
    """numpy.ma takes 7 ms to import and np.unique imports it: the compile (copies, the floorplan per tile, the
    program), the check and reading a device file back find their distinct values otherwise."""
    model = str(Path(__file__).resolve().parents[1] / "samples" / "cnn.onnx")
    out = str(tmp_path / "out")
    code = ("import sys\nfrom pathlib import Path\nfrom acompile.backends import floorplan\n"
            "floorplan.AGGREGATE_ABOVE = 0\nfrom acompile.cli.app import main\n"
            f"codes = [main(['compile', {model!r}, '-t', 'isaac', '-o', {out!r}, '-q', '--replicate', 'auto']),\n"
            f"         main(['check', {model!r}, '--target', 'isaac', '-q'])]\n"
            "from acompile.backends.device_reader import DeviceReader\n"
            "from acompile.backends.program_reader import load_program\n"
            f"_, mapping, sha = load_program(Path({out!r}))\n"
            f"DeviceReader(Path({out!r}) / 'device.acdev', mapping, program_sha256=sha)\n"
            "print(codes, 'numpy.ma' in sys.modules, 'data-view=\"tiles\"' in "
            f"(Path({out!r}) / 'report.html').read_text(), max(x.replication for x in mapping.layers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[0,", "0]", "False", "True", out.split()[-1]] and int(out.split()[-1]) > 1


def test_the_device_files_cells_are_written_without_loading_hashlib(tmp_path):
    """A compile forks the writer of the device file's cells once the mapping is final: neither the compile up to
    then nor the cells load hashlib (OpenSSL's, 3 ms of that writer's path); the header, written by the compile
    itself, hashes the flip marks it is sent."""
    model = str(Path(__file__).resolve().parents[1] / "samples" / "cnn.onnx")
    path = str(tmp_path / "device.acdev")
    code = ("import sys\nfrom pathlib import Path\nfrom acompile.compiler import compile_model\n"
            "from acompile.target import load_target\nseen, cells = [], {}\n"
            "def mapped(state):     # where compile forks the cells' writer\n"
            "    from acompile.backends.device import write_cells\n"
            "    seen.append('hashlib' in sys.modules)\n"
            f"    cells.update(write_cells(Path({path!r}), state))\n"
            "    seen.append('hashlib' in sys.modules)\n"
            f"c = compile_model({model!r}, load_target('isaac'), on_mapped=mapped)\n"
            "from acompile.backends.device import add_header, header_parts\n"
            f"add_header(Path({path!r}), cells, header_parts(c), '0' * 64)\n"
            "print(seen, cells['flip_marks'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[False,", "False]", "True"]


def test_a_lazy_pool_makes_its_threads_only_for_work():
    """LazyThreads: no executor (nor concurrent.futures import) until the first submit; leaving waits for the
    work handed to it."""
    import threading
    import time
    from acompile.lazy import LazyThreads
    before = threading.active_count()
    with LazyThreads(2, "idle") as pool:
        assert pool._pool is None and threading.active_count() == before
    done = []
    with LazyThreads(2, "busy") as pool:
        pool.submit(lambda: (time.sleep(0.05), done.append(1)))
        assert pool._pool is not None
    assert done == [1]


def test_a_calibration_without_convolutions_or_large_products_makes_no_thread_pool(tmp_path):
    """The simulator imports concurrent.futures when it first spreads work over threads (a convolution's
    spans, a product large enough for its fast path's workers): an MLP's calibration, which does neither, and
    a compile that writes no file on a writer thread never import it."""
    model = str(Path(__file__).resolve().parents[1] / "samples" / "mlp.onnx")
    out = str(tmp_path / "out")
    code = ("import sys\nfrom acompile.cli.app import main\n"
            f"code = main(['compile', {model!r}, '-t', 'isaac', '-o', {out!r}, '-q', '--emit', 'report'])\n"
            "print(code, 'concurrent.futures' in sys.modules, 'acompile.sim.runtime' in sys.modules)")
    out_text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out_text.split() == ["0", "False", "True"]
