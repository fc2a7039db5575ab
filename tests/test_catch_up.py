"""Restarts that cost what changed: the plugin's own sync position and the catch-up from it.

The fake homeserver keeps a stream of every event it made and answers /sync from a position the
way Synapse does (a timeline per changed room, ``limited`` past the filter's limit, a room joined
meanwhile with its full state, rooms left in ``leave``); ``hs.state_requests()`` counts the
full-state requests.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

import pytest

import roomstate.bot
from roomstate.db.dialect import Dialect

from .helpers import ADMIN, ALICE, BOB, BOT, CAROL, DAVE, ROOM, Harness, eventually, sync_response

OTHER = "!other:fake.test"
NEW = "!new:fake.test"


async def two_rooms(harness: Harness, **config: Any) -> None:
    await harness.start(**config)
    await harness.setup_room(ROOM, ALICE, "Design", (BOB, ADMIN))
    await harness.setup_room(OTHER, BOB, "Other", (CAROL,))


def saved_position(harness: Harness) -> str | None:
    rows = harness.db.rows("SELECT next_batch FROM roomstate_sync_position")
    return rows[0][0] if rows else None


async def test_a_quiet_restart_fetches_no_room_state(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    position = saved_position(harness)
    assert position == hs.position  # everything delivered was applied and the position saved at stop
    before = len(hs.requests)
    with caplog.at_level(logging.INFO):
        await harness.restart()
    assert hs.state_requests(before) == []
    assert hs.sync_requests[-1:] == [position]  # one /sync of its own, from the saved position
    assert "GET /_matrix/client/v3/joined_rooms" not in hs.requests[before:]
    assert any("Caught up from the saved sync position: 0 rooms changed" in r.getMessage() for r in caplog.records)
    assert harness.db.joined(ROOM) == [ADMIN, ALICE, BOB, BOT]


async def test_changes_made_while_stopped_are_applied_from_the_catch_up(harness: Harness) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    hs.member(ROOM, DAVE, "join")
    hs.member(ROOM, BOB, "leave", sender=ALICE, reason="gone")  # a kick
    hs.state(ROOM, "m.room.name", {"name": "Design 2"})
    hs.member(OTHER, BOT, "leave", sender=BOB)  # the bot was kicked from Other
    hs.create_room(NEW, CAROL, name="New", members=(DAVE,))
    hs.member(NEW, BOT, "invite", sender=CAROL)
    hs.member(NEW, BOT, "join")  # and joined a new room
    before = len(hs.requests)
    await harness.restart()
    assert harness.db.joined(ROOM) == [ADMIN, ALICE, BOT, DAVE]
    assert harness.db.room(ROOM).name == "Design 2"
    assert harness.db.tracked() == sorted([NEW, ROOM])  # Other forgotten
    assert harness.db.joined(NEW) == [BOT, CAROL, DAVE]
    assert [r.split("/")[-2] for r in hs.state_requests(before)] == ["!new:fake.test"]  # the new room only
    [history] = await harness.command(ROOM, ADMIN, f"!history {BOB}")
    assert history.splitlines()[1].startswith(f"• kicked from “Design 2” by {ALICE} (“gone”)")


async def test_a_room_with_a_gap_is_synced_in_full_and_only_that_room(harness: Harness) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    for number in range(105):  # more than the catch-up's timeline limit (100)
        hs.message(ROOM, ALICE, f"chatter {number}")
    hs.member(ROOM, DAVE, "join")
    hs.member(OTHER, ALICE, "join")
    before = len(hs.requests)
    await harness.restart()
    assert [r.split("/")[-2] for r in hs.state_requests(before)] == ["!design:fake.test"]
    assert DAVE in harness.db.joined(ROOM) and ALICE in harness.db.joined(OTHER)


async def test_a_position_the_homeserver_refuses_falls_back_to_syncing_every_room(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    harness.db.execute("UPDATE roomstate_sync_position SET next_batch = 'garbage'")
    hs.member(ROOM, DAVE, "join")
    before = len(hs.requests)
    with caplog.at_level(logging.WARNING):
        await harness.restart()
    assert sorted(r.split("/")[-2] for r in hs.state_requests(before)) == ["!design:fake.test", "!other:fake.test"]
    assert DAVE in harness.db.joined(ROOM)
    assert any("The homeserver refused the saved sync position" in r.getMessage() for r in caplog.records)
    await harness.deliver(hs.member(ROOM, CAROL, "join"))
    await harness.stop()
    assert saved_position(harness) == hs.position  # moving again


async def test_without_a_saved_position_every_room_is_synced(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    harness.db.execute("DELETE FROM roomstate_sync_position")  # as after an upgrade from 0.2
    before = len(hs.requests)
    with caplog.at_level(logging.INFO):
        await harness.restart()
    assert len(hs.state_requests(before)) == 2
    assert any("No sync position saved yet" in r.getMessage() for r in caplog.records)


async def test_a_failing_catch_up_falls_back(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    hs.member(ROOM, DAVE, "join")
    hs.fail("/sync", status=502, times=1)
    with caplog.at_level(logging.WARNING):
        await harness.restart()
    assert DAVE in harness.db.joined(ROOM)
    assert any("Catching up failed" in r.getMessage() for r in caplog.records)


async def test_all_and_new_still_do_what_they_say(harness: Harness) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    before = len(hs.requests)
    await harness.restart(**{"sync.on_startup": "all"})
    assert len(hs.state_requests(before)) == 2
    await harness.stop()
    before, syncs = len(hs.requests), len(hs.sync_requests)
    await harness.restart(**{"sync.on_startup": "new"})
    assert hs.state_requests(before) == [] and len(hs.sync_requests) == syncs  # no catch-up either


async def test_commands_sent_while_stopped_are_not_answered_but_recorded(harness: Harness) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    old = hs.message(ROOM, ADMIN, "!rooms")
    old["origin_server_ts"] = 1_000  # long ago
    sent = len(hs.sent)
    await harness.restart()
    assert len(hs.sent) == sent  # not answered
    assert old["event_id"] in harness.db.processed(ROOM)  # a later delivery will not answer it either
    assert (await harness.command(ROOM, ADMIN, "!rooms"))[0].startswith("I'm in 2 rooms:")


async def test_an_instance_restart_while_the_client_syncs_on_catches_up(harness: Harness) -> None:
    """maubot's manager restarts an instance (a plugin upgrade, disable/enable) while its client
    keeps syncing: what the client received meanwhile reached no handler."""
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    hs.member(ROOM, DAVE, "join")  # dispatched by the client while the instance was stopped
    before = len(hs.requests)
    await harness.restart(client_kept_syncing=True)
    assert DAVE in harness.db.joined(ROOM) and hs.state_requests(before) == []
    await harness.deliver(hs.member(ROOM, CAROL, "join"))  # the next sync is dispatched, as usual
    assert CAROL in harness.db.joined(ROOM)


async def test_live_events_wait_for_the_catch_up(harness: Harness) -> None:
    """Each room's catch-up comes before its live events: a live leave that arrives while the
    catch-up is on its way is applied after the catch-up's older join."""
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    hs.member(ROOM, DAVE, "join")  # while stopped: in the catch-up
    hs.slow.append(("/sync$", 0.5))
    await harness.restart(settle=False)
    await harness.deliver(hs.member(ROOM, DAVE, "leave"), settle=False)  # live, during the catch-up
    [rooms] = await harness.command(ROOM, ADMIN, "!rooms", settle=False)  # answers after the catch-up
    assert "“Design” (4 members)" in rooms, rooms  # Dave came and went
    await harness.settled()
    assert DAVE not in harness.db.joined(ROOM)


