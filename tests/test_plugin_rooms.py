"""Room and member tracking through the real plugin: joins, leaves, kicks, info changes, startup."""
from __future__ import annotations

from mautrix.client import SyncStream

from .conftest import ADMIN, BOT, Harness

ROOM = "!design:fake.test"
ALICE, BOB, CAROL = "@alice:fake.test", "@bob:fake.test", "@carol:fake.test"


async def joined(h: Harness, room_id: str = ROOM) -> list:
    assert h.bot is not None
    return [m.user_id for m in await h.bot.store.list_members(room_id, "join")]


async def test_first_join_syncs_full_member_list_and_info(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, name="Design", members=(BOB,))
    hs.state(ROOM, "m.room.topic", {"topic": "Pixels"})
    hs.state(ROOM, "m.room.canonical_alias", {"alias": "#design:fake.test"})
    hs.state(ROOM, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    hs.member(ROOM, CAROL, "invite", sender=ALICE)
    bot = await harness.start()
    assert await bot.store.list_rooms() == []

    await harness.invite_and_join_bot(ROOM, ALICE)

    assert await joined(harness) == [ALICE, BOB, BOT]
    room = await bot.store.get_room(ROOM)
    assert room is not None
    assert (room.name, room.topic, room.canonical_alias, room.encrypted) == (
        "Design", "Pixels", "#design:fake.test", True,
    )
    assert (room.joined_count, room.invited_count, room.creator, room.room_version) == (3, 1, ALICE, "10")
    assert [m.user_id for m in await bot.store.list_members(ROOM, "invite")] == [CAROL]


async def test_member_changes_are_applied_one_by_one(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, name="Design", members=(BOB,))
    await harness.start()
    await harness.invite_and_join_bot(ROOM, ALICE)
    state_requests = sum("/state" in r for r in hs.requests)

    await harness.deliver(hs.member(ROOM, CAROL, "invite", sender=ALICE))
    assert [m.user_id for m in await harness.bot.store.list_members(ROOM, "invite")] == [CAROL]
    await harness.deliver(hs.member(ROOM, CAROL, "join"))
    await harness.deliver(hs.member(ROOM, BOB, "leave"))
    assert await joined(harness) == [ALICE, BOT, CAROL]

    await harness.deliver(hs.member(ROOM, ALICE, "join", displayname="Alice Liddell"))
    members = {m.user_id: m for m in await harness.bot.store.list_members(ROOM)}
    assert members[ALICE].displayname == "Alice Liddell"
    assert await harness.bot.store.user_displayname(ALICE) == "Alice Liddell"

    await harness.deliver(hs.member(ROOM, CAROL, "ban", sender=ALICE))
    members = {m.user_id: m.membership for m in await harness.bot.store.list_members(ROOM)}
    assert members == {ALICE: "join", BOT: "join", CAROL: "ban"}
    room = await harness.bot.store.get_room(ROOM)
    assert room.joined_count == 2 and room.invited_count == 0
    # applied incrementally: no further full syncs
    assert sum("/state" in r for r in hs.requests) == state_requests


async def test_an_older_member_event_never_overrides_a_newer_one(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOB,))
    await harness.start()
    await harness.invite_and_join_bot(ROOM, ALICE)
    join = hs.member(ROOM, CAROL, "join")
    leave = hs.member(ROOM, CAROL, "leave")
    await harness.deliver(leave)
    await harness.deliver(join)  # arrives late (handlers run unordered)
    assert CAROL not in await joined(harness)


