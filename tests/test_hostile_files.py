"""Hostile files and folders that are not models or targets: the error contract, case by case.

Every case of tests/bad_files.py runs the command line in its own process (the fork
server of tests/test_adversarial.py: memory and file-size limits, a time limit) in a
folder holding a model, inputs and a previous compile in ``OUT``, and must meet the
contract: exit 0 where the input is legal, else 1 or 2 -- never 3, never a signal, a
hang or a traceback; a refusal is one line naming the problem; a failing run changes
nothing in the folder (FIFOs, symlinks and the user's files included), a successful one
only the output it was asked for, and leaves no temporary folder.

The default run takes a fixed sample of every family (and every mutation of a few
fields of program.json and the device header); ``-m slow`` runs every case and a seeded
mutation fuzzer. Regression tests for the issue's defects that need no subprocess run
in this process.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bad_files as bf
from test_adversarial import (CONTROL, Run, _compile_baseline, _limits, assert_contract, child_env,
                              describe_diff, job, run_many, snapshot)

CASE_TIMEOUT = 60
TEMP = re.compile(r"acompile-(tmp|old)-")

DATA = bf.data_cases()
OUTS = bf.out_cases()
VALUES = bf.value_cases()
STREAMS = bf.stream_cases()
MUTATIONS = bf.mutation_cases()
SUBPROCESS_CASES = [c for c in DATA + OUTS + VALUES + MUTATIONS]
SAMPLE_FIELDS = ("layers.0.matrices.0.k_in", "block_columns")


def in_sample(case: bf.FileCase) -> bool:
    if case.out_changes:         # a whole compile: the slow run has them
        return False
    if ":" in case.id:
        return case.id.split(":")[1] in SAMPLE_FIELDS
    family = DATA if case in DATA else OUTS if case in OUTS else VALUES if case in VALUES else MUTATIONS
    return family.index(case) % 9 == 0


SAMPLE = [c for c in SUBPROCESS_CASES if in_sample(c)]


def params(cases):
    return [pytest.param(c, id=c.id, marks=() if c in SAMPLE else pytest.mark.slow) for c in cases]


def full_run(request) -> bool:
    return any(item.module is request.module and item.get_closest_marker("slow") for item in request.session.items)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return _compile_baseline(tmp_path_factory.mktemp("hostile_baseline"))


def _case_dir(root: Path, case: bf.FileCase, baseline: Path) -> Path:
    d = root / re.sub(r"[^A-Za-z0-9_.-]", "_", case.id)
    for sub in ("tmp", "home"):
        (d / sub).mkdir(parents=True)
    bf.prepare(d, baseline)
    return d


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory, baseline):
    """Every case (or the sample) through the fork server; {id: (case, folder, before, after, run)}."""
    cases = SUBPROCESS_CASES if full_run(request) else SAMPLE
    root = tmp_path_factory.mktemp("hostile")
    prepared, jobs = [], []
    for case in cases:
        folder = _case_dir(root, case, baseline)
        argv = case.build(folder)
        prepared.append((case, folder, snapshot(folder)))
        j = job(argv, folder, **case.env)
        j["timeout"] = CASE_TIMEOUT
        jobs.append(j)
    results = run_many(jobs, tmp_path_factory.mktemp("hostile_capture"))
    return {case.id: (case, folder, before, snapshot(folder), run)
            for (case, folder, before), run in zip(prepared, results)}


def check_case(case: bf.FileCase, folder: Path, before: dict, after: dict, run: Run) -> None:
    what = case.id
    if case.report_on_stdout:
        assert run.rc in case.expect and "Traceback" not in run.stderr + run.stdout, f"{what}: {run.rc}"
        assert re.search(case.message, run.stdout, re.IGNORECASE), f"{what}: {run.stdout[-500:]!r}"
    elif case.message.startswith("^\\{"):       # --format=json: the error is one JSON line
        assert run.rc in case.expect and "Traceback" not in run.stderr, f"{what}: {run.rc} {run.stderr[-500:]}"
        line = run.stderr.strip()
        assert "\n" not in line and json.loads(line)["error"]["exit_code"] == run.rc, f"{what}: {line!r}"
    else:
        assert_contract(run, case.expect, case.message, what)
    if run.rc != 0 or not case.out_changes:
        assert before == after, f"{what}: the run changed files: {describe_diff(before, after)}"
    else:
        outside = lambda s: {k: v for k, v in s.items() if not re.match(r"(NEW|OUT)(/|$)", k)}
        assert outside(before) == outside(after), f"{what}: wrote outside its output: {describe_diff(before, after)}"
    assert not [k for k in after if TEMP.search(k)], f"{what}: temporary folder left: {sorted(after)}"


@pytest.mark.parametrize("case", params(SUBPROCESS_CASES))
def test_hostile_file_meets_the_contract(runs, case):
    if case.id not in runs:
        pytest.skip("not in this run")
    check_case(*runs[case.id])


def test_enough_cases_and_every_schema_field():
    assert len(SUBPROCESS_CASES) + len(STREAMS) >= 300
    fields = {c.id.split(":")[1] for c in MUTATIONS if ":" in c.id}
    assert {"layers.0.spec.cell_bits", "layers.0.matrices.0.k_in", "block_columns", "ops.0.opset"} <= fields


# ---------------------------------------------------------------------------
# streams: stdout/stderr closed or unable to encode (real processes)
# ---------------------------------------------------------------------------

def _run_streams(case: bf.FileCase, folder: Path, argv: list[str]) -> Run:
    closed = [fd for fd, flag in ((1, case.stdout_closed), (2, case.stderr_closed)) if flag]

    def pre():
        _limits()
        for fd in closed:
            os.close(fd)
    env = {**child_env(folder), **case.env}
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "acompile", *argv], cwd=folder, env=env, capture_output=True,
                       timeout=CASE_TIMEOUT * 2, preexec_fn=pre, errors="replace")
    return Run(p.returncode, p.stdout, p.stderr, time.perf_counter() - start)


STREAM_SAMPLE = ("stdout_latin1_simulate", "stdout_closed_error")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=() if c.id in STREAM_SAMPLE else pytest.mark.slow)
                                  for c in STREAMS])
def test_closed_or_odd_streams(tmp_path, baseline, case):
    folder = _case_dir(tmp_path, case, baseline)
    argv = case.build(folder)
    before = snapshot(folder)
    run = _run_streams(case, folder, argv)
    after = snapshot(folder)
    assert "Traceback" not in run.stderr + run.stdout and run.rc in case.expect, \
        f"{case.id}: exit {run.rc}: {run.stderr[-800:]}"
    if run.rc == 0:
        assert not case.out_changes or (folder / "NEW" / "program.json").exists()
        assert all(line.startswith("acompile: warning: ") for line in run.stderr.splitlines()), run.stderr
    else:
        assert before == after, f"{case.id}: {describe_diff(before, after)}"
        if not case.stderr_closed:
            line = run.stderr.strip()
            assert "\n" not in line and line.startswith("acompile: error: ") and not CONTROL.search(line), line
    assert not [k for k in after if TEMP.search(k)]


# ---------------------------------------------------------------------------
# the mutation fuzzer (slow): random edits of program.json / the device header, in this process
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_fuzz_program_and_device_files(tmp_path, baseline):
    """300 seeded random mutations: each is used or refused with an AcompileError, never anything else."""
    from acompile.errors import AcompileError
    from acompile.simulation import load_compiled, simulate
    x = {"input": np.zeros((3, 16), np.float32) + 0.5}
    rng = random.Random(13)
    failures = []
    for i in range(300):
        out = tmp_path / f"f{i}"
        shutil.copytree(baseline, out)
        what = bf.fuzz_out(out, rng)
        for mode in ("quantized", "ideal"):
            try:
                simulate(load_compiled(out, mode), x, mode=mode)
            except AcompileError as e:
                assert "\n" not in str(e)
            except MemoryError:
                pass
            except Exception as e:      # pragma: no cover - the report of a failure
                failures.append(f"{what} ({mode}): {type(e).__name__}: {e}"[:300])
        shutil.rmtree(out)
    assert not failures, "\n".join(failures[:20])


# ---------------------------------------------------------------------------
# regressions of the defects that need no subprocess
# ---------------------------------------------------------------------------

def test_a_user_file_put_into_out_during_the_compile_survives(tmp_path):
    """The final swap re-checks OUT: a file that appeared meanwhile is kept, the new output goes beside."""
    from acompile.errors import UsageError
    from acompile.files import atomic_folder
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "report.json").write_text("{}")
    with pytest.raises(UsageError, match="changed while"):
        with atomic_folder(out) as tmp:
            (tmp / "report.json").write_text('{"new": 1}')
            (out / "notes.txt").write_text("mine")
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.json").read_text() == "{}"
    beside = [p for p in tmp_path.iterdir() if p.name.startswith("OUT.new-")]
    assert len(beside) == 1 and (beside[0] / "report.json").read_text() == '{"new": 1}'
    assert not [p for p in tmp_path.iterdir() if TEMP.search(p.name)]


def test_a_second_writer_is_never_overwritten(tmp_path):
    from acompile.errors import UsageError
    from acompile.files import atomic_folder
    out = tmp_path / "OUT"
    with pytest.raises(UsageError, match="changed while"):
        with atomic_folder(out) as tmp:
            (tmp / "report.json").write_text("first")
            with atomic_folder(out) as tmp2:          # another acompile finishes first
                (tmp2 / "report.json").write_text("second")
    assert (out / "report.json").read_text() == "second"


def test_a_folder_with_only_the_users_report_md_is_not_replaced(tmp_path):
    from acompile.errors import UsageError
    from acompile.files import atomic_folder
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    with pytest.raises(UsageError, match="did not write"):
        with atomic_folder(out):
            pass
    assert (out / "report.md").read_text() == "my notes"


@pytest.mark.parametrize("dest", ["/dev/null", ".", "/"])
def test_atomic_file_never_replaces_what_is_not_a_regular_file(tmp_path, dest):
    from acompile.errors import UsageError
    from acompile.files import atomic_file
    with pytest.raises(UsageError, match="directory|regular"):
        with atomic_file(Path(dest)):
            pass
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="regular"):
        with atomic_file(fifo):
            pass


def test_npz_member_names_are_checked_before_decompressing(tmp_path):
    """A small .npz with a large unexpected member is refused at once (nothing decompressed)."""
    from acompile.errors import InvalidDataError
    from acompile.safe_read import read_arrays
    p = tmp_path / "d.npz"
    p.write_bytes(bf.npz_bytes({"big.npy": bf.npy_header("'<f4'", "(16777216,)", body=bytes(64 * 1024**2))}))
    assert p.stat().st_size < 1024**2
    start = time.perf_counter()
    with pytest.raises(InvalidDataError, match="unexpected name"):
        read_arrays(p, "input", names={"input"})
    assert time.perf_counter() - start < 1.0


def test_read_input_never_blocks_on_a_fifo(tmp_path):
    from acompile.errors import InvalidDataError
    from acompile.safe_read import read_input
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(InvalidDataError, match="FIFO"):
        read_input(fifo, "input")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("text", ["1" * 5000, '{"a": ' + "9" * 5000 + "}", "[" * 100000, "NaN", "1e999",
                                  '{"a": -' + "9" * 50 + "}"])
def test_parse_json_refuses_with_a_data_error(text):
    from acompile.errors import InvalidDataError
    from acompile.safe_read import parse_json
    with pytest.raises(InvalidDataError):
        parse_json(text.encode(), "document", "here")


def test_schema_errors_name_the_field():
    from acompile.backends.schemas import HEADER
    from acompile.errors import InvalidDataError
    from acompile.data_schema import check_schema
    with pytest.raises(InvalidDataError, match=r"lacks the field format"):
        check_schema({}, HEADER, "device header", "x")
    doc = {"format": "acompile-device", "version": 3, "target": "t", "program_sha256": "", "levels_bytes": -5}
    with pytest.raises(InvalidDataError, match=r"field levels_bytes must be from 0"):
        check_schema(doc, HEADER, "device header", "x")


@pytest.mark.parametrize("records, message", [
    ([{"a": 1, "b": [1, 2]}, {"a": True, "b": []}], r"field rows\[1\]\.a must be a number \(got True\)"),
    ([{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, -1]}], r"field rows\[1\]\.b\[1\] must be from 0 to 9"),
    ([{"a": 1, "b": [1]}, {"b": [1]}], r"lacks the field rows\[1\]\.a"),
    ([{"a": 1, "b": [1]}, {"a": 1, "b": [1], "c": 1}, 5], r"field rows\[2\] must be an object \(got 5\)"),
    ([{"a": 1, "b": [1] * 4}], r"field rows\[0\]\.b must hold 0 to 3 items"),
])
def test_lists_of_records_checked_in_one_pass_name_the_first_bad_field(records, message):
    """A list of plain numbers or of records of them is tested in one pass; what fails gets the message the
    item-by-item check gives (extra keys allowed, as for any object)."""
    from acompile.errors import InvalidDataError
    from acompile.data_schema import Int, Num, Seq, check_schema
    schema = {"rows": Seq({"a": Num(), "b": Seq(Int(0, 9), max_len=3)})}
    with pytest.raises(InvalidDataError, match=message):
        check_schema({"rows": records}, schema, "device header", "x")
    check_schema({"rows": [{"a": 1.5, "b": [0, 9]}, {"a": -2, "b": [], "c": "any"}]}, schema, "device header", "x")


@pytest.mark.parametrize("column, message", [
    ([0, 9, True], r"rows\[2\]\.a must be an integer \(got True\)"),
    ([0, 9.0], r"rows\[1\]\.a must be an integer \(got 9\.0\)"),
    ([3, 10], r"rows\[1\]\.a must be from 0 to 9 \(got 10\)"),
    ([-1, 3], r"rows\[0\]\.a must be from 0 to 9 \(got -1\)"),
])
def test_integer_columns_of_records_are_tested_whole_and_still_name_the_bad_field(column, message):
    """Records of integer fields (a device header's blocks) are tested a column at a time in C-level passes:
    a bool, a float, or a value out of range anywhere in a column is caught and named."""
    from acompile.errors import InvalidDataError
    from acompile.data_schema import Int, Seq, check_schema
    schema = {"rows": Seq({"a": Int(0, 9), "b": Int(0, 9)})}
    records = [{"a": a, "b": 1} for a in column]
    with pytest.raises(InvalidDataError, match=message):
        check_schema({"rows": records}, schema, "device header", "x")
    check_schema({"rows": [{"a": a, "b": 1} for a in range(10)] + [{"a": 0, "b": 9, "c": "any"}]}, schema,
                 "device header", "x")


def test_integers_are_read_by_json_itself_unless_some_digit_run_is_too_long(monkeypatch):
    """A document whose every run of digits is short reads its integers without a Python call each; a run of
    41 digits anywhere (inside a string too) brings the per-integer check back, which refuses a long one."""
    from acompile import safe_read
    calls = []
    monkeypatch.setattr(safe_read, "_parse_int", lambda text: calls.append(text) or int(text))
    assert safe_read.parse_json(b'{"a": [1, 22, 333], "s": "e123", "f": 1.5}', "document", "here") == \
        {"a": [1, 22, 333], "s": "e123", "f": 1.5}
    assert calls == []
    assert safe_read.parse_json(b'{"a": 7, "s": "' + b"1" * 41 + b'"}', "document", "here")["a"] == 7
    assert calls == ["7"]


def test_limits_come_from_the_environment(monkeypatch):
    from acompile.errors import LimitError
    from acompile.limits import ENV, Limits
    for name, (var, unit) in ENV.items():
        monkeypatch.setenv(var, "3")
        assert getattr(Limits.from_env(), name) == 3 * unit
        monkeypatch.setenv(var, "nan")
        with pytest.raises(LimitError, match=var):
            Limits.from_env()
        monkeypatch.delenv(var)


def test_sizes_in_messages_cover_any_count_a_model_can_make():
    """Dimensions multiply to integers no float holds: the message gives their order of magnitude."""
    from acompile.limits import byte_size
    assert byte_size(5) == "5 bytes" and byte_size(3 * 2**20) == "3 MiB" and byte_size(5 * 2**30) == "5 GiB"
    assert byte_size(2**64) == "1.72e+10 GiB"
    assert byte_size(4 * 2**496) == f"about 10^{len(str(4 * 2**496)) - 1} bytes"
    assert byte_size(10**400) == "about 10^400 bytes"


def test_troubleshooting_lists_every_limit():
    from acompile.limits import ENV
    text = (Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md").read_text()
    for var, _ in ENV.values():
        assert var in text, f"docs/troubleshooting.md does not list {var}"


def test_sighup_and_sigquit_become_clean_exits(tmp_path):
    """The CLI turns SIGHUP/SIGQUIT into Interrupted (cleanup runs) with exit 128+signal."""
    from acompile.cli.app import STOP_SIGNALS
    assert {signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT} <= set(STOP_SIGNALS)


def _model(path: Path, nodes, inputs, outputs, inits, domains=()):
    import onnx
    from onnx import helper
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    imports = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    onnx.save(helper.make_model(g, opset_imports=imports, ir_version=8), path)
    return path


def _acompile_rss(args: list[str], cwd: Path, **env) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in MiB) of ``acompile ARGS`` in a fresh process."""
    code = ("import resource, sys\nfrom acompile.cli import main\nrc = main(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)\nsys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env={**child_env(cwd), **env},
                       capture_output=True, text=True, timeout=120, preexec_fn=_limits)
    *lines, rss = p.stderr.strip().splitlines()
    return p.returncode, "\n".join(lines), int(rss)


def test_maxunpool_output_size_is_never_allocated_to_learn_it(tmp_path):
    """A 300-byte model whose MaxUnpool output_shape asks for 1 GiB stays within memory."""
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.ones((1, 1, 2, 2), np.float32), "X"),
             numpy_helper.from_array(np.zeros((1, 1, 2, 2), np.int64), "I"),
             numpy_helper.from_array(np.array([1, 1, 16000, 16000], np.int64), "S")]
    nodes = [helper.make_node("MaxUnpool", ["X", "I", "S"], ["U"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("ReduceSum", ["U"], ["R"], keepdims=0),
             helper.make_node("Add", ["inp", "R"], ["out"])]
    _model(tmp_path / "m.onnx", nodes, [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1])],
           [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])], inits)
    (tmp_path / "tmp").mkdir()
    rc, err, rss = _acompile_rss(["compile", "m.onnx", "-t", "isaac", "-o", "OUT", "-q", "--allow-unsupported"],
                                 tmp_path, ACOMPILE_MAX_TENSOR_MB="64")
    assert rc in (0, 1, 2) and "Traceback" not in err, err
    assert rss < 700, f"peak memory {rss} MiB"


