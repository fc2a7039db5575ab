"""How users install it: the .mbp from build.sh uploaded to a maubot manager through its API."""

from __future__ import annotations

import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from selenium.webdriver.common.by import By

from roomstate_dev.bots import ManagerBot, build_mbp
from roomstate_dev.client import eventually
from roomstate_dev.servers import Synapse

from .conftest import RUNNING, People
from .signing_in import heading, sign_in_link

if TYPE_CHECKING:
    from roomstate_dev.browser import WebDriver


def test_uploaded_mbp_runs_in_the_maubot_manager(
    e2e_dir: Path, synapse: Synapse, people: People, browser: WebDriver
) -> None:
    mbp = build_mbp(e2e_dir / "dist")
    manager = ManagerBot(e2e_dir / "manager", synapse.url)
    RUNNING["maubot-manager"] = manager
    bot_id, bot_token = synapse.register("managerbot")
    try:
        manager.start()
        instance = manager.install(mbp, bot_id, bot_token)
        assert instance["type"] == "org.roomstate.roomstate" and instance["started"]
        assert instance["database"] is True and instance["database_interface"] == "sqlalchemy"

        alice, bob = people.alice, people.bob
        room = alice.create_room("Manager mode", invite=[bob.user_id, bot_id])
        bob.join(room)
        eventually(
            lambda: bot_id in alice.call("GET", f"{alice.room(room)}/joined_members")["joined"],
            what="manager bot joined",
        )
        reply = alice.ask(room, bot_id, "!rooms")
        assert reply.splitlines()[0] == "I'm in 1 room that you are in too:" and "“Manager mode” (3 members)" in reply

        # the instance database is the SQLite file maubot made for it, holding our tables
        [db_file] = list((e2e_dir / "manager" / "dbs").glob("*.db"))
        with sqlite3.connect(db_file) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert {"roomstate_rooms", "roomstate_memberships", "roomstate_processed_events"} <= tables
            assert conn.execute("SELECT COUNT(*) FROM roomstate_memberships").fetchone()[0] == 3
        # and the manager's database viewer can read them
        viewer = manager.api("GET", "/instance/roomstate/database")
        assert {"roomstate_rooms", "roomstate_memberships"} <= set(viewer)

        # the web view, under the manager's plugin path: private, and a sign-in works there
        web = f"{manager.url}/_matrix/maubot/plugin/roomstate"
        with urllib.request.urlopen(web + "/health") as health:
            assert health.read() == b"ok"
        for private in ("/", "/api/v1/rooms", "/metrics"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(web + private)
            assert refused.value.code == 401, private
        link = sign_in_link(alice, bot_id, room)
        assert link.startswith(web + "/login?t=")
        browser.get(link)
        browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        eventually(lambda: heading(browser) == "Rooms", what="the rooms page")
        row = browser.find_element(By.XPATH, "//table//tr[td/a[text()='Manager mode']]")
        assert [td.text for td in row.find_elements(By.TAG_NAME, "td")][2] == "3"
        row.find_element(By.LINK_TEXT, "Manager mode").click()
        eventually(lambda: heading(browser) == "Manager mode", what="the room page")
    finally:
        manager.stop()
        RUNNING.pop("maubot-manager", None)
