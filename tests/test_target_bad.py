"""Bad target files: each is written to tmp_path and must give its one-line message.

Every case checks both entry points: ``validate_file`` (every problem, never
raises) and ``load_target`` (InvalidTargetError, exit code 2, one line).
"""

from __future__ import annotations

import pytest

from acompile.errors import EXIT_BAD_INPUT, InvalidTargetError
from acompile.target import MAX_FILE_BYTES, load_target, validate_file

HEAD = 'schema_version = 1\nname = "t"\nextends = "isaac"\n'

# A complete target that extends nothing, for the cases about required fields.
STANDALONE = """schema_version = 1
name = "solo"
[precision]
weight_bits = 8
input_bits = 8
[crossbar]
rows = 64
cols = 64
cell_bits = 2
signed_weights = "differential"
read_latency_ns = 10.0
read_energy_pj = 1.0
[dac]
bits = 1
energy_pj = 0.1
[adc]
bits = 8
columns_per_adc = 8
energy_pj = 1.0
conversion_ns = 1.0
[shift_add]
energy_pj = 0.01
[organisation]
crossbars_per_core = 4
cores_per_tile = 4
tiles_per_chip = 4
[digital]
energy_pj = 0.1
latency_ns = 1.0
lanes_per_tile = 4
[buffer]
size_kb = 16.0
energy_per_byte_pj = 0.5
[network]
energy_per_byte_hop_pj = 0.5
hop_latency_ns = 1.0
bytes_per_ns = 8.0
[chip]
io_energy_per_byte_pj = 2.0
"""
STANDALONE_OK = STANDALONE + "[clock]\nfrequency_mhz = 1000.0\n"