async def test_the_ignored_first_sync_is_applied_not_resynced(harness: Harness) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    await harness.restart()
    join = hs.member(ROOM, DAVE, "join")
    before = len(hs.requests)
    await harness.sync(sync_response(joined={ROOM: {"timeline": [join]}}))  # a first sync, not dispatched
    assert DAVE in harness.db.joined(ROOM) and hs.state_requests(before) == []


async def test_the_position_moves_only_once_a_sync_is_applied(harness: Harness) -> None:
    hs = harness.hs
    await two_rooms(harness)
    first = hs.position
    await harness.deliver(hs.member(ROOM, DAVE, "join"))  # position saved when the next sync arrives
    await harness.deliver(hs.member(ROOM, CAROL, "join"))
    await harness.settled()
    await eventually(lambda: saved_position(harness) not in (None, first), what="the position moved")


async def test_only_maubots_own_tokens_are_saved(harness: Harness) -> None:
    """The catch-up's ``next_batch`` may be ahead of maubot's own position; a /sync from there
    would delete to-device messages maubot has not fetched. Stopped before maubot's next response
    arrived, the plugin keeps the position it had."""
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    maubots = saved_position(harness)
    hs.member(ROOM, DAVE, "join")
    await harness.restart()  # catches up to a position maubot's syncer has not reached
    await harness.stop()
    assert saved_position(harness) == maubots
    await harness.restart()
    assert hs.sync_requests[-1] == maubots and DAVE in harness.db.joined(ROOM)
    await harness.deliver(hs.member(ROOM, CAROL, "join"))  # maubot's next response: its token
    await harness.stop()
    assert saved_position(harness) == hs.position


