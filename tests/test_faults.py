"""Failures heal themselves: nothing is lost silently, nothing malformed deletes anything."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from .fakes import FakeHomeserver
from .helpers import ADMIN, ALICE, BOB, BOT, CAROL, ROOM, Harness, eventually, sync_response

OTHER = "!other:fake.test"


async def test_a_join_while_state_fails_is_healed_by_the_repairer(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    hs.create_room(ROOM, ALICE, name="Design", members=(BOB, ADMIN))
    hs.fail(r"/state$", 502, times=3)
    await harness.deliver(hs.member(ROOM, BOT, "invite", sender=ALICE), section="invite", settle=False)
    join = hs.member(ROOM, BOT, "join")
    await harness.deliver(join, settle=False)
    await eventually(lambda: harness.db.resync_queue().get(ROOM, 0) >= 1, what="the room queued after a failure")
    assert join["event_id"] not in harness.db.processed(ROOM)  # neither applied nor claimed yet
    await eventually(
        lambda: harness.db.joined(ROOM) == [ADMIN, ALICE, BOB, BOT] and not harness.db.resync_queue(),
        what="the repairer synced the room",
    )
    assert join["event_id"] in harness.db.processed(ROOM)  # claimed by the sync that covers it


async def test_admins_see_rooms_waiting_for_a_resync(harness: Harness) -> None:
    hs = harness.hs
    await harness.start(**{"sync.retry_min_seconds": 60})
    await harness.setup_room(members=(ADMIN,))
    hs.fail(r"/rooms/!design.*/state$", 500, times=100)
    [failed] = await harness.command(ROOM, ADMIN, "!resync")
    assert failed.startswith("Could not resync this room")
    [rooms] = await harness.command(ROOM, ADMIN, "!rooms")
    assert "(3 members, waiting for a resync)" in rooms and rooms.endswith("1 room waiting for a resync.")
    [not_admin] = await harness.command(ROOM, ALICE, "!rooms")
    assert "waiting for a resync." not in not_admin


async def test_the_resync_queue_survives_a_restart(harness: Harness) -> None:
    hs = harness.hs
    await harness.start(**{"sync.on_startup": "new"})
    await harness.setup_room()
    hs.member(ROOM, CAROL, "join")  # missed
    hs.fail(r"/state$", 500, times=1000)
    assert harness.bot is not None
    assert not (await harness.bot.service.sync_room(ROOM)).ok
    await harness.stop()
    assert ROOM in harness.db.resync_queue()
    hs.heal()
    await harness.restart()  # "new" would not sync a known room: the queue does
    await eventually(lambda: CAROL in harness.db.joined(ROOM) and not harness.db.resync_queue(), what="healed")


async def test_a_locked_database_loses_no_event(
    hs: FakeHomeserver, sqlite_only: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        harness = Harness(hs, http, sqlite_only)
        try:
            await harness.start()
            await harness.setup_room()
            assert harness.bot is not None
            store = harness.bot.service.store
            await store._write(lambda txn: txn.cur.execute("PRAGMA busy_timeout = 50"))
            path = sqlite_only.removeprefix("sqlite:///")
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            join = hs.member(ROOM, CAROL, "join")
            await harness.deliver(join, settle=False)
            await eventually(lambda: "database is locked" in caplog.text, what="the failure")
            blocker.execute("COMMIT")
            blocker.close()
            await eventually(
                lambda: CAROL in harness.db.joined(ROOM) and not harness.db.resync_queue(),
                what="the room resynced once the database was free",
            )
        finally:
            await harness.stop()
            harness.engine.dispose()
            harness.db.dispose()


async def test_a_dropped_connection_at_startup_is_retried(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, name="Design", members=(BOB,))
    hs.member(ROOM, BOT, "join")
    hs.fail("/joined_rooms", kind="disconnect", times=4)
    await harness.start(settle=False)
    await eventually(lambda: harness.db.joined(ROOM) == [ALICE, BOB, BOT], what="reconciled after retries")


async def test_malformed_joined_rooms_deletes_nothing(harness: Harness) -> None:
    await harness.start()
    await harness.setup_room(members=(ADMIN,))
    for body in ('{"joined_rooms": "!design:fake.test"}', '{"joined_rooms": null}', "[]", "{no json"):
        harness.hs.fail("/joined_rooms", kind="malformed", body=body, times=2)
        [reply] = await harness.command(ROOM, ADMIN, "!resync all")
        assert reply.startswith("Could not resync: the homeserver sent a malformed answer"), reply
        assert harness.db.tracked() == [ROOM]


async def test_a_state_response_without_the_bot_forgets_nothing(harness: Harness) -> None:
    await harness.start()
    await harness.setup_room(members=(ADMIN,))
    state = [dict(e) for e in harness.hs.rooms[ROOM].state.values()]
    for event in state:
        if event.get("state_key") == BOT:
            event["content"] = {"membership": ["join"]}
    harness.hs.fail(r"/state$", kind="malformed", body=json.dumps(state), times=1)
    assert harness.bot is not None
    outcome = await harness.bot.service.sync_room(ROOM)
    assert outcome.error and "no valid membership for the bot" in outcome.error
    assert harness.db.joined(ROOM) == [ADMIN, ALICE, BOT]


async def test_malformed_events_are_skipped_with_one_log_line(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    before = harness.db.members(ROOM)

    def event(kind: str, state_key: str, content: Any, **extra: Any) -> dict[str, Any]:
        """An event as a (hostile) server sends it; the fake's own state is left alone."""
        return {
            "type": kind,
            "state_key": state_key,
            "content": content,
            "room_id": ROOM,
            "sender": ALICE,
            "event_id": f"$bad{next(ids)}:fake.test",
            "origin_server_ts": 1,
            **extra,
        }

    ids = iter(range(1000))
    bad = [
        event("m.room.member", CAROL, None),
        event("m.room.member", CAROL, "join"),
        event("m.room.member", CAROL, {"membership": ["join"]}),
        event("m.room.member", "not a user", {"membership": "join"}),
        event("m.room.member", BOT, {"membership": {"leave": 1}}),
        {**hs.member(ROOM, CAROL, "join"), "origin_server_ts": 2**63},
        event("m.room.tombstone", "", {"replacement_room": "https://evil.example"}),
        event("m.room.name", "", [1, 2]),
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await harness.deliver(*bad)
    assert harness.db.tracked() == [ROOM]
    members = harness.db.members(ROOM)
    assert {k: v for k, v in members.items() if k != CAROL} == before
    assert members.get(CAROL, ("join", "Carol")) == ("join", "Carol")  # the one valid event (odd ts) applied
    ours = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("roomstate")]
    assert 1 <= len(ours) <= len(bad) and not any(r.exc_info for r in ours)
    assert harness.db.room(ROOM).replacement_room is None


