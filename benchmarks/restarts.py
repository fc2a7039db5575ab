"""What a restart costs, by how many rooms the bot is in: 0.2's way (``sync.on_startup: all``,
every room's state fetched again) against the catch-up from the saved sync position, quiet and
after changes in a few rooms (with and without gaps). Prints a table; writes a plot with --plot.

    python -m benchmarks.restarts [--quick] [--json PATH] [--plot PATH]

The real plugin on a real mautrix client and a real SQLite database, against the in-process fake
homeserver of the tests, which answers /sync from a position as Synapse does and counts the
requests and the bytes it sends. Numbers only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from tests.fakes import FakeHomeserver
from tests.helpers import ADMIN, BOT, Harness, sync_response

from .common import Workdir

CHANGED_ROOMS = 5
GAP_EVENTS = 105  # more than the catch-up's timeline limit: the room has a gap


@dataclass
class Cost:
    rooms: int
    scenario: str
    state_requests: int
    sync_requests: int
    bytes: int
    seconds: float
    heap_peak_mib: float
    consistent: bool


def room_id(index: int) -> str:
    return f"!r{index}:bench.example"


async def seed(harness: Harness, rooms: int, big: int) -> None:
    """``rooms`` rooms of three members the bot has joined (and one of ``big`` members, if any),
    joined 200 rooms per sync, as Synapse would deliver a busy stretch."""
    hs = harness.hs
    if big:
        hs.create_room(room_id(0), ADMIN, name="Big")
        for index in range(big):
            hs.member(room_id(0), f"@m{index}:bench.example", "join")
    for index in range(1 if big else 0, rooms):
        hs.create_room(room_id(index), ADMIN, name=f"Room {index}", members=(f"@u{index}:bench.example",))
    for start in range(0, rooms, 200):
        joins = [hs.member(room_id(index), BOT, "join") for index in range(start, min(rooms, start + 200))]
        await harness.sync(sync_response(joined={j["room_id"]: {"timeline": [j]} for j in joins}))


def consistent(harness: Harness, rooms: int) -> bool:
    """Every stored membership equal to the fake homeserver's."""
    stored: dict[tuple[str, str], str] = {
        (r, u): m
        for r, u, m in harness.db.rows(
            "SELECT r.room_id, u.user_id, m.membership FROM roomstate_memberships m"
            " JOIN roomstate_rooms r ON r.room_nid = m.room_nid JOIN roomstate_users u ON u.user_nid = m.user_nid"
        )
    }
    server = {
        (room, key[1]): event["content"]["membership"]
        for room in (room_id(i) for i in range(rooms))
        for key, event in harness.hs.rooms[room].state.items()
        if key[0] == "m.room.member" and event["content"]["membership"] != "leave"
    }
    return stored == server


async def restart(harness: Harness, rooms: int, scenario: str, mode: str) -> Cost:
    hs = harness.hs
    await harness.stop()
    if scenario == "changed":
        for index in range(1, 1 + CHANGED_ROOMS):
            hs.member(room_id(index), f"@new{index}:bench.example", "join")
    elif scenario == "gaps":
        for index in range(1, 1 + CHANGED_ROOMS):
            for number in range(GAP_EVENTS):
                hs.message(room_id(index), ADMIN, f"chatter {number}")
            hs.member(room_id(index), f"@gap{index}:bench.example", "join")
    requests, syncs, sent = len(hs.requests), len(hs.sync_requests), hs.bytes_sent
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    await harness.restart(**{"sync.on_startup": mode})
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return Cost(
        rooms,
        f"{mode}, {scenario}",
        len(hs.state_requests(requests)),
        len(hs.sync_requests) - syncs,
        hs.bytes_sent - sent,
        seconds,
        peak / 2**20,
        consistent(harness, rooms),
    )


async def measure(work: Workdir, rooms: int, big: int) -> list[Cost]:
    hs = FakeHomeserver(BOT)
    await hs.start()
    costs = []
    async with aiohttp.ClientSession() as http:
        harness = Harness(hs, http, f"sqlite:///{work.sqlite(f'restarts-{rooms}')}")
        harness.config_overrides["sync.concurrency"] = 4
        harness.settle_timeout = 3600
        await harness.start()
        await seed(harness, rooms, big)
        for scenario, mode in (("quiet", "all"), ("quiet", "catch-up"), ("changed", "catch-up"), ("gaps", "catch-up")):
            cost = await restart(harness, rooms, scenario, mode)
            costs.append(cost)
            print(
                f"  {cost.rooms:>6} rooms  {cost.scenario:<18} {cost.state_requests:>6} /state"
                f"  {cost.sync_requests} /sync  {cost.bytes / 2**20:>8.2f} MiB  {cost.seconds:>7.2f} s"
                f"  heap peak {cost.heap_peak_mib:>7.1f} MiB  consistent: {cost.consistent}",
                flush=True,
            )
        await harness.stop()
        harness.engine.dispose()
        harness.db.dispose()
    await hs.stop()
    return costs


def plot(costs: list[Cost], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (requests_axis, seconds_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for scenario in dict.fromkeys(c.scenario for c in costs):
        points = [c for c in costs if c.scenario == scenario]
        rooms = [c.rooms for c in points]
        requests_axis.plot(rooms, [max(c.state_requests, 0.5) for c in points], marker="o", label=scenario)
        seconds_axis.plot(rooms, [c.seconds for c in points], marker="o", label=scenario)
    for axis, label in (
        (requests_axis, "full-state requests (0 drawn at 0.5)"),
        (seconds_axis, "seconds to consistent"),
    ):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("rooms the bot is in")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    requests_axis.legend(fontsize=8)
    figure.suptitle("What a restart costs: syncing every room (0.2) vs the catch-up from the saved position")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 and 100 rooms only (what CI runs)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG; needs matplotlib)")
    args = parser.parse_args()
    sizes = [(10, 0), (100, 0)] if args.quick else [(10, 0), (100, 0), (1_000, 100_000), (10_000, 0)]
    print("== what a restart costs (fake homeserver, SQLite; one room of 100k members among 1,000)", flush=True)
    work = Workdir()
    costs: list[Cost] = []
    for rooms, big in sizes:
        costs += await measure(work, rooms, big)
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in costs], indent=1))
    if args.plot:
        plot(costs, args.plot)


if __name__ == "__main__":
    asyncio.run(main())
