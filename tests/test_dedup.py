"""The @deduplicated decorator on a real database, and through the real plugin across restarts."""
from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
import sqlalchemy as sa
from maubot.handlers import command, event
from maubot.handlers.command import CommandHandler
from mautrix.client import SyncStream
from mautrix.types import EventType

from roomstate.db import RoomStore
from roomstate.dedup import deduplicated

from .conftest import ADMIN, BOT, Harness

ROOM = "!design:fake.test"
ALICE, CAROL = "@alice:fake.test", "@carol:fake.test"


class Evt:
    def __init__(self, event_id: Any, room_id: Any = ROOM) -> None:
        self.event_id, self.room_id = event_id, room_id


class Recorder:
    """A handler owner like the plugin: has a ledger, counts calls."""

    def __init__(self, store: RoomStore) -> None:
        self.ledger = store
        self.running_handlers: set = set()
        self.calls: List[str] = []
        self.fail_next = 0
        self.gate: asyncio.Event = asyncio.Event()
        self.gate.set()

    @deduplicated
    async def handle(self, evt: Evt) -> str:
        self.calls.append(evt.event_id)
        await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("handler failed")
        return "done"


@pytest.fixture
async def recorder(db_url: str):
    engine = sa.create_engine(db_url)
    store = RoomStore(engine)
    await store.open()
    yield Recorder(store)
    await store.close()
    engine.dispose()


async def test_same_event_twice_runs_once(recorder: Recorder) -> None:
    assert await recorder.handle(Evt("$a")) == "done"
    assert await recorder.handle(Evt("$a")) is None
    assert await recorder.handle(Evt("$a", room_id="!other:fake.test")) == "done"  # key is (room, event)
    assert recorder.calls == ["$a", "$a"]


async def test_concurrent_duplicates_run_once(recorder: Recorder) -> None:
    recorder.gate.clear()  # the first handler is still running when the duplicates arrive
    tasks = [asyncio.create_task(recorder.handle(Evt("$b"))) for _ in range(20)]
    await asyncio.sleep(0.2)
    recorder.gate.set()
    results = await asyncio.gather(*tasks)
    assert recorder.calls == ["$b"]
    assert results.count("done") == 1 and results.count(None) == 19


async def test_failed_handler_releases_its_claim(recorder: Recorder) -> None:
    recorder.fail_next = 1
    with pytest.raises(RuntimeError):
        await recorder.handle(Evt("$c"))
    assert not await recorder.ledger.is_processed(ROOM, "$c")
    assert await recorder.handle(Evt("$c")) == "done"  # redelivery is processed
    assert await recorder.ledger.is_processed(ROOM, "$c")
    assert recorder.calls == ["$c", "$c"]


async def test_cancelled_handler_releases_its_claim(recorder: Recorder) -> None:
    recorder.gate.clear()
    task = asyncio.create_task(recorder.handle(Evt("$d")))
    await asyncio.sleep(0.1)
    assert await recorder.ledger.is_processed(ROOM, "$d")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert not await recorder.ledger.is_processed(ROOM, "$d")


async def test_events_without_ids_are_not_deduplicated(recorder: Recorder) -> None:
    await recorder.handle(Evt(None))
    await recorder.handle(Evt(None))
    assert recorder.calls == [None, None]


def test_maubot_markers_survive_in_either_order() -> None:
    async def handler(self: Any, evt: Any) -> None: ...

    below = event.on(EventType.ROOM_MEMBER)(deduplicated(handler))
    above = deduplicated(event.on(EventType.ROOM_NAME)(handler))
    assert below.__mb_event_handler__ and below.__mb_event_types__ == {EventType.ROOM_MEMBER}
    assert above.__mb_event_handler__ and EventType.ROOM_NAME in above.__mb_event_types__
    assert above.__wrapped__ is handler

    async def cmd(self: Any, evt: Any) -> None: ...

    outer = deduplicated(command.new("x")(cmd))
    inner = command.new("y")(deduplicated(cmd))
    for handler_obj in (outer, inner):
        assert isinstance(handler_obj, CommandHandler)
        assert handler_obj.__mb_func__ is not cmd and handler_obj.__mb_func__.__wrapped__ is cmd


