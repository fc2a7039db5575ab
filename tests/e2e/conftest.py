"""End-to-end fixtures: one Synapse and one maubot-standalone bot per test session.

Synapse runs from $SYNAPSE_PYTHON (its own virtualenv); maubot from $MAUBOT_PYTHON or the Python
running pytest. Without Synapse the suite is skipped, unless ROOMSTATE_E2E_REQUIRED=1 (as
scripts/test.sh sets), which makes that an error; the same goes for the browser (``browser``:
Debian's chromium and chromium-driver, and selenium). Every server's PID is stopped at the end and
the temp directory removed, unless a test failed or ROOMSTATE_E2E_KEEP=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from roomstate.db.history import unpack_event_id
from roomstate_dev.bots import StandaloneBot
from roomstate_dev.browser import browser_available, headless_chromium, screenshot
from roomstate_dev.client import MatrixUser, eventually
from roomstate_dev.servers import Synapse, synapse_python

if TYPE_CHECKING:
    from roomstate_dev.browser import WebDriver

pytestmark = pytest.mark.e2e

# Everything started in this session, for logs in failure reports.
RUNNING: dict[str, Any] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)  # for fixtures that keep evidence of a failure
    if report.failed and "/e2e/" in str(item.fspath):
        for name, server in RUNNING.items():
            report.sections.append((f"{name} logs", server.logs()))


def unavailable(message: str) -> None:
    """Skip for want of ``message``, or fail when the suite is required (ROOMSTATE_E2E_REQUIRED=1)."""
    if os.environ.get("ROOMSTATE_E2E_REQUIRED") == "1":
        pytest.fail(message)
    pytest.skip(message)


def synapse_available() -> bool:
    return subprocess.run([synapse_python(), "-c", "import synapse"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def e2e_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    if not synapse_available():
        unavailable(
            f"matrix-synapse is not importable by {synapse_python()} (set SYNAPSE_PYTHON; scripts/test.sh does)"
        )
    path = Path(tempfile.mkdtemp(prefix="roomstate-e2e-"))
    yield path
    if request.session.testsfailed or os.environ.get("ROOMSTATE_E2E_KEEP") == "1":
        print(f"\ne2e files kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebDriver]:
    """A headless chromium of this test's own (files it downloads go to tmp_path/downloads). When
    the test fails, the page it was on is kept as tmp_path/failure.png and failure.html."""
    reason = browser_available()
    if reason:
        unavailable(f"no browser: {reason}")
    with headless_chromium(downloads=tmp_path / "downloads") as driver:
        yield driver
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            try:
                (tmp_path / "failure.html").write_text(driver.page_source)
                screenshot(driver, tmp_path / "failure.png")
                print(f"\nthe page at {driver.current_url} is kept in {tmp_path}/failure.png and failure.html")
            except Exception as error:
                print(f"\nno picture of the failed page: {error}")


@pytest.fixture(scope="session")
def synapse(e2e_dir: Path) -> Iterator[Synapse]:
    server = Synapse(e2e_dir / "synapse")
    RUNNING["synapse"] = server
    try:
        server.start()
        yield server
    finally:
        server.stop()
        RUNNING.pop("synapse", None)


class People:
    def __init__(self, synapse: Synapse) -> None:
        self.synapse = synapse
        self.admin = self._user("admin")
        self.alice = self._user("alice", "Alice")
        self.bob = self._user("bob", "Bob")
        self.carol = self._user("carol", "Carol")
        self.dave = self._user("dave", "Dave")

    def newcomer(self, localpart: str, displayname: str) -> MatrixUser:
        """A user of one test only, free to be renamed, kicked or banned."""
        return self._user(localpart, displayname)

    def _user(self, localpart: str, displayname: str | None = None) -> MatrixUser:
        user_id, token = self.synapse.register(localpart, admin=localpart == "admin")
        user = MatrixUser(self.synapse.url, user_id, token)
        if displayname:
            user.set_displayname(displayname)
        return user


@pytest.fixture(scope="session")
def people(synapse: Synapse) -> People:
    return People(synapse)


class BotDatabase:
    """Reads (and for corruption tests, writes) the plugin's tables in the bot's database."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            return list(conn.execute(sa.text(sql), params))

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def members(self, room_id: str, membership: str = "join") -> set[str]:
        return {
            row[0]
            for row in self.rows(
                "SELECT u.user_id FROM roomstate_memberships m "
                "JOIN roomstate_users u ON u.user_nid = m.user_nid "
                "JOIN roomstate_rooms r ON r.room_nid = m.room_nid "
                "WHERE r.room_id = :room AND m.membership = :membership",
                room=room_id,
                membership=membership,
            )
        }

    def room(self, room_id: str) -> Any | None:
        found = self.rows(
            "SELECT i.* FROM roomstate_room_info i JOIN roomstate_rooms r ON r.room_nid = i.room_nid "
            "WHERE r.room_id = :room",
            room=room_id,
        )
        return found[0] if found else None

    def room_ids(self) -> set[str]:
        return {
            row[0]
            for row in self.rows(
                "SELECT r.room_id FROM roomstate_room_info i JOIN roomstate_rooms r ON r.room_nid = i.room_nid"
            )
        }

    def member_rows(self, room_id: str) -> int:
        return self.rows(
            "SELECT COUNT(*) FROM roomstate_memberships m JOIN roomstate_rooms r ON r.room_nid = m.room_nid "
            "WHERE r.room_id = :room",
            room=room_id,
        )[0][0]

    def processed_ids(self, room_id: str) -> set[str]:
        """The events claimed in the room: their ``roomstate_processed_events`` rows, and the
        member events whose history row is their claim."""
        apart = self.rows(
            "SELECT p.event_id FROM roomstate_processed_events p JOIN roomstate_rooms r ON r.room_nid = p.room_nid "
            "WHERE r.room_id = :room",
            room=room_id,
        )
        in_history = self.rows(
            "SELECT h.event_hash FROM roomstate_history h JOIN roomstate_rooms r ON r.room_nid = h.room_nid "
            "WHERE r.room_id = :room AND h.event_hash IS NOT NULL",
            room=room_id,
        )
        return {row[0] for row in apart} | {str(unpack_event_id(bytes(row[0]), None)) for row in in_history}


