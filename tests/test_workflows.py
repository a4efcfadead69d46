"""End-to-end workflows the docs promise: the five-minute target guide, and CI's check of samples/."""

import json
import re
from pathlib import Path

from acompile.cli import main
from acompile.target import shipped_targets

REPO = Path(__file__).resolve().parents[1]


def test_the_five_minute_target_guide_works_as_written(tmp_path, capsys, monkeypatch):
    guide = (REPO / "targets" / "README.md").read_text()
    section = guide[guide.index("## Write your own target in five minutes"):]
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "mytarget.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    assert main(["targets", "validate", "mytarget.toml"]) == 0
    assert main(["compile", str(REPO / "samples" / "mlp.onnx"), "--target", "mytarget.toml", "-o", "out", "-q"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["target"]["name"] == "mytarget"
    assert main(["targets", "diff", "isaac", "mytarget.toml"]) == 0
    diff = capsys.readouterr().out.splitlines()
    shown = re.search(r"\$ acompile targets diff isaac mytarget.toml\n(.*?)```", section, re.S).group(1)
    for line in shown.splitlines()[1:]:     # the first names where isaac.toml is on this machine
        assert line.strip() == "..." or line in diff, line
    # the [adc] figures are stated at 6 bits (scaling.adc.at_bits): taken as written, not scaled again
    assert main(["targets", "show", "mytarget.toml", "--resolved", "--format", "json"]) == 0
    resolved = json.loads(capsys.readouterr().out)["adc"]
    assert (resolved["energy_pj"], resolved["area_um2"], resolved["power_mw"]) == (1.2, 626.91, 1.44)


def test_every_sample_is_compatible_with_every_shipped_target(capsys):
    """What the project's CI asks of its own samples (see docs/check.md)."""
    targets = [arg for name in shipped_targets() for arg in ("--target", name)]
    code = main(["check", str(REPO / "samples"), *targets, "--format", "json", "--digital-ok", "*"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    verdicts = {(r["model"], r["target"]): r["verdict"] for r in result["results"]}
    assert len(verdicts) == 4 * len(shipped_targets())
    assert set(verdicts.values()) == {"compatible"}