async def test_stop_cancels_everything_it_started(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    hs.fail(r"/state$", kind="hang", seconds=30, times=100)
    assert harness.bot is not None
    harness.bot.service.sync_room(ROOM)
    await harness.sync(sync_response(joined={ROOM: {"timeline": [], "limited": True}}), settle=False)
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    from roomstate import bot as bot_module

    bot_module.STOP_TIMEOUT_SECONDS, saved = 1, bot_module.STOP_TIMEOUT_SECONDS
    try:
        await harness.stop()
    finally:
        bot_module.STOP_TIMEOUT_SECONDS = saved
    assert loop.time() - started < 10
    await asyncio.sleep(0.1)
    assert "closed" not in caplog.text.lower() or "database is closed" not in caplog.text
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("roomstate-") and not t.done()]


@pytest_asyncio.fixture
async def slow_homeserver(harness: Harness) -> AsyncIterator[Harness]:
    await harness.start()
    await harness.setup_room(members=(ADMIN,))
    assert harness.bot is not None
    harness.bot.service.homeserver.timeout = 0.3
    yield harness


async def test_a_homeserver_timeout_is_answered(slow_homeserver: Harness) -> None:
    slow_homeserver.hs.fail(r"/state$", kind="hang", seconds=5, times=3)
    [reply] = await slow_homeserver.command(ROOM, ADMIN, "!resync")
    assert reply == (
        "Could not resync this room: the homeserver did not answer in time. Nothing was changed;"
        " I'll keep trying in the background."
    )
