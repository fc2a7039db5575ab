"""The browser infrastructure on its own, without Synapse or the plugin: Debian's chromium, headless,
opens a page served over HTTP on 127.0.0.1; its DOM (a heading, a table, an inline SVG) is read,
full-page and phone-sized screenshots are taken and checked, a download is saved, and Selenium
Manager (selenium's downloader) is never asked for anything."""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from roomstate_dev.browser import (
    PHONE,
    WINDOW,
    browser_available,
    console_messages,
    headless_chromium,
    mobile,
    page_size,
    screenshot,
    sideways_overflow,
    viewport,
)
from roomstate_dev.servers import free_port

from .conftest import unavailable

if TYPE_CHECKING:
    from roomstate_dev.browser import WebDriver

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Room state</title>
<style>
  body { margin: 0; font: 16px/1.4 sans-serif; }
  main { padding: 1rem; }
  .scroll { overflow-x: auto; max-width: 100%; }
  table { border-collapse: collapse; }
  td, th { border: 1px solid #888; padding: 0.2rem 0.5rem; }
  .tall { height: 2400px; }
  footer { height: 60px; background: rgb(0, 160, 0); }
</style>
</head>
<body>
<main>
  <h1>Room state</h1>
  <div class="scroll">
    <table id="rooms">
      <thead><tr><th>Room</th><th>Members</th></tr></thead>
      <tbody>
        <tr><td>Lobby</td><td>42</td></tr>
        <tr><td>Support</td><td>7</td></tr>
        <tr><td>Archive</td><td>0</td></tr>
      </tbody>
    </table>
  </div>
  <svg id="chart" width="300" height="100" viewBox="0 0 300 100" role="img" aria-label="Members">
    <rect id="lobby" x="0" y="58" width="40" height="42" fill="steelblue" data-members="42"></rect>
    <rect id="support" x="50" y="93" width="40" height="7" fill="steelblue" data-members="7"></rect>
  </svg>
  <p><a id="export" href="/export.csv">Export (CSV)</a></p>
  <div class="tall"></div>
</main>
<footer></footer>
<script>console.error("roomstate-test: a message for console_messages");</script>
</body>
</html>
"""
CSV = "room,members\nLobby,42\nSupport,7\nArchive,0\n"


@pytest.fixture
def site() -> Iterator[str]:
    """The page above (and a CSV download) from aiohttp on 127.0.0.1, in a thread of its own."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def export(request: web.Request) -> web.Response:
        return web.Response(
            text=CSV, content_type="text/csv", headers={"Content-Disposition": 'attachment; filename="rooms.csv"'}
        )

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/export.csv", export)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, name="test-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.fixture(autouse=True)
def no_selenium_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Selenium Manager finds (and downloads) drivers and browsers; ours are given by path, so
    selenium must never run it."""
    reason = browser_available()
    if reason:
        unavailable(f"no browser: {reason}")
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(self: SeleniumManager, args: list[str]) -> dict[str, str]:
        raise AssertionError(f"Selenium Manager was asked for {args}")

    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_pixel(driver: WebDriver, path: Path, x: int, y: int) -> list[int]:
    """The RGBA of one pixel of a PNG, read by the browser itself (a canvas), so no image library."""
    source = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    pixel: list[int] = driver.execute_async_script(
        """
        const [source, x, y, done] = arguments;
        const image = new Image();
        image.onload = () => {
          const canvas = document.createElement("canvas");
          canvas.width = image.width;
          canvas.height = image.height;
          const context = canvas.getContext("2d");
          context.drawImage(image, 0, 0);
          done(Array.from(context.getImageData(x, y, 1, 1).data));
        };
        image.onerror = () => done(null);
        image.src = source;
        """,
        source,
        x,
        y,
    )
    return pixel


def test_a_page_in_headless_chromium(browser: WebDriver, site: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    assert viewport(browser) == WINDOW
    browser.get(site)
    assert browser.title == "Room state"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Room state"
    rows = [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#rooms tbody tr")
    ]
    assert rows == [["Lobby", "42"], ["Support", "7"], ["Archive", "0"]]

    # The inline SVG is in the DOM with its attributes, and laid out (a real box, not just markup).
    bar = browser.find_element(By.CSS_SELECTOR, "svg#chart rect#lobby")
    assert bar.get_attribute("data-members") == "42"
    assert bar.get_attribute("height") == "42"
    assert browser.execute_script("const b = arguments[0].getBBox(); return [b.width, b.height]", bar) == [40, 42]
    assert bar.is_displayed()
    assert [m for m in console_messages(browser) if "roomstate-test: a message for console_messages" in m]

    # A full-page picture: the whole document's height, down to the green footer, at its width.
    width, height = page_size(browser)
    assert width == WINDOW[0]
    assert height > WINDOW[1] + 1000  # much taller than the window: the picture must grow
    picture = screenshot(browser, tmp_path / "page.png")
    assert png_size(picture) == (WINDOW[0], height)
    red, green, blue, _ = png_pixel(browser, picture, 10, height - 10)
    assert (red, green, blue) == (0, 160, 0), "the bottom of the picture is not the page's footer"
    assert viewport(browser) == WINDOW  # given back

    # The same page on a phone: its viewport, no sideways scrolling, and a phone-wide picture.
    mobile(browser)
    assert viewport(browser) == PHONE
    assert browser.execute_script("return document.documentElement.clientWidth") == PHONE[0]
    assert sideways_overflow(browser) == 0
    phone_picture = screenshot(browser, tmp_path / "phone.png")
    assert png_size(phone_picture) == (PHONE[0], page_size(browser)[1])
    print(f"\nscreenshots: {picture} {phone_picture}")


def test_a_download_is_saved(browser: WebDriver, site: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site)
    browser.find_element(By.ID, "export").click()
    saved = tmp_path / "downloads" / "rooms.csv"
    deadline = time.monotonic() + 20
    while not saved.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert saved.exists(), sorted(p.name for p in (tmp_path / "downloads").iterdir())
    assert saved.read_text() == CSV


def test_the_browser_leaves_nothing_behind(site: str) -> None:
    with headless_chromium() as driver:
        driver.get(site)
        profile = Path(driver.capabilities["chrome"]["userDataDir"])
        process = driver.service.process
        assert profile.is_dir()
    assert not profile.exists()
    assert process.poll() is not None  # chromedriver (and with it the browser) has exited
