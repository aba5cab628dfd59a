"""The report in a real browser: the example's planted bias, reported from the local store, rendered by
headless Chromium. No console error; every chart has a title and axis labels; the explanation section
lists the top features, `sex` first for the biased version; several versions are compared. The
screenshots are kept (tests/browser.py: build/test-artifacts)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from browser import artifact_dir, chromium, console_errors, full_page_screenshot

from otel_rai import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import credit_scoring  # noqa: E402


@pytest.fixture(scope="module")
def example_store(tmp_path_factory):
    """The decisions of the example's fairness part (versions 2.0 and 2.1) in a store of their own."""
    home = tmp_path_factory.mktemp("report-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("OTEL_RAI_HOME", str(home))
    logger = logging.getLogger("otel_rai.alerts")
    handlers, level = list(logger.handlers), logger.level
    try:
        credit_scoring.fairness_demo()
        import otel_rai

        otel_rai.uninstrument()
    finally:
        logger.handlers[:], logger.level = handlers, level
        patch.undo()
    return home / "audit.db"


def _report(store: Path, out: Path, *versions: str) -> Path:
    argv = ["report", "--store", str(store), "--out", str(out)]
    for version in versions:
        argv += ["--model-version", version]
    assert cli.main(argv) == 0
    return out


def _check_charts(driver) -> list[str]:
    """Every chart's title, after checking it has one, shown and as its accessible name, and axis labels."""
    charts = driver.find_elements("css selector", "svg.chart")
    assert charts
    titles = []
    for chart in charts:
        title = chart.find_element("css selector", "title").get_attribute("textContent").strip()
        shown = chart.find_element("css selector", "text.chart-title")
        assert title and shown.text.strip() == title and shown.is_displayed()
        labels = [e.get_attribute("textContent") for e in chart.find_elements("css selector", "text.axis-label")]
        assert labels and all(label.strip() for label in labels), title
        if "lines" in chart.get_attribute("class") or "over-time" in chart.get_attribute("class"):
            assert len(labels) == 2 and "(UTC)" in labels[0], (title, labels)  # time axis, value axis
        assert chart.size["width"] > 300 and chart.size["height"] > 80, title
        titles.append(title)
    return titles


def test_the_biased_versions_report_in_a_browser(example_store, tmp_path):
    page = _report(example_store, tmp_path / "report.html", "2.0")
    with chromium() as driver:
        driver.get(page.as_uri())
        assert driver.title == "Fairness audit: credit 2.0"
        titles = _check_charts(driver)
        assert {"Selection rate by sex", "Decisions over time by sex", "Selection rate over time by sex",
                "Mean absolute attribution by feature"} <= set(titles)
        assert driver.find_element("id", "explained").text == "3000"
        features = [li.get_attribute("data-feature")
                    for li in driver.find_elements("css selector", "ol.top-features li")]
        assert features[0] == "sex" and {"debt_ratio", "income"} <= set(features)
        assert driver.find_element("css selector", "strong.top-feature").text == "sex"
        bars = driver.find_elements("css selector", "svg.attributions rect.bar")
        assert bars[0].get_attribute("data-feature") == "sex"
        assert "`" not in driver.find_element("tag name", "body").text
        assert console_errors(driver) == []
        shot = full_page_screenshot(driver, artifact_dir() / "report-credit-2.0.png")
    assert shot.stat().st_size > 10_000


def test_two_versions_are_compared_in_a_browser(example_store, tmp_path):
    page = _report(example_store, tmp_path / "compare.html", "2.0", "2.1")
    with chromium() as driver:
        driver.get(page.as_uri())
        titles = _check_charts(driver)
        assert "Selection rate by version and sex" in titles and "Selection rate over time by version" in titles
        rows = driver.find_elements("css selector", "table.comparison tbody tr")
        assert [r.get_attribute("data-version") for r in rows] == ["2.0", "2.1"]
        assert "violated" in rows[0].text and "violated" not in rows[1].text
        assert rows[0].text.rstrip().endswith("sex")  # 2.0's most attributed feature; 2.1 never sees sex
        assert console_errors(driver) == []
        full_page_screenshot(driver, artifact_dir() / "report-credit-2.0-and-2.1.png")
