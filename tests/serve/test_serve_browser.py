"""The viewer in a real browser: headless Chromium driven by Selenium (system chromedriver) against a live server.

Skips, with the reason, where selenium, chromium or chromedriver is missing (Debian: apt-get install chromium
chromium-driver). Saves a screenshot under tmp_path, and a copy in $NERFGAN_SCREENSHOT_DIR when it is set.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'nerfgan[serve]'")
pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'nerfgan[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")

from chromium_driver import CHROMEDRIVER, CHROMIUM, chromium
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isfile(CHROMEDRIVER), reason="needs chromedriver (apt-get install chromium-driver)"),
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)"),
]
WAIT_S = 90  # every wait is bounded; rendering shares 2 busy cores here


@pytest.fixture
def browser():
    with chromium("900,900", WAIT_S) as driver:
        yield driver


@pytest.fixture
def live_url(gen):
    from nerfgan.serve import create_app
    from nerfgan.serve.server import running

    with running(create_app(gen), timeout_s=WAIT_S) as url:
        yield url


def pixels(driver) -> str:
    """sha256 of the shown image's pixels, read back through a canvas (the src is a same-origin blob: URL)."""
    data = driver.execute_script("""
        const img = document.getElementById('view');
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0);
        return c.toDataURL('image/png');""")
    return hashlib.sha256(base64.b64decode(data.split(",", 1)[1])).hexdigest()


def settled(driver, after: int) -> int:
    """Wait until more than ``after`` frames arrived, no request is pending and the shown image is decoded."""
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d) -> bool:
        return bool(d.execute_script("""
            const img = document.getElementById('view');
            return Number(img.dataset.frames || 0) > arguments[0] && img.dataset.busy === '0' && img.complete
                && img.naturalWidth > 0;""", after))

    WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(done)
    return int(driver.find_element("id", "view").get_attribute("data-frames"))


def test_the_viewer_turns_the_object_when_dragged(browser, live_url, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(live_url + "/")
    frames = settled(browser, 0)
    img = browser.find_element("id", "view")
    before_src, before = img.get_attribute("src"), pixels(browser)
    assert before_src.startswith("blob:") and browser.execute_script("return document.getElementById('view')"
                                                                     ".naturalWidth") == 128
    assert "onnxruntime" in browser.find_element("id", "engine").text

    browser.execute_script("""  // count render requests in flight: the viewer keeps at most one
        const real = window.fetch;
        window.renders = { now: 0, max: 0, total: 0 };
        window.fetch = async (...args) => {
            const r = window.renders, render = String(args[0]).includes('v1/render');
            if (render) { r.now += 1; r.total += 1; r.max = Math.max(r.max, r.now); }
            try { return await real(...args); } finally { if (render) r.now -= 1; }
        };""")
    chain = ActionChains(browser).move_to_element(img).click_and_hold()
    for _ in range(10):  # a drag to the left and down, in steps: the object turns left and tips toward us
        chain.move_by_offset(-8, 3).pause(0.05)
    chain.release().perform()
    frames = settled(browser, frames)
    yaw, pitch = float(img.get_attribute("data-yaw")), float(img.get_attribute("data-pitch"))
    assert yaw == pytest.approx(32, abs=1.5) and pitch == pytest.approx(12, abs=1.5)
    assert img.get_attribute("src") != before_src and pixels(browser) != before
    renders = browser.execute_script("return window.renders")
    assert renders["max"] == 1 and 1 <= renders["total"] <= 10, renders  # stale poses dropped, the latest shown
    assert "fps" in browser.find_element("id", "fps").text and browser.find_element("id", "error").text == ""

    shot = tmp_path / "viewer.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    if os.environ.get("NERFGAN_SCREENSHOT_DIR"):
        out = Path(os.environ["NERFGAN_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "viewer.png")

    ActionChains(browser).move_to_element(img).click_and_hold().move_by_offset(0, 300).release().perform()
    frames = settled(browser, frames)
    assert float(img.get_attribute("data-pitch")) == 89  # clamped inside the engine's pose limits (/v1/info)

    seed = browser.find_element("id", "seed").get_attribute("value")
    shown = pixels(browser)
    browser.find_element("id", "random").click()
    settled(browser, frames)
    assert browser.find_element("id", "seed").get_attribute("value") != seed and pixels(browser) != shown

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