async def test_room_info_events_update_the_room(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, name="Design")
    await harness.start()
    await harness.invite_and_join_bot(ROOM, ALICE)

    await harness.deliver(
        hs.state(ROOM, "m.room.name", {"name": "Design Team"}),
        hs.state(ROOM, "m.room.topic", {"topic": "All things visual"}),
        hs.state(ROOM, "m.room.canonical_alias", {"alias": "#team:fake.test"}),
        hs.state(ROOM, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
    )
    room = await harness.bot.store.get_room(ROOM)
    assert (room.name, room.topic, room.canonical_alias, room.encrypted) == (
        "Design Team", "All things visual", "#team:fake.test", True,
    )
    await harness.deliver(hs.state(ROOM, "m.room.name", {"name": ""}))
    room = await harness.bot.store.get_room(ROOM)
    assert room.name is None and room.display_name == "#team:fake.test"

    await harness.deliver(hs.state(ROOM, "m.room.tombstone", {"replacement_room": "!new:fake.test", "body": "moved"}))
    assert (await harness.bot.store.get_room(ROOM)).replacement_room == "!new:fake.test"


async def test_bot_kicked_or_banned_forgets_the_room(harness: Harness) -> None:
    hs = harness.hs
    other = "!other:fake.test"
    hs.create_room(ROOM, ALICE, name="Design", members=(BOB,))
    hs.create_room(other, BOB, name="Other", members=(ALICE,))
    await harness.start()
    await harness.invite_and_join_bot(ROOM, ALICE)
    await harness.invite_and_join_bot(other, BOB)
    assert len(await harness.bot.store.list_rooms()) == 2

    await harness.deliver(hs.member(ROOM, BOT, "leave", sender=ALICE), source=SyncStream.LEFT_ROOM | SyncStream.TIMELINE)
    assert await harness.bot.store.get_room(ROOM) is None
    assert await harness.bot.store.list_members(ROOM) == []
    assert [r.room_id for r in await harness.bot.store.joined_rooms_of(ALICE)] == [other]

    await harness.deliver(hs.member(other, BOT, "ban", sender=BOB), source=SyncStream.LEFT_ROOM | SyncStream.TIMELINE)
    assert await harness.bot.store.list_rooms() == []
    assert harness.rows("SELECT COUNT(*) FROM roomstate_memberships")[0][0] == 0
    assert harness.rows("SELECT COUNT(*) FROM roomstate_room_info")[0][0] == 0


async def test_rejoin_after_kick_does_not_reprocess_old_events(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOB,))
    await harness.start()
    await harness.invite_and_join_bot(ROOM, ALICE)
    carol_join = hs.member(ROOM, CAROL, "join")
    await harness.deliver(carol_join)
    kick = hs.member(ROOM, BOT, "leave", sender=ALICE)
    await harness.deliver(kick, source=SyncStream.LEFT_ROOM | SyncStream.TIMELINE)
    carol_leave = hs.member(ROOM, CAROL, "leave")  # while the bot was away

    await harness.invite_and_join_bot(ROOM, ALICE)
    assert await joined(harness) == [ALICE, BOB, BOT]
    # the server re-sends history: the old join must not be applied again
    await harness.deliver(carol_join, carol_leave, kick)
    assert await joined(harness) == [ALICE, BOB, BOT]
    assert await harness.bot.store.get_room(ROOM) is not None
    del carol_leave


async def test_sync_gap_resyncs_and_leave_section_forgets(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOB,))
    await harness.start()
    await harness.invite_and_join_bot(ROOM, ALICE)
    hs.member(ROOM, CAROL, "join")  # hidden in a gap: never delivered as an event
    await harness.bot.service.handle_sync_gaps({"rooms": {"join": {ROOM: {"timeline": {"limited": True}}}}})
    assert await joined(harness) == [ALICE, BOB, BOT, CAROL]

    hs.member(ROOM, BOT, "leave", sender=ALICE)
    await harness.bot.service.handle_sync_gaps({"rooms": {"leave": {ROOM: {}}}})
    assert await harness.bot.store.get_room(ROOM) is None


async def test_startup_reconciles_with_joined_rooms(harness: Harness) -> None:
    hs = harness.hs
    kept, left, new = "!kept:fake.test", "!left:fake.test", "!new:fake.test"
    for room in (kept, left):
        hs.create_room(room, ALICE, name=room[1:5], members=(BOT,))
    await harness.start()
    assert {r.room_id for r in await harness.bot.store.list_rooms()} == {kept, left}

    await harness.stop()
    hs.member(left, BOT, "leave", sender=ALICE)  # while the bot was down
    hs.member(kept, CAROL, "join")
    hs.create_room(new, BOB, name="New", members=(BOT,))
    await harness.restart()
    assert {r.room_id for r in await harness.bot.store.list_rooms()} == {kept, new}
    assert CAROL in await joined(harness, kept)
    assert await harness.bot.store.list_members(left) == []


async def test_startup_mode_new_syncs_only_unknown_rooms(harness: Harness) -> None:
    hs = harness.hs
    kept, new = "!kept:fake.test", "!new:fake.test"
    hs.create_room(kept, ALICE, members=(BOT,))
    await harness.start(**{"sync.on_startup": "new"})
    await harness.stop()
    hs.member(kept, CAROL, "join")
    hs.create_room(new, BOB, members=(BOT,))
    await harness.restart()
    assert {r.room_id for r in await harness.bot.store.list_rooms()} == {kept, new}
    assert CAROL not in await joined(harness, kept)  # known room left as it was


async def test_startup_survives_homeserver_errors(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOT,))
    hs.fail("/joined_rooms", 502)
    await harness.start()
    assert await harness.bot.store.list_rooms() == []
    # the bot keeps running: a later admin resync succeeds
    replies = await harness.command(ROOM, ADMIN, "!resync all")
    assert replies and "Resynced 1 room" in replies[0]


async def test_history_delivered_with_the_bots_join_syncs_the_room_once(harness: Harness) -> None:
    hs = harness.hs
    history = hs.create_room(ROOM, ALICE, name="Design", members=(BOB, CAROL))
    await harness.start()
    hs.member(ROOM, BOT, "invite", sender=ALICE)
    join = hs.member(ROOM, BOT, "join")
    await harness.deliver(*history, join)  # one sync batch: the join's timeline holds the history
    assert sum(r.endswith("/state") for r in hs.requests) == 1
    assert await joined(harness) == [ALICE, BOB, BOT, CAROL]


