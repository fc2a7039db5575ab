"""Room and member tracking through the real plugin: joins, leaves, kicks, info, order, startup."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roomstate import bursts

from .fakes import FakeHomeserver
from .helpers import ALICE, BOB, BOT, CAROL, DAVE, OTHER, ROOM, Harness, sync_response


async def test_first_join_syncs_full_member_list_and_info(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, name="Design", members=(BOB,))
    hs.state(ROOM, "m.room.topic", {"topic": "Pixels"})
    hs.state(ROOM, "m.room.canonical_alias", {"alias": "#design:fake.test"})
    hs.state(ROOM, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    hs.member(ROOM, CAROL, "invite", sender=ALICE)
    await harness.start()
    assert harness.db.tracked() == []

    await harness.join_bot(ROOM, ALICE)

    assert harness.db.joined(ROOM) == [ALICE, BOB, BOT]
    assert harness.db.members(ROOM, "invite") == {CAROL: ("invite", None)}
    room = harness.db.room(ROOM)
    assert (room.name, room.topic, room.canonical_alias, bool(room.encrypted)) == (
        "Design",
        "Pixels",
        "#design:fake.test",
        True,
    )
    assert (room.joined_count, room.invited_count, room.creator, room.room_version) == (3, 1, ALICE, "10")


async def test_member_changes_are_applied_one_by_one_with_counts(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    state_requests = sum("/state" in r for r in hs.requests)

    await harness.deliver(hs.member(ROOM, CAROL, "invite", sender=ALICE))
    assert harness.db.members(ROOM, "invite") == {CAROL: ("invite", None)}
    await harness.deliver(hs.member(ROOM, CAROL, "join"), hs.member(ROOM, BOB, "leave"))
    assert harness.db.joined(ROOM) == [ALICE, BOT, CAROL]
    await harness.deliver(hs.member(ROOM, ALICE, "join", displayname="Alice Liddell"))
    assert harness.db.members(ROOM)[ALICE] == ("join", "Alice Liddell")
    await harness.deliver(hs.member(ROOM, CAROL, "ban", sender=ALICE))
    assert {u: m for u, (m, _) in harness.db.members(ROOM).items()} == {ALICE: "join", BOT: "join", CAROL: "ban"}

    room = harness.db.room(ROOM)
    assert (room.joined_count, room.invited_count) == (2, 0)
    # counts equal what the rows say
    assert room.joined_count == len(harness.db.joined(ROOM))
    assert sum("/state" in r for r in hs.requests) == state_requests  # no further full syncs


async def test_order_is_delivery_order_not_the_senders_clock(harness: Harness) -> None:
    """A join stamped far in the future must not make a later kick ineffective."""
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    forged_join = hs.member(ROOM, CAROL, "join")
    forged_join["origin_server_ts"] = 2**53 - 1  # a remote server's clock, or a forgery
    kick = hs.member(ROOM, CAROL, "leave", sender=ALICE)
    kick["origin_server_ts"] = 1_000  # "older" by the sender's clock
    await harness.deliver(forged_join)
    await harness.deliver(kick)
    assert CAROL not in harness.db.joined(ROOM)

    ban = hs.member(ROOM, DAVE, "ban", sender=ALICE)
    ban["origin_server_ts"] = 5
    join_attempt = hs.member(ROOM, DAVE, "join")
    join_attempt["origin_server_ts"] = 10**15
    await harness.deliver(join_attempt, ban)  # same sync: the timeline order decides
    assert harness.db.members(ROOM)[DAVE] == ("ban", None)


async def test_state_section_is_applied_before_the_timeline(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    state_join = hs.member(ROOM, CAROL, "join")
    timeline_leave = hs.member(ROOM, CAROL, "leave")
    response = sync_response(
        joined={
            ROOM: {
                "state": [{k: v for k, v in state_join.items() if k != "room_id"}],
                "timeline": [{k: v for k, v in timeline_leave.items() if k != "room_id"}],
            }
        }
    )
    await harness.sync(response)
    assert CAROL not in harness.db.members(ROOM)


async def test_room_info_events_update_the_room(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    await harness.deliver(
        hs.state(ROOM, "m.room.name", {"name": "Design Team"}),
        hs.state(ROOM, "m.room.topic", {"topic": "All things visual"}),
        hs.state(ROOM, "m.room.canonical_alias", {"alias": "#team:fake.test"}),
        hs.state(ROOM, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
    )
    room = harness.db.room(ROOM)
    assert (room.name, room.topic, room.canonical_alias, bool(room.encrypted)) == (
        "Design Team",
        "All things visual",
        "#team:fake.test",
        True,
    )
    await harness.deliver(hs.state(ROOM, "m.room.name", {"name": ""}))
    assert harness.db.room(ROOM).name is None
    await harness.deliver(hs.state(ROOM, "m.room.tombstone", {"replacement_room": "!new:fake.test", "body": "moved"}))
    assert harness.db.room(ROOM).replacement_room == "!new:fake.test"


async def test_bot_kicked_or_banned_forgets_the_room(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    await harness.setup_room(OTHER, BOB, name="Other", members=(ALICE,))
    assert harness.db.tracked() == sorted([ROOM, OTHER])

    await harness.deliver(hs.member(ROOM, BOT, "leave", sender=ALICE), section="left")
    assert harness.db.tracked() == [OTHER]
    assert harness.db.members(ROOM) == {}
    await harness.deliver(hs.member(OTHER, BOT, "ban", sender=BOB), section="left")
    assert harness.db.tracked() == []
    assert harness.db.scalar("SELECT COUNT(*) FROM roomstate_memberships") == 0


async def test_rejoin_after_kick_does_not_reprocess_old_events(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    carol_join = hs.member(ROOM, CAROL, "join")
    await harness.deliver(carol_join)
    await harness.deliver(hs.member(ROOM, BOT, "leave", sender=ALICE), section="left")
    hs.member(ROOM, CAROL, "leave")  # while the bot is away
    assert carol_join["event_id"] in harness.db.processed(ROOM)  # forgetting keeps dedup records

    await harness.join_bot(ROOM, ALICE)
    await harness.deliver(carol_join)  # history re-sent on re-join
    assert CAROL not in harness.db.members(ROOM)


async def test_a_join_sync_covers_the_state_section_without_applying_it_again(harness: Harness) -> None:
    """Standalone maubot does not lazy-load members: joining a big room delivers every member
    event in the state section. The full sync covers them; their handlers do no database work."""
    hs = harness.hs
    members = tuple(f"@user{i}:fake.test" for i in range(300))
    hs.create_room(ROOM, ALICE, name="Big", members=members)
    await harness.start()
    await harness.deliver(hs.member(ROOM, BOT, "invite", sender=ALICE), section="invite", settle=False)
    bot_join = hs.member(ROOM, BOT, "join")
    state = [e for e in hs.rooms[ROOM].state.values() if e is not bot_join]
    response = sync_response(
        joined={
            ROOM: {
                "state": [{k: v for k, v in e.items() if k != "room_id"} for e in state],
                "timeline": [{k: v for k, v in bot_join.items() if k != "room_id"}],
            }
        }
    )
    await harness.sync(response)
    assert len(harness.db.joined(ROOM)) == 302
    assert sum("/state" in r for r in hs.requests) == 1
    # every delivered state event is recorded as processed, and none ran twice
    assert {e["event_id"] for e in state} | {bot_join["event_id"]} <= harness.db.processed(ROOM)
    hs.member(ROOM, "@late:fake.test", "join")  # happened after that sync
    await harness.sync(response)  # the same sync again (a token rollback): synced again, nothing lost
    assert len(harness.db.joined(ROOM)) == 303


async def test_sync_gap_resyncs_and_leave_section_forgets(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    await harness.setup_room(OTHER, BOB, name="Other", members=(ALICE,))
    hs.member(ROOM, CAROL, "join")  # happened in the gap: never delivered
    hs.rooms[OTHER].state.pop(("m.room.member", BOT))  # the bot is no longer in OTHER
    await harness.sync(
        sync_response(
            joined={ROOM: {"timeline": [hs.message(ROOM, ALICE, "hi")], "limited": True}},
            left={OTHER: []},
        )
    )
    assert CAROL in harness.db.joined(ROOM)
    assert harness.db.tracked() == [ROOM]


async def test_events_from_left_rooms_never_track_a_room(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(OTHER, ALICE, members=(BOB,))
    await harness.start()
    await harness.deliver(
        hs.member(OTHER, CAROL, "join"), hs.state(OTHER, "m.room.name", {"name": "x"}), section="left"
    )
    assert harness.db.tracked() == [] and harness.db.resync_queue() == {}
    assert sum("/state" in r for r in hs.requests) == 0


async def test_an_event_in_an_untracked_room_queues_a_resync(harness: Harness) -> None:
    """E.g. the bot's own join was never seen: the room is synced by the repairer."""
    hs = harness.hs
    hs.create_room(ROOM, ALICE, name="Design", members=(BOB,))
    hs.member(ROOM, BOT, "join")
    await harness.start()
    await harness.deliver(hs.member(ROOM, CAROL, "join"))
    assert harness.db.joined(ROOM) == [ALICE, BOB, BOT, CAROL]
    assert harness.db.resync_queue() == {}


