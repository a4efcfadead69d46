"""The CLI explains itself: every subcommand's --help ends with examples, every option has help text,
choices are listed and defaults shown; ``acompile ops`` says analog or digital per op."""

import argparse
import json

import pytest

import corpus

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


@pytest.mark.parametrize("path, parser", SUBCOMMANDS, ids=[" ".join(p) for p, _ in SUBCOMMANDS])
def test_every_option_with_a_default_shows_it(path, parser):
    """A default of 0 is shown too (--seed): only options without one (None, a flag's False) say none."""
    for action in parser._actions:
        if not action.option_strings or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS:
            continue
        shown = parser._get_formatter()._expand_help(action)    # the text --help prints beside the option
        assert "default" in shown, f"acompile {' '.join(path)} {action.option_strings[0]}: {shown}"


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


def test_compile_verbose_prints_each_step_each_file_and_the_process(tmp_path, capsys):
    from pathlib import Path
    sample = Path(__file__).resolve().parents[1] / "samples" / "mlp.onnx"
    assert main(["compile", str(sample), "-t", "isaac", "-o", str(tmp_path / "o"), "-v", "--emit", "program"]) == 0
    captured = capsys.readouterr()
    lines = [line.split() for line in captured.err.splitlines() if line.startswith("  ")]
    steps = [words[0] for words in lines]
    assert steps[0] == "load" and "lower_analog" in steps and "calibrate" in steps
    written = [" ".join(words[5:]) for words in lines if words[0] == "write"]     # after the time and the size
    assert "program.npz, on a writer thread" in written      # while the main one calibrates
    assert "program.json, target.toml" in written
    assert steps[-1] == "process" and "CPU (user" in captured.err and "before the first step" in captured.err
    assert "\r" not in captured.err        # not a terminal: no progress line
    assert "wrote program.json, program.npz, target.toml to" in captured.out


def test_compile_verbose_json_accounts_for_every_file_written(tmp_path, capsys):
    from pathlib import Path
    sample = Path(__file__).resolve().parents[1] / "samples" / "mlp.onnx"
    out = tmp_path / "o"
    assert main(["compile", str(sample), "-t", "isaac", "-o", str(out), "-v", "-q", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""       # -q: the account is in the JSON only
    doc = json.loads(captured.out)
    profile = doc["profile"]
    steps = [s["step"] for s in profile["steps"]]
    assert steps[0] == "load" and steps[-1] == "calibrate"
    files = [f for w in profile["writes"] for f in w["files"]]
    assert sorted(files) == sorted(doc["files"])        # every file, once
    for w in profile["writes"]:
        assert w["bytes"] == sum((out / f).stat().st_size for f in w["files"]) and w["time_s"] >= 0
    threads = {f: w["thread"] for w in profile["writes"] for f in w["files"]}
    assert threads["program.npz"] == "writer" and threads["report.json"] == "main"
    assert threads["device.acdev"] in ("writer", "process")     # a forked process where it is safe to fork
    proc = profile["process"]
    assert proc["cpu_user_s"] + proc["cpu_system_s"] > 0
    if proc["wall_s"] is not None:      # Linux
        assert proc["wall_s"] >= proc["before_steps_s"] >= 0 and proc["wall_s"] >= profile["steps_total_s"] - 0.02
    assert main(["compile", str(sample), "-t", "isaac", "-o", str(out), "-q", "--format", "json"]) == 0
    assert "profile" not in json.loads(capsys.readouterr().out)        # only with -v
    quantized = str(corpus.path("q_cnn_qdq_channel"))     # its own input scales: calibration observes nothing
    assert main(["compile", quantized, "-t", "isaac", "-o", str(out), "-v", "-q", "--format", "json"]) == 0
    writes = json.loads(capsys.readouterr().out)["profile"]["writes"]
    assert {f: w["thread"] for w in writes for f in w["files"]}["program.npz"] == "main"


def test_process_wall_time_counts_from_the_start_of_the_process():
    import subprocess
    import sys
    code = "import time; time.sleep(0.3); from acompile.cli.timing import process_wall_s; print(process_wall_s())"
    text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    if text == "None":
        pytest.skip("this system does not say when a process started")
    assert 0.28 <= float(text) < 30


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