async def test_events_from_left_rooms_never_trigger_syncs(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOT,))
    await harness.start()
    hs.member(ROOM, BOT, "leave", sender=ALICE)
    await harness.deliver(hs.member(ROOM, BOT, "leave", sender=ALICE), source=SyncStream.LEFT_ROOM | SyncStream.TIMELINE)
    before = len(hs.requests)
    late = [hs.member(ROOM, f"@u{i}:fake.test", "join") for i in range(5)] + [hs.state(ROOM, "m.room.topic", {"topic": "x"})]
    await harness.deliver(*late, source=SyncStream.LEFT_ROOM | SyncStream.TIMELINE)
    assert hs.requests[before:] == []


async def test_handlers_are_registered_before_start_first_yields(harness: Harness) -> None:
    """maubot standalone syncs before starting the plugin: a plugin that awaits anything
    before its handlers are registered loses the events of the first sync."""
    import asyncio

    from mautrix.types import EventType

    bot = harness.make_bot()
    registered_at_first_yield: list = []
    task = asyncio.ensure_future(bot.internal_start())
    # runs right after the task's first step, i.e. at its first yield to the loop
    asyncio.get_running_loop().call_soon(
        lambda: registered_at_first_yield.append(EventType.ROOM_MEMBER in bot.client.event_handlers)
    )
    await task
    await bot.reconciled
    harness.bot = bot
    assert registered_at_first_yield == [True]


async def test_a_failed_migration_fails_the_start(harness: Harness) -> None:
    import pytest

    harness.rows("SELECT 1")  # create the database file
    with harness.engine.begin() as conn:
        conn.execute(__import__("sqlalchemy").text("CREATE TABLE roomstate_schema_version (version INTEGER NOT NULL)"))
        conn.execute(__import__("sqlalchemy").text("INSERT INTO roomstate_schema_version VALUES (99)"))
    with pytest.raises(RuntimeError, match="newer than this plugin"):
        await harness.start()
    harness.bot = None


async def test_stop_lets_running_handlers_finish(harness: Harness) -> None:
    import asyncio

    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOT,))
    bot = await harness.start(**{"sync.on_startup": "new"})
    await bot.service.forget_room(ROOM)  # the next member event must sync the room
    hs.slow.append((r"/state$", 0.5))
    join = hs.member(ROOM, CAROL, "join")
    delivery = asyncio.create_task(harness.deliver(join))
    await asyncio.sleep(0.1)
    assert bot.running_handlers
    await harness.stop()  # while the handler waits for the homeserver
    await delivery
    harness.engine.dispose()
    rows = harness.rows(
        "SELECT COUNT(*) FROM roomstate_memberships m JOIN roomstate_users u ON u.user_nid = m.user_nid "
        "WHERE u.user_id = :u", u=CAROL)
    assert rows[0][0] == 1


async def test_sync_successful_handler_resyncs_gaps_but_ignores_the_first_sync(harness: Harness) -> None:
    import asyncio

    from mautrix.client import InternalEventType

    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOT,))
    bot = await harness.start()
    hs.member(ROOM, CAROL, "join")  # hidden in the gap
    gap = {"rooms": {"join": {ROOM: {"timeline": {"limited": True, "events": []}}}}}

    async def dispatch(sync: dict) -> None:
        tasks = bot.client.dispatch_manual_event(
            InternalEventType.SYNC_SUCCESSFUL, {"data": sync, "source": SyncStream.INTERNAL}, force_synchronous=True)
        await asyncio.gather(*tasks)

    await dispatch({**gap, "net.maunium.mautrix": {"is_first": True, "is_initial": False}})
    assert CAROL not in await joined(harness)
    await dispatch({**gap, "net.maunium.mautrix": {"is_first": False, "is_initial": False}})
    assert CAROL in await joined(harness)


async def test_stop_waits_for_handlers_whose_claim_is_still_queued(harness: Harness) -> None:
    import asyncio
    import time

    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOT,))
    bot = await harness.start()
    busy = asyncio.get_running_loop().run_in_executor(bot.store._executor, time.sleep, 0.3)
    delivery = asyncio.create_task(harness.deliver(hs.member(ROOM, CAROL, "join")))
    await asyncio.sleep(0.05)  # the handler now waits for its claim behind the busy worker
    await harness.stop()
    await asyncio.gather(busy, delivery)
    harness.engine.dispose()
    rows = harness.rows(
        "SELECT m.membership FROM roomstate_memberships m JOIN roomstate_users u ON u.user_nid = m.user_nid "
        "WHERE u.user_id = :u", u=CAROL)
    assert rows == [("join",)]
