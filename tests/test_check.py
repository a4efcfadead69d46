"""acompile check: verdicts, every reason, exit codes, the four output formats, --jobs, -o,
and agreement with compile (a model check calls compatible compiles; one it calls
incompatible fails compile with exit 1 for the same reason)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from acompile.check.render import FORMATS, problem_rows
from acompile.check.schema import CHECK_JSON_SCHEMA
from acompile.cli import main

import models

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def save(folder: Path, name: str, model: onnx.ModelProto) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def many_problems_model() -> onnx.ModelProto:
    """Conv whose weights are a graph input (dynamic weights), then two custom-domain TopK nodes (unsupported)."""
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv_dyn", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten_0", axis=1),
        helper.make_node("TopK", ["f", "k"], ["t1", "i1"], name="topk_a", domain=models.CUSTOM_DOMAIN),
        helper.make_node("TopK", ["t1", "k"], ["output", "i2"], name="topk_b", domain=models.CUSTOM_DOMAIN),
    ]
    graph = helper.make_graph(
        nodes, "many_problems",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 4, 3, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])], initializer=[k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(models.CUSTOM_DOMAIN, 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def tiny_target(folder: Path) -> Path:
    """isaac with one tile of one core per chip: 8 crossbars per chip."""
    path = folder / "tiny.toml"
    path.write_text('schema_version = 1\nextends = "isaac"\nname = "tiny"\n'
                    "[organisation]\ntiles_per_chip = 1\ncores_per_tile = 1\n"
                    "[network]\ntiles_per_router = 1\n")
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["check", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv) -> tuple[int, dict]:
    code, out, _ = run(capsys, *argv, "--format", "json")
    doc = json.loads(out)
    assert validate(doc, CHECK_JSON_SCHEMA) == [], validate(doc, CHECK_JSON_SCHEMA)
    assert doc["exit_code"] == code
    return code, doc


def by_model(doc: dict, target: str | None = None) -> dict[str, dict]:
    return {Path(r["model"]).stem: r for r in doc["results"] if target is None or r["target"] == target}


# --------------------------------------------------------------------------- a small JSON Schema validator


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value, type_name: str) -> bool:
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[type_name])


def validate(value, schema: dict, path: str = "$") -> list[str]:
    """The subset of JSON Schema that CHECK_JSON_SCHEMA uses; returns every violation."""
    errors = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in types):
            return [f"{path}: {value!r} is not of type {types}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errors += validate(v, props[k], f"{path}.{k}")
            elif extra is False:
                errors.append(f"{path}: unexpected {k!r}")
            elif isinstance(extra, dict):
                errors += validate(v, extra, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errors += validate(v, schema["items"], f"{path}[{i}]")
    return errors


def test_validator_catches_violations():
    good = {"schema_version": 1}
    assert validate(good, CHECK_JSON_SCHEMA)  # many required keys missing
    assert validate({"x": 1}, {"type": "object", "additionalProperties": False}) == ["$: unexpected 'x'"]
    assert validate(1.5, {"type": ["integer", "null"]})


def test_schema_is_valid_json_schema_when_jsonschema_is_installed(tmp_path, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(CHECK_JSON_SCHEMA)
    save(tmp_path, "mlp", models.mlp())
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x01garbage")
    _, doc = run_json(capsys, tmp_path, "-t", "isaac", "-t", "no_such_target")
    jsonschema.validate(doc, CHECK_JSON_SCHEMA)


# --------------------------------------------------------------------------- verdicts and reasons


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A folder of supported, unsupported and unreadable models."""
    folder = tmp_path_factory.mktemp("zoo")
    for name in ("mlp", "small_cnn", "residual_block", "transformer_block", "unsupported_op_model",
                 "unsupported_lstm_model"):
        save(folder, name, models.ALL_SMALL[name]())
    save(folder / "nested", "many_problems", many_problems_model())
    (folder / "empty.onnx").write_bytes(b"")
    (folder / "random.onnx").write_bytes(np.random.default_rng(0).bytes(300))
    (folder / "notes.txt").write_text("not a model")
    return folder


