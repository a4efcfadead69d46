"""report.html: self-contained, deterministic, one floorplan element per crossbar (or per tile when
aggregated), charts present; and in a real headless Chromium: loads without console errors, sorts,
and leaves a screenshot. Terminal and Markdown reports of the samples carry no raw exponents."""

import re
import shutil
from pathlib import Path

import pytest

from acompile.backends import floorplan
from acompile.backends.html import render_html
from acompile.backends.report import build_report, markdown, terminal_table
from acompile.compiler import compile_model
from acompile.target import load_target

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
EXPONENT = re.compile(r"\d[eE][+-]?\d")


@pytest.fixture(scope="module")
def cnn():
    c = compile_model(str(SAMPLES / "cnn.onnx"), load_target("isaac"))
    return c, build_report(c)


def test_page_is_self_contained_and_deterministic(cnn):
    c, report = cnn
    page = render_html(report, c.mapping)
    assert page == render_html(report, c.mapping)
    assert not re.search(r"<script[^>]+src|<link|@import|url\(\s*['\"]?https?:", page)
    assert page.count('class="xbar"') == report["totals"]["crossbars"]
    assert page.count('class="blk"') == len(c.mapping.blocks)
    assert page.count('class="chart vega"') == 3 and page.count('vegaEmbed("#chart-') == 3
    assert page.count("<script>") == 3   # the table sorter, the vendored Vega libraries once, the three specs
    assert "<title>" in page and "ADC lossless" in page and "bottleneck" in page
    assert len(set(re.findall(r'\bid="([^"]+)"', page))) == len(re.findall(r'\bid="([^"]+)"', page))


def test_aggregated_view_has_one_box_per_tile(cnn, monkeypatch):
    c, report = cnn
    monkeypatch.setattr(floorplan, "AGGREGATE_ABOVE", 5)
    svg = floorplan.floorplan_svg(c.mapping)
    assert 'data-view="tiles"' in svg and 'class="xbar"' not in svg
    assert svg.count('class="tile"') == report["totals"]["tiles"]
    assert {int(x) for x in re.findall(r'class="share" data-layer="(\d+)"', svg)} == set(range(len(report["layers"])))
    on_tiles = [(int(c), int(t), int(n)) for c, t, n in re.findall(r"chip (\d+) · tile (\d+) · (\d+)</text>", svg)]
    assert sum(n for _, _, n in on_tiles) == report["totals"]["crossbars"] and on_tiles == sorted(on_tiles)
    assert [(b.chip, b.tile) for b in c.mapping.crossbars].count(on_tiles[0][:2]) == on_tiles[0][2]


def test_many_digital_nodes_are_read_by_operator_and_the_most_costly(cnn, monkeypatch):
    """Beyond DIGITAL_ROWS digital nodes report.md and report.html list them by operator (their counts and
    sums) and then the MOST_COSTLY nodes by energy; report.json keeps every node. Up to it, every node."""
    from acompile.backends import report as report_module
    c, report = cnn
    nodes = report["digital"]
    assert len(nodes) >= 3 and len({x["op_type"] for x in nodes}) >= 2
    everyone = markdown(report)
    assert all(f"| {x['name']} |" in everyone for x in nodes) and "by operator" not in everyone
    monkeypatch.setattr(report_module, "DIGITAL_ROWS", 2)
    monkeypatch.setattr(report_module, "MOST_COSTLY", 2)
    by_op, costly = report_module.digital_view(report)
    assert sum(r["nodes"] for r in by_op) == len(nodes)
    assert [r["energy_pj"] for r in by_op] == sorted((r["energy_pj"] for r in by_op), reverse=True)
    for r in by_op:
        assert r["energy_pj"] == pytest.approx(sum(x["energy_total_pj"] for x in nodes if x["op_type"] == r["op_type"]))
    assert costly == sorted(nodes, key=lambda x: -x["energy_total_pj"])[:2]
    md = markdown(report)
    assert "by operator (report.json lists every node)" in md and "The 2 that take the most energy" in md
    assert sum(f"| {x['name']} |" in md for x in nodes) == 2
    page = render_html(report, c.mapping)
    table = lambda name: page.split(f'id="{name}"')[1].split("</table>")[0]     # noqa: E731
    assert table("digital-ops").count("<tr>") == 1 + len(by_op) and table("digital").count("<tr>") == 1 + 2


def test_snr_column_when_a_simulation_attributed_errors(cnn):
    c, report = cnn
    page = render_html(report, c.mapping, snr_db={x["name"]: 40.0 + i for i, x in enumerate(report["layers"])})
    assert "<th>SNR</th>" in page and "41 dB" in page


