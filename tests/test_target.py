"""Target files: shipped targets, summaries, typed sections, extends, generated docs, JSON Schema, CLI."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import typing
import json
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest

from acompile.cli.targets import cmd_diff, cmd_list, cmd_schema, cmd_show, cmd_validate
from acompile.errors import InvalidTargetError
from acompile.target import (
    FIELDS,
    Target,
    dumps_toml,
    json_schema,
    load_target,
    section_class,
    shipped_dir,
    shipped_targets,
    validate_file,
)
from acompile.target.schema import UNIT_SUFFIXES

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["ecram", "hermes", "isaac", "jia2020", "m1076", "prime", "puma"]


def _gen_target_docs():
    """scripts/gen_target_docs.py, imported by path: it is a script, not part of the package."""
    spec = importlib.util.spec_from_file_location("gen_target_docs", ROOT / "scripts" / "gen_target_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- shipped targets ---------------------------------------------------------

def test_shipped_targets_are_listed():
    assert shipped_targets() == SHIPPED
    assert shipped_dir() == ROOT / "targets"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_target_validates(name):
    assert validate_file(shipped_dir() / f"{name}.toml") == []
    target = load_target(name)
    assert target.name == name
    assert target.source == shipped_dir() / f"{name}.toml"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_number_in_a_shipped_target_has_a_comment(name):
    """Each line that sets a number says where it comes from (or why it is assumed)."""
    text = (shipped_dir() / f"{name}.toml").read_text(encoding="utf-8")
    bare = [line for line in text.splitlines()
            if re.match(r"^\s*[a-z_]+\s*=\s*[-0-9.]", line) and "#" not in line
            and not line.startswith("schema_version")]
    assert bare == []


def test_isaac_summary_reproduces_the_paper_within_one_percent():
    s = load_target("isaac").summary()
    assert s["tile_power_mw"] == pytest.approx(330.0, rel=0.01)
    assert s["tile_area_mm2"] == pytest.approx(0.372, rel=0.01)
    assert s["chip_power_w"] == pytest.approx(65.8, rel=0.01)
    assert s["chip_area_mm2"] == pytest.approx(85.4, rel=0.01)
    assert s["core_power_mw"] == pytest.approx(24.09, rel=0.01)     # the IMA row of the table
    assert s["core_area_mm2"] == pytest.approx(0.01312, rel=0.01)


def test_isaac_energies_are_power_times_time_per_event():
    t = load_target("isaac")
    read_cycle_ns = t["adc.columns_per_adc"] * t["adc.conversion_ns"]     # one ADC converts its 128 columns
    assert t["adc.energy_pj"] == pytest.approx(t["adc.power_mw"] * t["adc.conversion_ns"], rel=0.01)
    assert t["dac.energy_pj"] == pytest.approx(t["dac.power_mw"] * read_cycle_ns, rel=0.01)
    assert t["crossbar.read_energy_pj"] == pytest.approx(t["crossbar.power_mw"] * read_cycle_ns, rel=0.01)


def test_isaac_organisation_and_precision():
    t = load_target("isaac")
    assert (t["crossbar.rows"], t["crossbar.cols"], t["crossbar.cell_bits"]) == (128, 128, 2)
    assert (t["precision.weight_bits"], t["precision.input_bits"], t["dac.bits"], t["adc.bits"]) == (16, 16, 1, 8)
    assert t["adc.columns_per_adc"] == 128 and t["crossbar.signed_weights"] == "flipped"
    assert (t["organisation.crossbars_per_core"], t["organisation.cores_per_tile"],
            t["organisation.tiles_per_chip"]) == (8, 12, 168)


def test_other_shipped_precisions():
    puma, prime, hermes = load_target("puma"), load_target("prime"), load_target("hermes")
    assert (puma["precision.weight_bits"], puma["precision.input_bits"]) == (16, 16)
    assert (prime["precision.weight_bits"], prime["precision.input_bits"], prime["dac.bits"],
            prime["crossbar.cell_bits"]) == (8, 6, 3, 4)
    assert (hermes["precision.weight_bits"], hermes["precision.input_bits"]) == (8, 8)
    assert hermes["organisation.tiles_per_chip"] * hermes["organisation.cores_per_tile"] == 64
    assert (hermes["crossbar.rows"], hermes["crossbar.cols"], hermes["crossbar.device"]) == (256, 256, "PCM")
    assert hermes["noise.programming_sigma"] > 0 and hermes["noise.drift_nu_mean"] > 0


def test_peak_throughput_formula_on_isaac():
    s = load_target("isaac").summary()
    # 8 slices x 1 column (offset), 16 one-bit input cycles; the 100 ns read and the 128 x 0.78125 ns
    # conversions are pipelined (sample and hold), so a cycle is the slower of the two
    assert (s["slices"], s["columns_per_weight"], s["input_cycles"]) == (8, 8, 16)
    assert s["cycle_ns"] == pytest.approx(max(100, 128 * 0.78125))
    expected = 2 * 16128 * 128 * 128 / 8 / (16 * s["cycle_ns"]) / 1e3
    assert s["peak_tops"] == pytest.approx(expected)
    assert s["tops_per_w"] == pytest.approx(s["peak_tops"] / s["chip_power_w"])
    assert s["tops_per_mm2"] == pytest.approx(s["peak_tops"] / s["chip_area_mm2"])


def test_summary_without_area_reports_none():
    assert load_target("prime").summary()["tops_per_mm2"] is None


def test_contract_fields_resolve_in_every_shipped_target():
    """Every field the compiler core reads (marked contract in the schema) resolves in every shipped target."""
    paths = {f.path for f in FIELDS if f.contract and "*" not in f.path and "<" not in f.path}
    paths.discard("digital.ops")
    assert len(paths) >= 25
    for name in SHIPPED:
        target = load_target(name)
        for path in paths:
            target[path]    # raises KeyError if missing
        assert isinstance(target["digital.ops"], Mapping)


# --- the Target object -------------------------------------------------------

def test_target_is_immutable_and_data_is_a_copy():
    target = load_target("isaac")
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.name = "other"
    data = target.data
    data["adc"]["bits"] = 3
    assert target["adc.bits"] == 8
    with pytest.raises(TypeError):
        target["adc"]["bits"] = 3
    assert load_target("isaac") == target


def test_with_overrides_validates_the_change():
    isaac = load_target("isaac")
    six = isaac.with_overrides({"adc.bits": 6, "adc.power_mw": isaac.adc.power_mw,     # pinned: no scaling
                                "core.components.extra.power_mw": 1.0,
                                "core.components.extra.area_mm2": 0.0}, name="isaac-6")
    assert (six["adc.bits"], six.name, isaac["adc.bits"]) == (6, "isaac-6", 8)
    assert six.summary()["core_power_mw"] == pytest.approx(isaac.summary()["core_power_mw"] + 1.0)
    with pytest.raises(InvalidTargetError, match="overrides: adc.columns_per_adc: expected at most"):
        isaac.with_overrides({"adc.columns_per_adc": 256})
    with pytest.raises(InvalidTargetError, match="adc.bitz: unknown field"):
        isaac.with_overrides({"adc.bitz": 6})


def test_unknown_field_access_suggests_the_right_one():
    with pytest.raises(KeyError, match="did you mean 'adc.bits'"):
        load_target("isaac")["adc.bitz"]
    assert load_target("isaac").get("adc.bitz", 7) == 7


def test_digital_op_overrides_and_defaults():
    t = load_target("isaac")
    assert t.digital_op("MaxPool") == {"energy_pj": 0.4, "latency_ns": 1.0}     # latency from the default
    assert t.digital_op("Relu") == {"energy_pj": 0.26, "latency_ns": 1.0}


def test_load_target_accepts_paths_and_targets(tmp_path):
    t = load_target(str(shipped_dir() / "puma.toml"))
    assert load_target(t) is t
    assert load_target(shipped_dir() / "puma.toml") == t


def test_resolved_data_has_no_extends_and_records_the_chain():
    ecram = load_target("ecram")
    assert "extends" not in ecram.data
    assert [Path(p).name for p in ecram.chain] == ["ecram.toml", "isaac.toml"]


# --- typed sections ----------------------------------------------------------

def _typed_values(target: Target):
    """(path, typed value) of every field of every table, ``*`` expanded over the target's own entries."""
    def walk(obj, parts, done):
        if not parts:
            yield done, obj
            return
        head, rest = parts[0], parts[1:]
        if head == "*":
            for name, entry in obj.items():
                yield from walk(entry, rest, f"{done}.{name}")
        else:
            yield from walk(getattr(obj, head), rest, f"{done}.{head}" if done else head)

    for f in FIELDS:
        if "." in f.path:
            yield from ((f, path, value) for path, value in walk(target, f.path.split("."), ""))


