"""!rooms, !whereis and !resync through the real plugin: answers, privacy, permissions, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .helpers import ADMIN, ALICE, BOB, BOT, CAROL, ROOM, Harness, eventually

OPS = "!ops:fake.test"
EVE = "@eve:fake.test"


@pytest_asyncio.fixture
async def two_rooms(harness: Harness) -> AsyncIterator[Harness]:
    """Design (Alice, Bob, the admin, the bot) and Ops (Bob, Alice, Carol, the bot)."""
    await harness.start()
    await harness.setup_room(ROOM, ALICE, "Design", (BOB, ADMIN))
    await harness.setup_room(OPS, BOB, "Ops", (ALICE, CAROL))
    yield harness


async def test_rooms_lists_rooms_sorted_with_counts(two_rooms: Harness) -> None:
    h = two_rooms
    await h.setup_room("!x:fake.test", ADMIN, None, ())
    h.hs.state("!x:fake.test", "m.room.canonical_alias", {"alias": "#alias-only:fake.test"})
    await h.deliver(h.hs.rooms["!x:fake.test"].state[("m.room.canonical_alias", "")])
    [reply] = await h.command(ROOM, ADMIN, "!rooms")
    assert reply.splitlines() == [
        "I'm in 3 rooms:",
        "• #alias-only:fake.test (2 members) !x:fake.test",
        f"• “Design” (4 members) {ROOM}",
        f"• “Ops” (4 members) {OPS}",
    ]


async def test_rooms_shows_a_non_admin_only_the_rooms_they_are_in(two_rooms: Harness) -> None:
    [reply] = await two_rooms.command(OPS, CAROL, "!rooms")
    assert reply.splitlines() == ["I'm in 1 room that you are in too:", f"• “Ops” (4 members) {OPS}"]
    [everyone] = [r for r in await two_rooms.command(OPS, ALICE, "!rooms")]
    assert "Design" in everyone and "Ops" in everyone
    two_rooms.bot.config["visibility"] = "admins"  # type: ignore[union-attr]
    assert await two_rooms.command(OPS, CAROL, "!rooms") == [
        "Sorry, only the bot's admins may ask which rooms the bot is in."
    ]


async def test_rooms_paginates_and_rejects_odd_page_numbers(harness: Harness) -> None:
    await harness.start(**{"rooms.page_size": 2})
    for i in range(5):
        await harness.setup_room(f"!r{i}:fake.test", ALICE, f"Room {i}", (ADMIN,))
    [first] = await harness.command("!r0:fake.test", ADMIN, "!rooms")
    assert "Room 0" in first and "Room 1" in first and "Room 2" not in first
    assert first.endswith("Page 1 of 3, 3 more: !rooms 2")
    [last] = await harness.command("!r0:fake.test", ADMIN, "!rooms 3")
    assert "Room 4" in last and "Room 0" not in last and "more" not in last
    [beyond] = await harness.command("!r0:fake.test", ADMIN, "!rooms 9")
    assert beyond.startswith("There is no page 9; there are 3 pages")
    for odd in ("two", "²", "٣", "9" * 5000, "-1", "1.5"):
        [bad] = await harness.command("!r0:fake.test", ADMIN, f"!rooms {odd}")
        assert bad.endswith("is not a page number. Usage: !rooms [page]"), bad
        assert len(bad) < 200


async def test_rooms_when_in_no_room(harness: Harness) -> None:
    await harness.start()
    await harness.setup_room(members=(ADMIN,))
    await harness.deliver(harness.hs.member(ROOM, BOT, "leave", sender=ALICE), section="left")
    harness.hs.create_room(OTHER := "!other:fake.test", ADMIN)
    harness.hs.member(OTHER, BOT, "join")  # not delivered: the bot does not track this room
    assert await harness.command(OTHER, ADMIN, "!rooms") == ["I'm not in any rooms yet."]


async def test_whereis_for_admin_lists_every_shared_room(two_rooms: Harness) -> None:
    [reply] = await two_rooms.command(ROOM, ADMIN, f"!whereis {ALICE}")
    lines = reply.splitlines()
    assert lines[0] == f"“Alice” ({ALICE}) shares 2 rooms with me:"
    assert lines[1:] == [f"• “Design” (4 members) {ROOM}", f"• “Ops” (4 members) {OPS}"]


async def test_whereis_shared_mode_hides_rooms_the_asker_is_not_in(two_rooms: Harness) -> None:
    [reply] = await two_rooms.command(OPS, CAROL, f"!whereis {ALICE}")
    assert reply.splitlines() == [
        f"“Alice” ({ALICE}) shares 1 room that you are in too with me:",
        f"• “Ops” (4 members) {OPS}",
    ]
    [own] = await two_rooms.command(OPS, CAROL, f"!whereis {CAROL}")
    assert own.startswith(f"“Carol” ({CAROL}) shares 1 room with me")


async def test_whereis_never_shows_a_name_from_a_room_the_asker_cannot_see(two_rooms: Harness) -> None:
    h = two_rooms
    # Alice uses a private nickname in Design, which Carol is not in
    await h.deliver(h.hs.member(ROOM, ALICE, "join", displayname="Secret Alias"))
    [reply] = await h.command(OPS, CAROL, f"!whereis {ALICE}")
    assert "Secret Alias" not in reply and reply.startswith(f"“Alice” ({ALICE})")
    await h.deliver(h.hs.member(OPS, ALICE, "join", displayname=""))
    [nameless] = await h.command(OPS, CAROL, f"!whereis {ALICE}")
    assert nameless.startswith(f"{ALICE} shares 1 room") and "Secret Alias" not in nameless
    [admin] = await h.command(ROOM, ADMIN, f"!whereis {ALICE}")  # asked in Design: its name
    assert admin.startswith(f"“Secret Alias” ({ALICE})")


async def test_whereis_visibility_modes(two_rooms: Harness) -> None:
    h = two_rooms
    assert h.bot is not None
    h.bot.config["visibility"] = "admins"
    assert await h.command(OPS, CAROL, f"!whereis {ALICE}") == [
        "Sorry, only the bot's admins may ask which rooms the bot is in."
    ]
    h.bot.config["visibility"] = "everyone"
    [reply] = await h.command(OPS, CAROL, f"!whereis {ALICE}")
    assert reply.startswith(f"“Alice” ({ALICE}) shares 2 rooms with me")


async def test_whereis_accepts_pills_and_links(two_rooms: Harness) -> None:
    pill = f'<a href="https://matrix.to/#/{ALICE}">Alice</a>'
    [reply] = await two_rooms.command(ROOM, ADMIN, "!whereis Alice", formatted_body=f"!whereis {pill}")
    assert reply.startswith(f"“Alice” ({ALICE}) shares 2 rooms")
    [reply] = await two_rooms.command(ROOM, ADMIN, "!whereis https://matrix.to/#/%40bob%3Afake.test")
    assert reply.startswith("“Bob” (@bob:fake.test) shares 2 rooms")


async def test_whereis_bad_input(two_rooms: Harness) -> None:
    h = two_rooms
    assert await h.command(ROOM, ADMIN, "!whereis") == ["Whom should I look for? Usage: !whereis @name:server.org"]
    [bad] = await h.command(ROOM, ADMIN, "!whereis @not-an-id")
    # someone's own text, not an ID: defanged with a zero-width space, as other people's text is
    assert bad.replace("\u200b", "") == "“@not-an-id” is not a valid Matrix user ID. Use the form @name:server.org."
    [vague] = await h.command(ROOM, ADMIN, "!whereis somebody")
    assert vague.startswith("I can't tell which user “somebody” is.")
    assert await h.command(ROOM, ADMIN, f"!whereis {EVE}") == [f"I don't share any rooms with {EVE}."]


async def test_the_asked_room_answers_from_its_first_join_sync(harness: Harness) -> None:
    """A question asked right after the bot joined waits for that room's full sync."""
    await harness.start()
    harness.hs.create_room(ROOM, ALICE, name="Design", members=(BOB, ADMIN))
    harness.hs.slow.append((r"/state$", 0.5))
    await harness.deliver(harness.hs.member(ROOM, BOT, "invite", sender=ALICE), section="invite", settle=False)
    await harness.deliver(harness.hs.member(ROOM, BOT, "join"), settle=False)
    [reply] = await harness.command(ROOM, ADMIN, f"!whereis {BOB}")
    assert reply.startswith(f"“Bob” ({BOB}) shares 1 room with me:") and "Design" in reply