@pytest.mark.parametrize("target", ["isaac", "puma"])
def test_terminal_and_markdown_have_no_raw_exponents(target):
    for model in ("cnn", "mlp", "resblock", "digits"):
        report = build_report(compile_model(str(SAMPLES / f"{model}.onnx"), load_target(target)))
        for text in (terminal_table(report), markdown(report)):
            assert not EXPONENT.search(text), (model, EXPONENT.search(text).group(0))
        assert "(s)" not in terminal_table(report)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install .[test])")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver; "
                    ".ci/run does this)")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1600", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_report_in_a_real_browser(cnn, browser, tmp_path):
    c, report = cnn
    page = tmp_path / "report.html"
    page.write_text(render_html(report, c.mapping), encoding="utf-8")
    browser.get(page.as_uri())
    assert browser.title.startswith("acompile: cnn.onnx on isaac")
    find = lambda css: browser.find_elements("css selector", css)  # noqa: E731
    assert len(find("svg.floorplan g.xbar")) == report["totals"]["crossbars"]
    assert len(find("svg.floorplan rect.blk")) == len(c.mapping.blocks)
    # vegaEmbed draws each Vega-Lite chart as an <svg> inside its container, asynchronously
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 20).until(lambda b: len(b.find_elements("css selector", "div.chart.vega > svg")) == 3)
    charts = find("div.chart.vega > svg")
    assert all(ch.size["width"] > 200 and ch.size["height"] > 50 for ch in charts)
    assert all(len(ch.find_elements("css selector", "path, rect")) > 3 for ch in charts)
    axes = " ".join(ch.get_attribute("textContent") for ch in charts)
    assert "energy (µJ)" in axes and "time from the input (ms)" in axes and "bottleneck" in axes
    title = find("svg.floorplan g.xbar title")[0].get_attribute("textContent")
    assert "crossbar 0" in title and report["layers"][0]["name"] in title and "utilisation" in title
    # sorting by energy (descending after two clicks) puts the most expensive layer first
    header = [th for th in find("#layers th") if th.text.startswith("energy")][0]
    header.click()
    header.click()
    first = find("#layers tbody tr")[0].find_elements("css selector", "td")[0].text.strip()
    assert first == max(report["layers"], key=lambda x: x["energy_total_pj"])["name"]
    assert not EXPONENT.search(browser.execute_script("return document.body.innerText"))
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1300, height + 50)
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []


@pytest.mark.slow
def test_mapped_onnx_opens_in_netron(cnn, browser, tmp_path):
    """Netron's own web UI (the netron package serves it locally) draws every node of mapped.onnx."""
    import time

    netron = pytest.importorskip("netron", reason="netron is not installed (pip install .[test])")
    from acompile.backends.mapped_onnx import write_mapped
    c, report = cnn
    path = tmp_path / "mapped.onnx"
    write_mapped(path, c, report)
    address = netron.start(str(path), address=("localhost", 0), browse=False)
    try:
        browser.get(f"http://{address[0]}:{address[1]}")
        deadline = time.time() + 60
        labels: list[str] = []
        while time.time() < deadline and not labels:
            for button in browser.find_elements("css selector", "button"):
                if button.is_displayed() and button.text.strip() == "Accept":   # Netron's cookie notice
                    button.click()
            labels = browser.execute_script(
                "return Array.from(document.querySelectorAll('g.node text')).map(e => e.textContent)")
            time.sleep(0.3)
        ops = [n.op_type for n in c.graph.nodes]
        assert [x for x in labels if x in set(ops)] == ops
        browser.save_screenshot(str(tmp_path / "netron.png"))
        # Netron itself phones home (analytics); only errors from the local page count
        local = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e["message"].startswith("http://localhost")]
        assert local == []
    finally:
        netron.stop(address)


def test_simulate_per_layer_writes_the_page_with_each_layers_snr(tmp_path):
    """`simulate --per-layer --html` puts this run's SNR of every analog layer beside its cost."""
    from acompile.cli import main
    root = Path(__file__).resolve().parent.parent
    out, page = tmp_path / "out", tmp_path / "snr.html"
    assert main(["compile", str(root / "samples" / "digits.onnx"), "-t", "isaac", "-o", str(out), "-q"]) == 0
    assert main(["simulate", str(out), "-i", str(root / "samples" / "digits_test_x.npy"), "--mode", "quantized",
                 "--per-layer", "--html", str(page), "-q"]) == 0
    snr = re.findall(r"<td data-v=\"([-0-9.e]+)\">[^<]* dB</td>", page.read_text(encoding="utf-8"))
    layers = sum(1 for _ in (out / "report.json").read_text().split('"op_type"')) - 1
    assert snr and len(snr) <= layers and all(float(v) > 0 for v in snr)
    assert main(["simulate", str(out), "-i", str(root / "samples" / "digits_test_x.npy"), "--html",
                 str(tmp_path / "x.html")]) == 2 and not (tmp_path / "x.html").exists()