# (id, files {name: text or bytes}, file to check, expected part of the one line)
CASES = [
    ("unknown-key", {"t.toml": HEAD + "[adc]\nbitz = 8\n"}, "t.toml",
     "t.toml:5: adc.bitz: unknown field (did you mean 'adc.bits'?)"),
    ("unknown-table", {"t.toml": HEAD + "[crosbar]\nrows = 64\n"}, "t.toml",
     "crosbar: unknown field (did you mean 'crossbar'?)"),
    ("american-spelling", {"t.toml": HEAD + "[organization]\ntiles_per_chip = 2\n"}, "t.toml",
     "organization: unknown field (did you mean 'organisation'?)"),
    ("key-in-wrong-table", {"t.toml": HEAD + "[adc]\nrows = 64\n"}, "t.toml",
     "adc.rows: unknown field (did you mean 'crossbar.rows'?)"),
    ("bool-is-not-int", {"t.toml": HEAD + "[adc]\nbits = true\n"}, "t.toml",
     "adc.bits: expected an integer in 1..16, found the boolean true"),
    ("float-for-int", {"t.toml": HEAD + "[adc]\nbits = 8.0\n"}, "t.toml",
     "found the number 8.0 (write 8 without the decimal point)"),
    ("quoted-number", {"t.toml": HEAD + "[crossbar]\nrows = \"64\"\n"}, "t.toml",
     'crossbar.rows: expected an integer in 2..8192, found the string "64" (write the number without quotes)'),
    ("adc-0-bits", {"t.toml": HEAD + "[adc]\nbits = 0\n"}, "t.toml",
     "adc.bits: expected an integer in 1..16, found 0"),
    ("adc-40-bits", {"t.toml": HEAD + "[adc]\nbits = 40\n"}, "t.toml",
     "adc.bits: expected an integer in 1..16, found 40"),
    ("nan", {"t.toml": HEAD + "[crossbar]\nread_energy_pj = nan\n"}, "t.toml",
     "crossbar.read_energy_pj: expected a finite number in [0, 1e+07], found nan"),
    ("inf", {"t.toml": HEAD + "[crossbar]\nread_latency_ns = inf\n"}, "t.toml",
     "crossbar.read_latency_ns: expected a finite number in (0, 1e+06], found inf"),
    ("zero-rows", {"t.toml": HEAD + "[crossbar]\nrows = 0\n"}, "t.toml",
     "crossbar.rows: expected an integer in 2..8192, found 0"),
    ("zero-tiles", {"t.toml": HEAD + "[organisation]\ntiles_per_chip = 0\n"}, "t.toml",
     "organisation.tiles_per_chip: expected an integer in 1..1000000, found 0"),
    ("negative-energy", {"t.toml": HEAD + "[adc]\nenergy_pj = -1.0\n"}, "t.toml",
     "adc.energy_pj: expected a number in [0, 1e+07] (pJ), found -1.0"),
    ("zero-latency", {"t.toml": HEAD + "[adc]\nconversion_ns = 0\n"}, "t.toml",
     "adc.conversion_ns: expected a number in (0, 1e+06] (ns), found 0"),
    ("enum-typo", {"t.toml": HEAD + "[crossbar]\nsigned_weights = \"diferential\"\n"}, "t.toml",
     "expected one of 'differential', 'offset', 'flipped', found \"diferential\" (did you mean 'differential'?)"),
    ("enum-wrong-type", {"t.toml": HEAD + "[adc]\nrange = 5\n"}, "t.toml",
     "adc.range: expected one of 'worst_case', 'calibrated', found the integer 5"),
    ("adc-serves-too-many-columns", {"t.toml": HEAD + "[adc]\ncolumns_per_adc = 256\n"}, "t.toml",
     "adc.columns_per_adc: expected at most crossbar.cols = 128, found 256"),
    ("g-min-above-g-max", {"t.toml": HEAD + "[crossbar]\ng_min_us = 600.0\n"}, "t.toml",
     "crossbar.g_min_us: expected less than crossbar.g_max_us = 500.0, found 600.0"),
    ("percentile-low", {"t.toml": HEAD + "[adc]\nrange = \"calibrated\"\npercentile = 40.0\n"}, "t.toml",
     "adc.percentile: expected a number in (50, 100] (%), found 40.0"),
    ("percentile-high", {"t.toml": HEAD + "[precision]\ninput_percentile = 100.5\n"}, "t.toml",
     "precision.input_percentile: expected a number in (50, 100] (%), found 100.5"),
    ("percentile-without-calibration", {"t.toml": HEAD + "[adc]\npercentile = 99.0\n"}, "t.toml",
     "adc.percentile: is set but adc.range is \"worst_case\", which ignores it"),
    ("weight-bits-too-small-for-scheme",
     {"t.toml": HEAD + "[precision]\nweight_bits = 4\n[crossbar]\ncell_bits = 4\nsigned_weights = \"differential\"\n"},
     "t.toml", "4-bit differential weights have 3 magnitude bits, fewer than crossbar.cell_bits = 4"),
    ("weight-bits-1", {"t.toml": HEAD + "[precision]\nweight_bits = 1\n"}, "t.toml",
     "precision.weight_bits: expected an integer in 2..16, found 1"),
    ("extends-cycle", {"a.toml": 'schema_version = 1\nname = "a"\nextends = "b.toml"\n',
                       "b.toml": 'schema_version = 1\nname = "b"\nextends = "a.toml"\n'}, "a.toml",
     "extends cycle: a.toml -> b.toml -> a.toml"),
    ("extends-itself", {"a.toml": 'schema_version = 1\nname = "a"\nextends = "a.toml"\n'}, "a.toml",
     "a.toml:3: extends: extends cycle: a.toml -> a.toml"),
    ("extends-leaves-folder", {"sub/a.toml": 'schema_version = 1\nname = "a"\nextends = "../b.toml"\n',
                               "b.toml": STANDALONE_OK}, "sub/a.toml",
     'extends: "../b.toml" leaves the folder of this file'),
    ("extends-url", {"t.toml": 'schema_version = 1\nname = "t"\nextends = "https://example.com/t.toml"\n'},
     "t.toml", 'extends: expected a shipped target name or a relative path, found the URL '
     '"https://example.com/t.toml"'),
    ("extends-absolute", {"t.toml": 'schema_version = 1\nname = "t"\nextends = "/etc/passwd"\n'}, "t.toml",
     "extends: expected a path relative to this file's folder, found \"/etc/passwd\""),
    ("extends-unknown-name", {"t.toml": 'schema_version = 1\nname = "t"\nextends = "isac"\n'}, "t.toml",
     "extends: no target named \"isac\" (did you mean 'isaac'?)"),
    ("extends-missing-file", {"t.toml": 'schema_version = 1\nname = "t"\nextends = "base.toml"\n'}, "t.toml",
     "extends: no such file: \"base.toml\""),
    ("problem-in-parent", {"a.toml": 'schema_version = 1\nname = "a"\nextends = "b.toml"\n',
                           "b.toml": HEAD.replace('"t"', '"b"') + "[dac]\nbits = 99\n"}, "a.toml",
     "b.toml:5: dac.bits: expected an integer in 1..16, found 99"),
    ("not-utf8", {"t.toml": b'schema_version = 1\nname = "\xff"\n'}, "t.toml",
     "t.toml:2: not UTF-8 text: byte 0xff at offset 27 cannot be decoded (save the file as UTF-8)"),
    ("empty", {"t.toml": ""}, "t.toml", "t.toml: file is empty"),
    ("only-comments", {"t.toml": "\n  \n"}, "t.toml", "file is empty"),
    ("deep-nesting", {"t.toml": "x = " + "[" * 3000 + "]" * 3000 + "\n"}, "t.toml",
     "arrays or inline tables are nested too deeply"),
    ("deep-dotted-keys", {"t.toml": HEAD + "x." * 3000 + "y = 1\n"}, "t.toml",
     "t.toml: not a usable TOML file: tables are nested more than 16 deep"),
    ("deep-table-header", {"t.toml": HEAD + "[" + ".".join(["t"] * 3000) + "]\ny = 1\n"}, "t.toml",
     "t.toml: not a usable TOML file: tables are nested more than 16 deep"),
    ("too-large", {"t.toml": "#" * (MAX_FILE_BYTES + 10)}, "t.toml", "file is larger than 1024 KiB"),
    ("unknown-schema-version", {"t.toml": 'schema_version = 2\nname = "t"\nextends = "isaac"\n'}, "t.toml",
     "schema_version: version 2 is not supported (this acompile reads version 1)"),
    ("missing-schema-version", {"t.toml": 'name = "t"\nextends = "isaac"\n'}, "t.toml",
     "schema_version: missing required field (add it at the top of the file: every file states its own, "
     "whatever it extends)"),
    ("missing-name", {"t.toml": 'schema_version = 1\nextends = "isaac"\n'}, "t.toml",
     "name: missing required field (add it at the top of the file: every file states its own"),
    ("missing-required-field", {"t.toml": STANDALONE}, "t.toml",
     "clock.frequency_mhz: missing required field (add it under [clock])"),
    ("toml-syntax", {"t.toml": HEAD + "[crossbar]\nrows = = 3\n"}, "t.toml", "t.toml:5: not valid TOML: "),
    ("toml-duplicate-key", {"t.toml": HEAD + "[adc]\nbits = 8\nbits = 9\n"}, "t.toml", "not valid TOML: "),
    ("value-instead-of-table", {"t.toml": HEAD + "crossbar = 5\n"}, "t.toml",
     "crossbar: expected a table [crossbar], found the integer 5"),
    ("component-missing-power", {"t.toml": HEAD + "[core.components.foo]\narea_mm2 = 0.1\n"}, "t.toml",
     "t.toml:4: core.components.foo.power_mw: missing required field"),
    ("component-bad-name", {"t.toml": HEAD + "[core.components.\"9 lives\"]\npower_mw = 1.0\narea_mm2 = 0.1\n"},
     "t.toml", "core.components.9 lives: '9 lives' is not a usable name"),
    ("stuck-rates-add-up", {"t.toml": HEAD + "[noise]\nstuck_at_zero_rate = 0.7\nstuck_at_max_rate = 0.5\n"},
     "t.toml", "noise.stuck_at_max_rate: stuck-at rates add up to 1.2"),
    ("drift-without-t0", {"t.toml": HEAD + "[noise]\ndrift_nu_mean = 0.05\ndrift_time_s = 3600.0\n"}, "t.toml",
     "noise.drift_t0_s: expected a number > 0 when noise.drift_time_s is set, found 0"),
    ("drift-before-t0", {"t.toml": HEAD + "[noise]\ndrift_t0_s = 300.0\ndrift_time_s = 10.0\n"}, "t.toml",
     "noise.drift_time_s: expected at least noise.drift_t0_s = 300.0, found 10.0"),
    ("name-too-long", {"t.toml": 'schema_version = 1\nextends = "isaac"\nname = "' + "x" * 65 + '"\n'}, "t.toml",
     "name: expected a string of at most 64 characters, found a string of 65 characters"),
    ("date-value", {"t.toml": HEAD + "[crossbar]\nrows = 1979-05-27\n"}, "t.toml",
     "crossbar.rows: expected an integer in 2..8192, found a date"),
    ("array-value", {"t.toml": HEAD + "[crossbar]\nrows = [128]\n"}, "t.toml",
     "crossbar.rows: expected an integer in 2..8192, found an array"),
    ("router-shared-by-too-many", {"t.toml": HEAD + "[organisation]\ntiles_per_chip = 2\n"}, "t.toml",
     "network.tiles_per_router: expected at most organisation.tiles_per_chip = 2, found 4"),
    ("a-directory", {"t.toml/x.toml": STANDALONE_OK}, "t.toml", "t.toml: not a regular file"),
    ("no-such-file", {}, "absent.toml", "absent.toml: no such file"),
]