async def test_replayed_command_after_restart_does_not_run_again(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, name="Design", members=(BOT, ADMIN))
    await harness.start()
    resync = hs.message(ROOM, ADMIN, "!resync")
    await harness.deliver(resync)
    assert len(hs.replies(ROOM)) == 1
    state_fetches = sum(r.endswith("/state") for r in hs.requests)

    await harness.restart(**{"sync.on_startup": "new"})
    await harness.deliver(resync)  # the sync token was rolled back: same event again
    assert len(hs.replies(ROOM)) == 1
    assert sum(r.endswith("/state") for r in hs.requests) == state_fetches


async def test_replayed_member_events_after_restart_are_skipped(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOT,))
    await harness.start(**{"sync.on_startup": "new"})
    carol_join = hs.member(ROOM, CAROL, "join")
    await harness.deliver(carol_join)
    await harness.deliver(hs.member(ROOM, CAROL, "leave"))
    await harness.restart()
    # re-applying the old join would make Carol a member again
    await harness.deliver(carol_join)
    assert CAROL not in [m.user_id for m in await harness.bot.store.list_members(ROOM, "join")]
    processed = harness.rows("SELECT COUNT(*) FROM roomstate_processed_events")[0][0]
    assert processed == 2


async def test_state_event_seen_in_state_and_timeline_is_applied_once(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOT,))
    await harness.start()
    topic = hs.state(ROOM, "m.room.topic", {"topic": "once"})
    await harness.deliver(topic, source=SyncStream.JOINED_ROOM | SyncStream.STATE)
    assert (await harness.bot.store.get_room(ROOM)).topic == "once"
    await harness.bot.store.update_room_info(ROOM, {"topic": "changed since"})
    await harness.deliver(topic, source=SyncStream.JOINED_ROOM | SyncStream.TIMELINE)
    assert (await harness.bot.store.get_room(ROOM)).topic == "changed since"  # not applied again


async def test_forgetting_a_room_keeps_its_processed_events(harness: Harness) -> None:
    hs = harness.hs
    hs.create_room(ROOM, ALICE, members=(BOT,))
    await harness.start()
    topic = hs.state(ROOM, "m.room.topic", {"topic": "x"})
    await harness.deliver(topic)
    await harness.deliver(hs.member(ROOM, BOT, "leave", sender=ALICE), source=SyncStream.LEFT_ROOM | SyncStream.TIMELINE)
    assert await harness.bot.store.get_room(ROOM) is None
    assert await harness.bot.store.is_processed(ROOM, topic["event_id"])


async def test_cleanup_deletes_only_old_records(recorder: Recorder) -> None:
    store = recorder.ledger
    day = 86_400_000
    now = 10 * day
    for i in range(5):
        assert await store.claim_event(ROOM, f"$old{i}", processed_ts=now - 8 * day)
        assert await store.claim_event("!b:fake.test", f"$old{i}", processed_ts=now - 8 * day)
    assert await store.claim_event(ROOM, "$new", processed_ts=now - day)
    assert await store.delete_processed_before(now - 7 * day) == 10
    assert await store.is_processed(ROOM, "$new")
    assert not await store.is_processed(ROOM, "$old0")
    assert await store.claim_event(ROOM, "$old0")  # forgotten records can be claimed again


async def test_cleanup_task_runs_at_startup_with_configured_retention(harness: Harness) -> None:
    harness.hs.create_room(ROOM, ALICE, members=(BOT,))
    await harness.start()
    await harness.bot.store.claim_event(ROOM, "$ancient", processed_ts=1)
    await harness.bot.store.claim_event(ROOM, "$recent")
    await harness.restart(**{"dedup.retention_hours": 1})
    for _ in range(50):
        if not await harness.bot.store.is_processed(ROOM, "$ancient"):
            break
        await asyncio.sleep(0.02)
    assert not await harness.bot.store.is_processed(ROOM, "$ancient")
    assert await harness.bot.store.is_processed(ROOM, "$recent")
