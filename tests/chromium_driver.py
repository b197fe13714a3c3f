"""Headless Chromium for the browser tests (tests/serve/test_serve_browser.py, tests/export/test_web.py): where
the browser and its driver are, and one driver with bounded waits, quit when the block ends.

Debian: apt-get install chromium chromium-driver (.ci/run installs them as root); the tests skip without them.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p), None)


@contextlib.contextmanager
def chromium(window: str, wait_s: float) -> Iterator[Any]:
    """A headless Chromium WebDriver with a window of ``window`` ("W,H") pixels and every page load and script
    bounded by ``wait_s`` seconds; the browser logs its console (``get_log("browser")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={window}",
                "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(wait_s)
    driver.set_script_timeout(wait_s)
    try:
        yield driver
    finally:
        driver.quit()
