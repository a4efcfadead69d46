"""The examples that end each subcommand's ``--help`` (real commands on the shipped samples and
targets; tests/test_cli_help.py runs the help of every subcommand), and the help formatter that
shows every option's default."""

from __future__ import annotations

import argparse

EXAMPLES = {
    "compile": """\
  acompile compile samples/cnn.onnx --target isaac -o out/cnn     # then open out/cnn/report.html
  acompile compile samples/digits.onnx -t puma --calibration samples/digits_calib.npy -v
  acompile compile samples/mlp.onnx -t isaac --emit report,html,mapped-with-weights -o out/mlp""",
    "simulate": """\
  acompile simulate out/cnn --input x.npz --mode quantized --compare samples/cnn.onnx
  acompile simulate out/digits -i samples/digits_test_x.npy --labels samples/digits_test_y.npy -r out.npz""",
    "run": """\
  acompile run samples/digits.onnx -t isaac -i samples/digits_test_x.npy --labels samples/digits_test_y.npy
  acompile run samples/cnn.onnx -t puma -i x.npz --mode noisy --seed 3 -r noisy.npz""",
    "inspect": """\
  acompile inspect out/cnn/device.acdev
  acompile inspect out/cnn/device.acdev --format json""",
    "ops": """\
  acompile ops                      # every ONNX op: analog, digital or data movement
  acompile ops --format json""",
    "check": """\
  acompile check samples/ --target isaac --target puma
  acompile check models/ -t isaac --max-chips 1 --format junit -o check.xml
  acompile check samples/cnn.onnx -t isaac --digital-ok Softmax,MaxPool --format markdown""",
    "sweep": """\
  acompile sweep samples/digits.onnx -t isaac --set adc.bits=4:9 -o sweep      # costs only
  acompile sweep samples/digits.onnx -t isaac --set adc.bits=4,6,8 --set crossbar.rows=64,128 \\
      --data samples/digits_test_x.npy --labels samples/digits_test_y.npy --mode quantized -o sweep
  acompile sweep samples/digits.onnx -t puma --set noise.read_sigma=0,0.02 --mode noisy --repeats 5 \\
      --data samples/digits_test_x.npy --labels samples/digits_test_y.npy --scheduler tcp://10.0.0.5:8786 -o sweep""",
    "targets": """\
  acompile targets list
  acompile targets show isaac --summary --format text
  acompile targets validate my_chip.toml""",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and adds ``(default: X)`` to options whose help does not say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        return text + " (default: %(default)s)"


def attach(parser: argparse.ArgumentParser, inherited: str | None = None) -> None:
    """Give every subcommand of ``parser`` its examples and the formatter (recursively: ``targets show``
    ends with the ``targets`` examples)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sub.formatter_class = HelpFormatter
                examples = EXAMPLES.get(name, inherited)
                if examples and not sub.epilog:
                    sub.epilog = "examples:\n" + examples
                attach(sub, examples)
