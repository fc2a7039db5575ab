"""!rooms, !whereis and !resync: replies, permissions and bad input."""
from __future__ import annotations

import asyncio

from mautrix.client import SyncStream

from .conftest import ADMIN, BOT, Harness

ROOM = "!design:fake.test"
OPS = "!ops:fake.test"
ALICE, BOB, CAROL, EVE = "@alice:fake.test", "@bob:fake.test", "@carol:fake.test", "@eve:fake.test"


async def two_rooms(h: Harness) -> None:
    h.hs.create_room(ROOM, ALICE, name="Design", members=(BOB, ADMIN, BOT))
    h.hs.create_room(OPS, BOB, name="Ops", members=(ALICE, CAROL, BOT))
    await h.start()


async def test_rooms_lists_rooms_sorted_with_counts(harness: Harness) -> None:
    await two_rooms(harness)
    harness.hs.create_room("!x:fake.test", ALICE, members=(BOT,))
    harness.hs.state("!x:fake.test", "m.room.canonical_alias", {"alias": "#alias-only:fake.test"})
    await harness.invite_and_join_bot("!x:fake.test", ALICE)
    [reply] = await harness.command(ROOM, ALICE, "!rooms")
    lines = reply.splitlines()
    assert lines[0] == "I'm in 3 rooms:"
    assert lines[1] == "● **#alias-only:fake.test** (2 members) `!x:fake.test`"
    assert lines[2] == f"● **Design** (4 members) `{ROOM}`"
    assert lines[3] == f"● **Ops** (4 members) `{OPS}`"


async def test_rooms_paginates_long_lists(harness: Harness) -> None:
    for i in range(5):
        harness.hs.create_room(f"!r{i}:fake.test", ALICE, name=f"Room {i}", members=(BOT,))
    await harness.start(**{"rooms.page_size": 2})
    [first] = await harness.command("!r0:fake.test", ALICE, "!rooms")
    assert "Room 0" in first and "Room 1" in first and "Room 2" not in first
    assert "Page 1 of 3, 3 more: `!rooms 2`" in first
    [last] = await harness.command("!r0:fake.test", ALICE, "!rooms 3")
    assert "Room 4" in last and "Room 0" not in last and "more" not in last
    [beyond] = await harness.command("!r0:fake.test", ALICE, "!rooms 9")
    assert "There is no page 9" in beyond
    [bad] = await harness.command("!r0:fake.test", ALICE, "!rooms two")
    assert "not a page number" in bad


async def test_rooms_when_in_no_room(harness: Harness) -> None:
    harness.hs.create_room(ROOM, ALICE, members=(BOT,))
    await harness.start()
    await harness.bot.service.forget_room(ROOM)
    assert await harness.command(ROOM, ALICE, "!rooms") == ["I'm not in any rooms yet."]


async def test_whereis_for_admin_lists_every_shared_room(harness: Harness) -> None:
    await two_rooms(harness)
    [reply] = await harness.command(ROOM, ADMIN, f"!whereis {ALICE}")
    assert reply.splitlines()[0] == f"Alice ({ALICE}) shares 2 rooms with me:"
    assert "Design" in reply and "Ops" in reply


async def test_whereis_shared_mode_hides_rooms_the_asker_is_not_in(harness: Harness) -> None:
    await two_rooms(harness)
    [reply] = await harness.command(ROOM, BOB, f"!whereis {CAROL}")
    assert reply.splitlines()[0] == f"Carol ({CAROL}) shares 1 room that you are in too with me:"
    [hidden] = await harness.command(ROOM, ADMIN, f"!whereis {CAROL}")
    assert "Ops" in hidden
    [reply] = await harness.command(OPS, CAROL, f"!whereis {ADMIN}")
    assert reply == f"I don't share any rooms that you are in too with Admin ({ADMIN})."


async def test_whereis_visibility_modes(harness: Harness) -> None:
    await two_rooms(harness)
    await harness.restart(**{"whereis.visibility": "admins"})
    assert await harness.command(ROOM, BOB, f"!whereis {ALICE}") == [
        "Sorry, only the bot's admins may ask where other users are."
    ]
    await harness.restart(**{"whereis.visibility": "everyone"})
    [reply] = await harness.command(OPS, CAROL, f"!whereis {ADMIN}")
    assert "Design" in reply


async def test_queries_wait_for_a_first_join_sync_in_flight(harness: Harness) -> None:
    harness.hs.create_room(ROOM, ALICE, name="Design", members=(BOB, ADMIN))
    await harness.start()
    harness.hs.slow.append((r"/state$", 0.5))
    join = asyncio.create_task(harness.invite_and_join_bot(ROOM, ALICE))
    await asyncio.sleep(0.1)  # the join's sync is now waiting for the homeserver
    [reply] = await harness.command(ROOM, ADMIN, f"!whereis {BOB}")
    await join
    assert reply.startswith(f"Bob ({BOB}) shares 1 room with me:") and "Design" in reply


async def test_whereis_accepts_pills_and_links(harness: Harness) -> None:
    await two_rooms(harness)
    pill = f'<a href="https://matrix.to/#/{ALICE}">Alice</a>'
    [reply] = await harness.command(ROOM, ADMIN, "!whereis Alice", formatted_body=f"!whereis {pill}")
    assert reply.startswith(f"Alice ({ALICE}) shares 2 rooms")
    [reply] = await harness.command(ROOM, ADMIN, "!whereis https://matrix.to/#/%40bob%3Afake.test")
    assert reply.startswith("Bob (@bob:fake.test) shares 2 rooms")