@pytest.mark.parametrize("name", SHIPPED)
def test_typed_sections_follow_the_schema(name):
    target = load_target(name)
    seen = set()
    for f, path, value in _typed_values(target):
        seen.add(f.path)
        assert value == target[path], path
        if f.kind == "enum":
            assert isinstance(value, str) and value in f.choices, path
        else:
            assert type(value) is {"int": int, "float": float, "bool": bool, "str": str}[f.kind], path
    assert seen >= {f.path for f in FIELDS if "." in f.path and "*" not in f.path}


def test_typed_sections_are_generated_from_the_table():
    assert typing.get_type_hints(section_class("crossbar"))["rows"] is int
    assert typing.get_type_hints(section_class("adc"))["conversion_ns"] is float
    assert typing.get_type_hints(section_class("adc"))["range"] == typing.Literal["worst_case", "calibrated"]
    for f in FIELDS:
        if "." in f.path:
            table, key = f.path.rsplit(".", 1)
            assert typing.get_type_hints(section_class(table))[key] == f.python_type, f.path


def test_typed_sections_read_like_the_paths_and_are_immutable():
    t = load_target("isaac")
    assert (t.crossbar.rows, t.adc.bits, t.crossbar.signed_weights) == (128, 8, "flipped")
    assert t.crossbar.read_latency_ns == 100.0 and type(t.crossbar.read_latency_ns) is float
    assert t.digital.ops["MaxPool"].latency_ns == t.digital.latency_ns
    assert t.core.components["sample_hold"].spec == "8 x 128 sample & hold"
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.adc.bits = 6
    with pytest.raises(TypeError):
        t.core.components["new"] = t.core.components["sample_hold"]
    assert t.with_overrides({"adc.bits": 6}).adc.bits == 6
    two = t.with_overrides({"adc.conversion_ns": 2})       # TOML lets a float field be written as 2
    assert two["adc.conversion_ns"] == 2 and type(two.adc.conversion_ns) is float


