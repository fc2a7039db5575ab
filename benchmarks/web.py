"""Server time of the web view's pages and API: rooms, a room with its charts, a user, the JSON API
and /metrics, on a server as big as the targets name (1,000 rooms, one with 100,000 members and
1,000,000 membership-history rows over 90 days; and 10,000 rooms). Each request runs the real
handler (session check, visibility, queries, rendering) on a request object, so the time is the
server's alone. Beside each page, the floor: a raw ``sqlite3`` query for the same rows, interleaved
with it. Prints numbers only; nothing here asserts a speed.

    python -m benchmarks.web [--quick] [--probes N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import make_mocked_request

from roomstate.db import history
from roomstate.metrics import Metrics
from roomstate.web.app import COOKIE, WebView
from roomstate.web.auth import WebAuth
from tests.helpers import ADMIN  # the config's admin: sees every room

from . import data
from .common import Report, Workdir, median, ms, percentile
from .history import TickingClock, _feed
from .peers import Roomstate

DAY = 86_400
BIG = "!big:bench.example"


def small_room(index: int) -> str:
    return f"!r{index}:bench.example"


async def build(work: Workdir, name: str, big_members: int, rows: int, rooms: int, others_total: int) -> Roomstate:
    """A server's worth of rooms: one big room whose history spans 90 days, and ``rooms - 1``
    rooms of skewed sizes."""
    path = work.sqlite(name)
    system = Roomstate(f"sqlite:///{path}")
    if big_members:
        start = time.time() - 90 * DAY
        system.store.recorder = history.Recorder(now=TickingClock(start, 90 * DAY / max(rows, 1)))
    await system.open()
    built = time.perf_counter()
    if big_members:
        members = data.members(big_members, first_user=50_000_000, seed=4)
        await system.full_sync(system.prepare(BIG, members))
        stream = data.steady_member_events(BIG, members, rows, seed=4)
        while chunk := list(itertools.islice(stream, 20_000)):
            await _feed(system, chunk)
        system.store.recorder = history.Recorder()
    sizes = data.skewed_room_sizes(rooms - (1 if big_members else 0), others_total, max(2, others_total // 20))
    first_user = 0
    for index, size in enumerate(sizes):
        room = system.prepare(small_room(index), data.members(max(size, 1), first_user=first_user, seed=index))
        first_user += size
        await system.full_sync(room)
    print(f"  (built {name}: {rooms:,} rooms, {rows:,} history rows in {time.perf_counter() - built:.0f}s)")
    return system


class Site:
    """The real WebView over a built store, with a signed-in admin's cookie."""

    def __init__(self, system: Roomstate) -> None:
        settings = system.queries.config
        self.system = system
        self.auth = WebAuth(system.store, settings)
        self.view = WebView(
            system.queries, self.auth, settings, Metrics(), "http://bench.example/", system.service.gauges
        )
        self.cookie = ""
        self.token = ""

    async def sign_in(self) -> None:
        signed = await self.auth.use_link(await self.auth.new_link(ADMIN))
        assert signed is not None
        self.cookie = signed[0]
        made = await self.auth.new_token("bench", ADMIN)
        assert made is not None
        self.token = made

    async def get(self, handler: Callable[[Any], Awaitable[Any]], path: str, **match: str) -> float:
        headers = {"Cookie": f"{COOKIE}={self.cookie}", "Authorization": f"Bearer {self.token}"}
        request = make_mocked_request("GET", path, headers=headers, match_info=match)
        begun = time.perf_counter()
        response = await handler(request)
        elapsed = time.perf_counter() - begun
        assert response.status == 200, (path, response.status)
        return elapsed


def raw_floor(path: str, sql: str, params: tuple[Any, ...] = ()) -> Callable[[], float]:
    """The same rows read with plain sqlite3 (no session, visibility or rendering)."""
    conn = sqlite3.connect(path, check_same_thread=False)

    def run() -> float:
        begun = time.perf_counter()
        conn.execute(sql, params).fetchall()
        return time.perf_counter() - begun

    return run


async def measure(
    report: Report,
    label: str,
    target: str,
    probes: int,
    page: Callable[[], Awaitable[float]],
    floor: Callable[[], float] | None = None,
) -> None:
    """``probes`` requests, interleaved with the raw floor; p50 and p99, and the floor's p50."""
    times, floors = [], []
    await page()  # warm caches, as a running bot has them
    for _ in range(probes):
        gc.collect()
        times.append(await page())
        if floor is not None:
            floors.append(await asyncio.to_thread(floor))
    numbers: dict[str, Any] = {"p50": median(times), "p99": percentile(times, 99)}
    text = f"p50 {ms(numbers['p50'])}, p99 {ms(numbers['p99'])}"
    if floors:
        numbers["raw_p50"] = median(floors)
        text += f", raw SQL {ms(numbers['raw_p50'])}"
    report.add(label, text, target, **numbers)