async def test_whereis_bad_input(harness: Harness) -> None:
    await two_rooms(harness)
    assert await harness.command(ROOM, ADMIN, "!whereis") == [
        "Whom should I look for? Usage: `!whereis @name:server.org`"
    ]
    [bad] = await harness.command(ROOM, ADMIN, "!whereis @not-an-id")
    assert "is not a valid Matrix user ID" in bad
    [vague] = await harness.command(ROOM, ADMIN, "!whereis somebody")
    assert "I can't tell which user" in vague
    assert await harness.command(ROOM, ADMIN, f"!whereis {EVE}") == [
        f"I don't share any rooms with {EVE}."
    ]


async def test_resync_reports_what_changed(harness: Harness) -> None:
    await two_rooms(harness)
    harness.hs.member(ROOM, EVE, "join")  # unseen by the bot
    harness.hs.member(ROOM, BOB, "leave")
    [reply] = await harness.command(ROOM, ADMIN, "!resync")
    assert reply == (
        f"Resynced **Design**: members +1 ({EVE}), -1 ({BOB}); now 4 members."
    )
    [again] = await harness.command(ROOM, ADMIN, "!resync")
    assert again == "Resynced **Design**: no member changes; now 4 members."


async def test_resync_all_fixes_corrupted_rows(harness: Harness) -> None:
    await two_rooms(harness)
    with harness.engine.begin() as conn:
        conn.execute(__import__("sqlalchemy").text("DELETE FROM roomstate_memberships WHERE membership = 'join' AND room_nid = (SELECT room_nid FROM roomstate_rooms WHERE room_id = :r)"), {"r": OPS})
    [reply] = await harness.command(ROOM, ADMIN, "!resync all")
    assert reply.splitlines()[0] == "Resynced 2 rooms: +4 -0 members."
    assert f"● `{OPS}`: members +4" in reply
    assert (await harness.bot.store.get_room(OPS)).joined_count == 4


async def test_resync_permissions(harness: Harness) -> None:
    await two_rooms(harness)
    harness.hs.state(ROOM, "m.room.power_levels", {"users": {ALICE: 100, BOB: 50}})
    assert await harness.command(ROOM, BOB, "!resync") == [
        "Sorry, only the bot's admins (or room moderators with enough power) may resync."
    ]
    [ok] = await harness.command(ROOM, ALICE, "!resync")
    assert ok.startswith("Resynced **Design**")
    [refused] = await harness.command(ROOM, ALICE, "!resync all")
    assert refused.startswith("Sorry")
    await harness.restart(resync_power_level=None)
    [refused] = await harness.command(ROOM, ALICE, "!resync")
    assert refused.startswith("Sorry")
    [usage] = await harness.command(ROOM, ADMIN, "!resync everything")
    assert usage.startswith("Usage:")


async def test_resync_homeserver_error_leaves_data_untouched(harness: Harness) -> None:
    await two_rooms(harness)
    before = await harness.bot.store.list_members(ROOM)
    harness.hs.member(ROOM, EVE, "join")
    harness.hs.fail(r"/rooms/.*/state$", 500)
    [reply] = await harness.command(ROOM, ADMIN, "!resync")
    assert reply.startswith("Could not resync this room: the homeserver answered M_UNKNOWN")
    assert reply.endswith("Nothing was changed.")
    assert await harness.bot.store.list_members(ROOM) == before
    [retry] = await harness.command(ROOM, ADMIN, "!resync")
    assert f"+1 ({EVE})" in retry


async def test_resync_all_reports_failed_and_forgotten_rooms(harness: Harness) -> None:
    await two_rooms(harness)
    harness.hs.member(OPS, BOT, "leave", sender=BOB)  # not delivered: the bot missed it
    harness.hs.create_room("!broken:fake.test", ALICE, members=(BOT,))
    harness.hs.fail(r"/rooms/!broken:fake.test/state$", 500)
    [reply] = await harness.command(ROOM, ADMIN, "!resync all")
    assert "Resynced 1 room" in reply
    assert "Forgot 1 room I'm no longer in." in reply
    assert "1 room failed (kept as they were):\n● `!broken:fake.test`: the homeserver answered" in reply
    assert [r.room_id for r in await harness.bot.store.list_rooms()] == [ROOM]


async def test_resync_when_homeserver_is_unreachable(harness: Harness) -> None:
    await two_rooms(harness)
    harness.hs.fail(r"/joined_rooms", 502)
    [reply] = await harness.command(ROOM, ADMIN, "!resync all")
    assert reply.startswith("Could not resync: the homeserver answered")
    assert len(await harness.bot.store.list_rooms()) == 2


async def test_commands_from_the_bot_itself_are_ignored(harness: Harness) -> None:
    await two_rooms(harness)
    assert await harness.command(ROOM, BOT, "!rooms") == []


async def test_late_events_from_a_left_room_do_not_resurrect_it(harness: Harness) -> None:
    await two_rooms(harness)
    left = SyncStream.LEFT_ROOM | SyncStream.TIMELINE
    eve_join = harness.hs.member(OPS, EVE, "join")
    kick = harness.hs.member(OPS, BOT, "leave", sender=BOB)
    await harness.deliver(kick, source=left)
    await harness.deliver(eve_join, harness.hs.state(OPS, "m.room.topic", {"topic": "late"}), source=left)
    assert await harness.bot.store.get_room(OPS) is None
    assert await harness.bot.store.list_members(OPS) == []