# --- extends -----------------------------------------------------------------

def test_extends_deep_merges_tables_and_replaces_values(tmp_path):
    child = _write(tmp_path / "child.toml", """schema_version = 1
name = "child"
extends = "isaac"
[adc]
bits = 9
[core.components.input_register]
power_mw = 2.0
[core.components.sample_hold]
count = 0
[tile.components.extra]
power_mw = 1.0
area_mm2 = 0.001
""")
    isaac, t = load_target("isaac"), load_target(child)
    assert t["adc.bits"] == 9
    assert t["adc.columns_per_adc"] == isaac["adc.columns_per_adc"]          # sibling kept
    assert t["core.components.input_register.power_mw"] == 2.0
    assert t["core.components.input_register.area_mm2"] == 0.0021            # merged, not replaced
    assert t["published.tops_per_w"] == 0.0                                  # not inherited
    assert t["description"] == ""
    s, base = t.summary(), isaac.summary()
    core_delta = (2.0 - 1.24) - 0.01 + 8 * (t.adc.power_mw - isaac.adc.power_mw)    # 9-bit ADCs (scaling rule)
    assert s["core_power_mw"] == pytest.approx(base["core_power_mw"] + core_delta)
    assert s["tile_power_mw"] == pytest.approx(base["tile_power_mw"] + 12 * core_delta + 1.0)


def test_extends_relative_path_below_the_file(tmp_path):
    _write(tmp_path / "base" / "b.toml", 'schema_version = 1\nname = "b"\nextends = "isaac"\n[adc]\nbits = 6\n')
    a = _write(tmp_path / "a.toml", 'schema_version = 1\nname = "a"\nextends = "base/b.toml"\n')
    assert load_target(a)["adc.bits"] == 6


