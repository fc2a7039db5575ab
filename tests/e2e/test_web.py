"""The web view in a real browser (Debian's chromium through selenium), against real Synapse and
maubot standalone: the sign-in link comes from the bot over Matrix, in a direct room; then rooms
→ room → user, the charts drawn with the right numbers, signing out; a screenshot of each page is
kept as a test artifact (``ROOMSTATE_SCREENSHOTS``: a directory to write them to as well, which
scripts/screenshots.sh uses for the README)."""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from selenium.webdriver.common.by import By

from roomstate_dev.bots import StandaloneBot
from roomstate_dev.browser import console_messages, mobile, screenshot, sideways_overflow
from roomstate_dev.client import eventually
from roomstate_dev.servers import Synapse

from .conftest import BotDatabase, People
from .signing_in import heading, main_text, sign_in_link

if TYPE_CHECKING:
    from roomstate_dev.browser import WebDriver

VISITORS = 6


def artifact(driver: WebDriver, tmp_path: Path, name: str) -> None:
    path = screenshot(driver, tmp_path / f"{name}.png")
    wanted = os.environ.get("ROOMSTATE_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(wanted) / f"{name}.png")


def test_signed_in_in_a_browser_rooms_room_user_and_out(
    people: People, synapse: Synapse, bot: StandaloneBot, bot_db: BotDatabase, browser: WebDriver, tmp_path: Path
) -> None:
    admin = people.admin
    room = admin.create_room("Web garden", invite=[bot.user_id], public=True, topic="<b>bold?</b> no")
    eventually(lambda: bot.user_id in bot_db.members(room), what="bot joined")
    visitors = [synapse.register_load_user(80_000 + i) for i in range(VISITORS)]
    for visitor in visitors:
        synapse.join_as_load_user(visitor, room)
    eventually(lambda: len(bot_db.members(room)) == VISITORS + 2, what="visitors stored")

    # nothing without signing in
    with urllib.request.urlopen(bot.web_url + "/health") as health:
        assert health.read() == b"ok"
    browser.get(bot.web_url + "/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"
    assert "Web garden" not in browser.page_source
    assert [m for m in console_messages(browser) if "401" not in m] == []  # only the page's own status

    link = sign_in_link(admin, bot.user_id, room)
    browser.get(link)
    artifact(browser, tmp_path, "sign-in")
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    eventually(lambda: heading(browser) == "Rooms", what="the rooms page")
    artifact(browser, tmp_path, "rooms")
    assert f"Signed in as {admin.user_id}" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    row = browser.find_element(By.XPATH, "//table//tr[td/a[text()='Web garden']]")
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[2] == str(VISITORS + 2), cells  # members, as Synapse has them

    row.find_element(By.LINK_TEXT, "Web garden").click()
    eventually(lambda: heading(browser) == "Web garden", what="the room page")
    artifact(browser, tmp_path, "room")
    charts = browser.find_elements(By.CSS_SELECTOR, "main svg[role=img]")
    assert len(charts) == 2
    desc = charts[0].find_element(By.TAG_NAME, "desc").get_attribute("textContent") or ""
    assert f"to {VISITORS + 2}" in desc, desc  # the member count chart ends at today's count
    bars = charts[1].find_element(By.TAG_NAME, "desc").get_attribute("textContent") or ""
    assert f"{VISITORS} joins" in bars or f"{VISITORS + 0} joins" in bars, bars
    browser.find_element(By.TAG_NAME, "summary").click()  # the numbers behind the chart
    numbers = browser.find_element(By.CSS_SELECTOR, "details table").text
    assert str(VISITORS + 2) in numbers
    assert "<b>bold?</b> no" in browser.find_element(By.CSS_SELECTOR, "dl.info").text  # shown as text

    browser.find_element(By.LINK_TEXT, visitors[0]).click()
    eventually(lambda: heading(browser) == visitors[0], what="the user page")
    artifact(browser, tmp_path, "user")
    assert "Web garden" in browser.find_element(By.TAG_NAME, "main").text

    mobile(browser)  # usable on a phone: nothing runs off the side
    browser.get(bot.web_url + "/room/" + quote(room, safe=""))
    assert sideways_overflow(browser) == 0
    artifact(browser, tmp_path, "room-phone")
    assert console_messages(browser) == []  # no CSP violation, nothing broken

    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    eventually(lambda: heading(browser) == "Signed out", what="signed out")
    browser.get(bot.web_url + "/")
    assert heading(browser) == "Sign in"
    browser.get(link)  # the link worked once
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    eventually(lambda: "used already" in main_text(browser), what="the used link refused")
