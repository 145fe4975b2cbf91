"""The explorer in a real headless browser (Debian's chromium + chromium-driver, driven by
Selenium): the page loads, shows the grid of samples, and moving the slider changes the image.
Skipped where Gradio, Selenium or Chromium is absent."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from tests
pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromium-driver"
)

from progan.explore.app import build_app, launch  # noqa: E402
from progan.explore.model import Explorer  # noqa: E402
from progan.generate import load_generator  # noqa: E402

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1500",
)


def open_browser(profile_dir):
    """A headless Chromium with a fresh profile in ``profile_dir``."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def mix_image_src(driver) -> str | None:
    from selenium.webdriver.common.by import By

    images = driver.find_elements(By.CSS_SELECTOR, "#mix img")
    return images[0].get_attribute("src") if images else None


def move_slider(driver, presses: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    slider = driver.find_element(By.CSS_SELECTOR, "#t input[type=range]")
    slider.click()
    for _ in range(presses):
        slider.send_keys(Keys.ARROW_RIGHT)


def explore_in_browser(G, profile_dir, screenshot=None, page_size: int = 16):
    """Start the app, load it in Chromium, check grid and slider; returns (sources before and
    after moving the slider, number of grid images)."""
    from selenium.webdriver.common.by import By

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(Explorer(G), page_size=page_size)
    _, url, _ = launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    driver = open_browser(profile_dir)
    try:
        driver.get(url)
        count = wait_for(
            lambda: (
                len(driver.find_elements(By.CSS_SELECTOR, "#samples img")) >= page_size
                and len(driver.find_elements(By.CSS_SELECTOR, "#samples img"))
            ),
            what="the grid of samples",
        )
        before = wait_for(lambda: mix_image_src(driver), what="the interpolated image")
        move_slider(driver, 30)
        after = wait_for(
            lambda: (src := mix_image_src(driver)) not in (None, before) and src,
            what="a new image after moving the slider",
        )
        if screenshot is not None:
            time.sleep(1.0)
            driver.save_screenshot(str(screenshot))
        return before, after, count
    finally:
        driver.quit()
        demo.close()


def test_page_loads_grid_shows_and_slider_changes_the_image(snapshot, tmp_path):
    G = load_generator(os.environ.get("PROGAN_EXPLORER_CHECKPOINT", snapshot))
    # PROGAN_EXPLORER_CHECKPOINT / _SCREENSHOT: the docs' screenshot (docs/results/explorer.png)
    shot = Path(os.environ.get("PROGAN_EXPLORER_SCREENSHOT", tmp_path / "explorer.png"))
    before, after, count = explore_in_browser(G, tmp_path / "profile", shot)
    assert count >= 16 and before != after
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