async def test_a_slow_sync_elsewhere_does_not_delay_answers(two_rooms: Harness) -> None:
    h = two_rooms
    h.hs.slow.append((r"/rooms/!ops.*/state$", 3.0))
    assert h.bot is not None
    syncing = h.bot.service.sync_room(OPS)
    sent = len(h.hs.sent)
    await h.deliver(h.hs.message(ROOM, ADMIN, f"!whereis {BOB}"), settle=False)
    await eventually(lambda: len(h.hs.sent) > sent, what="an answer")
    assert not syncing.done()  # answered while the other room's sync is still waiting
    assert "Design" in h.hs.sent[-1][1]["body"]
    await syncing


async def test_resync_reports_what_changed(two_rooms: Harness) -> None:
    h = two_rooms
    h.hs.member(ROOM, EVE, "join")  # unseen by the bot
    h.hs.member(ROOM, BOB, "leave")
    [reply] = await h.command(ROOM, ADMIN, "!resync")
    assert reply == f"Resynced “Design”: members +1 ({EVE}), -1 ({BOB}); now 4 members."
    [again] = await h.command(ROOM, ADMIN, "!resync")
    assert again == "Resynced “Design”: no member changes; now 4 members."


async def test_resync_all_fixes_corrupted_rows_and_reports(two_rooms: Harness) -> None:
    h = two_rooms
    h.db.execute(
        "DELETE FROM roomstate_memberships WHERE membership = 'join'"
        " AND room_nid = (SELECT room_nid FROM roomstate_rooms WHERE room_id = :r)",
        r=OPS,
    )
    h.hs.create_room("!broken:fake.test", ALICE)
    h.hs.member("!broken:fake.test", BOT, "join")
    h.hs.fail(r"/rooms/!broken:fake.test/state$", 500, times=100)
    h.hs.member(ROOM, BOT, "leave", sender=ALICE)  # the bot missed its kick from Design
    [reply] = await h.command(OPS, ADMIN, "!resync all")
    lines = reply.splitlines()
    assert lines[0] == "Resynced 1 room: +4 -0 members."
    assert f"• {OPS}: members +4 ({ALICE}, {BOB}, {BOT}, {CAROL})" in lines
    assert any(line.startswith("• !broken:fake.test: failed (the homeserver answered M_UNKNOWN") for line in lines)
    assert lines[-1] == "Forgot 1 room I'm no longer in."
    assert h.db.tracked() == [OPS] and h.db.room(OPS).joined_count == 4