async def test_work_cancelled_at_shutdown_is_never_passed(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full sync that a shutdown cancels (the homeserver slow, stop's patience short): the
    position stays before it, so the next start catches up on it."""
    hs = harness.hs
    await two_rooms(harness)
    await harness.restart(client_kept_syncing=True)
    monkeypatch.setattr(roomstate.bot, "STOP_TIMEOUT_SECONDS", 0.3)
    hs.slow.append(("/state$", 2.0))
    hs.member(OTHER, "@eve:fake.test", "join")  # in a gap: never delivered
    gap = hs.member(OTHER, ALICE, "join")
    await harness.sync(sync_response(joined={OTHER: {"timeline": [gap], "limited": True}}), settle=False)
    await harness.deliver(hs.member(ROOM, CAROL, "join"), settle=False)  # seals the gap's response
    await asyncio.sleep(0.05)
    await harness.stop()
    hs.slow.clear()
    await harness.restart()
    assert "@eve:fake.test" in harness.db.joined(OTHER)


async def test_a_join_cancelled_at_shutdown_does_not_hang_the_stop(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.restart(client_kept_syncing=True)
    monkeypatch.setattr(roomstate.bot, "STOP_TIMEOUT_SECONDS", 0.3)
    hs.create_room(NEW, CAROL, name="New", members=(DAVE,))
    hs.member(NEW, BOT, "invite", sender=CAROL)
    hs.slow.append(("/state$", 2.0))
    await harness.deliver(hs.member(NEW, BOT, "join"), settle=False)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(harness.stop(), 5)
    hs.slow.clear()
    await harness.restart()
    assert harness.db.joined(NEW) == [BOT, CAROL, DAVE]


async def test_stopping_while_live_work_is_held_back_is_quick(harness: Harness) -> None:
    hs = harness.hs
    await two_rooms(harness)
    await harness.stop()
    hs.slow.append(("/sync$", 5.0))  # the catch-up hangs
    await harness.restart(settle=False)
    delivered = asyncio.ensure_future(harness.command(ROOM, ADMIN, "!rooms", settle=False))
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    await harness.stop()
    assert asyncio.get_running_loop().time() - started < 5  # not the 15 s of stop's patience
    delivered.cancel()
    hs.slow.clear()


async def test_a_failure_remembered_only_in_memory_holds_the_position(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event that could not be written, nor its room's resync request: until the request is
    written, no position past it is saved (a crash would lose both)."""
    hs = harness.hs
    await two_rooms(harness, **{"sync.retry_min_seconds": 60})
    held = saved_position(harness)
    original = Dialect.connect
    failing = {"on": True}

    def connect(dialect: Dialect) -> Any:
        return _Selective(original(dialect), failing)

    monkeypatch.setattr(Dialect, "connect", connect)
    await harness.restart(client_kept_syncing=True)
    held = saved_position(harness)
    await harness.deliver(hs.member(ROOM, DAVE, "join"), settle=False)  # refused, and so is its resync request
    await harness.deliver(hs.member(OTHER, ALICE, "join"), settle=False)
    await harness.deliver(hs.message(OTHER, ALICE, "hi"), settle=False)
    await eventually(lambda: ALICE in harness.db.joined(OTHER), what="the rest applied")
    await asyncio.sleep(0.3)
    assert saved_position(harness) == held  # other work committed, the position did not move
    failing["on"] = False
    await eventually(lambda: DAVE in harness.db.joined(ROOM), what="healed once the request could be written")
    await harness.deliver(hs.message(OTHER, ALICE, "again"), settle=False)
    await harness.deliver(hs.message(OTHER, ALICE, "and again"), settle=False)
    await eventually(lambda: saved_position(harness) != held, what="the position moving again")


class _Selective:
    """A connection on which storing one user (Dave), and anything in the resync queue, fails."""

    def __init__(self, conn: Any, failing: dict[str, bool]) -> None:
        self._conn, self._failing = conn, failing

    def cursor(self) -> Any:
        return _SelectiveCursor(self._conn.cursor(), self._failing)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)


class _SelectiveCursor:
    def __init__(self, cur: Any, failing: dict[str, bool]) -> None:
        self._cur, self._failing = cur, failing

    def execute(self, sql: str, params: Any = ()) -> Any:
        if self._failing["on"] and (
            "INTO roomstate_resync_queue" in sql or ("INTO roomstate_users" in sql and DAVE in map(str, params))
        ):
            raise sqlite3.OperationalError("disk I/O error")
        return self._cur.execute(sql, params)

    def executemany(self, sql: str, params: Any) -> Any:
        return self._cur.executemany(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


@pytest.mark.parametrize("crash_after", range(1, 31))
async def test_a_crash_at_any_write_leaves_nothing_before_the_position_unapplied(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, crash_after: int
) -> None:
    """The process dies after its ``crash_after``-th commit of the scenario (every later write
    fails, as if it never happened); a restart catches up from whatever position was saved by
    then and must end equal to the homeserver."""
    hs = harness.hs
    await two_rooms(harness)
    commits = {"count": 0, "dead": False}
    original = Dialect.connect

    def dying(dialect: Dialect) -> Any:
        return _Dying(original(dialect), commits, crash_after)

    monkeypatch.setattr(Dialect, "connect", dying)
    await harness.restart(client_kept_syncing=True)  # fresh connections: they count commits
    hs.slow.append(("/state$", 0.1))  # a full sync's writes come well after its response arrived
    for user, membership in ((DAVE, "join"), (BOB, "leave"), (CAROL, "join"), (DAVE, "ban")):
        await harness.deliver(hs.member(ROOM, user, membership, sender=ALICE), settle=False)
        await harness.deliver(hs.state(ROOM, "m.room.topic", {"topic": f"{user} {membership}"}), settle=False)
    hs.member(OTHER, "@eve:fake.test", "join")  # in a gap: never delivered
    gap = hs.member(OTHER, ALICE, "join")
    await harness.sync(sync_response(joined={OTHER: {"timeline": [gap], "limited": True}}), settle=False)
    await harness.deliver(hs.member(ROOM, CAROL, "leave"), settle=False)
    await eventually(lambda: commits["dead"] or not harness.bot.service.store.writes_pending)  # type: ignore[union-attr]
    commits["dead"] = True  # whatever was not committed by now is lost
    await harness.stop()
    monkeypatch.setattr(Dialect, "connect", original)
    await harness.restart()
    for room in (ROOM, OTHER):
        expected = {}
        for (kind, user), event in hs.rooms[room].state.items():
            content = event["content"]
            if kind == "m.room.member" and content["membership"] != "leave":
                expected[user] = (content["membership"], content.get("displayname"))
        stored = harness.db.members(room)
        assert stored == expected, f"{room} after a crash at commit {crash_after}: {stored} != {expected}"
    assert harness.db.room(ROOM).topic == hs.rooms[ROOM].state[("m.room.topic", "")]["content"]["topic"]


_WRITES = ("COMMIT", "INSERT", "UPDATE", "DELETE", "CREATE")


class _Dying:
    """A connection of a process that dies after a number of commits: from then on nothing it
    does reaches the database."""

    def __init__(self, conn: Any, commits: dict[str, Any], crash_after: int) -> None:
        self._conn, self._commits, self._crash_after = conn, commits, crash_after

    def cursor(self) -> Any:
        return _DyingCursor(self._conn.cursor(), self._commits, self._crash_after)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)


class _DyingCursor:
    def __init__(self, cur: Any, commits: dict[str, Any], crash_after: int) -> None:
        self._cur, self._commits, self._crash_after = cur, commits, crash_after

    def execute(self, sql: str, params: Any = ()) -> Any:
        if sql == "COMMIT" and not self._commits["dead"]:
            self._commits["count"] += 1
            self._commits["dead"] = self._commits["count"] > self._crash_after
        if self._commits["dead"] and sql.lstrip().upper().startswith(_WRITES):
            raise sqlite3.OperationalError("disk I/O error")  # the process is dead: nothing reaches the disk
        return self._cur.execute(sql, params)

    def executemany(self, sql: str, params: Any) -> Any:
        if self._commits["dead"]:
            raise sqlite3.OperationalError("disk I/O error")  # the process is dead: nothing reaches the disk
        return self._cur.executemany(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)
