"""A deterministic generator of hostile cases for everything that is not a model or a target.

tests/bad_inputs.py covers models, targets and simulator inputs; this one covers the
other things a user or a CI job hands to acompile:

* :func:`data_cases` -- data files (``--input``, ``--calibration``, ``--bind``, ``--labels``,
  ``--compare``): FIFOs, devices, symlinks to /dev/zero, folders, pickles, odd dtypes,
  npz archives whose members lie about their names and sizes, NaN and empty calibration;
* :func:`out_cases` -- OUT folders and the files in them (FIFOs, devices, symlinks,
  oversized headers, a folder of the user's) and the ``-r``/``-o`` destinations;
* :func:`value_cases` -- command-line values at and past their bounds;
* :func:`stream_cases` -- stdout/stderr closed or unable to encode UTF-8;
* :func:`mutation_cases` -- program.json and the device header mutated field by field
  (the fields come from acompile/backends/schemas.py), with the checksums recomputed
  so that every mutation gets past them; :func:`fuzz_out` does the same at random.

Every case builds its files in a folder it is given (which already holds ``in/model.onnx``,
``in/x.npy`` and a previous compile in ``OUT``) and returns the command line. ``expect``
are the allowed exit codes, ``message`` a regular expression the one-line error must match.
Used by tests/test_hostile_files.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import bad_inputs as bi
from acompile.backends import schemas
from acompile.data_schema import Map, Opt, Seq

BAD = frozenset({2})
REFUSED = frozenset({1, 2})
OK = frozenset({0})
ANY_CLEAN = frozenset({0, 1, 2})        # legal however odd, or refused: never 3, never a hang

SIM = ["simulate", "OUT", "-i", "in/x.npy"]
SIM_Q = SIM + ["--mode", "quantized"]
COMPILE = ["compile", "in/model.onnx", "-t", "isaac", "-o", "NEW", "-q"]


@dataclass(frozen=True)
class FileCase:
    """``build(folder) -> argv`` (run in ``folder``); ``env`` is added to the environment."""
    id: str
    build: Callable[[Path], list[str]]
    expect: frozenset = BAD
    message: str = ""
    env: dict = field(default_factory=dict)
    stdout_closed: bool = False
    stderr_closed: bool = False
    out_changes: bool = False           # a successful run may write NEW/ or a result file
    report_on_stdout: bool = False      # ``targets validate`` prints its problems as its output


# ---------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------

def prepare(folder: Path, baseline: Path) -> None:
    """The files every case starts from: in/model.onnx, in/x.npy, in/y.npy (labels) and OUT."""
    import shutil
    (folder / "in").mkdir(parents=True, exist_ok=True)
    (folder / "in" / "model.onnx").write_bytes(bi.mlp_model().SerializeToString())
    np.save(folder / "in" / "x.npy", bi.good_input())
    np.save(folder / "in" / "y.npy", np.array([1, 2, 3], np.int64))
    if baseline is not None and not (folder / "OUT").exists():
        shutil.copytree(baseline, folder / "OUT")


def _fifo(rel: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        p = folder / rel
        if p.exists() or p.is_symlink():
            p.unlink()
        os.mkfifo(p)
        return p
    return make


def _link(rel: str, to: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        p = folder / rel
        if p.exists() or p.is_symlink():
            p.unlink()
        p.symlink_to(to)
        return p
    return make


def _write(rel: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        p = folder / rel
        p.write_bytes(data() if callable(data) else data)
        return p
    return make


def _save(rel: str, array) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        p = folder / rel
        with open(p, "wb") as f:
            np.save(f, array, allow_pickle=True)
        return p
    return make


def _savez(rel: str, arrays: dict) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        p = folder / rel
        np.savez(p, **arrays)
        return p
    return make


def _with(*makers, argv: list[str]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        for make in makers:
            make(folder)
        return list(argv)
    return build


def npz_bytes(members: dict[str, bytes], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def npy_header(descr: str, shape: str, fortran: bool = False, body: bytes = b"") -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


def zeros_npz(name: str, mib: int) -> bytes:
    """An .npz of one member ``name`` holding ``mib`` MiB of zeros: small on disk (deflated)."""
    return npz_bytes({name: npy_header("'<f4'", f"({mib * 262144},)", body=bytes(mib * 1024**2))})


# ---------------------------------------------------------------------------
# data files
# ---------------------------------------------------------------------------

def data_cases() -> list[FileCase]:
    x = bi.good_input()
    sim_x = lambda rel: SIM[:3] + [rel]
    cases = []
    # the file itself is not a regular file: every data option, never a hang
    for opt, argv in (("input", lambda p: SIM[:3] + [p]),
                      ("calibration", lambda p: COMPILE + ["--calibration", p]),
                      ("bind", lambda p: COMPILE + ["--bind", p]),
                      ("labels", lambda p: SIM + ["--labels", p]),
                      ("compare", lambda p: SIM + ["--compare", p])):
        cases += [
            FileCase(f"{opt}_fifo", _with(_fifo("in/d.npy"), argv=argv("in/d.npy")), BAD, r"FIFO|regular"),
            FileCase(f"{opt}_dev_zero", _with(_link("in/d.npy", "/dev/zero"), argv=argv("in/d.npy")), BAD,
                     r"device|regular"),
            FileCase(f"{opt}_folder", lambda f, a=argv: (os.mkdir(f / "in" / "d.npy"), a("in/d.npy"))[1], BAD,
                     r"folder|directory|regular"),
            FileCase(f"{opt}_missing", lambda f, a=argv: a("in/none.npy"), BAD, r"not found|no such"),
            FileCase(f"{opt}_fifo_symlink", _with(_fifo("in/p"), _link("in/d.npy", "p"), argv=argv("in/d.npy")),
                     BAD, r"FIFO|regular"),
        ]
    cases += [
        # npz members that lie: names checked before anything is decompressed
        FileCase("npz_unexpected_big_members",
                 _with(_write("in/d.npz", lambda: npz_bytes({"a.npy": npy_header("'<f4'", "(16777216,)",
                                                                                  body=bytes(64 * 1024**2)),
                                                             "b.npy": b"junk"})), argv=sim_x("in/d.npz")),
                 BAD, r"unexpected name|limit"),
        FileCase("npz_member_over_tensor_limit", _with(_write("in/d.npz", lambda: zeros_npz("input.npy", 8)),
                                                       argv=sim_x("in/d.npz")),
                 BAD, r"limit|MAX_TENSOR", env={"ACOMPILE_MAX_TENSOR_MB": "1"}),
        FileCase("npz_over_data_limit", _with(_write("in/d.npz", lambda: zeros_npz("input.npy", 8)),
                                              argv=sim_x("in/d.npz")),
                 BAD, r"limit|MAX_DATA", env={"ACOMPILE_MAX_DATA_MB": "1"}),
        FileCase("npz_not_npy_member", _with(_write("in/d.npz", npz_bytes({"input.txt": b"hello"})),
                                             argv=sim_x("in/d.npz")), BAD, r"not an \.npy"),
        FileCase("npz_duplicate_member", _with(_write("in/d.npz", lambda: _dup_npz(x)), argv=sim_x("in/d.npz")),
                 BAD, r"twice|duplicate"),
        FileCase("npz_header_declares_more", _with(_write("in/d.npz", npz_bytes({"input.npy": npy_header(
            "'<f4'", "(3, 16000000)", body=b"\0" * 192)})), argv=sim_x("in/d.npz")), BAD, r"truncated"),
        FileCase("npz_bad_zip", _with(_write("in/d.npz", b"PK\x03\x04" + b"\0" * 100), argv=sim_x("in/d.npz")),
                 BAD, r"npz|zip"),
        FileCase("npy_object_pickle", _with(_save("in/d.npy", np.array([{"a": 1}], dtype=object)),
                                            argv=sim_x("in/d.npy")), BAD, r"dtype|pickle"),
        FileCase("npy_header_huge_shape", _with(_write("in/d.npy", npy_header("'<f4'", "(4611686018427387904, 16)")),
                                                argv=sim_x("in/d.npy")), BAD, r"limit|GiB"),
        FileCase("npy_negative_shape", _with(_write("in/d.npy", npy_header("'<f4'", "(-3, 16)")),
                                             argv=sim_x("in/d.npy")), BAD, r"header|shape"),
        FileCase("npy_header_not_dict", _with(_write("in/d.npy", npy_header("'<f4'", "(3, 16)")[:10] + b"[1]" +
                                                     b" " * 50 + b"\n"), argv=sim_x("in/d.npy")), BAD, r"header"),
        FileCase("npy_version_9", _with(_write("in/d.npy", b"\x93NUMPY\x09\x00" + b"\0" * 100),
                                        argv=sim_x("in/d.npy")), BAD, r"header|version"),
        FileCase("npy_fortran_order_ok", _with(_save("in/d.npy", np.asfortranarray(x)), argv=sim_x("in/d.npy")), OK),
        FileCase("npy_big_endian_ok", _with(_save("in/d.npy", x.astype(">f4")), argv=sim_x("in/d.npy")),
                 frozenset({0, 2})),
        FileCase("empty_data_file", _with(_write("in/d.npy", b""), argv=sim_x("in/d.npy")), BAD, r"neither|npy"),
        # calibration: NaN, empty, wrong name
        FileCase("calibration_nan", _with(_save("in/c.npy", np.full((4, 16), np.nan, np.float32)),
                                          argv=COMPILE + ["--calibration", "in/c.npy"]), BAD, r"NaN"),
        FileCase("calibration_inf", _with(_save("in/c.npy", np.full((4, 16), np.inf, np.float32)),
                                          argv=COMPILE + ["--calibration", "in/c.npy"]), BAD, r"infinity|NaN"),
        FileCase("calibration_empty", _with(_save("in/c.npy", np.zeros((0, 16), np.float32)),
                                            argv=COMPILE + ["--calibration", "in/c.npy"]), BAD, r"empty"),
        FileCase("calibration_wrong_name", _with(_savez("in/c.npz", {"other": x}),
                                                 argv=COMPILE + ["--calibration", "in/c.npz"]), BAD, r"unexpected"),
        # --bind with dtypes no graph input has
        *[FileCase(f"bind_dtype_{name}", _with(_savez("in/b.npz", {"W1": arr}), argv=COMPILE + ["--bind", "in/b.npz"]),
                   BAD, r"dtype")
          for name, arr in (("datetime", np.array(["2020-01-01"] * 4, "datetime64[D]")),
                            ("structured", np.zeros(4, [("a", "<i4"), ("b", "<f4")])),
                            ("bytes", np.array([b"ab"] * 4)),
                            ("complex", np.zeros(4, np.complex64)), ("timedelta", np.zeros(4, "m8[s]")))],
        # text is a dtype (string inputs): refused here because W1 is no graph input
        FileCase("bind_unicode", _with(_savez("in/b.npz", {"W1": np.array(["ab"] * 4)}), argv=COMPILE + ["--bind", "in/b.npz"]),
                 BAD, r"not a graph input"),
        # --labels: one integer per input row, an .npy
        FileCase("labels_npz", _with(_savez("in/l.npz", {"y": np.array([1, 2, 3])}), argv=SIM + ["--labels", "in/l.npz"]),
                 BAD, r"npz|\.npy"),
        FileCase("labels_float", _with(_save("in/l.npy", np.array([1.0, 2.0, 3.0])), argv=SIM + ["--labels", "in/l.npy"]),
                 BAD, r"integer"),
        FileCase("labels_strings", _with(_save("in/l.npy", np.array(["a", "b", "c"])),
                                         argv=SIM + ["--labels", "in/l.npy"]), BAD, r"dtype|integer"),
        FileCase("labels_wrong_length", _with(_save("in/l.npy", np.array([1, 2])), argv=SIM + ["--labels", "in/l.npy"]),
                 BAD, r"labels"),
        FileCase("labels_ok", lambda f: SIM + ["--labels", "in/y.npy"], OK),
    ]
    return cases


def _dup_npz(x) -> bytes:
    buf = io.BytesIO()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("input.npy", npy_bytes(x))
            z.writestr("input.npy", npy_bytes(x))
    return buf.getvalue()


# ---------------------------------------------------------------------------
# OUT folders, their files, and output destinations
# ---------------------------------------------------------------------------

def _big_header_device(folder: Path) -> Path:
    """device.acdev whose header.json is 64 MiB of spaces around the real header (small on disk)."""
    p = folder / "OUT" / "device.acdev"
    with zipfile.ZipFile(p) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    entries["header.json"] = b" " * (64 * 1024**2) + entries["header.json"]
    p.write_bytes(npz_bytes(entries))
    return p


def out_cases() -> list[FileCase]:
    cases = []
    for name in ("program.json", "program.npz", "device.acdev"):
        stem = name.replace(".", "_")
        for mode, argv in (("ideal", SIM), ("quantized", SIM_Q)):
            cases += [
                FileCase(f"out_{stem}_fifo_{mode}", _with(_fifo(f"OUT/{name}"), argv=argv), REFUSED, r"FIFO|regular"),
                FileCase(f"out_{stem}_dev_zero_{mode}", _with(_link(f"OUT/{name}", "/dev/zero"), argv=argv), REFUSED,
                         r"device|regular"),
            ]
        cases.append(FileCase(f"out_{stem}_folder", lambda f, n=name: (os.remove(f / "OUT" / n),
                                                                        os.mkdir(f / "OUT" / n), SIM_Q)[2],
                              REFUSED, r"folder|directory|regular|missing"))
    cases += [
        FileCase("targets_list_with_a_fifo_toml", lambda f: (os.mkfifo(f / "x.toml"), ["targets", "list"])[1], OK),
        FileCase("inspect_fifo", _with(_fifo("in/d.acdev"), argv=["inspect", "in/d.acdev"]), BAD, r"FIFO"),
        FileCase("inspect_dev_zero", _with(_link("in/d.acdev", "/dev/zero"), argv=["inspect", "in/d.acdev"]), BAD,
                 r"device"),
        FileCase("inspect_huge_header", lambda f: (_big_header_device(f), ["inspect", "OUT/device.acdev"])[1], BAD,
                 r"limit|MAX_JSON", env={"ACOMPILE_MAX_JSON_MB": "16"}),
        FileCase("device_huge_header", lambda f: (_big_header_device(f), SIM_Q)[1], BAD, r"limit|MAX_JSON",
                 env={"ACOMPILE_MAX_JSON_MB": "16"}),
        FileCase("device_over_device_limit", lambda f: SIM_Q, BAD, r"limit|MAX_DEVICE",
                 env={"ACOMPILE_MAX_DEVICE_MB": "0.001"}),
        FileCase("program_json_over_json_limit", lambda f: SIM, BAD, r"limit|MAX_JSON",
                 env={"ACOMPILE_MAX_JSON_MB": "0.001"}),
        # OUT of compile: never replaced unless it is acompile's own
        FileCase("compile_out_only_user_report_md",
                 lambda f: ((f / "NEW").mkdir(), (f / "NEW" / "report.md").write_text("mine"), COMPILE)[2],
                 BAD, r"did not write"),
        FileCase("compile_out_holds_fifo_named_ours",
                 lambda f: ((f / "NEW").mkdir(), os.mkfifo(f / "NEW" / "program.json"), COMPILE)[2],
                 BAD, r"did not write"),
        FileCase("compile_out_holds_symlink_named_ours",
                 lambda f: ((f / "NEW").mkdir(), (f / "NEW" / "report.json").symlink_to("/dev/null"), COMPILE)[2],
                 BAD, r"did not write"),
        FileCase("compile_out_is_fifo", lambda f: (os.mkfifo(f / "NEW"), COMPILE)[1], BAD, r"not a folder"),
        FileCase("compile_out_is_symlink_to_dev_null", lambda f: ((f / "NEW").symlink_to("/dev/null"), COMPILE)[1],
                 BAD, r"not a folder"),
        FileCase("compile_out_is_file", lambda f: ((f / "NEW").write_text("mine"), COMPILE)[1], BAD, r"not a folder"),
        FileCase("compile_out_previous_ok", lambda f: ["compile", "in/model.onnx", "-t", "isaac", "-o", "OUT", "-q"],
                 OK, out_changes=True),
        # -r / -o destinations: only ever a regular file is replaced
        *[FileCase(f"result_{tag}", lambda f, d=dest, mk=mk: (mk(f), SIM + ["-r", d])[1], BAD,
                   r"directory|regular|folder")
          for tag, dest, mk in (("dot", ".", lambda f: None), ("root", "/", lambda f: None),
                                ("dev_null", "/dev/null", lambda f: None),
                                ("fifo", "in/r.npz", _fifo("in/r.npz")),
                                ("symlink_dev_null", "in/r.npz", _link("in/r.npz", "/dev/null")))],
        *[FileCase(f"check_output_{tag}", lambda f, d=dest, mk=mk: (mk(f), ["check", "in/model.onnx", "-t", "isaac",
                                                                          "-o", d, "-q"])[1],
                   REFUSED, r"directory|regular|folder")
          for tag, dest, mk in (("dev_null", "/dev/null", lambda f: None), ("fifo", "in/c.txt", _fifo("in/c.txt")),
                                ("dot", ".", lambda f: None))],
    ]
    return cases


# ---------------------------------------------------------------------------
# command-line values
# ---------------------------------------------------------------------------

def value_cases() -> list[FileCase]:
    cases = []
    for flag, values in (("--seed", ["-1", str(2**64), "1e3", "0x10", "9" * 5000, ""]),
                         ("--batch", ["0", "-1", str(10**35), "1.5", "9" * 5000])):
        for i, v in enumerate(values):
            cases.append(FileCase(f"compile{flag[1:]}_{i}", lambda f, fl=flag, v=v: COMPILE + [fl, v], BAD,
                                  r"expected an integer|argument"))
    cases += [
        FileCase("simulate_seed_negative", lambda f: SIM + ["--seed", "-1"], BAD, r"integer"),
        FileCase("simulate_seed_huge", lambda f: SIM + ["--seed", str(10**30)], BAD, r"integer"),
        FileCase("compile_seed_max_ok", lambda f: COMPILE + ["--seed", str(2**63 - 1)], OK, out_changes=True),
        FileCase("format_equals_json", lambda f: ["compile", "in/none.onnx", "-t", "isaac", "--format=json"], BAD,
                 r'^\{"error"'),
        FileCase("toml_huge_int", lambda f: ((f / "in" / "t.toml").write_text(
            'schema_version = 1\nname = "t"\n[crossbar]\nrows = ' + "9" * 5000 + "\n"),
            ["targets", "validate", "in/t.toml"])[1], REFUSED, r"number|TOML|digits", report_on_stdout=True),
        FileCase("compile_toml_huge_int", lambda f: ((f / "in" / "t.toml").write_text(
            'schema_version = 1\nname = "t"\n[crossbar]\nrows = ' + "9" * 5000 + "\n"),
            ["compile", "in/model.onnx", "-t", "in/t.toml", "-o", "NEW"])[1], BAD, r"number|TOML"),
        FileCase("set_huge_int", lambda f: COMPILE + ["--set", "crossbar.rows=" + "9" * 5000], BAD,
                 r"number|TOML|crossbar"),
        FileCase("max_tensor_mb_nan", lambda f: COMPILE, BAD, r"not a number", env={"ACOMPILE_MAX_TENSOR_MB": "nan"}),
        FileCase("max_data_mb_negative", lambda f: SIM, BAD, r"positive", env={"ACOMPILE_MAX_DATA_MB": "-4"}),
        FileCase("max_crossbars_text", lambda f: COMPILE, BAD, r"not a number", env={"ACOMPILE_MAX_CROSSBARS": "x"}),
    ]
    return cases


def stream_cases() -> list[FileCase]:
    return [
        FileCase("stdout_closed", lambda f: ["compile", "in/model.onnx", "-t", "isaac", "-o", "NEW"], OK,
                 stdout_closed=True, out_changes=True),
        FileCase("stdout_stderr_closed", lambda f: ["compile", "in/model.onnx", "-t", "isaac", "-o", "NEW"], OK,
                 stdout_closed=True, stderr_closed=True, out_changes=True),
        FileCase("stdout_ascii", lambda f: ["compile", "in/model.onnx", "-t", "isaac", "-o", "NEW"], OK,
                 env={"PYTHONIOENCODING": "ascii"}, out_changes=True),
        FileCase("stdout_latin1_simulate", lambda f: SIM, OK, env={"PYTHONIOENCODING": "latin-1"}),
        FileCase("stdout_ascii_error", lambda f: ["compile", "in/none.onnx", "-t", "isaac"], BAD, r"not found",
                 env={"PYTHONIOENCODING": "ascii:strict"}),
        FileCase("stdout_closed_error", lambda f: ["compile", "in/none.onnx", "-t", "isaac"], BAD, r"not found",
                 stdout_closed=True),
    ]


# ---------------------------------------------------------------------------
# program.json / program.npz / device.acdev mutated field by field, checksums recomputed
# ---------------------------------------------------------------------------

HUGE = "__HUGE_INT__"           # replaced in the JSON text by a 5000-digit integer
MUTATIONS = {"delete": None, "null": None, "string": "x", "negative": -1, "big": 2**62, "huge_digits": HUGE,
             "empty_list": [], "float": 0.5, "bool": True}


def schema_paths(schema, prefix=()) -> list[tuple]:
    """Every field a schema names: dict keys, item 0 of a list, the first entry ("*") of a map."""
    out = []
    if isinstance(schema, dict):
        for key, sub in schema.items():
            path = prefix + (key.rstrip("?"),)
            out.append(path)
            out += schema_paths(sub, path)
    elif isinstance(schema, Seq):
        out += schema_paths(schema.inner, prefix + (0,))
    elif isinstance(schema, Map) and isinstance(schema.inner, dict):
        out += schema_paths(schema.inner, prefix + ("*",))
    elif isinstance(schema, Opt):
        out += schema_paths(schema.inner, prefix)
    return out


def _resolve(doc, path: tuple):
    """(container, key) of ``path`` in ``doc``, or None where the document has no such field."""
    node = doc
    for step in path[:-1]:
        if step == "*":
            if not isinstance(node, dict) or not node:
                return None
            step = sorted(node)[0]
        if isinstance(node, list):
            if not isinstance(step, int) or step >= len(node):
                return None
        elif not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    last = path[-1]
    if isinstance(node, dict) and (last in node or last == "*"):
        return node, (sorted(node)[0] if last == "*" and node else last)
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        return node, last
    return None


def mutate(doc, path: tuple, how: str) -> bool:
    """Apply the mutation ``how`` at ``path``; False where the document has no such field."""
    found = _resolve(doc, path)
    if found is None:
        return False
    container, key = found
    if how == "delete":
        if isinstance(container, list):
            container.pop(key)
        else:
            del container[key]
    else:
        container[key] = MUTATIONS[how]
    return True


def _dump(doc) -> bytes:
    text = json.dumps(doc, sort_keys=True, indent=2)
    return text.replace(json.dumps(HUGE), "9" * 5000).encode()


def read_out(out: Path) -> tuple[dict, dict, dict]:
    prog = json.loads((out / "program.json").read_text())
    with zipfile.ZipFile(out / "device.acdev") as z:
        entries = {n: z.read(n) for n in z.namelist()}
    return prog, json.loads(entries["header.json"]), entries


def write_out(out: Path, prog_bytes: bytes, header, entries: dict, fix_program_sha: bool = True) -> None:
    """program.json as given; the device header with ``program_sha256`` recomputed (unless told not to)."""
    (out / "program.json").write_bytes(prog_bytes)
    if isinstance(header, dict):
        if fix_program_sha and "program_sha256" in header:
            header["program_sha256"] = hashlib.sha256(prog_bytes).hexdigest()
        header = _dump(header)
    entries = {**entries, "header.json": header}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    (out / "device.acdev").write_bytes(buf.getvalue())


def _mutated(which: str, path: tuple, how: str):
    def build(folder: Path) -> list[str]:
        out = folder / "OUT"
        prog, header, entries = read_out(out)
        if which == "program":
            mutate(prog, path, how)
            write_out(out, _dump(prog), header, entries)
        else:
            prog_bytes = (out / "program.json").read_bytes()
            header["program_sha256"] = hashlib.sha256(prog_bytes).hexdigest()
            mutate(header, path, how)
            write_out(out, prog_bytes, header, entries, fix_program_sha=False)
        return SIM_Q
    return build


def _npz_member(data_for: Callable[[np.ndarray], bytes]):
    """program.npz with its first constant replaced; constants_index_sha256 and program_sha256 recomputed."""
    def build(folder: Path) -> list[str]:
        out = folder / "OUT"
        prog, header, entries = read_out(out)
        with zipfile.ZipFile(out / "program.npz") as z:
            members = {n: z.read(n) for n in z.namelist()}
        first = sorted(members)[0]
        members[first] = data_for(np.load(io.BytesIO(members[first])))
        (out / "program.npz").write_bytes(npz_bytes(members, compress=False))
        with zipfile.ZipFile(out / "program.npz") as z:     # the index: from the central directory to the end
            prog["constants_index_sha256"] = hashlib.sha256((out / "program.npz").read_bytes()[z.start_dir:]).hexdigest()
        write_out(out, _dump(prog), header, entries)
        return SIM
    return build


def mutation_cases() -> list[FileCase]:
    cases = []
    for which, schema in (("program", schemas.PROGRAM), ("device", schemas.HEADER)):
        for path in schema_paths(schema):
            for how in MUTATIONS:
                label = ".".join(str(p) for p in path)
                cases.append(FileCase(f"{which}:{label}:{how}", _mutated(which, path, how), ANY_CLEAN))
    cases += [
        FileCase("npz_constant_pickle", _npz_member(lambda a: npy_bytes(np.array([{"a": 1}], dtype=object))),
                 BAD, r"dtype|pickle"),
        FileCase("npz_constant_huge_shape", _npz_member(lambda a: npy_header("'<f4'", "(4611686018427387904,)")),
                 BAD, r"limit|GiB"),
        FileCase("npz_constant_truncated", _npz_member(lambda a: npy_bytes(a)[:-8]), BAD, r"truncated|corrupt|array"),
        FileCase("npz_constant_wrong_shape", _npz_member(lambda a: npy_bytes(np.zeros((2, 2), a.dtype))), ANY_CLEAN),
        FileCase("npz_constant_fortran", _npz_member(lambda a: npy_bytes(np.asfortranarray(a))), OK),
        FileCase("npz_constant_strings", _npz_member(lambda a: npy_bytes(np.array(["a"] * 3))), BAD,
                 r"is <U1\[3\] in program.npz, float32\[32, 16\] in program.json"),
        FileCase("levels_bin_edited", _levels_edited, BAD, r"checksum"),
        *[FileCase(f"layout_{name}", _layout_edited(entry, damage), expect, pattern)
          for name, entry, damage, expect, pattern in LAYOUT_DAMAGE],
        FileCase("device_header_not_utf8", _header_bytes(b"\xff\xfe{}"), BAD, r"UTF-8"),
        FileCase("device_header_deep_nesting", _header_bytes(b"[" * 100000 + b"]" * 100000), BAD, r"JSON|format"),
        FileCase("device_header_nan", _header_bytes(b'{"format": NaN}'), BAD, r"JSON|number"),
        FileCase("program_json_huge_float", lambda f: ((f / "OUT" / "program.json").write_bytes(
            (f / "OUT" / "program.json").read_bytes().replace(b'"batch": 1', b'"batch": 1e999', 1)), SIM)[1],
            BAD, r"range|number|batch"),
    ]
    return cases


def _header_bytes(data: bytes):
    def build(folder: Path) -> list[str]:
        out = folder / "OUT"
        _, _, entries = read_out(out)
        write_out(out, (out / "program.json").read_bytes(), data, entries)
        return SIM_Q
    return build


# device.acdev's layout tables edited: (case, entry, damage, expected exit codes, message)
LAYOUT_DAMAGE = [
    ("int32", "blocks.npy", lambda t: t.astype(np.int32), BAD, r"not int64"),
    ("a_column_less", "blocks.npy", lambda t: t[:, :-1], BAD, r"not int64"),
    ("transposed", "crossbars.npy", lambda t: np.ascontiguousarray(t.T), BAD, r"not int64|hold together"),
    ("floats", "crossbars.npy", lambda t: t.astype(np.float64), BAD, r"not int64"),
    ("negative", "blocks.npy", lambda t: t - 1, BAD, r"out of range"),
    ("huge", "blocks.npy", lambda t: t + (1 << 62), BAD, r"out of range"),
    ("no_such_layer", "blocks.npy", lambda t: np.where(np.arange(t.shape[1]) == 0, 10**6, t), BAD, r"does not exist"),
    ("no_such_crossbar", "blocks.npy", lambda t: np.where(np.arange(t.shape[1]) == 8, 10**6, t), BAD,
     r"does not exist"),
    ("a_block_less", "blocks.npy", lambda t: t[:-1], BAD, r"hold together"),
    ("a_block_twice", "blocks.npy", lambda t: np.concatenate([t, t[-1:]]), BAD, r"hold together"),
    ("a_crossbar_less", "crossbars.npy", lambda t: t[:-1], BAD, r"does not exist|hold together"),
    ("blocks_reversed", "blocks.npy", lambda t: t[::-1].copy(), ANY_CLEAN, ""),
    ("empty", "blocks.npy", lambda t: t[:0], BAD, r"hold together"),
    ("zero_d", "crossbars.npy", lambda t: np.array(5, np.int64), BAD, r"not int64"),
    ("row_offset_moved", "blocks.npy", lambda t: np.where(np.arange(t.shape[1]) == 9, t + 3, t), BAD,
     r"hold together"),
    ("offset_past_the_cells", "blocks.npy", lambda t: np.where(np.arange(t.shape[1]) == 11, t + 10**9, t), BAD,
     r"corrupt"),
]
# every column of each table, its first row's value one more: refused or, where the file still holds together
# (a crossbar's slot moved to a free one), read; never an internal error
LAYOUT_DAMAGE += [(f"{entry[:-4]}_{column}_plus_one", entry, lambda t, c=c: _plus_one(t, c), ANY_CLEAN, "")
                  for entry, columns in (("blocks.npy", 13), ("crossbars.npy", 7)) for c, column in
                  enumerate(("layer matrix row_block col_block row_start rows col_start cols crossbar row_offset "
                             "col_offset offset bytes" if columns == 13 else
                             "index chip tile core slot rows_used cols_used").split())]


def _plus_one(table: np.ndarray, column: int) -> np.ndarray:
    out = table.copy()
    out[0, column] += 1
    return out


def _layout_edited(entry: str, damage):
    def build(folder: Path) -> list[str]:
        out = folder / "OUT"
        _, header, entries = read_out(out)
        table = np.load(io.BytesIO(entries[entry]))
        write_out(out, (out / "program.json").read_bytes(), header, {**entries, entry: npy_bytes(damage(table))})
        return SIM_Q
    return build


def _levels_edited(folder: Path) -> list[str]:
    out = folder / "OUT"
    prog, header, entries = read_out(out)
    levels = bytearray(entries["levels.bin"])
    levels[0] ^= 0xFF
    write_out(out, (out / "program.json").read_bytes(), header, {**entries, "levels.bin": bytes(levels)})
    return SIM_Q


def fuzz_out(out: Path, rng: random.Random) -> str:
    """One random mutation of program.json or the device header in ``out`` (checksums recomputed); its name."""
    prog, header, entries = read_out(out)
    which = rng.choice(["program", "device"])
    doc = prog if which == "program" else header
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node[:4]):
                walk(v, path + (i,))
    walk(doc, ())
    path = rng.choice(paths[1:])
    how = rng.choice(list(MUTATIONS) + ["int_shift", "swap"])
    container, key = _resolve(doc, path)
    if how == "int_shift" and isinstance(container[key], int) and not isinstance(container[key], bool):
        container[key] += rng.choice([-2, -1, 1, 2, 1000, -1000, 2**31])
    elif how == "swap":
        other = _resolve(doc, rng.choice(paths[1:]))
        if other is not None:
            container[key] = json.loads(json.dumps(other[0][other[1]]))
    elif how in MUTATIONS:
        mutate(doc, path, how)
    if which == "program":
        write_out(out, _dump(prog), header, entries)
    else:
        write_out(out, (out / "program.json").read_bytes(), header, entries, fix_program_sha=False)
    return f"{which}:{'.'.join(map(str, path))}:{how}"


def all_cases() -> list[FileCase]:
    return data_cases() + out_cases() + value_cases() + stream_cases() + mutation_cases()
