"""Bad input never crashes, hangs or corrupts: the error contract, case by case.

Every case of tests/bad_inputs.py goes through the command line in a separate
process with a time limit (subprocess timeout) and a memory limit
(``RLIMIT_AS``), and must meet the contract:

* exit code 0 where the input is legal (however odd), else 1 or 2 as
  documented -- never 3, never a signal, never a traceback;
* a refusal is one line on stderr that names the problem;
* nothing is created outside OUT; OUT (pre-filled with a previous compile)
  is byte-for-byte unchanged when a run fails; a run that succeeds leaves only
  acompile's own files in OUT, with hostile names escaped in the reports.

Model cases run ``compile`` one process each, and ``check`` once over all of
them (one verdict per model). Target cases run ``targets validate`` and ``compile
--target``; simulator cases ``simulate`` and ``inspect``. Most runs start from a
fork server that has imported acompile once (each run still its own process, with
its own limits, exit status and output; see :data:`FORKSERVER`); a few cases of
each family go through ``python -m acompile`` itself.

The default run takes a fixed sample of each family (every few cases in the order
bad_inputs.py lists them, so every theme is represented) and one real process per
family; ``-m slow`` runs every case (about a minute and a half on two cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import acompile
import bad_inputs as bi
from acompile.files import OUR_FILES

# children import the same acompile as this process (the checkout, or wherever it is installed)
SOURCE = Path(acompile.__file__).resolve().parents[1]
MEMORY_LIMIT = 3 * 1024**3          # RLIMIT_AS of every child
FILE_LIMIT = 256 * 1024**2          # RLIMIT_FSIZE: a runaway writer dies (and fails its case)
TIMEOUT_S = 120                     # a hung child is killed and its case fails
CASE_SECONDS = 60                   # "bounded time": no single run may take longer
WORKERS = max(2, min(4, os.cpu_count() or 2))
BAD = bi.BAD
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202e]")   # raw control characters (newline and tab allowed)


# ---------------------------------------------------------------------------
# the default sample and the full run
# ---------------------------------------------------------------------------

def sampled(cases: list, stride: int) -> list:
    """Every ``stride``-th case from the first: the default run's sample of a family."""
    return cases[::stride]


def params(cases: list, sample: list) -> list:
    """All cases as pytest parameters; those outside the sample are slow."""
    return [pytest.param(c, id=c.id, marks=() if c in sample else pytest.mark.slow) for c in cases]


# a test over the whole session's runs: its slow twin selects it under ``-m slow``, where the runs are every case
WHOLE_SESSION = pytest.mark.parametrize("runs", ["sample", pytest.param("every case", marks=pytest.mark.slow)])


def full_run(request) -> bool:
    """Whether this session runs some of the module's slow tests: then the fixtures run every case."""
    return any(item.module is request.module and item.get_closest_marker("slow") for item in request.session.items)


# ---------------------------------------------------------------------------
# running the CLI under limits
# ---------------------------------------------------------------------------

