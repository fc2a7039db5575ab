"""Side-by-side benchmark: roomstate vs mautrix-python's state store vs raw sqlite3, in one process.

    scripts/bench.sh [--quick] [--postgres URL]      (sets up .venvs/bench, runs both SQLAlchemy versions)
    python -m benchmarks.bench [--quick] [--postgres URL] [--json PATH] [--plot PATH]

Repetitions are interleaved, the systems' order rotating each time; the table shows medians and
the ratios that matter (absolute times drift on a shared machine; ratios in one run do not).
Asserts nothing about speed. It does check correctness on the way: exactly-once claims under
concurrency (no duplicate accepted, none lost) and that readers never see a half-written list.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sqlite3
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import data, first_syncs  # noqa: E402
from benchmarks import history as history_bench  # noqa: E402
from benchmarks.common import Report, Workdir, interleaved, median, ms, percentile  # noqa: E402
from benchmarks.peers import (  # noqa: E402
    EventFloor,
    Mautrix,
    RawSqlite,
    Roomstate,
    SchemaFloor,
    awaited_one_by_one,
)


async def open_systems(work: Workdir, tag: str, raw: bool = True) -> list[Any]:
    systems: list[Any] = [
        Roomstate(f"sqlite:///{work.sqlite(f'roomstate-{tag}')}"),
        Mautrix(f"sqlite:{work.sqlite(f'mautrix-{tag}')}"),
    ]
    if raw:
        systems.append(RawSqlite(work.sqlite(f"raw-{tag}")))
    for system in systems:
        await system.open()
    return systems


async def close_all(systems: Sequence[Any]) -> None:
    for system in systems:
        await system.close()


# ---- full syncs ---------------------------------------------------------------------------------


async def full_sync(report: Report, work: Workdir, sizes: list[int], reps: int) -> dict[str, float]:
    systems = await open_systems(work, "full")
    medians: dict[int, dict[str, float]] = {}
    for size_index, size in enumerate(sizes):

        async def run(system: Any, rep: int, size: int = size, size_index: int = size_index) -> float:
            # a new room of users the system has not seen yet
            members = data.members(size, first_user=(size_index * 100 + rep) * 1_000_000, seed=rep)
            prepared = system.prepare(f"!new{size}-{rep}:bench.example", members)
            started = time.perf_counter()
            await system.full_sync(prepared)
            return time.perf_counter() - started

        times = await interleaved(reps, systems, run)
        medians[size] = {name: median(t) for name, t in times.items()}
        for name, value in medians[size].items():
            report.curves.setdefault(name, {})[size] = value
    await close_all(systems)
    for size in sizes[:-1]:
        if size >= 10_000:  # the mid sizes, where a run's ratio used to swing
            ours, theirs = medians[size]["roomstate"], medians[size]["mautrix"]
            report.add(
                f"  full sync, new {size:,}-member room",
                f"{ms(ours)} = {ours / theirs:.2f}x mautrix",
                "<= 1.0x mautrix",
                size=size,
                roomstate=ours,
                mautrix=theirs,
                ratio=ours / theirs,
            )
    largest = sizes[-1]
    ours, theirs, raw = (medians[largest][n] for n in ("roomstate", "mautrix", "raw sqlite3"))
    report.add(
        f"full sync, new {largest:,}-member room (SQLAlchemy {sa.__version__})",
        f"{ms(ours)} = {ours / theirs:.2f}x mautrix, {ours / raw:.2f}x raw",
        "<= 1.0x mautrix",
        roomstate=ours,
        mautrix=theirs,
        raw=raw,
        ratio=ours / theirs,
    )
    return medians[largest]


async def resync(report: Report, work: Workdir, size: int, reps: int) -> None:
    """A resync where 1% changed against a new sync of the same size, interleaved in one loop on
    one database (their ratio, not each against a different moment of a shared machine)."""
    system = Roomstate(f"sqlite:///{work.sqlite('resync')}")
    await system.open()
    original = data.members(size, seed=7)
    changed = data.changed(original, 0.01)
    await system.full_sync(system.prepare("!r:bench.example", original))
    resyncs: list[float] = []
    new_syncs: list[float] = []
    written: list[int] = []

    async def one_resync(rep: int) -> None:
        snapshot = system.prepare("!r:bench.example", changed if rep % 2 == 0 else original)
        gc.collect()
        started = time.perf_counter()
        diff = await system.store.replace_room(snapshot)
        resyncs.append(time.perf_counter() - started)
        written.append(diff.rows_written)

    async def one_new_sync(rep: int) -> None:
        members = data.members(size, first_user=(50 + rep) * 1_000_000, seed=rep)
        snapshot = system.prepare(f"!fresh{rep}:bench.example", members)
        gc.collect()
        started = time.perf_counter()
        await system.full_sync(snapshot)
        new_syncs.append(time.perf_counter() - started)

    for rep in range(reps * 2):
        steps = (one_resync, one_new_sync) if rep % 2 == 0 else (one_new_sync, one_resync)
        for step in steps:
            await step(rep)
    await system.close()
    value, new_sync = median(resyncs), median(new_syncs)
    report.add(
        f"re-sync of a {size:,} room where 1% changed",
        f"{ms(value)} = {value / new_sync:.2f}x a new sync ({ms(new_sync)}, same loop), {max(written):,} rows written",
        "<= 0.25x, only changed rows",
        seconds=value,
        new_sync=new_sync,
        ratio=value / new_sync,
        rows_written=max(written),
    )


async def longest_stall(work: Awaitable[Any]) -> float:
    """The longest time the event loop could not run a 1 ms timer while ``work`` ran."""
    longest = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal longest
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            longest = max(longest, time.perf_counter() - started - 0.001)

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0.01)
    await work
    done.set()
    await ticker
    return longest


async def stall_and_heap(report: Report, work: Workdir, size: int) -> None:
    """The longest event-loop stall while each system writes a big member list, and its peak of
    Python heap (measured in separate runs: tracemalloc slows everything down)."""
    systems = await open_systems(work, "stall", raw=False)
    stalls: dict[str, list[float]] = {s.name: [] for s in systems}
    heaps: dict[str, list[float]] = {s.name: [] for s in systems}
    for rep in range(3):
        for system in systems if rep % 2 == 0 else reversed(systems):
            members = data.members(size, first_user=(500 + rep) * 1_000_000, seed=rep)
            prepared = system.prepare(f"!stall{rep}:bench.example", members)
            gc.collect()
            stalls[system.name].append(await longest_stall(system.full_sync(prepared)))
            members = data.members(size, first_user=(600 + rep) * 1_000_000, seed=rep)
            prepared = system.prepare(f"!heap{rep}:bench.example", members)
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            await system.full_sync(prepared)
            heaps[system.name].append(tracemalloc.get_traced_memory()[1] - base)
            tracemalloc.stop()
            del prepared
    await close_all(systems)
    ours, theirs = median(stalls["roomstate"]), median(stalls["mautrix"])
    report.add(
        f"longest event-loop stall during a {size:,} sync",
        f"{ms(ours)} (mautrix {ms(theirs)})",
        "<= 50 ms",
        roomstate=ours,
        mautrix=theirs,
    )
    ours, theirs = median(heaps["roomstate"]), median(heaps["mautrix"])
    report.add(
        f"Python heap peak during a {size:,} sync",
        f"{ours / 2**20:.1f} MiB = {ours / theirs:.2f}x mautrix ({theirs / 2**20:.1f} MiB)",
        "<= 2x mautrix",
        roomstate=ours,
        mautrix=theirs,
        ratio=ours / theirs,
    )


# ---- events and claims --------------------------------------------------------------------------


async def one_by_one(report: Report, work: Workdir, count: int, reps: int) -> None:
    systems = await open_systems(work, "events", raw=False)
    room = "!events:bench.example"
    for system in systems:
        await system.full_sync(system.prepare(room, data.members(2_000, seed=3)))

    async def run(system: Any, rep: int) -> float:
        events = data.member_events(room, count, seed=rep)
        started = time.perf_counter()
        for raw in events:
            await system.member_event(raw)
        await system.drain()  # until every event's transaction has committed
        return time.perf_counter() - started

    async def latency(system: Any, rep: int) -> float:
        return await awaited_one_by_one(system, room, count, seed=100 + rep)

    # the awaited path also without history (history.retention_days: 0), and the floors of both
    bare = Roomstate(
        f"sqlite:///{work.sqlite('roomstate-events-bare')}", "roomstate, no history", {"history.retention_days": 0}
    )
    floors = [EventFloor(work.sqlite("event-floor")), EventFloor(work.sqlite("event-floor-bare"), history=False)]
    for extra in (bare, *floors):
        await extra.open()
        await extra.full_sync(extra.prepare(room, data.members(2_000, seed=3)))
    times = await interleaved(reps, systems, run)
    waits = await interleaved(reps, [*systems, bare, *floors], latency)
    await close_all([*systems, bare, *floors])
    ours, theirs = count / median(times["roomstate"]), count / median(times["mautrix"])
    report.add(
        "member events one by one, through the handler (claim + apply)",
        f"{ours:,.0f}/s = {ours / theirs:.2f}x mautrix set_member ({theirs:,.0f}/s)",
        ">= 1.0x",
        roomstate=ours,
        mautrix=theirs,
        ratio=ours / theirs,
    )
    theirs = median(waits["mautrix"]) / count

    def against_mautrix(name: str, path: str, target: str) -> float:
        """Report ``name``'s awaited event against mautrix, with the spread of the rounds' ratios
        (each round times every system once, back to back: how much the machine's noise alone
        makes)."""
        measured = median(waits[name]) / count
        rounds = sorted(m / r for r, m in zip(waits[name], waits["mautrix"], strict=True))
        report.add(
            path,
            f"{measured * 1e6:.0f} us/event = {theirs / measured:.2f}x mautrix speed ({theirs * 1e6:.0f} us;"
            f" rounds {rounds[0]:.2f}-{rounds[-1]:.2f}x)",
            target,
            roomstate=measured,
            mautrix=theirs,
            ratio=theirs / measured,
            round_ratios=rounds,
        )
        return measured

    ours = against_mautrix("roomstate", "  the same, each waiting for its commit before the next", ">= 1.0x (issue 14)")

    def against_floor(floor: EventFloor, measured: float) -> None:
        least = median(waits[floor.name]) / count
        report.add(
            f"      its floor: {floor.name} (raw sqlite3, roomstate's tables)",
            f"{least * 1e6:.0f} us/event = {theirs / least:.2f}x mautrix; roomstate {least / measured:.2f}x its speed",
            "(the least those writes cost)",
            floor=least,
            mautrix=theirs,
            ratio=theirs / least,
        )

    against_floor(floors[0], ours)
    without = against_mautrix(bare.name, "    the same without history", "(history.retention_days: 0)")
    against_floor(floors[1], without)


async def claims(report: Report, work: Workdir, batches: int, reps: int) -> None:
    ours, raw = Roomstate(f"sqlite:///{work.sqlite('claims')}"), RawSqlite(work.sqlite("claims-raw"))
    for system in (ours, raw):
        await system.open()
    accepted: dict[str, int] = {ours.name: 0, raw.name: 0}

    async def run(system: Any, rep: int) -> float:
        started = time.perf_counter()
        for batch in range(batches):
            # 100 in flight: 50 events, each delivered twice at once
            ids = [f"$c{rep}-{batch}-{i % 50}" for i in range(100)]
            results = await asyncio.gather(*(system.claim("!claims:bench.example", e) for e in ids))
            accepted[system.name] += sum(results)
        return time.perf_counter() - started

    times = await interleaved(reps, [ours, raw], run)
    await close_all([ours, raw])
    expected = reps * batches * 50
    assert accepted == {ours.name: expected, raw.name: expected}, f"exactly-once broken: {accepted} != {expected}"
    total = batches * 100
    ours_rate, raw_rate = total / median(times[ours.name]), total / median(times[raw.name])
    report.add(
        "dedup claims, 100 in flight",
        f"{ours_rate:,.0f}/s = {ours_rate / raw_rate:.2f}x raw batched "
        f"({raw_rate:,.0f}/s); 0 duplicates accepted, 0 lost",
        ">= 0.6x raw batched",
        roomstate=ours_rate,
        raw=raw_rate,
        ratio=ours_rate / raw_rate,
    )


# ---- queries on a big database ------------------------------------------------------------------


async def queries(report: Report, work: Workdir, rooms: int, total: int, largest: int, lookups: int) -> None:
    systems = await open_systems(work, "queries", raw=False)
    sizes = data.skewed_room_sizes(rooms, total, largest)
    rng = random.Random(11)
    population = max(sizes) * 3
    started = time.perf_counter()
    for index, size in enumerate(sizes):
        room_members = [
            data.Member(data.user_id(n), data.membership(rng), data.displayname(rng, n))
            for n in rng.sample(range(population), size)
        ]
        for system in systems:
            await system.full_sync(system.prepare(f"!q{index}:bench.example", room_members))
    rows = sum(sizes)
    print(f"  (built {rooms} rooms, {rows:,} membership rows in each system in {time.perf_counter() - started:.0f}s)")
    users = [data.user_id(n) for n in rng.sample(range(population), lookups)]
    whereis: dict[str, list[float]] = {s.name: [] for s in systems}
    for index, user in enumerate(users):
        for system in systems if index % 2 == 0 else reversed(systems):
            begun = time.perf_counter()
            await system.rooms_of(user)
            whereis[system.name].append(time.perf_counter() - begun)
    listing = await interleaved(9, systems, lambda s, _: _timed(s.rooms_with_counts))
    ours, theirs = whereis["roomstate"], whereis["mautrix"]
    report.add(
        f"!whereis on {rows / 1e6:.1f}M membership rows / {rooms:,} rooms",
        f"p50 {ms(median(ours))}, p99 {ms(percentile(ours, 99))} (mautrix p50 {ms(median(theirs))})",
        "p50 <= 1 ms, p99 <= 5 ms",
        p50=median(ours),
        p99=percentile(ours, 99),
        mautrix_p50=median(theirs),
    )
    value = median(listing["roomstate"])
    report.add(
        f"!rooms with counts, {rooms:,} rooms",
        f"{ms(value)} (mautrix {ms(median(listing['mautrix']))})",
        "<= 50 ms",
        roomstate=value,
        mautrix=median(listing["mautrix"]),
    )
    ours_bytes, theirs_bytes = (s.membership_bytes() / rows for s in systems)
    report.add(
        "bytes per membership row",
        f"{ours_bytes:.0f} = {ours_bytes / theirs_bytes:.2f}x mautrix ({theirs_bytes:.0f})",
        "<= 0.6x",
        roomstate=ours_bytes,
        mautrix=theirs_bytes,
        ratio=ours_bytes / theirs_bytes,
    )
    await close_all(systems)


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def cleanup_while_claiming(report: Report, work: Workdir, old_rows: int) -> None:
    path = work.sqlite("cleanup")
    system = Roomstate(f"sqlite:///{path}")
    await system.open()
    await system.claim("!old:bench.example", "$first")
    with sqlite3.connect(path) as conn:  # a year of history, all past the retention
        conn.executemany(
            "INSERT INTO roomstate_processed_events (room_nid, event_id, processed_ts) VALUES (1, ?, ?)",
            ((f"$old{i}:bench.example", 1_000 + i) for i in range(old_rows)),
        )
    cleanup = asyncio.ensure_future(system.service.delete_old_processed_events())
    waits = []
    index = 0
    while not cleanup.done():
        begun = time.perf_counter()
        assert await system.claim("!live:bench.example", f"$live{index}")
        waits.append(time.perf_counter() - begun)
        index += 1
        await asyncio.sleep(0.005)
    deleted = await cleanup
    await system.close()
    report.add(
        f"a claim arriving during cleanup of {deleted / 1e6:.1f}M old records",
        f"waits at most {ms(max(waits))} (p50 {ms(median(waits))}, {len(waits)} claims)",
        "<= 100 ms",
        worst=max(waits),
        p50=median(waits),
    )


# ---- the plugin in maubot: first join of a huge room -------------------------------------------


async def first_join(report: Report, work: Workdir, size: int) -> None:
    """maubot standalone does not lazy-load members: joining a room delivers every member event in
    the sync's state section. Compared with a full sync of the same room alone."""
    import aiohttp

    from tests.fakes import FakeHomeserver
    from tests.helpers import BOT as TEST_BOT
    from tests.helpers import Harness, sync_response

    hs = FakeHomeserver(TEST_BOT)
    await hs.start()
    room_members = [m for m in data.members(size, seed=5) if m.membership != "leave"]
    for room_id in ("!alone:bench.example", "!dispatch:bench.example"):
        hs.create_room(room_id, data.user_id(0), name="Huge")
        for member in room_members:
            hs.member(room_id, member.user_id, member.membership, displayname=member.displayname or "")
    hs.member("!alone:bench.example", TEST_BOT, "join")
    async with aiohttp.ClientSession() as http:
        harness = Harness(hs, http, f"sqlite:///{work.sqlite('first-join')}")
        bot = await harness.start()
        started = time.perf_counter()
        assert (await bot.service.sync_room("!alone:bench.example")).ok
        alone = time.perf_counter() - started

        join = hs.member("!dispatch:bench.example", TEST_BOT, "join")
        state = [
            {k: v for k, v in e.items() if k != "room_id"}
            for e in hs.rooms["!dispatch:bench.example"].state.values()
            if e is not join
        ]
        response = sync_response(
            joined={
                "!dispatch:bench.example": {
                    "state": state,
                    "timeline": [{k: v for k, v in join.items() if k != "room_id"}],
                }
            }
        )
        await harness.sync(sync_response(), settle=False)  # the ignored first sync
        started = time.perf_counter()
        await harness.sync(response, copy_response=False)
        dispatched = time.perf_counter() - started
        stored = len(harness.db.joined("!dispatch:bench.example"))
        await harness.stop()
        harness.engine.dispose()
        harness.db.dispose()
        baseline = await dispatch_without_plugin(http, hs.url, response)
        unhandled = await dispatch_without_plugin(http, hs.url, response, handler=False)
    await hs.stop()
    assert stored == sum(m.membership == "join" for m in room_members) + 1, stored
    report.add(
        f"first join of a {size:,}-member room through maubot's dispatch",
        f"{ms(dispatched)} = {dispatched / alone:.2f}x the full sync alone ({ms(alone)})",
        "<= 2x",
        dispatched=dispatched,
        alone=alone,
        ratio=dispatched / alone,
    )
    report.add(
        "  of which maubot/mautrix dispatching those events to a no-op handler",
        f"{ms(baseline)}; roomstate adds {ms(max(0.0, dispatched - baseline - alone))} beyond the sync",
        "(what any plugin pays)",
        baseline=baseline,
    )
    report.add(
        "  of which mautrix deserializing them, with no handler at all",
        f"{ms(unhandled)} = {unhandled / alone:.2f}x the full sync alone",
        "(the floor: maubot standalone's sync filter has no lazy_load_members)",
        unhandled=unhandled,
    )