def test_folder_verdicts_and_every_reason(zoo, capsys):
    code, doc = run_json(capsys, zoo, "-t", "isaac")
    assert code == 2                      # unreadable inputs take precedence over incompatible ones
    res = by_model(doc)
    assert [r["model"] for r in doc["results"]] == sorted(r["model"] for r in doc["results"])
    assert "notes" not in res
    assert res["mlp"]["verdict"] == "compatible"
    assert res["small_cnn"]["verdict"] == "compatible with digital fallback"
    assert res["small_cnn"]["fallback_ops"] == ["GlobalAveragePool", "MaxPool"]
    assert res["residual_block"]["fallback_ops"] == ["Add"]
    assert "MatMul" in res["transformer_block"]["fallback_ops"]
    for name in ("mlp", "small_cnn"):
        f = res[name]["figures"]
        assert 0 < f["analog_mac_fraction"] <= 1 and f["crossbars"] >= 1 and f["chips"] == 1
        assert 0 < f["utilisation"] <= 1 and f["energy_per_inference_pj"] > 0
        assert res[name]["figures_estimated"] is False

    topk = res["unsupported_op_model"]
    assert topk["verdict"] == "incompatible"
    assert [(r["category"], r["node"], r["op_type"], r["opset"]) for r in topk["reasons"]] == [
        ("unsupported_op", "topk_0", "TopK", 17)]
    assert topk["figures_estimated"] is True and topk["figures"]["crossbars"] >= 1
    lstm = res["unsupported_lstm_model"]
    assert lstm["verdict"] == "incompatible" and "recurrent" in lstm["reasons"][0]["message"]

    many = res["many_problems"]                # every reason, not just the first
    assert sorted((r["category"], r["node"]) for r in many["reasons"]) == [
        ("dynamic_weights", "conv_dyn"), ("unsupported_op", "topk_a"), ("unsupported_op", "topk_b")]
    rows = problem_rows(many["reasons"])
    assert [(op, n) for op, n, _, _ in rows] == [("Conv (opset 17)", 1), ("com.example.custom.TopK (opset 17)", 2)]
    assert rows[1][3] == "topk_a, topk_b"

    for name, needle in (("empty", "empty"), ("random", "not a valid ONNX")):
        r = res[name]
        assert r["verdict"] == "error" and r["error"]["code"] == "invalid_model"
        assert r["error"]["exit_code"] == 2 and needle in r["error"]["message"]
        assert r["figures"] is None
    assert doc["summary"] == {"pairs": 9, "models": 9, "compatible": 1, "compatible_with_fallback": 3,
                              "incompatible": 3, "error": 2}


def test_text_output(zoo, capsys):
    code, out, _ = run(capsys, zoo, "-t", "isaac")
    assert code == 2
    lines = out.splitlines()
    assert re.fullmatch(r"FAILED: 9 model x target pairs: .* in [\d.,]+ [mµ]?s", lines[-1])
    mlp = next(line for line in lines if "mlp.onnx [isaac]" in line)
    assert re.search(r": compatible \| analog \d+\.\d% of MACs, \d+ crossbars?, 1 chip, utilisation", mlp)
    assert any("small_cnn.onnx [isaac]: compatible with digital fallback (GlobalAveragePool x1, MaxPool x1)"
               in line for line in lines)
    header = [i for i, line in enumerate(lines) if line.split() == ["Op", "|", "Count", "|", "Reason", "|", "Nodes"]]
    assert len(header) == 3                                   # one problem table per incompatible pair
    assert any("TopK (opset 17) | 2" in line and "topk_a, topk_b" in line for line in lines)
    assert any("empty.onnx [isaac]: error (invalid_model, exit 2)" in line for line in lines)


