"""The CLI explains itself: every subcommand's --help ends with examples, every option has help text,
choices are listed and defaults shown; ``acompile ops`` says analog or digital per op."""

import argparse
import json

import pytest

from acompile.cli.app import build_parser, main


def _subcommands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _subcommands(sub, prefix + (name,))


SUBCOMMANDS = list(_subcommands(build_parser()))


def test_every_top_level_command_is_covered():
    names = {p[0] for p, _ in SUBCOMMANDS}
    assert {"compile", "simulate", "run", "check", "inspect", "ops", "targets"} <= names


@pytest.mark.parametrize("path, parser", SUBCOMMANDS, ids=[" ".join(p) for p, _ in SUBCOMMANDS])
def test_help_ends_with_examples(path, parser, capsys):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    tail = text.split("examples:\n", 1)
    assert len(tail) == 2, f"acompile {' '.join(path)} --help has no examples section"
    examples = [line for line in tail[1].splitlines() if line.strip().startswith("acompile ")]
    assert 2 <= len(examples) <= 3


@pytest.mark.parametrize("path, parser", SUBCOMMANDS, ids=[" ".join(p) for p, _ in SUBCOMMANDS])
def test_every_option_has_help(path, parser):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"acompile {' '.join(path)}: {action.option_strings or action.dest} has no help"


def test_defaults_and_choices_are_shown(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{ideal,quantized,noisy}" in text and "(default: ideal)" in text
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "mapped-with-weights" in text and "{none,auto}" in text


def test_ops_shows_analog_and_digital_support(capsys):
    assert main(["ops", "--format", "json"]) == 0
    rows = {r["op_type"]: r for r in json.loads(capsys.readouterr().out)}
    for op in ("Gemm", "MatMul"):
        assert "constant" in rows[op]["analog"] and rows[op]["digital"]
    assert rows["Conv"]["analog"] and not rows["Relu"]["analog"] and rows["Relu"]["digital"]
    assert main(["ops"]) == 0
    lines = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["Gemm"] == ["yes", "yes"] and lines["Relu"] == ["-", "yes"]


def test_compile_verbose_prints_each_step_with_its_time(tmp_path, capsys):
    from pathlib import Path
    sample = Path(__file__).resolve().parents[1] / "samples" / "mlp.onnx"
    assert main(["compile", str(sample), "-t", "isaac", "-o", str(tmp_path / "o"), "-v", "--emit", "program"]) == 0
    captured = capsys.readouterr()
    steps = [line.split()[0] for line in captured.err.splitlines() if line.startswith("  ")]
    assert steps[0] == "load" and "lower_analog" in steps and "calibrate" in steps and steps[-1] == "total"
    assert "\r" not in captured.err        # not a terminal: no progress line
    assert "wrote program.json, program.npz, target.toml to" in captured.out


def test_simulate_says_where_the_outputs_went(tmp_path, capsys):
    from pathlib import Path
    import numpy as np
    samples = Path(__file__).resolve().parents[1] / "samples"
    x = tmp_path / "x.npy"
    np.save(x, np.load(samples / "digits_test_x.npy")[:4])
    args = ["run", str(samples / "digits.onnx"), "-t", "isaac", "-i", str(x)]
    assert main(args) == 0
    assert "outputs not kept (-r FILE.npz keeps them)" in capsys.readouterr().out
    assert main([*args, "-r", str(tmp_path / "y.npz")]) == 0
    assert f"outputs written to {tmp_path / 'y.npz'}" in capsys.readouterr().out and (tmp_path / "y.npz").exists()
