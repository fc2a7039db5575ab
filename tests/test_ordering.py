"""Per-room order (RoomQueue), and memory that does not grow with the number of rooms seen."""

from __future__ import annotations

import asyncio

from roomstate.caches import IdleCache
from roomstate.ordering import RoomQueue
from roomstate.ratelimit import RateLimiter, Verdict

from .helpers import ALICE, ROOM, Harness, eventually


def done(value: object) -> asyncio.Future[object]:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


async def test_work_runs_in_the_order_it_was_scheduled() -> None:
    queue = RoomQueue()
    order: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    def submit(label: str) -> asyncio.Future[object]:
        order.append(f"start {label}")
        return done(label)

    async def fetch() -> str:
        order.append("fetch")
        await gate
        order.append("fetched")
        return "sync"

    first = queue.submit("!a:x", lambda: submit("1"))  # runs at once: nothing pending
    sync = queue.run("!a:x", fetch)
    later = [queue.submit("!a:x", lambda i=i: submit(f"after {i}")) for i in range(3)]
    other = queue.submit("!b:x", lambda: submit("other room"))
    await asyncio.sleep(0.01)
    assert order == ["start 1", "start other room", "fetch"]  # later work waits; other rooms do not
    gate.set_result(None)
    assert await sync == "sync" and await first == "1" and [await f for f in later] == ["after 0", "after 1", "after 2"]
    assert await other == "other room"
    assert order[3:] == ["fetched", "start after 0", "start after 1", "start after 2"]


async def test_a_barrier_waits_for_what_was_scheduled_before_it_only() -> None:
    queue = RoomQueue()
    gate = asyncio.get_running_loop().create_future()
    queue.run("!a:x", lambda: gate)
    barrier = queue.barrier("!a:x")
    queue.run("!a:x", lambda: asyncio.sleep(3600))  # scheduled after the barrier
    waiting = asyncio.ensure_future(barrier)
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.set_result(None)
    await asyncio.wait_for(waiting, 1)
    await queue.close(0.01)


async def test_a_failure_stays_with_its_own_work() -> None:
    queue = RoomQueue()

    async def boom() -> None:
        raise RuntimeError("boom")

    failing = queue.run("!a:x", boom)
    after = queue.run("!a:x", lambda: asyncio.sleep(0, "ok"))
    assert isinstance((await asyncio.gather(failing, return_exceptions=True))[0], RuntimeError)
    assert await after == "ok"


async def test_a_hundred_thousand_rooms_seen_once_leave_nothing_behind() -> None:
    queue = RoomQueue()
    futures = [queue.submit(f"!room{i}:x", lambda: done(None)) for i in range(100_000)]
    futures += [queue.run(f"!slow{i}:x", lambda: asyncio.sleep(0)) for i in range(1_000)]
    await asyncio.gather(*futures)
    await asyncio.sleep(0)
    assert len(queue) == 0

    now = [0.0]
    cache: IdleCache[str, int] = IdleCache(max_size=10_000, idle_seconds=3600, clock=lambda: now[0])
    for i in range(100_000):
        cache.put(f"!room{i}:x", i)
    assert len(cache) == 10_000  # bounded even before anything is idle
    now[0] = 3601
    cache.sweep()
    assert len(cache) == 0

    limiter = RateLimiter(clock=lambda: now[0])
    for i in range(100_000):
        assert limiter.check(f"@user{i}:x", 5, 60) is Verdict.ALLOW
    assert len(limiter) <= 10_000
    now[0] += 7200
    limiter.sweep()
    assert len(limiter) == 0


async def test_per_room_state_of_the_plugin_is_released_when_idle(harness: Harness) -> None:
    await harness.start(**{"memory.idle_hours": 0})
    await harness.setup_room()
    events = [harness.hs.member(f"!r{i}:fake.test", ALICE, "join") for i in range(2_000)]
    for index in range(0, len(events), 500):
        batch = events[index : index + 500]
        await harness.sync(
            {
                "rooms": {
                    "leave": {
                        e["room_id"]: {"timeline": {"events": [{k: v for k, v in e.items() if k != "room_id"}]}}
                        for e in batch
                    }
                },
                "next_batch": "x",
            }
        )
    assert harness.bot is not None
    service = harness.bot.service
    assert len(service.queue) == 0 and service.store.writes_pending == 0
    interner = service.store.interner
    assert len(interner.rooms) > 1_000  # cached while in use ...
    harness.update_config(memory__idle_hours=0)  # ... and dropped by the next sweep once idle
    await eventually(lambda: len(interner.rooms) == 0 and len(interner.users) == 0, what="caches swept")
    assert ROOM in harness.db.tracked()