def test_exit_codes(tmp_path, capsys):
    good = save(tmp_path / "good", "mlp", models.mlp())
    bad = save(tmp_path / "bad", "lstm", models.unsupported_lstm_model())
    (tmp_path / "junk").mkdir()
    junk = tmp_path / "junk" / "junk.onnx"
    junk.write_bytes(b"\x00\xff" * 10)
    assert run(capsys, good, "-t", "isaac")[0] == 0
    assert run(capsys, save(tmp_path, "cnn", models.small_cnn()), "-t", "isaac")[0] == 0   # fallback passes
    assert run(capsys, good, bad, "-t", "isaac")[0] == 1
    assert run(capsys, good, bad, junk, "-t", "isaac")[0] == 2
    assert run(capsys, tmp_path / "missing.onnx", "-t", "isaac")[0] == 2
    empty_folder = tmp_path / "nothing"
    empty_folder.mkdir()
    code, doc = run_json(capsys, empty_folder, "-t", "isaac")
    assert code == 2 and "no .onnx files" in doc["results"][0]["error"]["message"]


def test_bad_target_is_an_error_per_pair_and_others_are_checked(tmp_path, capsys):
    model = save(tmp_path, "mlp", models.mlp())
    broken = tmp_path / "broken.toml"
    broken.write_text("schema_version = 1\n[crossbar\nrows = 3\n")
    code, doc = run_json(capsys, model, "-t", "isaac", "-t", "no_such_target", "-t", broken)
    assert code == 2
    verdicts = [(r["target"], r["verdict"], (r["error"] or {}).get("code")) for r in doc["results"]]
    assert verdicts == [("isaac", "compatible", None), ("no_such_target", "error", "invalid_target"),
                        (str(broken), "error", "invalid_target")]


def test_max_chips(tmp_path, capsys):
    mlp = save(tmp_path, "mlp", models.mlp())
    code, doc = run_json(capsys, mlp, "-t", "isaac", "--max-chips", "0")
    assert code == 1
    (reason,) = doc["results"][0]["reasons"]
    assert reason["category"] == "too_many_chips" and "--max-chips is 0" in reason["message"]
    assert run(capsys, mlp, "-t", "isaac", "--max-chips", "1")[0] == 0

    big = save(tmp_path, "transformer", models.transformer_block())   # 24 crossbars: 3 chips of 8
    target = tiny_target(tmp_path)
    code, doc = run_json(capsys, big, "-t", target, "-t", "isaac", "--max-chips", "2")
    assert code == 1
    tiny, isaac = doc["results"]
    assert tiny["verdict"] == "incompatible" and tiny["figures"]["chips"] == 3
    assert "needs 3 chips" in tiny["reasons"][0]["message"]
    assert isaac["verdict"] == "compatible with digital fallback"
    assert run(capsys, mlp, "-t", "isaac", "--max-chips", "-1")[0] == 2


def test_min_analog_fraction(tmp_path, capsys):
    mlp = save(tmp_path, "mlp", models.mlp())
    code, doc = run_json(capsys, mlp, "-t", "isaac", "--min-analog-fraction", "0.999")
    assert code == 1 and doc["results"][0]["reasons"][0]["category"] == "low_analog_fraction"
    assert run(capsys, mlp, "-t", "isaac", "--min-analog-fraction", "0.5")[0] == 0
    code, _, err = run(capsys, mlp, "-t", "isaac", "--min-analog-fraction", "90")
    assert code == 2 and "between 0 and 1" in err


def test_digital_ok(tmp_path, capsys):
    cnn = save(tmp_path, "cnn", models.small_cnn())
    _, doc = run_json(capsys, cnn, "-t", "isaac", "--digital-ok", "MaxPool")
    assert doc["results"][0]["fallback_ops"] == ["GlobalAveragePool"]
    _, doc = run_json(capsys, cnn, "-t", "isaac", "--digital-ok", "MaxPool,GlobalAveragePool")
    r = doc["results"][0]
    assert r["verdict"] == "compatible" and r["fallback_ops"] == []
    assert r["digital_ops"] == {"Flatten": 1, "GlobalAveragePool": 1, "MaxPool": 1, "Relu": 2}
    _, doc = run_json(capsys, cnn, "-t", "isaac", "--digital-ok", "*")
    assert doc["results"][0]["verdict"] == "compatible"
    code, _, err = run(capsys, cnn, "-t", "isaac", "--digital-ok", "Maxpool")
    assert code == 2 and "did you mean 'MaxPool'" in err


