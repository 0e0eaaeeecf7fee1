"""The report as a web page: a real tiny sweep, `ascood-sweep report`, the page opened in headless
Chromium (Debian's package, as `.ci/run` installs it); and the shared label/format helpers."""

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ascood.labels import compact_setting, interval, metric_name, number, pm, setting_fields, short_labels
from ascood.verdict import CE, setting_id

BENCHMARK = "cmnist[classes=2]"
VIEWPORT = {"width": 1280, "height": 900}


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ascood.cli.sweep", *map(str, args)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def report_dir(finished_sweep) -> Path:
    proc = _cli("report", finished_sweep, "--bootstrap", "999")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return finished_sweep / "report"


def test_the_terminal_report_prints_dataset_names_as_they_are(finished_sweep, tmp_path):
    """`cmnist[classes=2]` looks like Rich markup; the terminal table and sentences must show it."""
    proc = _cli("report", finished_sweep, "--out", tmp_path / "r", "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cmnist[classes=2]" in proc.stdout, proc.stdout[-3000:]


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian's `chromium` package; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


def _overflow(page) -> tuple[int, int]:
    return page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")


@pytest.mark.slow
def test_report_page_loads_clean_fits_the_page_and_prints(report_dir, browser):
    from PIL import Image, ImageStat

    page = browser.new_page(viewport=VIEWPORT)
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    url = (report_dir / "report.html").as_uri()
    page.goto(url, wait_until="load")
    assert problems == []
    assert all(u == url or u.startswith("data:") for u in requests), requests  # self-contained
    assert page.locator("script").count() == 0 and page.locator("link[rel=stylesheet]").count() == 0

    # every plot the report wrote is inlined and decodes
    images = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.src.slice(0, 22)])")
    pngs = sorted(p.stem for p in report_dir.glob("*.png"))
    assert {"gains", "marginal", "pareto"} <= set(pngs) and len(images) == len(pngs)
    assert all(done and width > 0 and src == "data:image/png;base64," for done, width, src in images), images

    # no horizontal overflow at 1280 px: every table and figure fits (or scrolls inside its box)
    width, inner = _overflow(page)
    assert width <= inner, f"page {width} px wide in a {inner} px viewport"
    assert page.evaluate("[...document.images].every(i => i.getBoundingClientRect().right <= innerWidth)")

    # the verdict first, then one section per dataset, then the cross-setting sections
    order = page.evaluate("""() => {
        const v = document.querySelector('.verdict'), d = document.querySelector('section.dataset'),
              c = document.querySelector('section.cross');
        return [Boolean(v.compareDocumentPosition(d) & Node.DOCUMENT_POSITION_FOLLOWING),
                Boolean(d.compareDocumentPosition(c) & Node.DOCUMENT_POSITION_FOLLOWING)];
    }""")
    assert order == [True, True]
    assert page.locator(".verdict p").first.inner_text().startswith("Pick: ")
    assert page.locator("section.dataset h2").all_inner_texts()[0].startswith(BENCHMARK)

    # readable headers, values as mean ± std, no raw column names anywhere in the visible text
    text = page.locator("body").inner_text()
    for raw in ("_std", "final_test_", "test_auroc", "id_accuracy", "fpr95", "best_val", "alpha_max"):
        assert raw not in text, raw
    headers = set(page.locator("th").all_inner_texts())
    assert {"test AUROC", "test FPR@95", "test AUPR-in", "test AUPR-out", "test ID acc.", "Δ AUROC [95%]",
            "α", "p_inv", "λ", "σ"} <= headers, headers
    final = page.locator("section.dataset table").nth(1)
    cells = final.locator("td").all_inner_texts()
    assert len(cells) == 5 and all(re.fullmatch(r"\d+\.\d ± \d+\.\d", c) for c in cells), cells
    deltas = page.locator("section.dataset table").nth(2).locator("td").all_inner_texts()
    assert any(re.fullmatch(r"[+−]\d+\.\d \[[+−]?\d+\.\d, [+−]?\d+\.\d\]", c) for c in deltas), deltas

    # every short label the candidates table uses is explained in the legend
    legend = page.locator("#settings table")
    legend_labels = legend.locator("tbody tr td:first-child").all_inner_texts()
    used = page.locator("#candidates table tbody tr td:first-child").all_inner_texts()
    assert "CE" in used and set(used) <= set(legend_labels) and len(set(legend_labels)) == len(legend_labels)

    # a full-page screenshot with real content, not a blank page
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    assert shot.height > VIEWPORT["height"]
    colours = shot.getcolors(maxcolors=1 << 20)
    spread = ImageStat.Stat(shot.convert("L")).stddev[0]
    assert colours is not None and len(colours) > 200 and spread > 10, (len(colours or []), spread)

    # print: the print stylesheet applies and nothing overflows either
    page.emulate_media(media="print")
    assert page.evaluate("getComputedStyle(document.querySelector('nav')).display") == "none"
    width, inner = _overflow(page)
    assert width <= inner, f"printed page {width} px wide in {inner} px"
    assert problems == []
    page.close()