def test_extends_three_file_cycle_shows_the_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for me, parent in (("a", "b"), ("b", "c"), ("c", "a")):
        _write(tmp_path / f"{me}.toml", f'schema_version = 1\nname = "{me}"\nextends = "{parent}.toml"\n')
    problems = validate_file("a.toml")
    assert [str(p) for p in problems] == ["c.toml:3: extends: extends cycle: a.toml -> b.toml -> c.toml -> a.toml"]


def test_search_dirs_find_bare_names(tmp_path):
    _write(tmp_path / "mine.toml", 'schema_version = 1\nname = "mine"\nextends = "isaac"\n')
    assert load_target("mine", search_dirs=[tmp_path]).name == "mine"
    with pytest.raises(InvalidTargetError):
        load_target("mine")


# --- generated files ---------------------------------------------------------

def test_generated_files_are_up_to_date():
    for path, text in _gen_target_docs().generated_files().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name}: run python scripts/gen_target_docs.py"


def test_readme_documents_every_field():
    readme = (ROOT / "targets" / "README.md").read_text(encoding="utf-8")
    for f in FIELDS:
        assert f"`{f.path}`" in readme


def test_readme_example_target_is_valid(tmp_path):
    readme = (ROOT / "targets" / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", readme, re.S).group(1)
    path = _write(tmp_path / "mytarget.toml", example)
    assert validate_file(path) == []


def test_unit_is_in_every_numeric_key_name():
    for f in FIELDS:
        if f.unit and f.unit != "%":
            assert any(f.key.endswith(suffix) and unit == f.unit for suffix, unit in UNIT_SUFFIXES.items()), f.path


# --- JSON Schema -------------------------------------------------------------

def _check(schema: dict, value, path: str = "") -> list[str]:
    """The subset of JSON Schema the export uses, enough to check a target against it."""
    errors = []
    kind = schema.get("type")
    types = {"object": dict, "string": str, "boolean": bool, "array": list}
    if kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        return [f"{path}: not an integer"]
    if kind == "number" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        return [f"{path}: not a number"]
    if kind in types and not isinstance(value, types[kind]):
        return [f"{path}: not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: not in enum")
    for key, test in (("minimum", lambda v, b: v >= b), ("maximum", lambda v, b: v <= b),
                      ("exclusiveMinimum", lambda v, b: v > b), ("exclusiveMaximum", lambda v, b: v < b)):
        if key in schema and not test(value, schema[key]):
            errors.append(f"{path}: {key}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: required")
        for key, sub in value.items():
            if key in props:
                errors += _check(props[key], sub, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{key}: not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                if "propertyNames" in schema and not re.match(schema["propertyNames"]["pattern"], key):
                    errors.append(f"{path}.{key}: bad name")
                errors += _check(schema["additionalProperties"], sub, f"{path}.{key}")
        if "if" in schema and not all(k in value for k in schema["if"]["not"]["required"]):
            errors += _check(schema["then"], value, path)
    return errors


def test_json_schema_structure():
    schema = json.loads((ROOT / "targets" / "schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["schema_version", "name"]
    assert schema["properties"]["adc"]["properties"]["bits"] == {
        "description": "ADC resolution", "type": "integer", "minimum": 1, "maximum": 16}
    components = schema["properties"]["core"]["properties"]["components"]
    assert components["additionalProperties"]["properties"]["power_mw"]["type"] == "number"


@pytest.mark.parametrize("name", SHIPPED)
def test_json_schema_accepts_shipped_files_and_resolved_targets(name):
    schema = json_schema()
    raw = tomllib.loads((shipped_dir() / f"{name}.toml").read_text(encoding="utf-8"))
    assert _check(schema, raw) == []
    assert _check(schema, load_target(name).data) == []


def test_json_schema_rejects_what_the_validator_rejects():
    data = load_target("isaac").data
    data["adc"]["bits"] = 40
    data["adc"]["bitz"] = 8
    del data["clock"]
    assert sorted(_check(json_schema(), data)) == [".adc.bits: maximum", ".adc.bitz: not allowed", ".clock: required"]


def test_json_schema_with_the_jsonschema_package_if_installed():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(json_schema())
    jsonschema.validate(load_target("hermes").data, json_schema())


# --- TOML writer -------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_toml_writer_round_trips_resolved_targets(name):
    data = load_target(name).data
    assert tomllib.loads(dumps_toml(data)) == data
    assert tomllib.loads(dumps_toml(data, sort_keys=False)) == data


def test_toml_writer_handles_awkward_values():
    data = {"b": 1, "a": {"quoted key": "line\nbreak \"q\" \\ \x01", "empty": {}, "f": 1e-05, "big": 1e300},
            "arr": [1, [2, 3], {"x": True}], "tables": [{"n": 1, "sub": {"y": 2}}, {"n": 2}],
            "inf": math.inf, "neg": -0.5}
    text = dumps_toml(data)
    assert tomllib.loads(text) == data
    assert text == dumps_toml(dict(reversed(list(data.items()))))     # sorted: deterministic


# --- CLI commands ------------------------------------------------------------

def test_cmd_validate_text_and_json(tmp_path):
    bad = _write(tmp_path / "bad.toml", 'schema_version = 1\nname = "b"\nextends = "isaac"\n[adc]\nbits = 0\n')
    out = io.StringIO()
    assert cmd_validate(["isaac", str(bad)], out=out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == "isaac: valid"
    assert lines[1].endswith("bad.toml:5: adc.bits: expected an integer in 1..16, found 0")
    out = io.StringIO()
    assert cmd_validate(["isaac"], "json", out=out) == 0
    assert json.loads(out.getvalue())["files"][0]["valid"] is True


def test_cmd_show_plain_resolved_json_and_summary():
    out = io.StringIO()
    assert cmd_show("ecram", out=out) == 0
    assert out.getvalue() == (shipped_dir() / "ecram.toml").read_text(encoding="utf-8")
    out = io.StringIO()
    cmd_show("ecram", resolved=True, out=out)
    assert tomllib.loads(out.getvalue()) == load_target("ecram").data
    out = io.StringIO()
    cmd_show("ecram", resolved=True, fmt="json", out=out)
    assert json.loads(out.getvalue()) == load_target("ecram").data
    out = io.StringIO()
    cmd_show("isaac", summary=True, out=out)
    assert "329.8 mW" in out.getvalue() and "65.81 W" in out.getvalue()
    out = io.StringIO()
    cmd_show("isaac", summary=True, fmt="json", out=out)
    assert json.loads(out.getvalue())["summary"]["chip_area_mm2"] == pytest.approx(85.4, rel=0.01)


def test_cmd_show_invalid_target_exits_2_with_one_line():
    out, err = io.StringIO(), io.StringIO()
    assert cmd_show("nonesuch", out=out, err=err) == 2
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1 and "no target named" in err.getvalue()


def test_cmd_list_shows_shipped_and_local_files(tmp_path):
    _write(tmp_path / "mine.toml", 'schema_version = 1\nname = "mine"\nextends = "isaac"\ndescription = "Mine."\n')
    _write(tmp_path / "broken.toml", "schema_version = 1\n")
    out = io.StringIO()
    assert cmd_list(out=out, cwd=tmp_path) == 0
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == SHIPPED + ["broken.toml", "mine.toml"]
    assert "INVALID" in lines[-2] and "name: missing required field" in lines[-2]
    assert lines[-1].split()[1:] == ["valid", "Mine."]


def test_cmd_diff(tmp_path):
    mine = _write(tmp_path / "mine.toml", 'schema_version = 1\nname = "mine"\nextends = "isaac"\n[adc]\nbits = 9\n')
    out = io.StringIO()
    assert cmd_diff("isaac", str(mine), out=out) == 0
    text = out.getvalue()
    assert "  adc.bits: 8 -> 9\n" in text and '  name: "isaac" -> "mine"\n' in text
    assert "crossbar.rows" not in text
    out = io.StringIO()
    cmd_diff("isaac", "isaac", out=out)
    assert out.getvalue().endswith("no differences\n")


def test_cmd_schema_prints_schema_json():
    out = io.StringIO()
    assert cmd_schema(out=out) == 0
    assert out.getvalue() == (ROOT / "targets" / "schema.json").read_text(encoding="utf-8")


def test_target_from_data_round_trip():
    t = load_target("hermes")
    assert Target.from_data(t.data, t.source, t.chain) == t