async def dispatch_without_plugin(http: Any, url: str, response: dict[str, Any], handler: bool = True) -> float:
    """How long maubot's client takes to deserialize and dispatch a sync to a handler that does
    nothing (or to no handler): the part of a first join that no plugin can avoid."""
    from maubot.matrix import MaubotMatrixClient
    from mautrix.types import EventType

    client = MaubotMatrixClient(mxid="@other:fake.test", base_url=url, token="x", client_session=http)
    seen = 0
    room = response["rooms"]["join"]["!dispatch:bench.example"]
    events = sum(e["type"] == "m.room.member" for e in room["state"]["events"] + room["timeline"]["events"])

    async def count(_: Any) -> None:
        nonlocal seen
        seen += 1

    if handler:
        client.add_event_handler(EventType.ROOM_MEMBER, count)
    started = time.perf_counter()
    tasks = client.handle_sync(response)
    while handler and seen < events:
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return time.perf_counter() - started


# ---- PostgreSQL ---------------------------------------------------------------------------------


async def postgres(report: Report, url: str, size: int, reps: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    ours = Roomstate(url)
    bare = Roomstate(url, "without history", {"history.retention_days": 0})  # like for like with the peer
    theirs = Mautrix(url.replace("postgresql://", "postgres://", 1).replace("+psycopg2", "").replace("+psycopg", ""))
    floor = SchemaFloor(url)
    systems = [ours, bare, theirs, floor]
    for system in systems:
        await system.open()

    async def run(system: Any, rep: int) -> float:
        # new users for each system: the two roomstate systems share one database
        first_user = (900 + rep) * 1_000_000 + (500_000 if system is bare else 0)
        members = data.members(size, first_user=first_user, seed=rep)
        prepared = system.prepare(f"!pg{rep}-{system.name}:bench.example", members)
        started = time.perf_counter()
        await system.full_sync(prepared)
        return time.perf_counter() - started

    times = await interleaved(reps, systems, run)
    await close_all(systems)
    mine, plain, peer, least = (
        median(times[name]) for name in ("roomstate", "without history", "mautrix", "schema floor")
    )
    driver = sa.create_engine(url).dialect.driver
    report.add(
        f"PostgreSQL full sync, new {size:,} room ({driver}, SQLAlchemy {sa.__version__})",
        f"{ms(mine)} = {mine / peer:.2f}x mautrix on asyncpg ({ms(peer)}); "
        f"without history (its first checkpoint) {plain / peer:.2f}x",
        "<= 1.5x",
        roomstate=mine,
        without_history=plain,
        mautrix=peer,
        ratio=mine / peer,
    )
    report.add(
        "  of which the floor of roomstate's tables (two bare COPYs, no lookups)",
        f"{ms(least)} = {least / peer:.2f}x mautrix; roomstate is {mine / least:.2f}x its floor",
        "(what any store of this schema pays)",
        floor=least,
        floor_ratio=least / peer,
    )


# ---- output -------------------------------------------------------------------------------------


def plot(report: Report, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib is not installed: no plot; scripts/bench.sh uses .venvs/bench)")
        return
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, style in (("roomstate", "o-"), ("mautrix", "s--"), ("raw sqlite3", "^:")):
        points = sorted(report.curves.get(name, {}).items())
        if points:
            axes.plot([p[0] for p in points], [p[1] * 1000 for p in points], style, label=name)
    axes.set_xlabel("members in the room")
    axes.set_ylabel("full sync of a new room (ms, median)")
    axes.set_title(f"Full sync time vs room size (SQLite, SQLAlchemy {report.sqlalchemy})")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Software": None})  # no timestamp or version: stable bytes
    print(f"  plot written to {path}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions (< 2 min; what CI runs)")
    parser.add_argument("--postgres", help="also compare on this PostgreSQL database (it is wiped)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write the full-sync plot here (PNG)")
    parser.add_argument("--only", help="comma-separated sections to run")
    args = parser.parse_args()
    quick = args.quick
    report = Report(quick=quick)
    work = Workdir()
    big = 20_000 if quick else 100_000
    reps = 3 if quick else 5
    sections = set(args.only.split(",")) if args.only else None
    print(
        f"roomstate benchmark: SQLAlchemy {sa.__version__}, SQLite {sqlite3.sqlite_version}, "
        f"{'quick' if quick else 'full'} mode, medians of interleaved runs"
    )

    def wanted(name: str) -> bool:
        return sections is None or name in sections

    if wanted("sync"):
        sizes = [1_000, 5_000, big] if quick else [1_000, 10_000, 20_000, 30_000, 60_000, 100_000]
        await full_sync(report, work, sizes, reps)
        await resync(report, work, big, reps)
    if wanted("events"):
        await one_by_one(report, work, 500 if quick else 2_000, reps)
    if wanted("claims"):
        await claims(report, work, 10 if quick else 40, reps)
    if wanted("queries"):
        if quick:
            await queries(report, work, rooms=200, total=100_000, largest=20_000, lookups=300)
        else:
            await queries(report, work, rooms=1_000, total=1_000_000, largest=100_000, lookups=1_000)
    if wanted("cleanup"):
        await cleanup_while_claiming(report, work, 100_000 if quick else 1_000_000)
    if wanted("memory"):
        await stall_and_heap(report, work, big)
    if wanted("rss"):
        await first_syncs.process_memory(report, work, big, 3 if quick else 5)
    if wanted("many-rooms"):
        if quick:
            await first_syncs.many_rooms(report, work, rooms=200, total=100_000, largest=20_000, reps=3)
        else:
            await first_syncs.many_rooms(report, work, rooms=1_000, total=1_000_000, largest=100_000, reps=3)
    if wanted("first-join"):
        await first_join(report, work, 10_000 if quick else 100_000)
    if wanted("history"):
        await history_bench.run(report, work, quick, reps)
    if args.postgres and wanted("postgres"):
        await postgres(report, args.postgres, big, reps)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"sqlalchemy": report.sqlalchemy, "quick": quick, "rows": report.rows, "curves": report.curves},
                indent=1,
            )
        )
        print(f"  results written to {args.json}")
    if args.plot:
        plot(report, args.plot)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main())
