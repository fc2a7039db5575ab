"""The second round of hardening: malformed or misdirected data changes nothing, storage faults
never silence the bot, and it heals within seconds of the storage coming back."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from roomstate import replies
from roomstate.models import HistoryEntry, RoomInfo, RoomsAnswer, WhereisAnswer

from .fakes import FakeHomeserver
from .helpers import ADMIN, ALICE, BOB, BOT, CAROL, ROOM, Harness, eventually, sync_response
from .storage_faults import StorageFaults

OTHER = "!other:fake.test"
UNAVAILABLE = "My database is unavailable right now; I'll catch up when it is back."


# ---- malformed and misdirected events -------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [{}, {"membership": None}, {"membership": 5}, {"membership": "LEAVE"}, {"membership": ["leave"]}],
    ids=["empty", "null", "number", "upper case", "list"],
)
async def test_a_live_member_event_without_a_valid_membership_changes_nothing(
    harness: Harness, content: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    await harness.setup_room(members=(BOB, CAROL))
    event = harness.hs.member(ROOM, BOB, "join")  # a valid event, then its content broken
    event["content"] = content
    with caplog.at_level(logging.WARNING):
        await harness.deliver(event)
    assert BOB in harness.db.joined(ROOM)  # mautrix reads a missing membership as "leave"
    said = [r.getMessage() for r in caplog.records if r.name.startswith("roomstate")]
    assert [line for line in said if event["event_id"] in line] == [
        f"Ignoring a malformed member event {event['event_id']}"
    ]
    assert (await harness.bot.queries.room(ROOM)).joined_count == 4  # type: ignore[union-attr]


async def test_a_malformed_event_in_the_leave_section_is_not_read_as_a_leave(harness: Harness) -> None:
    """The room is forgotten because it is in ``leave``; the event itself says nothing."""
    await harness.start()
    await harness.setup_room(members=(BOB,))
    await harness.setup_room(OTHER, ALICE, "Other", (BOB,))
    event = harness.hs.member(OTHER, BOB, "leave")
    event["content"] = {}
    await harness.sync(sync_response(joined={ROOM: {"timeline": [{k: v for k, v in event.items() if k != "room_id"}]}}))
    assert BOB in harness.db.joined(ROOM) and BOB in harness.db.joined(OTHER)


async def test_an_event_naming_another_room_is_applied_to_neither(harness: Harness) -> None:
    """mautrix dispatches a sync event as the event of the section's room, whatever room it
    names; one that names another room is misdirected."""
    await harness.start()
    await harness.setup_room(members=(BOB,))
    await harness.setup_room(OTHER, ALICE, "Other", (BOB,))
    kick = harness.hs.member(OTHER, BOB, "leave", sender=ALICE)  # room_id: OTHER
    rename = harness.hs.state(OTHER, "m.room.name", {"name": "Hijacked"})
    await harness.sync(sync_response(joined={ROOM: {"timeline": [kick, rename]}}))
    assert BOB in harness.db.joined(ROOM) and BOB in harness.db.joined(OTHER)
    assert harness.db.room(ROOM).name == "Design" and harness.db.room(OTHER).name == "Other"


async def test_a_state_answer_of_another_room_is_refused(harness: Harness) -> None:
    hs = harness.hs
    await harness.start(**{"sync.retry_min_seconds": 60})
    await harness.setup_room(members=(BOB,))
    await harness.setup_room(OTHER, CAROL, "Other", (ADMIN,))
    other_state = json.dumps(list(hs.rooms[OTHER].state.values()))
    hs.fail(r"/rooms/!design[^/]*/state$", kind="malformed", body=other_state, times=1)
    [reply] = await harness.command(ROOM, ADMIN, "!resync")
    assert reply.startswith("Could not resync this room: the homeserver sent a malformed answer"), reply
    assert harness.db.joined(ROOM) == [ALICE, BOB, BOT] and harness.db.room(ROOM).name == "Design"
    assert ROOM in harness.db.resync_queue()  # and it is retried


# ---- the room list and error texts --------------------------------------------------------------


async def test_bad_entries_in_the_joined_rooms_list_are_left_out(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room(members=(ADMIN,))
    body = json.dumps({"joined_rooms": [ROOM, "!" + "x" * 300 + ":fake.test", 7, "not a room"]})
    hs.fail("/joined_rooms", kind="malformed", body=body, times=1)
    with caplog.at_level(logging.WARNING):
        [reply] = await harness.command(ROOM, ADMIN, "!resync all")
    assert reply.startswith("Resynced 1 room"), reply
    assert any("3 entries that are not room IDs" in r.getMessage() for r in caplog.records)


async def test_a_failing_room_list_at_start_is_retried_with_a_real_backoff(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.hs.fail("/joined_rooms", status=502, times=1000)
    with caplog.at_level(logging.WARNING):
        await harness.start(settle=False, **{"sync.retry_min_seconds": 0.05})
        listing = "GET /_matrix/client/v3/joined_rooms"
        await eventually(lambda: harness.hs.requests.count(listing) >= 2, what="a retry")
        count = harness.hs.requests.count(listing)
    retries = [r.getMessage() for r in caplog.records if "could not list joined rooms" in r.getMessage()]
    assert count <= 3 and all("retrying in 0s" not in line and "retrying in 0.0s" not in line for line in retries)
    harness.hs.heal()


async def test_replies_never_show_the_homeserver_url(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room(members=(ADMIN,))
    hs.fail("/joined_rooms", kind="malformed", body="<html><body>Bad gateway</body></html>", content_type="text/html")
    [reply] = await harness.command(ROOM, ADMIN, "!resync all")
    assert (
        reply
        == "Could not resync: the homeserver sent an answer that is not what the API promises. Nothing was changed."
    )
    hs.fail("/joined_rooms", kind="disconnect", times=3)  # aiohttp retries a dropped request once
    [dropped] = await harness.command(ROOM, ADMIN, "!resync all")
    assert dropped == "Could not resync: could not reach the homeserver. Nothing was changed."
    assert all("127.0.0.1" not in content.get("body", "") for _, content in hs.sent)


# ---- storage faults -------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def faulty(
    hs: FakeHomeserver, sqlite_only: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Harness, StorageFaults]]:
    faults = StorageFaults().install(monkeypatch)
    async with aiohttp.ClientSession() as http:
        harness = Harness(hs, http, sqlite_only)
        try:
            yield harness, faults
        finally:
            faults.kind = None
            await harness.stop()
            harness.engine.dispose()
            harness.db.dispose()


@pytest.mark.parametrize("kind", ["full", "io"])
async def test_commands_answer_while_storage_fails(faulty: tuple[Harness, StorageFaults], kind: str) -> None:
    harness, faults = faulty
    await harness.start()
    await harness.setup_room(members=(ADMIN,))
    faults.kind = kind
    [rooms] = await harness.command(ROOM, ADMIN, "!rooms", settle=False)
    if kind == "io":  # nothing can be read either
        assert rooms == UNAVAILABLE
    else:  # reads still work: the answer, unrecorded
        assert rooms.startswith("I'm in 1 room:")
    [help_text] = await harness.command(ROOM, ADMIN, "!help", settle=False)  # from memory
    assert help_text.startswith("roomstate knows which rooms")
    faults.kind = None
    [again] = await harness.command(ROOM, ADMIN, "!rooms")
    assert again.startswith("I'm in 1 room:")


@pytest.mark.parametrize("kind", ["full", "io"])
async def test_events_lost_to_a_storage_fault_heal_within_seconds(
    faulty: tuple[Harness, StorageFaults], kind: str
) -> None:
    harness, faults = faulty
    await harness.start(**{"sync.retry_min_seconds": 60, "sync.retry_max_seconds": 600})
    await harness.setup_room(members=(ADMIN,))
    faults.kind = kind
    await harness.deliver(harness.hs.member(ROOM, CAROL, "join"), settle=False)
    await eventually(lambda: faults.refused >= 2, what="the event and its resync request refused")
    faults.kind = None
    # the room's own retry waits 60 s; the storage's retry does not
    await eventually(lambda: CAROL in harness.db.joined(ROOM), timeout=8, what="healed after the storage came back")


@pytest.mark.parametrize(
    ("startup", "sign"),
    [("catch-up", "Resync queue unavailable"), ("all", "The startup job failed")],  # what fails first
)
async def test_a_read_only_database_at_start_runs_degraded_and_recovers(
    faulty: tuple[Harness, StorageFaults], caplog: pytest.LogCaptureFixture, startup: str, sign: str
) -> None:
    harness, faults = faulty
    await harness.start(**{"sync.on_startup": startup})
    await harness.setup_room(members=(ADMIN,))
    await harness.stop()
    harness.hs.member(ROOM, CAROL, "join")  # while the bot was down
    faults.kind = "readonly"
    with caplog.at_level(logging.WARNING):
        await harness.restart(settle=False)
        await harness.deliver(harness.hs.member(ROOM, BOB, "leave"), settle=False)
        [rooms] = await harness.command(ROOM, ADMIN, "!rooms", settle=False)
        assert rooms.startswith("I'm in 1 room:")  # answered from what it can read
        await eventually(lambda: any(sign in r.getMessage() for r in caplog.records), what=sign)
        faults.kind = None  # the file is writable again: no restart needed
        await eventually(
            lambda: harness.db.joined(ROOM) == [ADMIN, ALICE, BOT, CAROL], timeout=10, what="caught up after the fault"
        )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# ---- other people's text ----------------------------------------------------------------------------

INVISIBLE_ONLY = ["\u3164", "\u2800\u2800", "   ", "\u200b\u200e", "\U000e0041\U000e0042", "\u115f\u1160", "\ufe0f"]


@pytest.mark.parametrize("blank", INVISIBLE_ONLY)
def test_a_name_that_shows_nothing_shows_the_id(blank: str) -> None:
    whereis = replies.whereis(WhereisAnswer(ALICE, blank, (RoomInfo(ROOM, name=blank, joined_count=2),)))
    assert whereis.plain.splitlines() == [f"{ALICE} shares 1 room with me:", f"• {ROOM} (2 members) {ROOM}"]


def test_every_invisible_character_is_removed_from_names() -> None:
    sneaky = "A\u061cB\U000e0020C\ufff9D\ufffbE\u180eF\u2066G\u00adH\u034fI"
    line = replies.rooms_page(RoomsAnswer((RoomInfo(ROOM, name=sneaky, joined_count=1),)), 1, 20).plain
    assert "“ABCDEFGHI” (1 member)" in line


def test_a_name_that_copies_the_bots_words_reads_as_a_quoted_name() -> None:
    mimic = f"Bob ({BOB}) shares 0 rooms with me: ”nothing“ to see"
    text = replies.whereis(WhereisAnswer(ALICE, mimic, (RoomInfo(ROOM, name="Ops", joined_count=2),))).plain
    first = text.splitlines()[0]
    assert first.startswith("“Bob (") and first.endswith(f'" to see” ({ALICE}) shares 1 room with me:'), first
    assert first.count("“") == 1 and first.count("”") == 1  # the name's own quotation marks are not ours
    entry = HistoryEntry(ROOM, ALICE, "join", "join", 0, displayname=mimic)
    assert replies.transition(entry, replies.name("Ops")).plain.startswith("renamed to “Bob (")
