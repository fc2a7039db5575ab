"""A bot in 10,000 rooms: it starts, answers `!rooms` (paged) and `!whereis` while a fallback
reconciliation of every room is still running, and a quiet catch-up fetches no room at all."""

from __future__ import annotations

import asyncio
import json

from roomstate.parsing import state_snapshot

from .helpers import ADMIN, BOT, Harness, eventually

ROOMS = 10_000
SHARED = "@everywhere:fake.test"  # in every tenth room


async def seed(harness: Harness) -> None:
    """The rooms on the fake homeserver, and stored as a full sync of each would store them (in
    bulk: 10,000 joins through syncs would take minutes)."""
    assert harness.bot is not None
    hs, store = harness.hs, harness.bot.service.store
    snapshots = []
    for index in range(ROOMS):
        room_id = f"!s{index}:fake.test"
        members = (f"@u{index}:fake.test", *((SHARED,) if index % 10 == 0 else ()))
        hs.create_room(room_id, ADMIN, name=f"Room {index:05}", members=members)
        hs.member(room_id, BOT, "join")
        body = json.dumps(list(hs.rooms[room_id].state.values())).encode()
        snapshots.append(state_snapshot(room_id, body, BOT)[0])  # type: ignore[arg-type]
    await asyncio.gather(*(store.replace_room(snapshot) for snapshot in snapshots))


async def test_ten_thousand_rooms_answered_during_a_full_reconciliation(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await seed(harness)
    await harness.restart(settle=False, **{"sync.on_startup": "all", "rooms.page_size": 20})
    first = f"!s{ROOMS - 1}:fake.test"
    await eventually(lambda: len(harness.db.resync_queue()) > 100, what="the reconciliation under way")
    [rooms] = await harness.command(first, ADMIN, "!rooms", settle=False)
    queued = len(harness.db.resync_queue())
    assert rooms.startswith(f"I'm in {ROOMS} rooms:") and "Page 1 of 500, 9980 more: !rooms 2." in rooms, rooms
    assert queued > 0 and "rooms waiting for a resync." in rooms  # answered while the reconciliation runs
    [last] = await harness.command(first, ADMIN, "!rooms 500", settle=False)
    assert "“Room 09999”" in last and last.splitlines()[-1].startswith("Page 500 of 500.")
    [where] = await harness.command(first, ADMIN, f"!whereis {SHARED}", settle=False)
    assert where.startswith(f"“Everywhere” ({SHARED}) shares {ROOMS // 10} rooms with me:"), where[:200]
    assert len(hs.state_requests()) < ROOMS  # still going
    await eventually(lambda: harness.bot.intake.positions.released, what="every room queued")  # type: ignore[union-attr]
    await harness.deliver(hs.message(first, ADMIN, "hello"), settle=False)  # a sync after that: its position
    await harness.stop()
    requests = len(hs.requests)
    await harness.restart(settle=False, **{"sync.on_startup": "catch-up"})  # the queue is durable, the position saved
    await harness.command(first, ADMIN, "!rooms", settle=False)
    assert [r for r in hs.requests[requests:] if "/sync" in r] == ["GET /_matrix/client/v3/sync"]
