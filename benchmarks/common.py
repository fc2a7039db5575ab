"""What every benchmark module shares: the report, the statistics, interleaved repetitions and
the temporary directory for the databases. Imports nothing from the other benchmark modules."""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import statistics
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa


@dataclass
class Report:
    sqlalchemy: str = sa.__version__
    quick: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # system -> size -> seconds

    def add(self, path: str, value: str, target: str, **numbers: Any) -> None:
        self.rows.append({"path": path, "result": value, "target": target, **numbers})
        print(f"  {path:<62} {value:<44} target {target}", flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


async def interleaved(
    reps: int, systems: Sequence[Any], run: Callable[[Any, int], Awaitable[float]]
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {s.name: [] for s in systems}
    for rep in range(reps):
        shift = rep % len(systems)
        for system in [*systems[shift:], *systems[:shift]]:
            gc.collect()
            times[system.name].append(await run(system, rep))
    return times


class Workdir:
    """A temporary directory for the benchmark's databases, removed at exit."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="roomstate-bench-"))
        atexit.register(shutil.rmtree, self.path, True)

    def sqlite(self, name: str) -> str:
        path = str(self.path / f"{name}.db")
        remove_sqlite(path)
        return path


def remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
