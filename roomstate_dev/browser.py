"""A real browser for the end-to-end suite: Debian's chromium, headless, driven by selenium through
Debian's chromedriver.

Nothing is downloaded at run time: the browser and its driver come from apt (``chromium`` and
``chromium-driver``; .ci/run installs them), and selenium is given both paths, so Selenium Manager
(selenium's driver and browser downloader) never runs. Every browser gets a fresh profile in a
temporary directory and is quit, and that directory removed, when its ``with`` block ends.

    with headless_chromium() as driver:
        driver.get(url)
        screenshot(driver, tmp_path / "page.png")
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .servers import ServerFailed, tail

if TYPE_CHECKING:
    from selenium.webdriver import Chrome as WebDriver  # chromium's driver: it has get_log

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "FLAGS",
    "PHONE",
    "WINDOW",
    "WebDriver",
    "browser_available",
    "console_messages",
    "headless_chromium",
    "mobile",
    "page_size",
    "screenshot",
    "set_viewport",
    "sideways_overflow",
    "viewport",
]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's launcher script (package chromium)
CHROMEDRIVER = Path("/usr/bin/chromedriver")  # package chromium-driver, always the same version
WINDOW = (1280, 900)  # the viewport of a new browser, in CSS pixels
PHONE = (390, 844)  # a current mid-size phone in portrait (CSS pixels)

# A quiet, reproducible browser: no sandbox (it needs user namespaces, often missing in containers
# and unusable as root), no GPU, shared memory in /tmp rather than a small /dev/shm, no network
# of its own (updates, sync, field trials, QUIC), no extensions, and no scrollbars, so that a page
# laid out at 390 pixels is 390 pixels wide, as on a phone, and screenshots show only the page.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
)


def browser_available() -> str | None:
    """None when ``headless_chromium`` can run here; otherwise why not (for a skip or a failure)."""
    missing = [
        f"{path} (apt package {package})"
        for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver"))
        if not os.access(path, os.X_OK)
    ]
    if missing:
        return f"not installed: {', '.join(missing)}; `apt install chromium chromium-driver` (.ci/run does)"
    try:
        import selenium.webdriver  # noqa: F401
    except ImportError as error:
        return f"selenium is not importable by {sys.executable} ({error}); requirements/sa13.txt and sa2.txt pin it"
    return None


@contextmanager
def headless_chromium(downloads: Path | None = None) -> Iterator[WebDriver]:
    """A headless chromium with a fresh profile and a ``WINDOW``-sized viewport, quit at the end.

    ``downloads``: where files the page downloads are saved, without asking. The chromedriver log
    (with the browser's own output) is attached to the error when the browser does not start.
    """
    reason = browser_available()
    if reason:
        raise ServerFailed(f"no browser: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    work = Path(tempfile.mkdtemp(prefix="roomstate-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # an explicit browser: Selenium Manager never looks
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={work / 'profile'}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for console_messages
    if downloads is not None:
        downloads.mkdir(parents=True, exist_ok=True)
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(downloads.resolve()),
                "download.prompt_for_download": False,
                "download.directory_upgrade": True,
            },
        )
    # An explicit driver path is what makes selenium skip Selenium Manager (DriverFinder); only
    # selenium's own $SE_CHROMEDRIVER, when set, would still replace it.
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(work / "chromedriver.log"))
    try:
        try:
            driver = webdriver.Chrome(service=service, options=options)
        except Exception as error:
            raise ServerFailed(
                f"chromium did not start: {error}\n--- chromedriver.log ---\n{tail(work / 'chromedriver.log')}"
            ) from error
        try:
            set_viewport(driver, *WINDOW)  # --window-size is the outer size, the page gets less
            yield driver
        finally:
            try:
                driver.quit()
            except Exception:
                service.stop()  # at least the driver process, whatever state the browser is in
    finally:
        shutil.rmtree(work, ignore_errors=True)


def viewport(driver: WebDriver) -> tuple[int, int]:
    """The page's viewport (``innerWidth``, ``innerHeight``), in CSS pixels."""
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    return int(width), int(height)


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    """Resize the window so that the page's viewport is ``width`` x ``height`` CSS pixels.

    The window's own frame (about 140 pixels of height in headless chromium) is measured and added,
    as selenium sizes the window, not the page."""
    for _ in range(3):
        inner = viewport(driver)
        if inner == (width, height):
            return
        outer = driver.get_window_size()
        driver.set_window_size(outer["width"] + width - inner[0], outer["height"] + height - inner[1])
    inner = viewport(driver)
    if inner != (width, height):
        raise RuntimeError(f"viewport is {inner[0]}x{inner[1]}, not {width}x{height}")


def page_size(driver: WebDriver) -> tuple[int, int]:
    """The whole document's width and height (what a full-page picture must cover), in CSS pixels."""
    size = driver.execute_script(
        "const d = document.documentElement, b = document.body || d;"
        "return [Math.max(d.scrollWidth, b.scrollWidth), Math.max(d.scrollHeight, b.scrollHeight)]"
    )
    return int(size[0]), int(size[1])


def screenshot(driver: WebDriver, path: Path) -> Path:
    """Save a PNG of the whole page's height, not just what is in view: the viewport is made as tall
    as the document for the picture (again until the height stops changing, since a taller viewport
    can change the layout), then given back its size. Returns ``path``."""
    width, height = viewport(driver)
    try:
        for _ in range(3):
            wanted = max(height, page_size(driver)[1])
            if viewport(driver)[1] == wanted:
                break
            set_viewport(driver, width, wanted)
            time.sleep(0.1)  # a frame for resize handlers and the new layout
        path.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(path)):
            raise RuntimeError(f"chromium gave no screenshot for {path}")
    finally:
        set_viewport(driver, width, height)
    return path


def mobile(driver: WebDriver) -> None:
    """Give the page a phone's viewport (``PHONE``, 390 x 844 CSS pixels) for a "usable on a
    phone" check (with ``sideways_overflow``). This is a narrow window, not a device emulation:
    the page's ``<meta name="viewport">`` is not needed for it and so not tested by it."""
    set_viewport(driver, *PHONE)


def sideways_overflow(driver: WebDriver) -> int:
    """How many CSS pixels the page is wider than its viewport (0: no sideways scrolling)."""
    return max(0, page_size(driver)[0] - viewport(driver)[0])


def console_messages(driver: WebDriver, level: str = "SEVERE") -> list[str]:
    """What the page logged to the console (and the browser's own errors, such as a failed request
    or an uncaught exception) at ``level`` (SEVERE, WARNING, INFO) or above since the last call."""
    order = ["DEBUG", "INFO", "WARNING", "SEVERE"]
    return [
        entry["message"]
        for entry in driver.get_log("browser")  # type: ignore[no-untyped-call]
        if order.index(entry.get("level", "SEVERE")) >= order.index(level)
    ]