@pytest.mark.parametrize("custom_first", [False, True])
def test_allow_unsupported_with_a_custom_domain_op(tmp_path, custom_first):
    """Calibration does not stop at a custom op after the analog layers; before them, no exit 3 either."""
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(0).random((8, 16)).astype(np.float32), "W")
    if custom_first:
        nodes = [helper.make_node("Weird", ["x"], ["h"], domain="com.example"),
                 helper.make_node("Gemm", ["h", "W"], ["y"], transB=1)]
    else:
        nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
                 helper.make_node("Weird", ["h"], ["y"], domain="com.example")]
    _model(tmp_path / "m.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w], domains=["com.example"])
    from acompile.cli import main
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "isaac", "-o", str(tmp_path / "OUT"), "-q",
                 "--allow-unsupported"]) == 0
    np.save(tmp_path / "x.npy", np.ones((1, 16), np.float32))
    rc = main(["simulate", str(tmp_path / "OUT"), "-i", str(tmp_path / "x.npy"), "-q"])
    assert rc in (0, 2)


def test_inspect_and_targets_validate_speak_json(tmp_path, baseline, capsys):
    from acompile.cli import main
    assert main(["inspect", str(baseline / "device.acdev"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["blocks"] > 0 and doc["layers"]
    (tmp_path / "t.toml").write_text('schema_version = 1\nname = "t"\n[crossbar]\nrows = ' + "9" * 5000 + "\n")
    for argv in (["targets", "--format", "json", "validate", str(tmp_path / "t.toml")],
                 ["targets", "validate", "--format=json", str(tmp_path / "t.toml")]):
        assert main(argv) == 2
        assert json.loads(capsys.readouterr().out)["files"][0]["valid"] is False


def test_a_mapping_with_too_many_crossbar_blocks_is_refused_before_it_is_cut(tmp_path, monkeypatch):
    from acompile.cli import main
    import bad_inputs as bi
    (tmp_path / "m.onnx").write_bytes(bi.mlp_model().SerializeToString())
    monkeypatch.setenv("ACOMPILE_MAX_CROSSBARS", "2")
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "isaac", "-o", str(tmp_path / "OUT"), "-q"]) == 2
    assert not (tmp_path / "OUT").exists()


def test_html_in_node_names_is_escaped_in_report_md(tmp_path):
    from acompile.cli import main
    import bad_inputs as bi
    m = bi.mlp_model(names={"gemm1": "<script>alert(1)</script>", "gemm2": "<img src=x onerror=y>|"})
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "isaac", "-o", str(tmp_path / "OUT"), "-q"]) == 0
    text = (tmp_path / "OUT" / "report.md").read_text()
    assert "<script" not in text and "<img" not in text and "&lt;script&gt;" in text


def test_the_node_count_is_refused_before_the_checker_walks_it(tmp_path, monkeypatch, capsys):
    from onnx import TensorProto, helper
    from acompile.cli import main
    n = 2000
    nodes = [helper.make_node("Relu", [f"t{i}" if i else "x"], [f"t{i + 1}" if i < n - 1 else "y"]) for i in range(n)]
    _model(tmp_path / "m.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [])
    monkeypatch.setenv("ACOMPILE_MAX_NODES", "1000")
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "isaac", "-o", str(tmp_path / "OUT")]) == 2
    assert "ACOMPILE_MAX_NODES" in capsys.readouterr().err