async def test_resync_all_without_changes_says_so(two_rooms: Harness) -> None:
    [reply] = await two_rooms.command(OPS, ADMIN, "!resync all")
    assert reply == "Resynced 2 rooms: no member changes."


async def test_resync_permissions(two_rooms: Harness) -> None:
    h = two_rooms
    h.hs.state(ROOM, "m.room.power_levels", {"users": {ALICE: 100, BOB: 50}})
    assert await h.command(ROOM, BOB, "!resync") == [
        "Sorry, only the bot's admins (or room moderators with enough power) may resync."
    ]
    [ok] = await h.command(ROOM, ALICE, "!resync")
    assert ok.startswith("Resynced “Design”")
    assert await h.command(ROOM, ALICE, "!resync all") == ["Sorry, only the bot's admins may resync every room."]
    assert h.bot is not None
    h.bot.config["resync_power_level"] = None
    assert (await h.command(ROOM, ALICE, "!resync"))[0].startswith("Sorry")
    assert (await h.command(ROOM, ADMIN, "!resync everything")) == [
        "Usage: !resync (this room) or !resync all (every room)"
    ]


async def test_power_levels_follow_the_spec(two_rooms: Harness) -> None:
    h = two_rooms
    # no m.room.power_levels event: the creator has 100
    assert (await h.command(ROOM, ALICE, "!resync"))[0].startswith("Resynced")
    assert (await h.command(ROOM, BOB, "!resync"))[0].startswith("Sorry")
    # malformed levels count as the default (and strings as numbers, as older rooms allow)
    h.hs.state(ROOM, "m.room.power_levels", {"users": {BOB: "100", ALICE: [1]}, "users_default": "x"})
    assert (await h.command(ROOM, BOB, "!resync"))[0].startswith("Resynced")
    assert (await h.command(ROOM, ALICE, "!resync"))[0].startswith("Sorry")
    # room version 12: creators have unlimited power and are not listed
    v12 = "!v12:fake.test"
    h.hs.create_room(
        v12, CAROL, name="V12", members=(BOB,), room_version="12", create_extra={"additional_creators": [BOB]}
    )
    await h.join_bot(v12, CAROL)
    h.hs.state(v12, "m.room.power_levels", {"users": {BOB: 0}}, sender=CAROL)
    assert (await h.command(v12, CAROL, "!resync"))[0].startswith("Resynced")
    assert (await h.command(v12, BOB, "!resync"))[0].startswith("Resynced")


