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
