"""Membership history, measured: what recording it costs each write, how big it is, and how fast
the commands that read it answer on big histories (!members at, !history, !joins)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import sqlite3
import time
from collections.abc import Awaitable, Iterator
from typing import Any

from roomstate.db import history
from tests.helpers import ADMIN  # the config's admin: sees every room

from . import data
from .common import Report, Workdir, interleaved, median, ms, percentile
from .peers import Roomstate, sqlite_bytes

HISTORY_TABLES = ("roomstate_history", "roomstate_history_by_user", "roomstate_history_progress")
CHECKPOINT_TABLES = ("roomstate_history_checkpoints", "roomstate_history_blocks")


class TickingClock:
    """A clock that moves ``step`` seconds each time it is read: spreads rows over days."""

    def __init__(self, start: float, step: float) -> None:
        self.now, self.step = start, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def _feed(system: Roomstate, events: list[dict[str, Any]]) -> float:
    """Events through the plugin's handler path, until all have committed; seconds taken."""
    started = time.perf_counter()
    for raw in events:
        await system.member_event(raw)
    await system.drain()
    return time.perf_counter() - started


async def write_cost(report: Report, work: Workdir, count: int, reps: int, room_size: int) -> None:
    systems = [
        Roomstate(f"sqlite:///{work.sqlite('history-on')}", "with history"),
        Roomstate(f"sqlite:///{work.sqlite('history-off')}", "without", {"history.retention_days": 0}),
    ]
    for system in systems:
        await system.open()
        await system.full_sync(system.prepare("!events:bench.example", data.members(2_000, seed=3)))

    times = await interleaved(  # short runs (~0.2 s): more of them, or the noise is larger than the cost
        max(reps, 11), systems, lambda s, rep: _feed(s, data.member_events("!events:bench.example", count, seed=rep))
    )
    on, off = median(times["with history"]) / count, median(times["without"]) / count
    report.add(
        "member event with history vs without, through the handler",
        f"{on * 1e6:.1f} vs {off * 1e6:.1f} us/event = {on / off:.2f}x",
        "<= 1.2x",
        with_history=on,
        without=off,
        ratio=on / off,
    )

    async def sync(system: Roomstate, rep: int) -> float:
        members = data.members(room_size, first_user=(40 + rep) * 1_000_000, seed=rep)
        prepared = system.prepare(f"!join{rep}:bench.example", members)
        started = time.perf_counter()
        await system.full_sync(prepared)
        return time.perf_counter() - started

    times = await interleaved(reps, systems, sync)
    on, off = median(times["with history"]), median(times["without"])
    report.add(
        f"first sync of a {room_size:,}-member room with history (its first checkpoint) vs without",
        f"{ms(on)} vs {ms(off)} = {on / off:.2f}x",
        "(informative)",
        with_history=on,
        without=off,
        ratio=on / off,
    )
    for system in systems:
        await system.close()


async def size(report: Report, work: Workdir, count: int, room_size: int) -> None:
    path = work.sqlite("history-size")
    system = Roomstate(f"sqlite:///{path}")
    await system.open()
    await system.full_sync(system.prepare("!size:bench.example", data.members(2_000, seed=3)))
    for seed in range(0, count, 10_000):
        await _feed(system, data.member_events("!size:bench.example", min(10_000, count - seed), seed=seed))
    big = system.prepare("!big:bench.example", data.members(room_size, first_user=90_000_000, seed=9))
    await system.full_sync(big)
    await system.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM roomstate_history").fetchone()[0]
        id_bytes = conn.execute(
            "SELECT SUM(COALESCE(LENGTH(event_hash), 0) + COALESCE(LENGTH(event_id), 0)) FROM roomstate_history"
        ).fetchone()[0]
    per_row = sqlite_bytes(path, HISTORY_TABLES) / rows
    report.add(
        f"bytes per history row after VACUUM ({rows:,} rows)",
        f"{per_row:.1f} B, of which {id_bytes / rows:.1f} B the event ID (32-byte hash)",
        "<= 40 B",
        bytes_per_row=per_row,
        event_id_bytes=id_bytes / rows,
    )

    # checkpoints of a big room: unchanged (a resync that found nothing), then one change
    system = Roomstate(f"sqlite:///{path}")
    await system.open()
    before = sqlite_bytes(path, CHECKPOINT_TABLES)
    await system.store.replace_room(big)
    unchanged = sqlite_bytes(path, CHECKPOINT_TABLES) - before
    saved = history.CHECKPOINT_MIN_ROWS, history.CHECKPOINT_ROWS_PER_MEMBER
    history.CHECKPOINT_MIN_ROWS, history.CHECKPOINT_ROWS_PER_MEMBER = 1, 0  # checkpoint after every row
    try:
        newcomer = data.user_id(99_000_000)
        join = {"type": "m.room.member", "state_key": newcomer, "sender": newcomer, "room_id": "!big:bench.example"}
        join |= {"event_id": data.event_id("newcomer"), "origin_server_ts": 0, "content": {"membership": "join"}}
        await _feed(system, [join])
    finally:
        history.CHECKPOINT_MIN_ROWS, history.CHECKPOINT_ROWS_PER_MEMBER = saved
    await system.close()
    after_change = sqlite_bytes(path, CHECKPOINT_TABLES) - before - unchanged
    report.add(
        f"checkpoint of a {room_size:,}-member room: unchanged / after one change",
        f"{unchanged:,} B / {after_change:,} B (the first one took {before / 1024:,.0f} KiB)",
        "unchanged ~ 0",
        unchanged=unchanged,
        after_one_change=after_change,
        first=before,
    )