async def test_resync_homeserver_failures_always_get_an_answer(two_rooms: Harness) -> None:
    h = two_rooms
    before = h.db.members(ROOM)
    h.hs.member(ROOM, EVE, "join")
    for kind in ("http", "disconnect", "malformed"):
        h.hs.fail(r"/rooms/!design.*/state$", 502, kind=kind, times=2)  # aiohttp retries a dropped reused connection
        [reply] = await h.command(ROOM, ADMIN, "!resync")
        assert reply.startswith("Could not resync this room: "), (kind, reply)
        assert reply.endswith("Nothing was changed; I'll keep trying in the background.")
        assert h.db.members(ROOM) == before or EVE in h.db.joined(ROOM)  # the repairer may have healed it
    h.hs.heal()
    [retry] = await h.command(ROOM, ADMIN, "!resync")
    assert retry.startswith("Resynced “Design”") and EVE in h.db.joined(ROOM)


async def test_resync_all_when_the_homeserver_is_unreachable(two_rooms: Harness) -> None:
    h = two_rooms
    for kind in ("http", "disconnect", "malformed"):
        h.hs.fail(r"/joined_rooms", 502, kind=kind, body='{"joined_rooms": "!a:b"}', times=2)
        [reply] = await h.command(ROOM, ADMIN, "!resync all")
        assert reply.startswith("Could not resync: ") and reply.endswith("Nothing was changed."), (kind, reply)
        assert h.db.tracked() == sorted([ROOM, OPS])


async def test_commands_from_the_bot_itself_are_ignored(two_rooms: Harness) -> None:
    assert await two_rooms.command(ROOM, BOT, "!rooms") == []


async def test_a_flood_of_commands_gets_one_slow_down_then_silence(two_rooms: Harness) -> None:
    h = two_rooms
    assert h.bot is not None
    h.bot.config["commands.rate_limit"] = 3
    answers = [await h.command(OPS, CAROL, "!rooms") for _ in range(6)]
    assert [len(a) for a in answers] == [1, 1, 1, 1, 0, 0]
    assert answers[3] == ["You are sending commands too fast; I'll ignore them for a little while."]
    assert len(await h.command(OPS, ADMIN, "!rooms")) == 1  # others (and admins) still get answers
    assert len(await h.command(OPS, ALICE, "!rooms")) == 1
