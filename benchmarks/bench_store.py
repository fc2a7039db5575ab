"""Storage benchmarks: prints timings, asserts nothing. Run with the plugin's dependencies:

    .venvs/sa2/bin/python benchmarks/bench_store.py [--database URL] [--sizes 2000,20000,100000]

Measures, through the same async RoomStore the plugin uses (work on its worker thread):
full-sync writes of big rooms, dedup claims, single member updates, and the !rooms/!whereis reads.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from roomstate.db import RoomStore  # noqa: E402
from roomstate.models import JOIN, Member, RoomInfo, RoomSnapshot  # noqa: E402


def snapshot(room_id: str, count: int, offset: int = 0) -> RoomSnapshot:
    members = tuple(Member(f"@user{offset + i}:bench.test", JOIN, f"User {offset + i}", 1) for i in range(count))
    return RoomSnapshot(RoomInfo(room_id, name=room_id), members + (Member("@bot:bench.test", JOIN, "Bot", 1),))


async def timed(label: str, coro_factory, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await coro_factory()
        times.append(time.perf_counter() - start)
    best = min(times)
    print(f"{label:<58} {best * 1000:10.1f} ms" + (f"  (median {statistics.median(times) * 1000:.1f})" if repeat > 1 else ""))
    return best


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", help="SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--sizes", default="2000,20000,100000")
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    url = args.database or f"sqlite:///{os.path.join(tmp, 'bench.db')}"
    engine = sa.create_engine(url)
    store = RoomStore(engine)
    await store.open()
    print(f"SQLAlchemy {sa.__version__}, {engine.dialect.name}")

    for size in [int(s) for s in args.sizes.split(",")]:
        room = f"!big{size}:bench.test"
        first, changed = snapshot(room, size), snapshot(room, size, offset=size // 100)
        await timed(f"full sync, new room, {size} members", lambda s=first: store.replace_room(s))
        await timed(f"full sync, same room again (diff {size // 100} changed)",
                    lambda s=changed: store.replace_room(s), repeat=3)

    room = "!events:bench.test"
    await store.replace_room(snapshot(room, 10))
    n = args.events
    t = await timed(f"{n} dedup claims, one after another", lambda: _claims(store, room, n, "a"))
    print(f"{'':<58} {n / t:10.0f} claims/s")
    t = await timed(f"{n} dedup claims, all concurrent (gather)", lambda: asyncio.gather(
        *(store.claim_event(room, f"$b{i}") for i in range(n))))
    print(f"{'':<58} {n / t:10.0f} claims/s")
    t = await timed(f"{n} duplicate claims (all rejected)", lambda: _claims(store, room, n, "a"))
    t = await timed(f"{n} member events applied one by one", lambda: _members(store, room, n))
    print(f"{'':<58} {n / t:10.0f} events/s")

    for i in range(500):
        await store.replace_room(snapshot(f"!small{i}:bench.test", 50, offset=i * 10))
    rooms = len(await store.list_rooms())
    await timed(f"list_rooms (!rooms) over {rooms} rooms", store.list_rooms, repeat=5)
    await timed("joined_rooms_of (!whereis) for a user in many rooms",
                lambda: store.joined_rooms_of("@user100:bench.test"), repeat=5)
    cutoff = int(time.time() * 1000) + 1
    await timed(f"delete all {2 * n} processed-event records by age", lambda: store.delete_processed_before(cutoff))
    await store.close()
    engine.dispose()


async def _claims(store: RoomStore, room: str, n: int, prefix: str) -> None:
    for i in range(n):
        await store.claim_event(room, f"${prefix}{i}")


async def _members(store: RoomStore, room: str, n: int) -> None:
    for i in range(n):
        await store.apply_membership(room, Member(f"@new{i}:bench.test", JOIN, None, 10 + i))


if __name__ == "__main__":
    asyncio.run(main())
