"""Would a different schema bring one member event, awaited until committed, to mautrix's speed?

Issue 14 asks for roomstate at >= 1.0x mautrix's speed on that path. Its floor (raw sqlite3 making
roomstate's writes, none of its logic: ``peers.EventFloor``) shows how much of that the writes
alone allow. This compares, in one process, interleaved, medians of each round's ratio:

- roomstate;
- its floor on roomstate's tables (the membership, the counts, a new user, and the history row
  that is also the event's claim, with its seq index and its unique (room, event hash) index);
- the floor of a schema roomstate does not have: the dedup record and the history row as one row
  of one table keyed (room, seq), unique on (room, event ID), no cross-room seq index: two B-trees
  for what roomstate's take three (four before schema v7, when the claim was a row of its own
  with its time index);
- mautrix's state store.

Each run creates the systems in another order (the first one created tends to be measured a few
percent slower). ``python -m benchmarks.floor_variants [--runs 4] [--rounds 8] [--events 800]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from . import data
from .common import Workdir, interleaved, median
from .peers import EventFloor, Mautrix, Roomstate, awaited_one_by_one

ROOM = "!events:bench.example"


async def one_run(work: Workdir, run: int, rounds: int, events: int) -> dict[str, float]:
    """Speed relative to mautrix per system (median of the rounds' ratios), systems created in an
    order rotated by ``run``."""
    makers = [
        lambda: Roomstate(f"sqlite:///{work.sqlite(f'roomstate-{run}')}"),
        lambda: EventFloor(work.sqlite(f"floor-{run}")),
        lambda: EventFloor(work.sqlite(f"floor-merged-{run}"), merged=True),
        lambda: Mautrix(f"sqlite:{work.sqlite(f'mautrix-{run}')}"),
    ]
    shift = run % len(makers)
    systems: list[Any] = [make() for make in makers[shift:] + makers[:shift]]
    for system in systems:
        await system.open()
        await system.full_sync(system.prepare(ROOM, data.members(2_000, seed=3)))

    async def latency(system: Any, rep: int) -> float:
        return await awaited_one_by_one(system, ROOM, events, seed=100 + rep) / events

    times = await interleaved(rounds, systems, latency)
    for system in systems:
        await system.close()
    theirs = times["mautrix"]
    return {name: median([m / t for t, m in zip(own, theirs, strict=True)]) for name, own in times.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--events", type=int, default=800)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Workdir()
    results = [await one_run(work, run, args.rounds, args.events) for run in range(args.runs)]
    print(f"speed relative to mautrix, one member event awaited until committed ({args.runs} runs)")
    for name in results[0]:
        ratios = sorted(result[name] for result in results)
        print(f"  {name:<22} median {median(ratios):.2f}x  runs {' '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    asyncio.run(main())