async def big_server(report: Report, work: Workdir, quick: bool, probes: int) -> None:
    big, rows = (10_000, 100_000) if quick else (100_000, 1_000_000)
    system = await build(work, "web-big", big, rows, rooms=1_000, others_total=200_000)
    site = Site(system)
    await site.sign_in()
    view, path = site.view, str(work.path / "web-big.db")
    rng = random.Random(3)
    scale = f"1,000 rooms, {big // 1000}k-member room, {rows / 1e6:g}M rows"
    busy = data.user_id(50_000_000 + 7)

    def room_path(room: str, query: str = "") -> str:
        return "/room/" + quote(room, safe="") + query

    rooms_sql = (
        "SELECT r.room_id, i.name, i.joined_count FROM roomstate_room_info i JOIN roomstate_rooms r USING (room_nid)"
    )
    members_sql = (
        "SELECT u.user_id, m.membership, m.displayname"
        " FROM roomstate_memberships m JOIN roomstate_users u USING (user_nid)"
        " WHERE m.room_nid = (SELECT room_nid FROM roomstate_rooms WHERE room_id = ?) ORDER BY u.user_id LIMIT 50"
    )
    await measure(
        report,
        f"rooms page ({scale})",
        "p50 <= 100 ms",
        probes,
        lambda: site.get(view.rooms, "/"),
        raw_floor(path, rooms_sql),
    )
    await measure(
        report,
        "rooms page sorted by members, page 5",
        "p50 <= 100 ms",
        probes,
        lambda: site.get(view.rooms, "/?sort=members&dir=desc&page=5"),
    )
    for period, target in (("7d", "p50 <= 100 ms"), ("90d", "<= 200 ms")):
        await measure(
            report,
            f"room page, {big // 1000}k-member room, charts of {period}",
            target,
            max(5, probes // 2),
            lambda period=period: site.get(view.room, room_path(BIG, f"?period={period}"), room_id=BIG),
            raw_floor(path, members_sql, (BIG,)),
        )
    await measure(
        report,
        f"room page, {big // 1000}k-member room, members matching a search",
        "p50 <= 100 ms",
        max(5, probes // 2),
        lambda: site.get(view.room, room_path(BIG, "?q=fatima1"), room_id=BIG),
    )
    await measure(
        report,
        "room page, a small room (7d)",
        "p50 <= 100 ms",
        probes,
        lambda: site.get(view.room, room_path(small := small_room(rng.randrange(900, 999))), room_id=small),
    )
    await measure(
        report,
        "user page, a member of the big room with history",
        "p50 <= 100 ms",
        probes,
        lambda: site.get(view.user, "/user/" + quote(busy, safe=""), user_id=busy),
    )
    await measure(
        report, "API: 500 rooms", "p50 <= 100 ms", probes, lambda: site.get(view.api_rooms, "/api/v1/rooms?limit=500")
    )
    await measure(
        report,
        f"API: 500 members of the {big // 1000}k-member room, page 20",
        "p50 <= 100 ms",
        probes,
        lambda: site.get(
            view.api_members, f"/api/v1/rooms/{quote(BIG, safe='')}/members?limit=500&cursor=10000", room_id=BIG
        ),
    )
    await measure(
        report,
        f"API: 90-day counts of the {big // 1000}k-member room",
        "<= 200 ms",
        max(5, probes // 2),
        lambda: site.get(view.api_counts, f"/api/v1/rooms/{quote(BIG, safe='')}/counts?period=90d", room_id=BIG),
    )
    await measure(report, "/metrics", "p50 <= 100 ms", probes, lambda: site.get(view.metrics_page, "/metrics"))
    await system.close()


async def many_rooms(report: Report, work: Workdir, quick: bool, probes: int) -> None:
    rooms = 2_000 if quick else 10_000
    system = await build(work, "web-many", 0, 0, rooms=rooms, others_total=rooms * 20)
    site = Site(system)
    await site.sign_in()
    path = str(work.path / "web-many.db")
    floor = raw_floor(
        path,
        "SELECT r.room_id, i.name, i.joined_count FROM roomstate_room_info i JOIN roomstate_rooms r USING (room_nid)",
    )
    for query in ("/", "/?sort=members&dir=desc&page=40", "/?q=room"):
        await measure(
            report,
            f"rooms page of {rooms:,} rooms: {query}",
            "p50 <= 100 ms",
            probes,
            lambda query=query: site.get(site.view.rooms, query),
            floor,
        )
    await system.close()


async def run(report: Report, work: Workdir, quick: bool, probes: int) -> None:
    await many_rooms(report, work, quick, probes)
    await big_server(report, work, quick, probes)


async def main() -> None:  # pragma: no cover - python -m benchmarks.web
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k-member room, 100k rows, 2,000 rooms")
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = Report(quick=args.quick)
    await run(report, Workdir(), args.quick, args.probes)
    if args.json:
        args.json.write_text(json.dumps(report.rows, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
