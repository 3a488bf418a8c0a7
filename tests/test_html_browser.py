"""report.html in a real headless browser (Debian's chromium + chromedriver, installed by .ci/run).

Skipped on a developer machine without chromium; in CI (CI=true) a missing browser is a failure.
A screenshot is kept in test-artifacts/report.png.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.conftest import make_clusterable, symmetric_t, write_table
from tests.helpers import invoke

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are required in CI (.ci/run installs them)")
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_report_loads_without_console_errors_and_works(tmp_path, browser):
    from selenium.webdriver.common.by import By

    x, true, observed = make_clusterable(800, 4, symmetric_t(4, 0.2), 0)
    names = np.array(["card_arrival", "exchange_rate", "top_up_failed", "lost_card"])
    frame = pl.DataFrame(
        {"text": [f"message number {i}" for i in range(800)], "label": names[observed].tolist(), "emb": x.tolist()}
    )
    data = write_table(frame, tmp_path / "data.parquet")
    invoke(
        [
            "scan",
            data,
            "--embedding-col",
            "emb",
            "--out",
            tmp_path / "o",
            "--max-noise-rate",
            "0.1",
            "--format",
            "quiet",
        ],
        expect_exit=1,
    )
    browser.get((tmp_path / "o" / "report.html").as_uri())

    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == [], severe
    assert browser.find_element(By.ID, "verdict").text.startswith("FAIL")
    heatmap = browser.find_element(By.CSS_SELECTOR, "#heatmap svg")
    assert heatmap.size["width"] > 200
    assert "card_arrival" in browser.find_element(By.ID, "heatmap").get_attribute("innerHTML")
    rows = browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
    assert len(rows) > 100

    # sort by confidence, ascending then descending
    header = browser.find_elements(By.CSS_SELECTOR, "#rows thead th")[3]
    header.click()
    first = [
        float(r.find_elements(By.TAG_NAME, "td")[3].text)
        for r in browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
    ]
    assert first == sorted(first, reverse=True)
    header.click()
    second = [
        float(r.find_elements(By.TAG_NAME, "td")[3].text)
        for r in browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
    ]
    assert second == sorted(second)

    # filter by a given label
    box = browser.find_element(By.ID, "filter")
    box.send_keys("exchange_rate")
    visible = [r for r in browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr") if r.is_displayed()]
    assert 0 < len(visible) < len(rows)
    assert all("exchange_rate" in r.text for r in visible)
    assert browser.find_element(By.ID, "count").text == f"{len(visible)} rows"
    box.clear()

    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))


def test_many_classes_keep_the_heatmap_readable(browser, tmp_path):
    from selenium.webdriver.common.by import By

    k = 40
    x, _, observed = make_clusterable(2400, k, symmetric_t(k, 0.1), 0)
    names = np.array([f"intent_number_{i:02d}" for i in range(k)])
    texts = [f"m {i}" for i in range(2400)]
    frame = pl.DataFrame({"text": texts, "label": names[observed].tolist(), "emb": x.tolist()})
    data = write_table(frame, tmp_path / "many.parquet")
    invoke(["scan", data, "--embedding-col", "emb", "--out", tmp_path / "o", "--format", "quiet"])
    browser.get((tmp_path / "o" / "report.html").as_uri())
    heatmap = browser.find_element(By.ID, "heatmap")
    figures = browser.find_element(By.CSS_SELECTOR, ".figures")
    assert "wide" in heatmap.get_attribute("class")
    assert heatmap.size["width"] > 0.95 * figures.size["width"], "a row of its own"
    # Tick labels are rendered at a readable size, not scaled down to specks.
    heights = browser.execute_script(
        "return Array.from(document.querySelectorAll('#heatmap svg text'))"
        ".filter(t => t.textContent.startsWith('intent_number'))"
        ".map(t => t.getBoundingClientRect().height);"
    )
    assert heights and min(heights) >= 9, heights
    title = browser.find_element(By.ID, "error-share").get_attribute("innerHTML")
    assert f"of {k} classes with the most wrong labels" in title


def test_crowd_report_sorts_its_annotator_table(tmp_path, browser):
    from selenium.webdriver.common.by import By

    from tests.test_crowd import long_frame

    frame, *_ = long_frame(n_items=200)
    data = write_table(frame, tmp_path / "answers.parquet")
    invoke(
        [
            "scan",
            data,
            "--item-col",
            "item",
            "--annotator-col",
            "worker",
            "--label-col",
            "answer",
            "--reference-col",
            "llm",
            "--out",
            tmp_path / "o",
            "--format",
            "quiet",
        ]
    )
    browser.get((tmp_path / "o" / "report.html").as_uri())
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == [], severe
    assert browser.find_element(By.CSS_SELECTOR, "#accuracy-chart svg")
    assert browser.find_element(By.CSS_SELECTOR, "#heatmap svg")

    def answers_column():
        rows = browser.find_elements(By.CSS_SELECTOR, "#annotators tbody tr")
        return [int(r.find_elements(By.TAG_NAME, "td")[1].text.replace(",", "")) for r in rows]

    header = browser.find_elements(By.CSS_SELECTOR, "#annotators thead th")[1]
    header.click()
    assert answers_column() == sorted(answers_column(), reverse=True)
    header.click()
    assert answers_column() == sorted(answers_column())
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "crowd_report.png"))