def test_the_op_name_list_is_built_only_to_validate_given_names(monkeypatch):
    """Listing every ONNX schema costs 20-30 ms: a check with no --digital-ok must not pay for it."""
    from acompile.check import verdict

    def refuse():
        raise AssertionError("op names listed with no --digital-ok given")
    monkeypatch.setattr(verdict, "_op_names", refuse)
    assert verdict.parse_digital_ok(None) == verdict.default_digital_ok()
    assert verdict.parse_digital_ok([" , "]) == verdict.default_digital_ok()
    with pytest.raises(AssertionError):
        verdict.parse_digital_ok(["MaxPool"])


def _if_with_matmul() -> onnx.ModelProto:
    """An If on the data's sign whose then-branch multiplies by a constant matrix."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32), "W")
    then = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 16])])
    other = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 16])])
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    g = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                           helper.make_node("Greater", ["s", "zero"], ["c"]),
                           helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])], initializer=[w, zero])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_crossbar_op_a_body_runs_digitally_is_named(tmp_path, capsys):
    """A MatMul with constant weights inside a data-dependent If runs digitally: the verdict says so,
    and --digital-ok takes both the If and that MatMul."""
    model = save(tmp_path, "if", _if_with_matmul())
    _, doc = run_json(capsys, model, "-t", "isaac", "--digital-ok", "If,Greater,ReduceSum")
    r = doc["results"][0]
    assert r["verdict"] == "compatible with digital fallback" and r["fallback_ops"] == ["MatMul in If"]
    assert r["digital_ops"]["MatMul in If"] == 1 and r["digital_ops"]["If"] == 1
    _, doc = run_json(capsys, model, "-t", "isaac", "--digital-ok", "If,Greater,ReduceSum,MatMul in If")
    assert doc["results"][0]["verdict"] == "compatible"


# --------------------------------------------------------------------------- formats


def test_junit_is_valid_xml_with_escaped_odd_names(tmp_path, capsys):
    folder = tmp_path / "models"
    odd = 'we<i>rd & "quoted" \x01\x1b[31m\nname'
    save(folder, odd, models.unsupported_lstm_model())
    save(folder, "ok", models.mlp())
    (folder / "bad.onnx").write_bytes(b"")
    out_file = tmp_path / "junit.xml"
    code, out, _ = run(capsys, folder, "-t", "isaac", "-t", "puma", "--format", "junit", "-o", out_file)
    assert code == 2
    assert out.splitlines()[-1].startswith("FAILED")                    # -o still prints the text summary
    assert "\x1b" not in out and "\x01" not in out
    root = ET.parse(out_file).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 6 and suite.get("tests") == "6"
    assert suite.get("failures") == "2" and suite.get("errors") == "2"
    assert [c.get("name") for c in cases] == ["isaac", "puma"] * 3
    odd_cases = [c for c in cases if "we<i>rd" in c.get("classname")]
    assert len(odd_cases) == 2
    for c in odd_cases:
        assert "\x01" not in c.get("classname") and "\n" not in c.get("classname")
        fail = c.find("failure")
        assert fail is not None and "LSTM" in fail.get("message") and "lstm_0" in fail.text
    errs = [c for c in cases if c.find("error") is not None]
    assert {c.get("classname") for c in errs} == {str(folder / "bad.onnx")}
    assert all(c.find("error").get("type") == "invalid_model" for c in errs)


def test_markdown_summary(zoo, capsys):
    code, out, _ = run(capsys, zoo, "-t", "isaac", "--format", "markdown")
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == "## acompile check: FAILED"
    table = [line for line in lines if line.startswith("| ") and "isaac" in line]
    assert len(table) == 9
    assert all(line.count(" | ") == 7 for line in table)               # no unescaped | inside a cell
    assert any("**incompatible**" in line and "unsupported\\_op\\_model" in line for line in table)
    assert any(line.startswith("| com.example.custom.TopK (opset 17) | 2 |") for line in lines)


def test_saved_json_renders_as_the_ci_docs_show(zoo, tmp_path, capsys):
    """docs/check.md renders JUnit and Markdown from one saved JSON report through acompile.check."""
    from acompile import check

    _, out, _ = run(capsys, zoo, "-t", "isaac", "--format", "json")
    doc = json.loads(out)
    _, junit, _ = run(capsys, zoo, "-t", "isaac", "--format", "junit")
    assert strip_time("junit", check.render_junit(doc)) == strip_time("junit", junit)
    _, markdown, _ = run(capsys, zoo, "-t", "isaac", "--format", "markdown")
    assert check.render_markdown(doc).splitlines()[:-1] == markdown.splitlines()[:-1]


def test_odd_names_stay_on_one_line_in_text_and_json(tmp_path, capsys):
    folder = tmp_path / "m"
    save(folder, "a\nb|c\x1b", models.mlp())
    code, out, _ = run(capsys, folder, "-t", "isaac")
    assert code == 0 and len(out.splitlines()) == 2 and "\x1b" not in out
    _, doc = run_json(capsys, folder, "-t", "isaac")
    assert "\n" not in doc["results"][0]["model"]


def strip_time(fmt: str, text: str) -> str:
    if fmt == "json":
        doc = json.loads(text)
        doc.pop("elapsed_s")
        return json.dumps(doc, sort_keys=True)
    if fmt == "junit":
        return re.sub(r' time="[0-9.]+"', "", text)
    return "\n".join(text.splitlines()[:-1])                            # text, markdown: the status line


@pytest.mark.parametrize("fmt", FORMATS)
def test_jobs_do_not_change_output(zoo, tmp_path, capsys, fmt):
    outputs = []
    for jobs in ("1", "2"):
        code, out, _ = run(capsys, zoo, "-t", "isaac", "-t", "puma", "--format", fmt, "--jobs", jobs)
        assert code == 2
        outputs.append(strip_time(fmt, out))
    assert outputs[0] == outputs[1]


def test_output_file_is_written_atomically_and_quiet(tmp_path, capsys):
    model = save(tmp_path, "mlp", models.mlp())
    out_file = tmp_path / "result.json"
    out_file.write_text("old")
    code, out, err = run(capsys, model, "-t", "isaac", "--format", "json", "-o", out_file, "-q")
    assert code == 0 and out == "" and err == ""
    doc = json.loads(out_file.read_text())
    assert doc["passed"] is True and validate(doc, CHECK_JSON_SCHEMA) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary left
    code, out, _ = run(capsys, model, "-t", "isaac", "-o", tmp_path / "summary.md", "--format", "markdown")
    assert out.startswith(f"{model} [isaac]: compatible")
    assert (tmp_path / "summary.md").read_text().startswith("## acompile check: PASSED")
    code, _, err = run(capsys, model, "-t", "isaac", "-o", tmp_path)
    assert code == 2 and "folder" in err


def test_symlink_out_of_folder_is_not_followed(tmp_path, capsys):
    outside = save(tmp_path / "outside", "mlp", models.mlp())
    folder = tmp_path / "inside"
    folder.mkdir()
    try:
        os.symlink(outside, folder / "link.onnx")
        os.symlink(outside.parent, folder / "linked_dir")
    except OSError:
        pytest.skip("symbolic links are not available")
    save(folder, "own", models.mlp())
    os.symlink(folder / "own.onnx", folder / "alias.onnx")               # a link inside is fine
    code, doc = run_json(capsys, folder, "-t", "isaac")
    res = {Path(r["model"]).name: r for r in doc["results"]}
    assert sorted(res) == ["link.onnx", "own.onnx"]                     # alias is own.onnx, checked once
    assert res["link.onnx"]["verdict"] == "error" and "outside" in res["link.onnx"]["error"]["message"]
    assert res["own.onnx"]["verdict"] == "compatible" and code == 2


def test_internal_error_in_one_pair_is_reported_and_others_checked(tmp_path, capsys, monkeypatch):
    import acompile.compiler as compiler
    real = compiler.run_pipeline

    def flaky(model, *a, **kw):
        if "boom" in str(model):
            raise RuntimeError("simulated bug")
        return real(model, *a, **kw)

    monkeypatch.setattr(compiler, "run_pipeline", flaky)
    save(tmp_path, "boom", models.mlp())
    save(tmp_path, "fine", models.mlp())
    code, doc = run_json(capsys, tmp_path, "-t", "isaac")
    assert code == 3
    boom, fine = doc["results"]
    assert boom["verdict"] == "error" and boom["error"]["code"] == "internal"
    assert "simulated bug" in boom["error"]["message"] and fine["verdict"] == "compatible"


def test_check_format_choices_do_not_leak_into_other_commands(capsys):
    assert main(["compile", "x.onnx", "-t", "isaac", "--format", "junit"]) == 2
    assert "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------- agreement with compile


AGREEMENT = ["mlp", "small_cnn", "residual_block", "conv_transpose", "old_opset_cnn", "transformer_block",
             "weights_via_constant_nodes", "unsupported_op_model", "unsupported_lstm_model"]


def test_check_and_compile_agree(tmp_path, capsys):
    folder = tmp_path / "models"
    paths = [save(folder, name, models.ALL_SMALL[name]()) for name in AGREEMENT]
    paths.append(save(folder, "many_problems", many_problems_model()))
    _, doc = run_json(capsys, folder, "-t", "isaac")
    verdicts = {r["model"]: r for r in doc["results"]}
    assert len(verdicts) == len(paths)
    seen = set()
    for path in paths:
        r = verdicts[str(path)]
        seen.add(r["verdict"])
        out = tmp_path / "out" / path.stem
        code = main(["compile", str(path), "-t", "isaac", "-o", str(out), "--format", "json", "-q"])
        _, err = capsys.readouterr()
        if r["verdict"] in ("compatible", "compatible with digital fallback"):
            assert code == 0, (path.name, err)
            assert (out / "program.json").exists()
        else:
            assert r["verdict"] == "incompatible"
            assert code == 1, (path.name, err)
            message = json.loads(err)["error"]["message"]
            assert f"{len(r['reasons'])} node(s) cannot be mapped" in message
            first = r["reasons"][0]
            assert repr(first["node"]) in message and first["message"] in message
    assert seen == {"compatible", "compatible with digital fallback", "incompatible"}


def test_console_entry_as_subprocess(tmp_path):
    model = save(tmp_path, "mlp", models.mlp())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "acompile", "check", str(model), "-t", "isaac", "--jobs", "2",
                           "-t", "puma"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("PASSED: 2 model x target pairs: 2 compatible")


def test_check_parser_has_its_own_format_choices():
    """check's --format offers junit and markdown; other commands keep text|json."""
    from acompile.cli import build_parser
    args = build_parser().parse_args(["check", "m.onnx", "-t", "isaac", "--format", "junit", "-q", "-v"])
    assert (args.format, args.quiet, args.verbose, args.target) == ("junit", True, True, ["isaac"])


def test_checking_pauses_the_collector_and_restores_it():
    import gc
    from acompile.check.verdict import Job, Settings, run_checks
    mlp = str(Path(__file__).resolve().parent.parent / "samples" / "mlp.onnx")
    seen = []
    jobs = [Job("mlp.onnx", mlp, "isaac"), Job("mlp.onnx", mlp, "puma")]
    was = gc.isenabled()
    try:
        gc.enable()
        results = run_checks(jobs, Settings(), progress=lambda _: seen.append(gc.isenabled()))
        assert gc.isenabled() and seen == [False, False]
        assert all(r["verdict"] != "error" for r in results)
        gc.disable()
        run_checks(jobs[:1], Settings())
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
