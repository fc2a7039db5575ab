"""First syncs at scale, side by side: a bot joining many rooms of skewed sizes (the users shared
between rooms, as on a real server), and the process memory a big first sync adds.

    python -m benchmarks.bench --only many-rooms,rss [--quick]

The memory is the growth of the process's resident set (Linux: peak RSS reset through
/proc/self/clear_refs before the sync), measured in a fresh interpreter per run so that one
system's freed memory is not the next one's: everything the sync costs (Python objects, the
driver's buffers, SQLite's page cache) counts, not only the Python heap.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import data
from .common import Report, Workdir, interleaved, median, ms
from .peers import Mautrix, RawSqlite, Roomstate

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 4  # rooms synced at once: the plugin's default sync.concurrency


def room_members(size: int, pool: int, seed: int) -> list[data.Member]:
    """A room of ``size`` members drawn from ``pool`` users (so users share rooms)."""
    rng = random.Random(seed)
    numbers = rng.sample(range(pool), size) if size < pool else range(size)
    return [data.Member(data.user_id(n), data.membership(rng), data.displayname(rng, n)) for n in numbers]


async def many_rooms(report: Report, work: Workdir, rooms: int, total: int, largest: int, reps: int) -> None:
    """Each system makes the first sync of ``rooms`` rooms (``total`` rows, sizes skewed, the
    largest ``largest``), ``CONCURRENCY`` at a time, from prepared member lists."""
    sizes = data.skewed_room_sizes(rooms, total, largest)
    pool = total // 3  # about three rooms per user
    lists = [room_members(size, pool, seed=index) for index, size in enumerate(sizes)]
    print(f"  ({rooms:,} rooms, {sum(sizes):,} rows, {pool:,} users, largest {largest:,})", flush=True)

    totals: dict[str, list[float]] = {}

    async def run(system: Any, rep: int) -> float:
        prepared = [system.prepare(f"!many{index}-{rep}:bench.example", m) for index, m in enumerate(lists)]
        todo = iter(prepared)

        async def worker() -> None:
            for snapshot in todo:
                await system.full_sync(snapshot)

        gc.collect()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        await system.drain()
        return time.perf_counter() - started

    for rep in range(reps):
        # each repetition on new databases: a first sync meets an empty store
        systems = [
            Roomstate(f"sqlite:///{work.sqlite(f'many-roomstate-{rep}')}"),
            Mautrix(f"sqlite:{work.sqlite(f'many-mautrix-{rep}')}"),
            RawSqlite(work.sqlite(f"many-raw-{rep}")),
        ]
        for system in systems:
            await system.open()
        times = await interleaved(1, systems[rep % 3 :] + systems[: rep % 3], lambda s, _, rep=rep: run(s, rep))
        for system in systems:
            await system.close()
        for name, values in times.items():
            totals.setdefault(name, []).extend(values)
    ours, theirs, raw = (median(totals[name]) for name in ("roomstate", "mautrix", "raw sqlite3"))
    report.add(
        f"first syncs of {rooms:,} rooms ({total:,} rows, skewed)",
        f"{ms(ours)} = {ours / theirs:.2f}x mautrix ({ms(theirs)}), {ours / raw:.2f}x raw",
        "<= 1.0x mautrix",
        roomstate=ours,
        mautrix=theirs,
        raw=raw,
        ratio=ours / theirs,
    )


# ---- process memory of one big first sync (each run in a fresh interpreter) --------------------


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


async def _measure(system_name: str, path: str, size: int, seed: int) -> dict[str, float]:
    system: Any = Roomstate(f"sqlite:///{path}") if system_name == "roomstate" else Mautrix(f"sqlite:{path}")
    await system.open()
    # warm up: the store's first write (imports, statements, caches that any write fills)
    await system.full_sync(system.prepare("!warm:bench.example", data.members(10, seed=seed)))
    await system.drain()
    prepared = system.prepare("!big:bench.example", data.members(size, first_user=1_000_000, seed=seed))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak (VmHWM) to the current RSS
    before = _rss_kib("VmRSS")
    started = time.perf_counter()
    await system.full_sync(prepared)
    await system.drain()
    seconds = time.perf_counter() - started
    peak = _rss_kib("VmHWM")
    after = _rss_kib("VmRSS")
    await system.close()
    return {"peak_growth": (peak - before) * 1024, "kept": (after - before) * 1024, "seconds": seconds}


def measure_in_child() -> None:
    """Entry point of the child: ``python -m benchmarks.first_syncs SYSTEM PATH SIZE SEED``."""
    name, path, size, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(_measure(name, path, size, seed))))


def _child(name: str, path: str, size: int, seed: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.first_syncs", name, path, str(size), str(seed)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


async def process_memory(report: Report, work: Workdir, size: int, reps: int) -> None:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        print("  (process memory: needs Linux's /proc/self/clear_refs; skipped)")
        return
    growth: dict[str, list[float]] = {"roomstate": [], "mautrix": []}
    for rep in range(reps):
        for name in ("roomstate", "mautrix") if rep % 2 == 0 else ("mautrix", "roomstate"):
            result = await asyncio.to_thread(_child, name, work.sqlite(f"rss-{name}-{rep}"), size, rep)
            growth[name].append(result["peak_growth"])
    ours, theirs = median(growth["roomstate"]), median(growth["mautrix"])
    report.add(
        f"process memory growth (peak RSS) during a {size:,} sync",
        f"{ours / 2**20:.1f} MiB = {ours / max(theirs, 1):.2f}x mautrix ({theirs / 2**20:.1f} MiB)",
        "<= 2x mautrix",
        roomstate=ours,
        mautrix=theirs,
        ratio=ours / max(theirs, 1),
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    measure_in_child()