def wipe_postgres(url: str) -> None:
    """Start the standalone bot on an empty database (maubot's tables and ours)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def bot(e2e_dir: Path, synapse: Synapse, people: People) -> Iterator[StandaloneBot]:
    user_id, token = synapse.register("bot")
    database = os.environ.get("ROOMSTATE_E2E_DATABASE")  # a PostgreSQL URL; wiped first
    if database:
        wipe_postgres(database)
    runner = StandaloneBot(
        e2e_dir / "bot",
        synapse.url,
        user_id,
        token,
        database=database,
        plugin_config={"admins": [people.admin.user_id]},
    )
    RUNNING["maubot"] = runner
    try:
        runner.start(wait_for_first_sync=False)  # a first start has no sync token: nothing to miss
        nudge_room = people.admin.create_room("Nudge", invite=[user_id])
        eventually(
            lambda: user_id in people.admin.call("GET", f"{people.admin.room(nudge_room)}/joined_members")["joined"],
            what="bot joined the nudge room",
        )
        runner.nudge = lambda: people.admin.send(nudge_room, "nudge")  # ends the first sync's long poll
        yield runner
    finally:
        runner.stop()
        RUNNING.pop("maubot", None)


@pytest.fixture(autouse=True)
def no_plugin_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that uses the bot: nothing it did made the plugin crash (a traceback in
    the bot's log that mentions roomstate)."""
    if "bot" not in request.fixturenames:
        yield
        return
    runner: StandaloneBot = request.getfixturevalue("bot")
    before = len(runner.log_text())
    yield
    text = runner.log_text()[before:]
    crashes = [
        block for block in text.split("\n[") if "Traceback (most recent call last)" in block and "roomstate" in block
    ]
    assert not crashes, crashes[:2]


@pytest.fixture(scope="session")
def bot_db(bot: StandaloneBot) -> Iterator[BotDatabase]:
    db = BotDatabase(bot.database)
    yield db
    db.engine.dispose()


@pytest.fixture(scope="session")
def control_room(people: People, bot: StandaloneBot, bot_db: BotDatabase) -> str:
    """A room with the admin and the bot, for asking about other rooms."""
    from roomstate_dev.client import eventually

    room = people.admin.create_room("Control", invite=[bot.user_id])
    eventually(lambda: room in bot_db.room_ids(), what="bot joined the control room")
    return room