async def members_at(report: Report, work: Workdir, room_size: int, rows: int, probes: int) -> None:
    """!members at <random time> in a big room with a long history."""
    system = Roomstate(f"sqlite:///{work.sqlite('history-at')}")
    start = time.time() - rows  # one row a second, ending now
    system.store.recorder = history.Recorder(now=TickingClock(start, 1.0))
    await system.open()
    room = "!at:bench.example"
    members = data.members(room_size, seed=4)
    await system.full_sync(system.prepare(room, members))
    built = time.perf_counter()
    stream = data.steady_member_events(room, members, rows, seed=4)
    while chunk := list(itertools.islice(stream, 20_000)):
        await _feed(system, chunk)
    print(f"  (built a {room_size:,}-member room with {rows:,} history rows in {time.perf_counter() - built:.0f}s)")
    rng = random.Random(5)
    times = []
    for _ in range(probes):
        at = rng.uniform(start, start + rows)
        gc.collect()
        begun = time.perf_counter()
        answer = await system.queries.members_at(room, asker=ADMIN, at=int(at))
        times.append(time.perf_counter() - begun)
        assert answer is not None and answer.tracked
    await system.close()
    report.add(
        f"!members at <random time>, {room_size:,}-member room, {rows / 1e6:.1f}M history rows",
        f"p50 {ms(median(times))}, max {ms(max(times))}",
        "<= 200 ms",
        p50=median(times),
        worst=max(times),
    )


def _synthetic_rows(rooms: list[int], sizes: list[int], users: int, days: int) -> Iterator[tuple[Any, ...]]:
    """History rows as months of a busy server leave them: per room, in seq order."""
    rng = random.Random(6)
    end_ms = int(time.time() * 1000)
    span = days * 86_400_000
    for room_nid, count in zip(rooms, sizes, strict=True):
        moments = sorted(rng.randrange(end_ms - span, end_ms) for _ in range(count))
        state: dict[int, int] = {}
        last = 0
        for moment in moments:
            seq = max(last + 1, moment << history.COUNTER_BITS)
            last = seq
            user = 1 + int(users * rng.random() ** 2)  # some users much busier than others
            previous = state.get(user, 0)
            membership = 0 if previous == 1 else 1
            state[user] = membership
            name = f"Name {user % 1000}" if membership == 1 and previous == 0 else None
            yield (room_nid, seq, user, membership, previous, None, 0, name, None, rng.randbytes(32), None)