@pytest.mark.slow
def test_rich_summary_reads_like_the_page(finished_sweep, report_dir, browser):
    """The summary printed after a sweep names metrics, formats mean ± std and writes the best
    setting exactly as the page's section for that dataset does."""
    summary = _cli("summary", finished_sweep)
    assert summary.returncode == 0, summary.stderr[-2000:]
    page = browser.new_page(viewport=VIEWPORT)
    page.goto((report_dir / "report.html").as_uri())
    section = page.locator("section.dataset").first
    compact = section.locator(".setting").first.inner_text()
    final = section.locator("table").nth(1)
    headers, cells = final.locator("th").all_inner_texts(), final.locator("td").all_inner_texts()
    shown = dict(zip(headers, cells, strict=True))
    for name in ("test AUROC", "test FPR@95", "test ID acc."):
        assert name in summary.stdout and shown[name] in summary.stdout, (name, shown[name])
    assert f"best {BENCHMARK}: {compact}" in summary.stdout
    page.close()


def test_mean_std_and_intervals_read_at_a_fixed_precision():
    assert pm(86.66, 11.81) == "86.7 ± 11.8" and pm(5, float("nan")) == "5.0"
    assert pm(0.123, 0.0456, digits=2) == "0.12 ± 0.05"
    assert interval(1.24, -0.31, 2.66) == "+1.2 [−0.3, +2.7]"
    assert interval(1.24, float("nan"), float("nan")) == "+1.2 (one seed)"
    assert interval(float("nan"), 0.0, 1.0) == "–"
    assert interval(0.25, 0.1, 0.4, digits=2, sign=False) == "0.25 [0.10, 0.40]"
    assert number(-0.04) == "0.0" and number(-0.04, sign=True) == "0.0" and number(-1.26) == "−1.3"
    assert metric_name("auroc", "test") == "test AUROC" and metric_name("fpr95") == "FPR@95"
    assert metric_name("aupr_in") == "AUPR-in" and metric_name("id_accuracy", "test") == "test ID acc."


def test_short_labels_are_stable_unique_and_extend_without_renumbering():
    settings = ["a", "b", CE, "a", "c"]
    labels = short_labels(settings, fixed={CE: "CE"})
    assert labels == {"a": "S1", "b": "S2", CE: "CE", "c": "S3"}
    assert short_labels(list(settings), fixed={CE: "CE"}) == labels
    assert len(set(labels.values())) == len(labels)
    more = short_labels([*settings, "d", "b"], fixed={CE: "CE"})
    assert {k: more[k] for k in labels} == labels and more["d"] == "S4"
    assert short_labels(["x", "y"], fixed={"y": "S1"}) == {"x": "S2", "y": "S1"}  # a fixed name is never reused


def test_a_setting_reads_back_from_its_name_and_compactly():
    row = {"alpha_max": 0.2032291, "alpha_min": 0.2032291, "p_inv": 0.0616667, "lam": 1.0, "sigma": 0.5,
           "ood_type": "gradient", "lr": 0.05, "alpha_scale": "absolute"}
    fields = setting_fields(setting_id(row))
    assert list(fields) == list(row) and float(fields["p_inv"]) == pytest.approx(row["p_inv"], rel=1e-5)
    assert setting_fields(CE) == {}
    assert compact_setting(row) == "α=0.2032 p_inv=0.06167 λ=1 σ=0.5 lr=0.05"
    assert compact_setting(fields) == compact_setting(row)
    relative = {**row, "alpha_min": 0.01, "alpha_scale": "relative", "ood_type": "shuffle"}
    assert compact_setting(relative) == "α=0.2032 α_min=0.01 p_inv=0.06167 λ=1 σ=0.5 lr=0.05 relative α shuffle"
