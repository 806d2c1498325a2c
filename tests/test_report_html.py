"""``craft report``: one HTML file that a real headless Chromium opens from disk with every table and figure;
and ``craft plot --format png,pdf,svg`` at print resolution, byte for byte the same twice."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image
from test_report_plots import trace
from test_report_tables import row, write_results

from benchmark.cli import main
from benchmark.results.store import write_cell

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RN50 on dtd and eurosat at 1 and 16 shots, two seeds, with traces; one CraFT cell missing, one failed."""
    root = tmp_path_factory.mktemp("report") / "results"
    rows = [row("zero_shot_clip", d, 16, 1, backbone="RN50") for d in ("dtd", "eurosat")]
    rows += [row(m, d, k, s, backbone="RN50", trace=trace(m, d, k, s), wall_s=12.0, queries=200, device="NVIDIA H100",
                 precision="bf16", code_version="v1-test")
             for m in ("bbt", "craft") for d in ("dtd", "eurosat") for k in (1, 16) for s in (1, 2)
             if (m, d, k) != ("craft", "eurosat", 1)]
    write_results(root, rows)
    write_cell(str(root), [{**row("craft", "dtd", 4, 1, backbone="RN50"), "status": "failed", "top1_test": None,
                            "error": "Traceback (most recent call last):\nRuntimeError: server <lost>"}])
    return root


@pytest.fixture(scope="module")
def report(results: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(results), "--out", str(out)]) == 0
    return out


def test_the_report_holds_tables_figures_failures_cost_and_provenance(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text
    assert "http://" not in text and "https://" not in text.replace("github.com/mrflogs/CraFT", "")  # nothing fetched
    assert text.count('<img alt="shots_RN50"') == 1 and text.count('<img alt="queries_RN50_') == 2
    assert "craft/dtd/4shot/seed1/RN50" in text and "RuntimeError: server &lt;lost&gt;" in text  # failed, escaped
    assert "missing from the few-shot table (no ok result): " in text and "craft/eurosat/1-shot" in text
    assert "cost: 16 runs, 2,800 queries" in text
    assert "NVIDIA H100 (14 rows)" in text and "bf16 (14 rows)" in text and "v1-test (14 rows)" in text
    assert "not shown: no distribution-shift results" in text  # a table the folder cannot give is a note


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="no Chromium and chromedriver here (.ci/run installs Debian's chromium and chromium-driver)")
def test_chromium_opens_the_report_from_disk_with_every_table_and_image(report: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(report.as_uri())
        found = driver.execute_script("""
            const imgs = [...document.images];
            return {tables: document.querySelectorAll('table').length,
                    data_tables: document.querySelectorAll('figure.table table').length,
                    images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                    widths: imgs.map(i => i.naturalWidth), sections: [...document.querySelectorAll('h2')].map(h => h.textContent),
                    failed: document.querySelector('ul.failed li').textContent};""")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert found["sections"] == ["What the folder holds", "Missing and failed cells", "Tables", "Cost", "Figures", "Provenance"]
    assert found["data_tables"] == 4  # few-shot, vs-paper, claims, cost (no shift runs)
    assert found["tables"] == found["data_tables"] + 2  # and the status and provenance summaries
    assert found["images"] == 3 and found["decoded"] == 3 and min(found["widths"]) >= 900, found  # 150 dpi
    assert "RuntimeError: server <lost>" in found["failed"]


def test_bad_report_arguments_are_one_sentence_and_write_nothing(results: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", str(results), "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file path" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "absent"), "--out", str(tmp_path / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_plot_formats_at_print_resolution_and_deterministic(results: Path, tmp_path: Path, capsys) -> None:
    for name in ("a", "b"):
        assert main(["plot", str(results), "--kind", "shots", "--out", str(tmp_path / name), "--format", "png,pdf,svg",
                     "--datasets", "dtd"]) == 0
    assert [Path(p).name for p in capsys.readouterr().out.split()[:3]] == ["shots_RN50.png", "shots_RN50.pdf", "shots_RN50.svg"]
    for suffix, start in ((".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")):
        a, b = (tmp_path / d / f"shots_RN50{suffix}" for d in ("a", "b"))
        assert a.read_bytes().startswith(start) and a.read_bytes() == b.read_bytes()
    with Image.open(tmp_path / "a" / "shots_RN50.png") as image:
        assert round(image.info["dpi"][0]) == 300 and image.size[0] >= 1900
    svg = (tmp_path / "a" / "shots_RN50.svg").read_text()
    assert "#0072b2" in svg.lower() and "Date" not in svg  # Okabe-Ito blue; no date stamp
    assert main(["plot", str(results), "--kind", "shots", "--out", str(tmp_path / "c"), "--format", "png,jpeg"]) == 2
    assert "--format 'jpeg': expected one or more of png, pdf, svg" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_table_format_html_is_an_escaped_fragment(results: Path, capsys) -> None:
    assert main(["table", str(results), "--format", "html", "--datasets", "dtd", "eurosat"]) == 0
    text = capsys.readouterr().out
    assert text.startswith('<figure class="table"><table><caption>Few-shot top-1 accuracy (%) on RN50')
    assert text.count("<tr") == 1 + 5 and text.count('<tr class="block">') == 2  # header, 5 rows; rules before 1 and 16 shots
    assert "<b>" in text and "±" in text and "&ndash;" in text  # best in bold, stds, craft/eurosat/1-shot missing
