"""The dedup decorators on a real database, and through the real plugin across restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa
from maubot.handlers import command, event
from maubot.handlers.command import CommandHandler
from mautrix.types import EventType

from roomstate.db import RoomStore
from roomstate.dedup import Deduplicator, EventClaim, deduplicated, deduplicated_with_claim
from roomstate.models import Applied
from roomstate.ordering import RoomQueue

from .helpers import ADMIN, ALICE, BOT, CAROL, ROOM, Database, Harness, eventually


class Evt:
    def __init__(self, event_id: Any, room_id: Any = ROOM) -> None:
        self.event_id, self.room_id = event_id, room_id


class Recorder:
    """A handler owner like the plugin: has a Deduplicator, counts calls."""

    def __init__(self, store: RoomStore) -> None:
        self.dedup = Deduplicator(store, RoomQueue())
        self.calls: list[str] = []
        self.fail_next = 0
        self.gate = asyncio.Event()
        self.gate.set()

    @deduplicated
    async def handle(self, evt: Evt) -> str:
        self.calls.append(evt.event_id)
        await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("handler failed")
        return "done"


@pytest_asyncio.fixture
async def recorder(db_url: str) -> AsyncIterator[Recorder]:
    engine = sa.create_engine(db_url)
    store = RoomStore(engine)
    await store.open()
    yield Recorder(store)
    await store.close()
    engine.dispose()


async def processed(recorder: Recorder, event_id: str) -> bool:
    claimed = await recorder.dedup.store.claim_event(ROOM, event_id)
    if claimed:
        await recorder.dedup.store.release_event(ROOM, event_id)
    return not claimed


async def test_same_event_twice_runs_once(recorder: Recorder) -> None:
    assert await recorder.handle(Evt("$a")) == "done"
    assert await recorder.handle(Evt("$a")) is None
    assert await recorder.handle(Evt("$a", room_id="!other:fake.test")) == "done"  # the key is (room, event)
    assert recorder.calls == ["$a", "$a"]


async def test_concurrent_duplicates_run_once(recorder: Recorder) -> None:
    recorder.gate.clear()  # the first handler is still running when the duplicates arrive
    tasks = [asyncio.create_task(recorder.handle(Evt("$b"))) for _ in range(20)]
    await asyncio.sleep(0.2)
    recorder.gate.set()
    results = await asyncio.gather(*tasks)
    assert recorder.calls == ["$b"]
    assert results.count("done") == 1 and results.count(None) == 19


async def test_commands_are_at_most_once_even_when_they_fail(recorder: Recorder) -> None:
    recorder.fail_next = 1
    with pytest.raises(RuntimeError):
        await recorder.handle(Evt("$c"))
    assert await processed(recorder, "$c")  # it may have replied before failing: never again
    assert await recorder.handle(Evt("$c")) is None
    assert recorder.calls == ["$c"]


async def test_a_handler_cancelled_before_it_ran_leaves_no_claim(recorder: Recorder) -> None:
    # cancelled while the claim is being written
    task = asyncio.create_task(recorder.handle(Evt("$d")))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert recorder.calls == [] and not await processed(recorder, "$d")
    # cancelled while waiting for earlier work in its room
    blocker = asyncio.get_running_loop().create_future()
    recorder.dedup.queue.run(ROOM, lambda: blocker)
    task = asyncio.create_task(recorder.handle(Evt("$e")))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    blocker.set_result(None)
    await asyncio.sleep(0.2)
    assert recorder.calls == [] and not await processed(recorder, "$e")
    assert await recorder.handle(Evt("$e")) == "done"  # a later delivery runs


async def test_a_command_runs_after_earlier_work_in_its_room(recorder: Recorder) -> None:
    order: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def earlier() -> None:
        await gate
        order.append("earlier")

    recorder.dedup.queue.run(ROOM, earlier)
    task = asyncio.create_task(recorder.handle(Evt("$f")))
    other_room = asyncio.create_task(recorder.handle(Evt("$g", room_id="!elsewhere:fake.test")))
    assert await other_room == "done"  # not held up by another room's work
    await asyncio.sleep(0.05)
    assert recorder.calls == ["$g"]
    gate.set_result(None)
    assert await task == "done" and order == ["earlier"] and recorder.calls == ["$g", "$f"]


async def test_events_without_ids_are_not_deduplicated(recorder: Recorder) -> None:
    await recorder.handle(Evt(None))
    await recorder.handle(Evt(None))
    assert recorder.calls == [None, None]


def test_maubot_markers_survive() -> None:
    async def handler(self: Any, evt: Any, claim: EventClaim | None) -> Applied | None: ...

    marked = event.on(EventType.ROOM_MEMBER)(event.on(EventType.ROOM_NAME)(deduplicated_with_claim(handler)))
    assert marked.__mb_event_handler__ and marked.__mb_event_types__ == {EventType.ROOM_MEMBER, EventType.ROOM_NAME}
    assert marked.__wrapped__ is handler and marked.__name__ == "handler"

    async def cmd(self: Any, evt: Any) -> None:
        """Docs."""

    handler_obj = command.new("y")(deduplicated(cmd))
    assert isinstance(handler_obj, CommandHandler)
    assert handler_obj.__mb_func__.__wrapped__ is cmd and handler_obj.__mb_func__.__doc__ == "Docs."


async def test_replayed_command_after_restart_does_not_run_again(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room(members=(ADMIN,))
    resync = hs.message(ROOM, ADMIN, "!resync")
    await harness.deliver(resync)
    assert len(hs.replies(ROOM)) == 1
    state_fetches = sum(r.endswith("/state") for r in hs.requests)
    await harness.restart(**{"sync.on_startup": "new"})
    await harness.deliver(resync)  # the sync token was rolled back: the same event again
    assert len(hs.replies(ROOM)) == 1
    assert sum(r.endswith("/state") for r in hs.requests) == state_fetches


@pytest.mark.parametrize("old_event_ids", [False, True], ids=["hash IDs", "rooms v1-v3 IDs"])
async def test_replayed_member_events_after_restart_are_skipped(harness: Harness, old_event_ids: bool) -> None:
    """Either way a member event is claimed: by its history row (a hash ID) or by its own record."""
    hs = harness.hs
    hs.old_event_ids = old_event_ids
    await harness.start(**{"sync.on_startup": "new"})
    await harness.setup_room()
    carol_join = hs.member(ROOM, CAROL, "join")
    await harness.deliver(carol_join)
    claims = harness.db.claimed_apart if old_event_ids else harness.db.claimed_in_history
    assert carol_join["event_id"] in claims(ROOM)
    await harness.deliver(hs.member(ROOM, CAROL, "leave"))
    await harness.restart()
    await harness.deliver(carol_join)  # re-applying the old join would make Carol a member again
    assert CAROL not in harness.db.joined(ROOM)


async def test_state_event_seen_in_state_and_timeline_is_applied_once(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    topic = hs.state(ROOM, "m.room.topic", {"topic": "once"})
    await harness.deliver(topic, section="state")
    assert harness.db.room(ROOM).topic == "once"
    harness.db.execute("UPDATE roomstate_room_info SET topic = 'changed since'")
    await harness.deliver(topic)
    assert harness.db.room(ROOM).topic == "changed since"  # not applied again


async def test_a_state_event_is_claimed_in_the_same_transaction_as_its_change(harness: Harness) -> None:
    """If applying fails, the event is not claimed either: a later delivery applies it."""
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    join = hs.member(ROOM, CAROL, "join")
    harness.db.execute("ALTER TABLE roomstate_memberships RENAME TO roomstate_memberships_gone")
    try:
        await harness.deliver(join, settle=False)
        await asyncio.sleep(0.1)
    finally:
        harness.db.execute("ALTER TABLE roomstate_memberships_gone RENAME TO roomstate_memberships")
    assert join["event_id"] not in harness.db.processed(ROOM)
    # the room went into the resync queue, and the repairer (retrying with backoff) heals it
    await eventually(lambda: CAROL in harness.db.joined(ROOM) and not harness.db.resync_queue(), what="repaired")


async def test_forgetting_a_room_keeps_its_processed_events(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room()
    topic = hs.state(ROOM, "m.room.topic", {"topic": "x"})
    await harness.deliver(topic)
    await harness.deliver(hs.member(ROOM, BOT, "leave", sender=ALICE), section="left")
    assert harness.db.room(ROOM) is None
    assert topic["event_id"] in harness.db.processed(ROOM)


async def test_cleanup_runs_at_startup_with_the_configured_retention(harness: Harness, db: Database) -> None:
    await harness.start()
    await harness.setup_room()
    assert harness.bot is not None
    await harness.bot.service.store.claim_event(ROOM, "$recent")
    await harness.bot.service.store.claim_event(ROOM, "$ancient")
    db.execute("UPDATE roomstate_processed_events SET processed_ts = 1 WHERE event_id = '$ancient'")
    await harness.restart(**{"dedup.retention_hours": 1})
    deadline = time.monotonic() + 5
    while "$ancient" in db.processed(ROOM) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert "$ancient" not in db.processed(ROOM) and "$recent" in db.processed(ROOM)