@dataclass
class Run:
    rc: int | None                   # None: timed out; negative: killed by a signal
    stdout: str
    stderr: str
    seconds: float


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def child_env(case_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACOMPILE_", "PYTHON"))}
    env.update(PYTHONPATH=str(SOURCE), HOME=str(case_dir / "home"), TMPDIR=str(case_dir / "tmp"),
               PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = TIMEOUT_S) -> Run:
    """``python -m acompile ARGS`` in ``cwd`` under the memory and file-size limits."""
    start = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "acompile", *args], cwd=cwd, env=env or child_env(cwd),
                           capture_output=True, timeout=timeout, preexec_fn=_limits, errors="replace")
        return Run(p.returncode, p.stdout, p.stderr, time.perf_counter() - start)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode("utf-8", "replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Run(None, out, err, time.perf_counter() - start)


# A fork server: imports acompile and its heavy dependencies once, then runs each command line in a
# forked child -- its own process, limits, exit status and signals, stdout/stderr captured to files --
# that finishes like ``python -m acompile`` does (SystemExit, normal interpreter shutdown). Starting a
# child costs milliseconds instead of the half second of imports, which keeps ~150 cases quick.
# onnxruntime is not imported before forking (it starts threads); each child imports it when needed.
FORKSERVER = r"""
import json, os, resource, signal, sys, time
import numpy, onnx, onnx.shape_inference, onnx.checker, onnx.version_converter
import acompile.cli, acompile.compiler, acompile.check, acompile.target, acompile.simulation, acompile.calibrate
import acompile.backends.report, acompile.backends.program, acompile.backends.device, acompile.passes.fold_constants
assert "onnxruntime" not in sys.modules
cfg = json.loads(sys.stdin.read())
jobs, workers = cfg["jobs"], cfg["workers"]
pending = list(range(len(jobs)))
running = {}
results = [None] * len(jobs)
while pending or running:
    while pending and len(running) < workers:
        i = pending.pop(0)
        job = jobs[i]
        sys.stdout.flush(); sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.setsid()
            for r, v in cfg["rlimits"].items():
                resource.setrlimit(getattr(resource, r), (v, v))
            os.chdir(job["cwd"])
            os.environ.update(job["env"])
            import tempfile
            tempfile.tempdir = None
            fo = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            fe = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fo, 1); os.dup2(fe, 2); os.close(fo); os.close(fe)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.argv = ["acompile"] + job["argv"]
            raise SystemExit(acompile.cli.main(job["argv"]))
        running[pid] = (i, time.monotonic())
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid:
        i, start = running.pop(pid)
        rc = os.waitstatus_to_exitcode(status)
        results[i] = {"rc": rc, "seconds": time.monotonic() - start}
        continue
    now = time.monotonic()
    for pid, (i, start) in list(running.items()):
        if now - start > jobs[i]["timeout"]:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            running.pop(pid)
            results[i] = {"rc": None, "seconds": now - start}
    time.sleep(0.003)
print(json.dumps(results))
"""


def run_many(jobs: list[dict], capture: Path, workers: int = WORKERS) -> list[Run]:
    """Run ``[{"argv", "cwd", "env"}]`` through :data:`FORKSERVER`; one :class:`Run` per job, in order.

    ``capture`` is a folder for the children's stdout/stderr files (outside the case folders).
    """
    capture.mkdir(parents=True, exist_ok=True)
    for i, job in enumerate(jobs):
        job.setdefault("timeout", TIMEOUT_S)
        job["stdout"], job["stderr"] = str(capture / f"{i}.out"), str(capture / f"{i}.err")
    cfg = {"jobs": jobs, "workers": workers,
           "rlimits": {"RLIMIT_AS": MEMORY_LIMIT, "RLIMIT_FSIZE": FILE_LIMIT, "RLIMIT_CORE": 0}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACOMPILE_", "PYTHON"))}
    env.update(PYTHONPATH=str(SOURCE), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               HOME=str(capture), TMPDIR=str(capture))
    p = subprocess.run([sys.executable, "-c", FORKSERVER], input=json.dumps(cfg), capture_output=True, text=True,
                       env=env, cwd=capture, timeout=TIMEOUT_S * 2 + 10 * len(jobs))
    assert p.returncode == 0, f"fork server failed: {p.stderr[-3000:]}"
    runs = []
    for job, res in zip(jobs, json.loads(p.stdout.strip().splitlines()[-1])):
        read = lambda f: Path(f).read_bytes().decode("utf-8", "replace")
        runs.append(Run(res["rc"], read(job["stdout"]), read(job["stderr"]), res["seconds"]))
    return runs


def job(argv: list[str], case_dir: Path, **env: str) -> dict:
    return {"argv": argv, "cwd": str(case_dir), "env": {**child_env(case_dir), **env}}


# ---------------------------------------------------------------------------
# folders: snapshots, baseline OUT
# ---------------------------------------------------------------------------

def third_party(rel: str) -> bool:
    """Files onnxruntime itself writes on import (telemetry: ~/.cache/Microsoft/..., $TMPDIR/.ses).

    Not acompile's doing and not switchable off from Python in onnxruntime 1.32;
    each case has its own HOME and TMPDIR, so they land there and are ignored.
    """
    return rel == "home" or rel.startswith("home" + os.sep) or rel == os.path.join("tmp", ".ses")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` (links not followed): type and content hash (size+mtime for big files)."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if third_party(rel) or third_party(rel.split(os.sep, 1)[-1]):
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                if st.st_size > 16 * 1024**2:
                    entries[rel] = ("big", st.st_size, st.st_mtime_ns)
                else:
                    entries[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                entries[rel] = ("special", stat.S_IFMT(st.st_mode))
    return entries


def leftovers(tmpdir: Path) -> list[str]:
    return sorted(n for n in os.listdir(tmpdir) if n != ".ses")


def describe_diff(before: dict, after: dict) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"added {added!r}, removed {removed!r}, changed {changed!r}"


def new_case_dir(root: Path, case_id: str, baseline: Path | None) -> Path:
    d = root / case_id
    for sub in ("in", "tmp", "home"):
        (d / sub).mkdir(parents=True)
    if baseline is not None:
        shutil.copytree(baseline, d / "OUT")
    return d


def _compile_baseline(root: Path, seed: int = 0) -> Path:
    """A valid compile of the small MLP: the 'previous OUT' every failing run must leave alone."""
    folder = root / f"baseline{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.onnx"
    model.write_bytes(bi.mlp_model(seed=seed).SerializeToString())
    from acompile.cli import main
    assert main(["compile", str(model), "--target", "isaac", "-o", str(folder / "OUT"), "-q"]) == 0
    return folder / "OUT"


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """Two valid compiles (seeds 0 and 1), read-only: copied into case folders, never used in place."""
    root = tmp_path_factory.mktemp("baselines")
    return _compile_baseline(root), _compile_baseline(root, seed=1)


# ---------------------------------------------------------------------------
# the contract
# ---------------------------------------------------------------------------

def assert_refusal_line(run: Run, pattern: str, what: str) -> None:
    err = run.stderr
    assert "Traceback" not in err, f"{what}: traceback\n{err[-3000:]}"
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0], f"{what}: stderr must be one line, got {err!r}"
    line = lines[0]
    assert line.startswith("acompile: error: "), f"{what}: not an acompile error line: {line!r}"
    assert len(line) < 2000, f"{what}: error line is {len(line)} characters"
    assert not CONTROL.search(line), f"{what}: raw control character in {line!r}"
    if pattern:
        assert re.search(pattern, line, re.IGNORECASE), f"{what}: {line!r} does not match /{pattern}/"


def assert_contract(run: Run, expect: frozenset, pattern: str, what: str) -> None:
    assert "Traceback" not in run.stderr + run.stdout, f"{what}: traceback\n{run.stderr[-3000:]}"
    assert run.rc is not None, f"{what}: no answer within {TIMEOUT_S} s (hang?); stderr {run.stderr[-500:]!r}"
    assert run.rc >= 0, f"{what}: killed by signal {-run.rc}; stderr {run.stderr[-2000:]!r}"
    assert run.rc != 3, f"{what}: internal error: {run.stderr.strip()[:2000]}"
    assert run.rc in expect, f"{what}: exit {run.rc}, expected one of {sorted(expect)}: {run.stderr.strip()[:1000]}"
    assert run.seconds < CASE_SECONDS, f"{what}: took {run.seconds:.1f} s"
    assert "Traceback" not in run.stderr + run.stdout, f"{what}: traceback\n{run.stderr[-3000:]}"
    assert "\x1b" not in run.stdout + run.stderr, f"{what}: raw terminal escape in the output"
    if run.rc != 0:
        assert_refusal_line(run, pattern, what)
    else:
        assert run.stderr.strip() == "", f"{what}: a successful run wrote to stderr: {run.stderr[:1000]!r}"


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def assert_out_clean(out: Path, what: str) -> None:
    """A folder a successful compile wrote: only our files, names escaped in every report."""
    names = set(os.listdir(out))
    assert names <= OUR_FILES, f"{what}: unexpected files in OUT: {sorted(names - OUR_FILES)}"
    for name in names:
        if name.endswith((".json", ".md", ".svg")):
            text = (out / name).read_text(encoding="utf-8")
            assert not CONTROL.search(text.replace("\n", "").replace("\t", "")), \
                f"{what}: raw control character in {name}"
    report = json.loads((out / "report.json").read_text())
    for s in _strings(report):
        assert not CONTROL.search(s) and "\n" not in s and "\r" not in s, f"{what}: unescaped name {s!r} in report.json"
    for line in (out / "report.md").read_text().splitlines():
        if line.startswith("|"):
            assert line.rstrip().endswith("|"), f"{what}: a name broke a report.md table row: {line!r}"


def assert_folder_effects(before: dict, after: dict, rc: int | None, what: str, out_rel: str = "OUT",
                          allowed_new: tuple[str, ...] = ()) -> None:
    """Failing run: nothing changed. Successful run: changes only inside OUT (and ``allowed_new``)."""
    if rc != 0:
        assert before == after, f"{what}: a failing run changed files: {describe_diff(before, after)}"
        return
    outside = lambda snap: {k: v for k, v in snap.items()
                            if k != out_rel and not k.startswith(out_rel + os.sep) and k not in allowed_new}
    assert outside(before) == outside(after), \
        f"{what}: a successful run wrote outside OUT: {describe_diff(outside(before), outside(after))}"


# ---------------------------------------------------------------------------
# model cases: compile (one process each) and check (one process for all)
# ---------------------------------------------------------------------------

MODEL_CASES = bi.model_cases()
MODEL_SAMPLE = sampled(MODEL_CASES, 6)
# These go through ``python -m acompile`` itself; the others through the fork server (same contract).
REAL_PROCESS_CASES = ("empty_file", "over_2gib_sparse", "nested_if_3000", "constant_of_shape_terabytes",
                      "input_dim_2_62", "ext_symlink", "invalid_utf8_names", "hostile_names")


@dataclass
class ModelResult:
    case: bi.Case
    folder: Path
    model: Path
    args: list
    before: dict
    compile: Run | None = None
    after: dict | None = None


@pytest.fixture(scope="module")
def model_runs(request, tmp_path_factory, baselines):
    cases = MODEL_CASES if full_run(request) else MODEL_SAMPLE
    root = tmp_path_factory.mktemp("models")
    baseline = baselines[0]
    check_dir = new_case_dir(tmp_path_factory.mktemp("check"), "check", None)
    results = {}
    for case in cases:
        d = new_case_dir(root, case.id, baseline)
        model = case.build(d / "in")
        args = [a.replace("{DIR}", str(model.parent)) for a in case.extra.get("args", [])]
        results[case.id] = ModelResult(case, d, model, ["compile", str(model), "--target", "isaac", "-o", "OUT",
                                                        *args], snapshot(d))
    inputs_before = {c.id: snapshot(results[c.id].folder / "in") for c in cases}
    forked = [c.id for c in cases if c.id not in REAL_PROCESS_CASES]
    real_ids = [c.id for c in cases if c.id in REAL_PROCESS_CASES]

    def real_processes():
        runs = {cid: run_cli(results[cid].args, results[cid].folder) for cid in real_ids}
        # check over every model at once: one verdict each, in argument order
        paths = [str(results[c.id].model) for c in cases]
        runs["check"] = run_cli(["check", *paths, "--target", "isaac", "--format", "json"], check_dir,
                                timeout=TIMEOUT_S * 2)
        return runs

    with ThreadPoolExecutor(1) as pool:
        real = pool.submit(real_processes)
        runs = run_many([job(results[cid].args, results[cid].folder) for cid in forked],
                        tmp_path_factory.mktemp("capture"))
        real = real.result()
    for cid, run in zip(forked, runs):
        results[cid].compile = run
    for cid in real_ids:
        results[cid].compile = real[cid]
    for r in results.values():
        r.after = snapshot(r.folder)
    inputs_after = {c.id: snapshot(results[c.id].folder / "in") for c in cases}
    return {"cases": cases, "results": results, "check": real["check"], "root": root,
            "inputs_before": inputs_before, "inputs_after": inputs_after}


def test_the_sample_goes_through_real_processes_too():
    assert {c.id for c in MODEL_SAMPLE} & set(REAL_PROCESS_CASES)
    assert set(REAL_PROCESS_CASES) <= {c.id for c in MODEL_CASES}


@pytest.mark.parametrize("case", params(MODEL_CASES, MODEL_SAMPLE))
def test_compile_meets_the_contract(model_runs, case):
    r: ModelResult = model_runs["results"][case.id]
    what = f"compile {case.id}"
    assert_contract(r.compile, case.expect, case.message, what)
    assert_folder_effects(r.before, r.after, r.compile.rc, what)
    if r.compile.rc == 0:
        assert_out_clean(r.folder / "OUT", what)
    assert not leftovers(r.folder / "tmp"), f"{what}: temporary files left in TMPDIR"


@WHOLE_SESSION
def test_check_meets_the_contract_for_every_model(model_runs, runs):
    """One ``check`` over every model compiled in this session (the sample, or all under ``-m slow``)."""
    cases = model_runs["cases"]
    run: Run = model_runs["check"]
    assert run.rc is not None and run.rc >= 0, f"check died: rc={run.rc} {run.stderr[-2000:]}"
    assert run.rc != 3 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.stderr.strip() == "", f"check --format json wrote to stderr: {run.stderr[:2000]!r}"
    doc = json.loads(run.stdout)
    results = doc["results"]
    assert len(results) == len(cases)
    problems = []
    for case, res in zip(cases, results):
        expect = case.check_expect if case.check_expect is not None else case.expect
        verdict = res["verdict"]
        code = res["error"]["exit_code"] if verdict == "error" else (1 if verdict == "incompatible" else 0)
        if code == 3 or code not in expect:
            problems.append(f"{case.id}: verdict {verdict!r} (exit {code}), expected {sorted(expect)}: "
                            f"{(res['error'] or {}).get('message')}")
        if verdict == "error":
            msg = res["error"]["message"]
            if "\n" in msg or CONTROL.search(msg):
                problems.append(f"{case.id}: error message is not one clean line: {msg!r}")
            if case.message and not re.search(case.message, msg, re.IGNORECASE):
                problems.append(f"{case.id}: {msg!r} does not match /{case.message}/")
    assert not problems, "\n".join(problems)
    for case in cases:
        before, after = model_runs["inputs_before"][case.id], model_runs["inputs_after"][case.id]
        assert before == after, f"{case.id}: the model's folder changed: {describe_diff(before, after)}"


@WHOLE_SESSION
def test_compile_and_check_agree(model_runs, runs):
    """check runs compile's frontend and mapping: where compile refuses a model with exit 2, check says so too."""
    doc = json.loads(model_runs["check"].stdout)
    for case, res in zip(model_runs["cases"], doc["results"]):
        compiled = model_runs["results"][case.id].compile
        if compiled.rc == 2 and case.extra.get("args") is None:
            assert res["verdict"] == "error", f"{case.id}: compile refused it, check says {res['verdict']}"


@WHOLE_SESSION
def test_nothing_escaped_the_case_folders(model_runs, runs):
    """Hostile names (``../``) never became paths: each case folder holds only what the test put there."""
    root: Path = model_runs["root"]
    assert sorted(os.listdir(root)) == sorted(c.id for c in model_runs["cases"])
    for case in model_runs["cases"]:
        assert set(os.listdir(root / case.id)) <= {"in", "tmp", "home", "OUT"}, case.id


def test_there_are_enough_cases():
    assert len(MODEL_CASES) >= 60
    assert len(bi.target_cases()) >= 25
    assert len(bi.sim_cases()) >= 40


def test_output_folders_that_are_not_ours_are_never_replaced(tmp_path):
    """-o naming a file, a link, a folder with foreign files (or a folder named like ours): exit 2, no change."""
    model = tmp_path / "m.onnx"
    model.write_bytes(bi.mlp_model().SerializeToString())
    setups = {
        "foreign_file": lambda o: (o.mkdir(), (o / "thesis.tex").write_text("precious")),
        "folder_named_like_ours": lambda o: ((o / "program.json").mkdir(parents=True),
                                             (o / "program.json" / "precious").write_text("x")),
        "link_named_like_ours": lambda o: (o.mkdir(), (o / "report.md").symlink_to(tmp_path / "m.onnx")),
        "a_file": lambda o: o.write_text("precious"),
        "a_link_to_a_folder": lambda o: ((tmp_path / "elsewhere").mkdir(), o.symlink_to(tmp_path / "elsewhere")),
        "parent_is_a_file": lambda o: (o.parent.parent.mkdir(), o.parent.write_text("x")),
    }
    jobs, dirs = [], []
    for name, make in setups.items():
        d = new_case_dir(tmp_path, name, None)
        out = d / "OUT" if name != "parent_is_a_file" else d / "p" / "file" / "OUT"
        make(out)
        dirs.append((name, d, snapshot(d)))
        jobs.append(job(["compile", str(model), "-t", "isaac", "-o", str(out)], d))
    for (name, d, before), run in zip(dirs, run_many(jobs, tmp_path / "capture")):
        assert_contract(run, BAD, r"output|folder|directory", f"-o {name}")
        assert snapshot(d) == before, f"-o {name}: files changed"


# ---------------------------------------------------------------------------
# limits before work
# ---------------------------------------------------------------------------

def _weight_model(folder: Path, n: int) -> Path:
    """A Gemm whose [n, 64] float32 weight is produced by ConstantOfShape (so only folding makes it)."""
    from onnx import helper, numpy_helper
    shape = numpy_helper.from_array(np.array([n, 64], np.int64), "shape")
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("ConstantOfShape", ["s"], ["W"], value=numpy_helper.from_array(np.array([0.01], np.float32))),
             helper.make_node("Gemm", ["input", "W"], ["output"], transB=1)]
    m = bi._graph_model(nodes, [bi._vi("input", ["N", 64])], [bi._vi("output", ["N", n])])
    path = folder / f"fold_{n}.onnx"
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.slow
def test_limits_are_checked_before_work_and_are_configurable(tmp_path):
    """A 2 MiB folded weight compiles by default and is refused up front (exit 2) under a 1 MiB limit;
    a 16 GiB one is refused by default quickly, with a one-line message naming the limit."""
    d = new_case_dir(tmp_path, "limits", None)
    small = _weight_model(d / "in", 8192)            # 8192 x 64 x 4 bytes = 2 MiB
    huge = _weight_model(d / "in", 1 << 26)          # 16 GiB once folded
    jobs = [
        (["compile", str(small), "-t", "isaac", "-o", "OUT1", "-q"], {}, frozenset({0}), ""),
        (["compile", str(small), "-t", "isaac", "-o", "OUT2"], {"ACOMPILE_MAX_TENSOR_MB": "1"}, BAD,
         r"limit|budget.*ACOMPILE_MAX_TENSOR_MB"),
        (["compile", str(huge), "-t", "isaac", "-o", "OUT3"], {}, BAD, r"GiB|budget"),
        (["check", str(huge), "-t", "isaac", "-q"], {}, BAD, r"GiB|budget"),
        (["compile", str(small), "-t", "isaac", "-o", "OUT4"], {"ACOMPILE_MAX_TENSOR_MB": "inf"}, BAD,
         r"ACOMPILE_MAX_TENSOR_MB"),
        (["compile", str(small), "-t", "isaac", "-o", "OUT5"], {"ACOMPILE_MAX_TENSOR_MB": "-1"}, BAD,
         r"ACOMPILE_MAX_TENSOR_MB"),
    ]
    with ThreadPoolExecutor(WORKERS) as pool:
        runs = list(pool.map(lambda j: run_cli(j[0], d, env=child_env(d, **j[1])), jobs))
    for (args, env, expect, pattern), run in zip(jobs, runs):
        what = f"{' '.join(args[:1])} {env}"
        assert_contract(run, expect, pattern, what)
        if run.rc == 2:
            assert run.seconds < 20, f"{what}: refusal took {run.seconds:.1f} s (work before the limit?)"
    assert (d / "OUT1" / "program.json").exists()
    assert not any((d / f"OUT{i}").exists() for i in (2, 3, 4, 5))



# ---------------------------------------------------------------------------
# target cases: targets validate and compile --target (one driver process), a few real processes
# ---------------------------------------------------------------------------

TARGET_CASES = bi.target_cases()
TARGET_SAMPLE = sampled(TARGET_CASES, 4)


@pytest.fixture(scope="module")
def target_runs(request, tmp_path_factory, baselines):
    cases = TARGET_CASES if full_run(request) else TARGET_SAMPLE
    root = tmp_path_factory.mktemp("targets")
    baseline = baselines[0]
    model = root.parent / "tmodel.onnx"
    model.write_bytes(bi.mlp_model().SerializeToString())
    jobs, dirs, snaps = [], {}, {}
    for case in cases:
        d = new_case_dir(root, case.id, baseline)
        path = case.build(d / "in")
        dirs[case.id] = (d, path)
        snaps[case.id] = snapshot(d)
        jobs.append(job(["targets", "validate", str(path)], d))
        jobs.append(job(["compile", str(model), "--target", str(path), "-o", "OUT", "-q"], d))
    runs = run_many(jobs, tmp_path_factory.mktemp("tcapture"))
    out = {}
    for i, case in enumerate(cases):
        d, path = dirs[case.id]
        out[case.id] = (d, path, runs[2 * i], runs[2 * i + 1], snaps[case.id], snapshot(d))
    return out


@pytest.mark.parametrize("case", params(TARGET_CASES, TARGET_SAMPLE))
def test_target_meets_the_contract(target_runs, case):
    d, path, validate, compiled, before, after = target_runs[case.id]
    assert validate.rc is not None and validate.rc >= 0, f"validate {case.id}: rc {validate.rc} {validate.stderr}"
    # validate prints every problem on stdout and exits 2; its stderr stays empty unless it cannot even start
    assert validate.rc in case.expect, f"validate {case.id}: exit {validate.rc}: {validate.stdout}{validate.stderr}"
    assert "Traceback" not in validate.stdout + validate.stderr and "\x1b" not in validate.stdout
    if validate.rc == 2 and validate.stderr.strip():
        assert_refusal_line(validate, case.message, f"validate {case.id}")
    elif validate.rc == 2:
        assert validate.stdout.strip(), f"validate {case.id}: exit 2 without naming a problem"
        assert re.search(case.message, validate.stdout, re.IGNORECASE), \
            f"validate {case.id}: {validate.stdout!r} does not match /{case.message}/"
    assert_contract(compiled, case.expect, case.message, f"compile --target {case.id}")
    assert_folder_effects(before, after, compiled.rc, f"compile --target {case.id}")
    assert validate.rc == compiled.rc, f"{case.id}: validate says {validate.rc}, compile {compiled.rc}"


REAL_PROCESS_TARGETS = ("extends_cycle", "deep_tables", "invalid_utf8", "nan")


@pytest.mark.parametrize("case_id", [pytest.param(c, marks=() if i == 0 else pytest.mark.slow)
                                     for i, c in enumerate(REAL_PROCESS_TARGETS)])
def test_target_contract_through_real_processes(tmp_path, case_id):
    """The same contract through ``python -m acompile`` for a few target cases (the driver is not the CLI)."""
    model = tmp_path / "m.onnx"
    model.write_bytes(bi.mlp_model().SerializeToString())
    (case,) = [c for c in TARGET_CASES if c.id == case_id]
    d = new_case_dir(tmp_path, case.id, None)
    path = case.build(d / "in")
    before = snapshot(d)
    run = run_cli(["compile", str(model), "-t", str(path), "-o", "OUT"], d)
    assert_contract(run, case.expect, case.message, f"process compile --target {case.id}")
    assert_folder_effects(before, snapshot(d), run.rc, case.id)


# ---------------------------------------------------------------------------
# simulator cases
# ---------------------------------------------------------------------------

SIM_CASES = bi.sim_cases()
SIM_SAMPLE = sampled(SIM_CASES, 6)


@pytest.fixture(scope="module")
def sim_runs(request, tmp_path_factory, baselines):
    cases = SIM_CASES if full_run(request) else SIM_SAMPLE
    base, other = baselines
    root = tmp_path_factory.mktemp("sim")
    jobs, info = [], {}
    for case in cases:
        d = new_case_dir(root, case.id, None)
        out, x = case.build(d / "in", base, other)
        info[case.id] = (d, out, x, snapshot(d))
        argv = ["simulate", str(out), "-i", str(x), "--mode", case.mode, "-r", "result.npz", "-q",
                *[a.replace("{IN}", str(d / "in")) for a in case.args]]
        jobs.append(job(argv, d))
        dev = out / "device.acdev" if out.is_dir() else out
        jobs.append(job(["inspect", str(dev)], d))
    runs = run_many(jobs, tmp_path_factory.mktemp("scapture"))
    return {c.id: (*info[c.id], runs[2 * i], runs[2 * i + 1], snapshot(info[c.id][0]))
            for i, c in enumerate(cases)}


@pytest.mark.parametrize("case", params(SIM_CASES, SIM_SAMPLE))
def test_simulate_meets_the_contract(sim_runs, case):
    d, out, x, before, sim, inspect, after = sim_runs[case.id]
    what = f"simulate {case.id} ({case.mode})"
    assert_contract(sim, case.expect, case.message, what)
    assert_folder_effects(before, after, sim.rc, what, out_rel="result.npz")
    if sim.rc == 0:
        with np.load(d / "result.npz") as z:
            y = z["output.npy"] if "output.npy" in z.files else z["output"]
        assert y.shape[-1] == 10
        if case.nan_output:
            assert np.isnan(y).all(), f"{what}: NaN inputs should give NaN outputs"
        elif x.suffix == ".npy" and np.load(x).size:
            assert np.isfinite(y).all(), f"{what}: finite inputs gave non-finite outputs"
    assert_contract(inspect, frozenset({0, 2}), "", f"inspect {case.id}")


REAL_PROCESS_SIMS = ("nan_input_quantized", "nan_input_ideal", "device_truncated", "program_json_deep",
                     "program_from_other_compile")


@pytest.mark.parametrize("case_id", [pytest.param(c, marks=() if i == 0 else pytest.mark.slow)
                                     for i, c in enumerate(REAL_PROCESS_SIMS)])
def test_simulate_contract_through_real_processes(tmp_path, baselines, case_id):
    base, other = baselines
    (case,) = [c for c in SIM_CASES if c.id == case_id]
    d = new_case_dir(tmp_path, case.id, None)
    out, x = case.build(d / "in", base, other)
    before = snapshot(d)
    run = run_cli(["simulate", str(out), "-i", str(x), "--mode", case.mode, "-r", "r.npz"], d)
    what = f"process simulate {case.id}"
    assert_contract(run, case.expect, case.message, what)
    assert_folder_effects(before, snapshot(d), run.rc, what, out_rel="r.npz")
    if case.nan_output:
        with np.load(d / "r.npz") as z:
            assert np.isnan(z[z.files[0]]).all()


@pytest.mark.slow
def test_run_command_leaves_no_temporary_folder(tmp_path):
    """``run`` compiles into a temporary folder: removed on success and on failure."""
    d = new_case_dir(tmp_path, "run", None)
    model = d / "in" / "m.onnx"
    model.write_bytes(bi.mlp_model().SerializeToString())
    np.save(d / "in" / "x.npy", bi.good_input())
    np.save(d / "in" / "bad.npy", np.zeros((2, 3), np.float32))
    jobs = [(["run", str(model), "-t", "isaac", "-i", str(d / "in" / "x.npy"), "-q"], {0}),
            (["run", str(model), "-t", "isaac", "-i", str(d / "in" / "bad.npy")], {2})]
    for args, expect in jobs:
        run = run_cli(args, d, env=child_env(d))
        assert_contract(run, frozenset(expect), r"shape" if expect == {2} else "", f"run {expect}")
        assert not leftovers(d / "tmp"), f"run left {leftovers(d / 'tmp')} in TMPDIR"