async def test_startup_reconciles_with_joined_rooms(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    await harness.setup_room(OTHER, BOB, name="Other")
    await harness.stop()
    # while the bot is down: removed from OTHER, added to a new room, a member joins ROOM
    hs.rooms[OTHER].state.pop(("m.room.member", BOT))
    hs.create_room("!new:fake.test", CAROL, name="New")
    hs.member("!new:fake.test", BOT, "join")
    hs.member(ROOM, DAVE, "join")

    await harness.restart(**{"sync.on_startup": "all"})  # even a change no event announced
    assert harness.db.tracked() == sorted(["!new:fake.test", ROOM])
    assert DAVE in harness.db.joined(ROOM)


async def test_startup_mode_new_syncs_only_unknown_rooms(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    await harness.stop()
    hs.member(ROOM, DAVE, "join")
    hs.create_room("!new:fake.test", CAROL, name="New")
    hs.member("!new:fake.test", BOT, "join")
    requests = len(hs.requests)
    await harness.restart(**{"sync.on_startup": "new"})
    assert harness.db.tracked() == sorted(["!new:fake.test", ROOM])
    assert DAVE not in harness.db.joined(ROOM)  # known room: not synced in "new" mode
    assert not any(ROOM.replace("!", "%21") in r or ROOM in r for r in hs.requests[requests:] if "/state" in r)


async def test_first_sync_after_a_restart_is_not_a_blind_window(harness: Harness) -> None:
    """maubot does not dispatch the first sync after a start (ignore_first_sync). A join that
    arrives in it is caught by resyncing the rooms it carries."""
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    await harness.restart()  # startup reconciliation runs before the first sync returns
    late_join = hs.member(ROOM, CAROL, "join")
    harness.syncs = 0  # the next sync is the first one of this run
    await harness.sync(
        sync_response(joined={ROOM: {"timeline": [{k: v for k, v in late_join.items() if k != "room_id"}]}})
    )
    assert CAROL in harness.db.joined(ROOM)


async def test_handlers_are_registered_before_start_first_yields(harness: Harness) -> None:
    """maubot standalone is already syncing while the plugin starts."""
    bot = harness.make_bot()
    harness.bot = bot
    task = asyncio.ensure_future(bot.internal_start())
    await asyncio.sleep(0)
    assert bot.client.event_handlers, "no handlers registered after the first step of start"
    await task
    await harness.settled()


async def test_a_failed_migration_fails_the_start(harness: Harness) -> None:
    harness.db.execute("CREATE TABLE IF NOT EXISTS roomstate_schema_version (version INTEGER NOT NULL)")
    harness.db.execute("INSERT INTO roomstate_schema_version (version) VALUES (999)")
    bot = harness.make_bot()
    try:
        await bot.internal_start()
    except Exception as error:
        assert "newer than this plugin" in str(error)
    else:
        raise AssertionError("the start should fail")
    finally:
        harness.db.execute("DELETE FROM roomstate_schema_version")


def _in_sync(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "room_id"}


def _state_fetches(hs: FakeHomeserver) -> int:
    return sum(request.endswith("/state") for request in hs.requests)


async def test_a_state_section_contradicting_processed_events_gets_the_room_checked(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent changes forked the room and state resolution settled on events the bot had
    already processed: no new event says so, only the next sync's state section."""
    monkeypatch.setattr(bursts, "SETTLE_SECONDS", 0.05)
    monkeypatch.setattr(bursts, "CONTRADICTED_INTERVAL_SECONDS", 2.0)
    monkeypatch.setattr(bursts, "BURST_CHANGES", 1_000)  # here only contradictions make a room suspect
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    first_name = hs.state(ROOM, "m.room.name", {"name": "Churn 64"})
    second_name = hs.state(ROOM, "m.room.name", {"name": "Churn 80"})
    ban = hs.member(ROOM, CAROL, "ban", sender=ALICE)
    unban = hs.member(ROOM, CAROL, "leave", sender=ALICE)
    await harness.deliver(first_name, second_name, ban, unban)
    assert harness.db.room(ROOM).name == "Churn 80" and CAROL not in harness.db.members(ROOM)

    async def settled() -> None:
        await asyncio.sleep(0.2)
        await harness.settled()

    hs.rooms[ROOM].state[("m.room.name", "")] = first_name  # what resolution chose
    hs.rooms[ROOM].state[("m.room.member", CAROL)] = ban
    fetches = _state_fetches(hs)
    await harness.deliver(first_name, ban, section="state")
    await settled()
    assert harness.db.room(ROOM).name == "Churn 64"
    assert harness.db.members(ROOM)[CAROL] == ("ban", None)
    assert _state_fetches(hs) == fetches + 1  # one check, not one per event

    # a state section that agrees with what is stored (Synapse sends those too) fetches nothing
    await harness.deliver(first_name, ban, hs.rooms[ROOM].state[("m.room.member", ALICE)], section="state")
    await settled()
    assert _state_fetches(hs) == fetches + 1

    # nor does a key the same sync's timeline sets again: the timeline has the last word
    renamed = hs.state(ROOM, "m.room.name", {"name": "Settled"})
    sections = {"state": [_in_sync(second_name)], "timeline": [_in_sync(renamed)]}
    await harness.sync(sync_response(joined={ROOM: sections}))
    await settled()
    assert harness.db.room(ROOM).name == "Settled" and _state_fetches(hs) == fetches + 1
    assert harness.bot is not None and not harness.bot.service.bursts.pending(ROOM)

    # another contradiction soon after is checked once the interval has passed (a busy room
    # forks often), from memory: the room is not put in the resync queue for it
    hs.rooms[ROOM].state[("m.room.member", CAROL)] = unban
    await harness.deliver(unban, section="state")
    await settled()
    assert _state_fetches(hs) == fetches + 1 and harness.db.members(ROOM)[CAROL] == ("ban", None)
    assert harness.bot.service.bursts.pending(ROOM)
    await asyncio.sleep(2.0)
    await harness.settled()
    assert _state_fetches(hs) == fetches + 2 and CAROL not in harness.db.members(ROOM)
    assert harness.db.resync_queue() == {}


async def test_a_state_section_with_new_events_applies_them_without_a_resync(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    fetches = _state_fetches(hs)
    renamed = hs.state(ROOM, "m.room.name", {"name": "Renamed elsewhere"})
    joined = hs.member(ROOM, DAVE, "join")
    await harness.deliver(renamed, joined, section="state")
    assert harness.db.room(ROOM).name == "Renamed elsewhere" and DAVE in harness.db.joined(ROOM)
    assert _state_fetches(hs) == fetches
    assert {renamed["event_id"], joined["event_id"]} <= harness.db.processed(ROOM)
