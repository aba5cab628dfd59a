"""A real browser for the pages a person looks at: Debian's headless Chromium driven by Selenium through
/usr/bin/chromedriver (nothing is downloaded at run time), and where screenshots are kept."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from conftest import need

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Headless, sandbox-free (containers), and quiet: no first-run UI, no background traffic or updates.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")
ROOT = Path(__file__).resolve().parents[1]


def artifact_dir() -> Path:
    """Where tests keep what a person may want to look at after a run (screenshots):
    ``$OTEL_RAI_TEST_ARTIFACTS``, else build/test-artifacts in the repository."""
    path = Path(os.environ.get("OTEL_RAI_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A Selenium driver of a fresh headless Chromium (its own profile directory), quit afterwards. Its
    console messages are kept (``driver.get_log("browser")``)."""
    need("Chromium and chromedriver (apt-get install chromium chromium-driver)",
         bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="otel-rai-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[dict]:
    """The browser console's errors so far (level SEVERE)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def full_page_screenshot(driver: Any, path: Path, width: int = 1280) -> Path:
    """A screenshot of the whole page (the window grown to the document's height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(height, 400))
    driver.save_screenshot(str(path))
    return path