async def lookups(report: Report, work: Workdir, rows: int, rooms: int, users: int, probes: int) -> None:
    """!history @user and !joins 1h on a big history (built directly in SQL: months of rows)."""
    path = work.sqlite("history-lookups")
    system = Roomstate(f"sqlite:///{path}")
    await system.open()
    await system.close()
    sizes = data.skewed_room_sizes(rooms, rows, rows // 20)
    built = time.perf_counter()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executemany(
            "INSERT INTO roomstate_rooms (room_nid, room_id) VALUES (?, ?)",
            ((n, f"!h{n}:bench.example") for n in range(1, rooms + 1)),
        )
        conn.executemany(
            "INSERT INTO roomstate_room_info (room_nid, name, encrypted, updated_at, joined_count, invited_count,"
            " synced_at) VALUES (?, ?, FALSE, 0, 0, 0, 0)",
            ((n, f"Room {n}") for n in range(1, rooms + 1)),
        )
        conn.executemany(
            "INSERT INTO roomstate_users (user_nid, user_id) VALUES (?, ?)",
            ((n, data.user_id(n)) for n in range(1, users + 2)),
        )
        conn.execute("DROP INDEX roomstate_history_seq_idx")
        rows_in = _synthetic_rows(list(range(1, rooms + 1)), sizes, users, 90)
        while chunk := list(itertools.islice(rows_in, 100_000)):
            conn.executemany(f"INSERT INTO roomstate_history VALUES ({', '.join('?' * 11)})", chunk)
        conn.execute("CREATE INDEX roomstate_history_seq_idx ON roomstate_history (seq, user_nid)")
        # the user index as the writer's batches leave it: all but the last half batch
        (indexed,) = conn.execute(
            "SELECT seq FROM roomstate_history ORDER BY seq DESC LIMIT 1 OFFSET ?", (history.INDEX_BATCH_ROWS // 2,)
        ).fetchone()
        conn.execute(
            "INSERT INTO roomstate_history_by_user (day, user_nid, seq, room_nid)"
            f" SELECT seq / {history.DAY}, user_nid, seq, room_nid FROM roomstate_history WHERE seq <= ?"
            f" ORDER BY seq / {history.DAY}, user_nid, seq",
            (indexed,),
        )
        conn.execute("INSERT INTO roomstate_history_progress (name, seq) VALUES ('indexed', ?)", (indexed,))
        conn.execute("ANALYZE")
    print(f"  (built {rows / 1e6:.0f}M history rows in {rooms:,} rooms in {time.perf_counter() - built:.0f}s)")

    system = Roomstate(f"sqlite:///{path}")
    await system.open()
    rng = random.Random(7)
    queries = system.queries

    async def timed(answer: Awaitable[Any]) -> float:
        begun = time.perf_counter()
        assert await answer is not None
        return time.perf_counter() - begun

    def some_user() -> str:
        return data.user_id(1 + int(users * rng.random() ** 2))

    def some_room() -> str:
        return f"!h{rng.randrange(1, rooms + 1)}:bench.example"

    history_times = [await timed(queries.history_of(some_user(), asker=ADMIN, count=10)) for _ in range(probes)]
    joins_times = [await timed(queries.joins(some_room(), asker=ADMIN, seconds=3600)) for _ in range(probes)]
    waves_times = [await timed(queries.waves(asker=ADMIN, seconds=3600)) for _ in range(max(5, probes // 20))]
    await system.close()
    scale = f"{rows / 1e6:.0f}M history rows"
    for label, values in (
        (f"!history @user (latest 10), {scale}", history_times),
        (f"!joins 1h in a room, {scale}", joins_times),
        (f"!joins all 1h ({rooms:,} rooms), {scale}", waves_times),
    ):
        report.add(
            label,
            f"p50 {ms(median(values))}, p99 {ms(percentile(values, 99))}",
            "p50 <= 5 ms" if "all" not in label else "(informative)",
            p50=median(values),
            p99=percentile(values, 99),
        )


async def run(report: Report, work: Workdir, quick: bool, reps: int) -> None:
    await write_cost(report, work, 500 if quick else 2_000, reps, 20_000 if quick else 100_000)
    await size(report, work, 20_000 if quick else 200_000, 20_000 if quick else 100_000)
    if quick:
        await members_at(report, work, room_size=10_000, rows=100_000, probes=20)
        await lookups(report, work, rows=1_000_000, rooms=200, users=200_000, probes=200)
    else:
        await members_at(report, work, room_size=100_000, rows=1_000_000, probes=50)
        await lookups(report, work, rows=10_000_000, rooms=1_000, users=1_000_000, probes=1_000)


async def main() -> None:  # pragma: no cover - python -m benchmarks.history
    await run(Report(), Workdir(), quick=True, reps=3)


if __name__ == "__main__":
    asyncio.run(main())
