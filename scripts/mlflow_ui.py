"""Open a trace in MLflow's UI in headless Chromium, screenshot it and return the text it shows.

    python3 scripts/mlflow_ui.py http://127.0.0.1:5000 EXPERIMENT_ID TRACE_ID out.png
                                 [--tab "Inputs / Outputs"] [--tab Attributes] [--window 1500,950]

Selenium drives Debian's ``chromium`` through ``/usr/bin/chromedriver`` (no browser is downloaded), in a
fresh profile, with the browser's own network chatter switched off. The trace opens in the experiment's
Traces tab (``?selectedEvaluationId=``); MLflow's first-visit hints and its assistant panel are closed so
that the span fills the picture. Each tab asked for is opened in turn and its panel's text returned; the
screenshot shows the first. Used by tests/test_mlflow_tracking.py and for docs/mlflow.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")
WINDOW = "1500,950"
#: The span tabs opened by default: what a person looks at first, then the whole decision record.
TABS = ("Inputs / Outputs", "Attributes")
#: The UI is a single-page app that loads the trace after the page: wait for it this long at most.
LOAD_TIMEOUT_S = 90.0
_POLL_S = 0.5
#: Buttons that cover the trace on a first visit (MLflow 3.17's component ids).
_DISMISS = ("mlflow.detect_issues.guidance.dismiss", "mlflow.assistant.chat_panel.close")


def open_trace(url: str, experiment_id: str, trace_id: str, png: Path, tabs: Sequence[str] = TABS,
               window: str = WINDOW, expected: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """Screenshot trace `trace_id` (``tr-...``) with the span's first tab of `tabs` open into `png`; the text
    of each tab's panel, by tab (and the whole page's under ``""``). A tab's panel is read once it shows
    some text, and every string `expected` lists for it (or when the wait is over: the caller judges)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={window}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.get(f"{url.rstrip('/')}/#/experiments/{experiment_id}/traces?selectedEvaluationId={trace_id}")

            def tab_named(name: str) -> list:  # found again each time: React replaces the elements it renders
                return [t for t in driver.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text.strip() == name]

            def panel_text() -> str:  # the panels on view (the other tabs' are hidden or not rendered)
                return "\n".join(p.text for p in driver.find_elements(By.CSS_SELECTOR, "[role=tabpanel]")
                                 if p.is_displayed() and p.text.strip())

            _wait(driver, lambda: tab_named(tabs[0]))
            for component in _DISMISS:
                for button in driver.find_elements(By.CSS_SELECTOR, f'button[data-component-id="{component}"]'):
                    _click(driver, button)
            texts: dict[str, str] = {}
            for name in tabs:
                _wait(driver, lambda n=name: any(_click(driver, t) and t.get_attribute("aria-selected") == "true"
                                                 for t in tab_named(n)))
                wanted = tuple((expected or {}).get(name, ()))
                try:
                    texts[name] = _wait(driver, lambda w=wanted: (t := panel_text()) and all(x in t for x in w) and t)
                except TimeoutError:
                    texts[name] = panel_text()
                if name == tabs[0]:
                    driver.save_screenshot(str(png))
            texts[""] = driver.find_element(By.TAG_NAME, "body").text
            return texts
        finally:
            driver.quit()


def _click(driver, element) -> bool:  # noqa: ANN001 - Selenium objects
    """Press and click `element` with JavaScript, so that no overlay intercepts it (Radix tabs switch on
    the press, buttons on the click); False if it is gone already."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        driver.execute_script("""
            const e = arguments[0], o = {bubbles: true, cancelable: true, button: 0, pointerType: "mouse"};
            e.dispatchEvent(new PointerEvent("pointerdown", o));
            e.dispatchEvent(new MouseEvent("mousedown", o));
            e.dispatchEvent(new PointerEvent("pointerup", o));
            e.dispatchEvent(new MouseEvent("mouseup", o));
            e.click();""", element)
        return True
    except StaleElementReferenceException:
        return False


def _wait(driver, found):  # noqa: ANN001, ANN202 - a local helper around Selenium objects
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(_POLL_S)
    raise TimeoutError(f"MLflow's UI did not show what was expected within {LOAD_TIMEOUT_S} s")


def main() -> None:
    """The command line: print the page's text, write the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("experiment_id")
    parser.add_argument("trace_id")
    parser.add_argument("png", type=Path)
    parser.add_argument("--tab", action="append", dest="tabs",
                        help=f"a span tab to open, repeatable; the screenshot shows the first (default: {TABS})")
    parser.add_argument("--window", default=WINDOW, help=f"width,height in pixels (default {WINDOW})")
    args = parser.parse_args()
    texts = open_trace(args.url, args.experiment_id, args.trace_id, args.png, args.tabs or TABS, args.window)
    for tab, text in texts.items():
        print(f"--- {tab or 'page'}\n{text}")


if __name__ == "__main__":
    main()