def _write(tmp_path, files: dict) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("files, check, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_target_gives_its_one_line_message(tmp_path, monkeypatch, files, check, expected):
    monkeypatch.chdir(tmp_path)          # messages show paths relative to the cwd
    _write(tmp_path, files)
    problems = validate_file(check)
    lines = [str(p) for p in problems]
    assert len(problems) == 1, lines
    assert expected in lines[0]
    assert "\n" not in lines[0]
    with pytest.raises(InvalidTargetError) as raised:
        load_target(check)
    assert expected.split(" (")[0] in str(raised.value)
    assert raised.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in str(raised.value)


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_every_problem_is_collected_and_load_says_how_many_more(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"t.toml": HEAD + "[adc]\nbits = 0\nbitz = 3\n[crossbar]\nrows = -1\n"})
    problems = validate_file("t.toml")
    assert [p.field for p in problems] == ["adc.bits", "adc.bitz", "crossbar.rows"]
    assert [p.line for p in problems] == [5, 6, 8]
    with pytest.raises(InvalidTargetError, match="and 2 more problems"):
        load_target("t.toml")


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + HEAD.encode())
    assert validate_file(path) == []
    assert load_target(path).name == "t"


def test_unknown_shipped_name_is_an_invalid_target_error():
    with pytest.raises(InvalidTargetError, match="no target named \"isaak\".*did you mean 'isaac'"):
        load_target("isaak")


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_never_raise_anything_but_problems(tmp_path, seed):
    import random

    rng = random.Random(seed)
    pieces = [b"[", b"]", b"=", b'"', b"\n", b"adc", b".", b"bits", b"1e999", b"\x00", b"\xc3", b"{", b"}",
              b"schema_version = 1\n", b"extends = ", b"nan", b"[[x]]", b"'", b"\\u"]
    data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    problems = validate_file(path)
    assert all("\n" not in str(p) for p in problems)
